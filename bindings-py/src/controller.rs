//! `TrafficControl`: the core's controller behind a mutex, one method per core call.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyMapping, PyString};
use pyo3::IntoPyObjectExt;
use traffic_control_core::{
    apply_env, Completion, Config, Decision, Outcome, Preset, RequestId, ReservationId, TrafficControl,
};

use crate::convert::{aim, env_pairs, ms, priority, to_py, to_value, ts, RequestArgs};
use crate::errors::{config_error, request_error};
use crate::types::{PyCompletion, PyEvent, PyFollowUp, PyPermit, PyWait};

/// Bodies larger than this are read by the core with the GIL released (Keepa product bodies can be
/// megabytes; other threads keep running meanwhile).
const DETACH_BODY_BYTES: usize = 64 * 1024;

struct State {
    core: TrafficControl,
    /// When false, events are dropped as they come instead of waiting for `poll`: a host with
    /// nobody waiting in the queue and no listener has no use for them.
    keep_events: bool,
}

impl State {
    /// Drops the events the host said it does not want.
    fn discard(&mut self, now: f64) {
        if !self.keep_events {
            while self.core.poll(ts(now)).is_some() {}
        }
    }
}

/// The sans-IO traffic controller: decides when each request may go. It never reads a clock or
/// sleeps: every call takes `now`, milliseconds on one monotonic clock (`time.monotonic() * 1000`).
///
/// Safe to share between threads (calls are serialised by a mutex). The asyncio/thread driver in
/// `traffic_control.TrafficControl` owns one of these and the timer that sleeps until
/// `poll_timeout()`.
#[pyclass(name = "TrafficControl", module = "traffic_control", frozen)]
pub(crate) struct PyTrafficControl {
    state: Mutex<State>,
    /// Completions without data are shared rather than allocated per call.
    done: Py<PyCompletion>,
    unknown: Py<PyCompletion>,
}

impl PyTrafficControl {
    fn build(py: Python<'_>, config: Config, keep_events: bool) -> PyResult<Self> {
        let core = TrafficControl::new(config).map_err(|e| config_error(py, &e))?;
        Ok(PyTrafficControl {
            state: Mutex::new(State { core, keep_events }),
            done: Py::new(py, PyCompletion::new(Completion::Done))?,
            unknown: Py::new(py, PyCompletion::new(Completion::Unknown))?,
        })
    }

    /// Runs `f` on the core at `now`, then drops the events if nobody wants them. Returns what
    /// `f` returned and whether events are kept (then the host must drain them).
    pub(crate) fn with_core<R>(&self, py: Python<'_>, now: f64, f: impl FnOnce(&mut TrafficControl) -> R) -> (R, bool) {
        let mut state = self.lock(py);
        let r = f(&mut state.core);
        state.discard(now);
        (r, state.keep_events)
    }

    /// Keeps events from now on (a request is about to wait in the queue: its go must reach it).
    pub(crate) fn keep_events_now(&self, py: Python<'_>) {
        self.lock(py).keep_events = true;
    }

    /// The shared object of a completion without data, or a new one.
    pub(crate) fn completion(&self, py: Python<'_>, completion: Completion) -> PyResult<Py<PyCompletion>> {
        Ok(match completion {
            Completion::Done => self.done.clone_ref(py),
            Completion::Unknown => self.unknown.clone_ref(py),
            other => Py::new(py, PyCompletion::new(other))?,
        })
    }

    /// The state, waiting for it with the GIL released if another thread holds it (only a call
    /// that itself released the GIL can, such as `complete` with a large body).
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, State> {
        loop {
            match self.state.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    py.detach(|| drop(self.state.lock().unwrap_or_else(PoisonError::into_inner)));
                }
            }
        }
    }
}

/// A config with the environment's overrides applied, when asked for.
/// A shadow's config as `set_shadow` reads it (in-memory and shared controllers): a dict or JSON
/// text, or with `preset` a shipped preset's name; `env` overrides it as in the constructors.
pub(crate) fn shadow_config(
    py: Python<'_>,
    config: Option<&Bound<'_, PyAny>>,
    preset: Option<&str>,
    env: Option<&Bound<'_, PyAny>>,
    env_prefix: Option<String>,
) -> PyResult<Option<Config>> {
    Ok(match (config, preset) {
        (Some(_), Some(_)) => return Err(PyValueError::new_err("set_shadow: a config or a preset, not both")),
        (None, None) => None,
        (None, Some(name)) => {
            let preset = Preset::named(name).map_err(|e| config_error(py, &e))?;
            let config = preset.config().map_err(|e| config_error(py, &e))?;
            let prefix = env_prefix.as_deref().unwrap_or(preset.env_prefix);
            Some(with_env(py, config, env, Some(prefix))?)
        }
        (Some(config), None) => Some(with_env(py, read_config(py, config)?, env, env_prefix.as_deref())?),
    })
}

/// A config from a dict (the JSON shape) or JSON text.
fn read_config(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Config> {
    if let Ok(text) = config.cast::<PyString>() {
        Config::from_json(&text.extract::<String>()?)
    } else if config.cast::<PyMapping>().is_ok() {
        Config::from_value(to_value(config, &mut String::new())?)
    } else {
        return Err(PyTypeError::new_err("config: a dict (the JSON shape) or JSON text"));
    }
    .map_err(|e| config_error(py, &e))
}

fn with_env(py: Python<'_>, config: Config, env: Option<&Bound<'_, PyAny>>, prefix: Option<&str>) -> PyResult<Config> {
    match (env, prefix) {
        (Some(env), Some(prefix)) => apply_env(config, prefix, env_pairs(env)?).map_err(|e| config_error(py, &e)),
        (Some(_), None) => Err(PyValueError::new_err("env needs env_prefix: the prefix of its override variables")),
        (None, _) => Ok(config),
    }
}

// One Rust argument per keyword of the Python signature.

#[allow(clippy::too_many_arguments)]
pub(crate) fn request_args(
    url: Option<String>,
    method: Option<String>,
    route: Option<String>,
    limits: Option<Vec<String>>,
    cost: Option<u64>,
    priority_: Option<&Bound<'_, PyAny>>,
    deadline: Option<f64>,
    reserve: Option<Vec<PyRef<'_, PyFollowUp>>>,
    spend: Option<u64>,
    tenant: Option<String>,
    key: Option<String>,
) -> PyResult<RequestArgs> {
    Ok(RequestArgs {
        aim: aim(url, method, route)?,
        limits,
        cost,
        priority: priority(priority_)?,
        deadline,
        reserve: reserve.map(|r| r.iter().map(|f| f.inner.clone()).collect()).unwrap_or_default(),
        spend,
        tenant,
        key,
    })
}

#[pymethods]
impl PyTrafficControl {
    /// A controller from a config: a dict (the JSON shape) or JSON text. `env` (a mapping such as
    /// `os.environ`) overrides limits through variables `<env_prefix>_<LIMIT>_<FIELD>`.
    #[new]
    #[pyo3(signature = (config, *, env=None, env_prefix=None, keep_events=true))]
    fn new(
        py: Python<'_>,
        config: &Bound<'_, PyAny>,
        env: Option<&Bound<'_, PyAny>>,
        env_prefix: Option<String>,
        keep_events: bool,
    ) -> PyResult<Self> {
        Self::build(py, with_env(py, read_config(py, config)?, env, env_prefix.as_deref())?, keep_events)
    }

    /// A controller from a preset (`"backmarket"`, `"keepa"`, `"baselinker"`); `env` overrides it
    /// through the preset's own prefix (`KEEPA_RATE_LIMIT_TOKENS_REFILL`) unless `env_prefix` is
    /// given.
    #[staticmethod]
    #[pyo3(signature = (name, *, env=None, env_prefix=None, keep_events=true))]
    fn preset(
        py: Python<'_>,
        name: &str,
        env: Option<&Bound<'_, PyAny>>,
        env_prefix: Option<String>,
        keep_events: bool,
    ) -> PyResult<Self> {
        let preset = Preset::named(name).map_err(|e| config_error(py, &e))?;
        let config = preset.config().map_err(|e| config_error(py, &e))?;
        let prefix = env_prefix.as_deref().unwrap_or(preset.env_prefix);
        Self::build(py, with_env(py, config, env, Some(prefix))?, keep_events)
    }

    /// A controller from TOML text (the same shape as the JSON config).
    #[staticmethod]
    #[pyo3(signature = (text, *, env=None, env_prefix=None, keep_events=true))]
    fn from_toml(
        py: Python<'_>,
        text: &str,
        env: Option<&Bound<'_, PyAny>>,
        env_prefix: Option<String>,
        keep_events: bool,
    ) -> PyResult<Self> {
        let config = Config::from_toml(text).map_err(|e| config_error(py, &e))?;
        Self::build(py, with_env(py, config, env, env_prefix.as_deref())?, keep_events)
    }

    /// The config in force (presets and overrides applied), as plain data.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = self.lock(py).core.config().to_json_compact();
        let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| PyValueError::new_err(e.to_string()))?;
        to_py(py, &value)
    }

    /// Whether events wait for `poll` (true) or are dropped as they come (false: for a host that
    /// neither queues requests nor listens to events).
    #[getter]
    fn keep_events(&self, py: Python<'_>) -> bool {
        self.lock(py).keep_events
    }

    #[setter]
    fn set_keep_events(&self, py: Python<'_>, keep: bool) {
        self.lock(py).keep_events = keep;
    }

    /// Decides at once: returns a `Permit` (send now) or a `Wait` (ask again at `until`); raises
    /// the error of its kind when the request can never go as asked. Nothing is queued.
    #[pyo3(signature = (now, url=None, method=None, route=None, limits=None, cost=None, priority=None, deadline=None, reserve=None, spend=None, tenant=None, key=None))]
    // One Rust argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn try_acquire(
        &self,
        py: Python<'_>,
        now: f64,
        url: Option<String>,
        method: Option<String>,
        route: Option<String>,
        limits: Option<Vec<String>>,
        cost: Option<u64>,
        priority: Option<&Bound<'_, PyAny>>,
        deadline: Option<f64>,
        reserve: Option<Vec<PyRef<'_, PyFollowUp>>>,
        spend: Option<u64>,
        tenant: Option<String>,
        key: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let request = request_args(url, method, route, limits, cost, priority, deadline, reserve, spend, tenant, key)?
            .into_request();
        let decision = {
            let mut state = self.lock(py);
            let decision = state.core.try_acquire(ts(now), &request);
            state.discard(now);
            decision
        };
        match decision {
            Decision::Go(permit) => PyPermit::new(&permit).into_py_any(py),
            Decision::Wait { until } => PyWait::new(ms(until)).into_py_any(py),
            Decision::Reject(error) => Err(request_error(py, &error)),
            _ => Err(PyValueError::new_err("unknown decision")),
        }
    }

    /// Queues a request; returns its id. Its `go` event (with the permit) comes out of `poll`,
    /// possibly at once. Raises at once when the request can never go.
    #[pyo3(signature = (now, url=None, method=None, route=None, limits=None, cost=None, priority=None, deadline=None, reserve=None, spend=None, tenant=None, key=None))]
    // One Rust argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        now: f64,
        url: Option<String>,
        method: Option<String>,
        route: Option<String>,
        limits: Option<Vec<String>>,
        cost: Option<u64>,
        priority: Option<&Bound<'_, PyAny>>,
        deadline: Option<f64>,
        reserve: Option<Vec<PyRef<'_, PyFollowUp>>>,
        spend: Option<u64>,
        tenant: Option<String>,
        key: Option<String>,
    ) -> PyResult<u64> {
        let request = request_args(url, method, route, limits, cost, priority, deadline, reserve, spend, tenant, key)?
            .into_request();
        let result = {
            let mut state = self.lock(py);
            let result = state.core.submit(ts(now), &request);
            state.discard(now);
            result
        };
        result.map(|id| id.0).map_err(|e| request_error(py, &e))
    }

    /// Advances to `now` and returns the next event, or `None` when there is nothing more to say
    /// now. Drain it after every call that changes state.
    fn poll(&self, py: Python<'_>, now: f64) -> Option<PyEvent> {
        self.lock(py).core.poll(ts(now)).map(PyEvent::new)
    }

    /// The next instant (ms) at which anything can change by time alone; `None`: nothing will
    /// happen until the host calls in.
    fn poll_timeout(&self, py: Python<'_>) -> Option<f64> {
        ms(self.lock(py).core.poll_timeout())
    }

    /// Reports the outcome of a permitted request: `status` (`None`: no response came), `headers`
    /// (a mapping or `(name, value)` pairs), `body` (text or bytes: Keepa's token fields,
    /// BaseLinker's errors), `unix_time` (the wall clock, for absolute times in the response).
    #[pyo3(signature = (now, request, status=None, headers=None, body=None, unix_time=None))]
    // One Rust argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        py: Python<'_>,
        now: f64,
        request: u64,
        status: Option<u16>,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        unix_time: Option<f64>,
    ) -> PyResult<Py<PyCompletion>> {
        let outcome = outcome_of(status, headers, body, unix_time)?;
        let large = outcome.body.as_ref().is_some_and(|b| b.len() > DETACH_BODY_BYTES);
        let completion = if large {
            // Reading a large body takes a while: let other threads run meanwhile.
            py.detach(|| {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let c = state.core.complete(ts(now), RequestId(request), outcome);
                state.discard(now);
                c
            })
        } else {
            let mut state = self.lock(py);
            let c = state.core.complete(ts(now), RequestId(request), outcome);
            state.discard(now);
            c
        };
        self.completion(py, completion)
    }

    /// Removes a waiting request from the queue, or gives back the slots of an admitted one that
    /// will not be sent. Returns whether the request was known.
    fn cancel(&self, py: Python<'_>, now: f64, request: u64) -> bool {
        let mut state = self.lock(py);
        let known = state.core.cancel(ts(now), RequestId(request));
        state.discard(now);
        known
    }

    /// Releases a reservation early (its follow-up will not be sent). Returns whether it was live
    /// and not being spent by a waiting request.
    fn release(&self, py: Python<'_>, now: f64, reservation: u64) -> bool {
        let mut state = self.lock(py);
        let live = state.core.release(ts(now), ReservationId(reservation));
        state.discard(now);
        live
    }

    /// Takes the server's word for a budget's balance (Keepa's `tokensLeft`, and `refill_in` ms
    /// until its next refill).
    #[pyo3(signature = (now, limit, tokens_left, refill_in=None))]
    fn sync_budget(
        &self,
        py: Python<'_>,
        now: f64,
        limit: &str,
        tokens_left: i64,
        refill_in: Option<f64>,
    ) -> PyResult<()> {
        let refill_in = match refill_in {
            Some(r) if r.is_finite() && r >= 0.0 => Some(std::time::Duration::from_secs_f64(r / 1e3)),
            Some(_) => return Err(PyValueError::new_err("refill_in: a finite number of milliseconds >= 0")),
            None => None,
        };
        let mut state = self.lock(py);
        let result = state.core.sync_budget(ts(now), limit, tokens_left, refill_in);
        state.discard(now);
        result.map_err(|e| request_error(py, &e))
    }

    /// Runs a config beside this controller as a shadow from `now` on: a dict (the JSON shape),
    /// JSON text, or with `preset` a shipped preset's name; `env` overrides it as in the
    /// constructors. `None` stops the shadow. An invalid config raises `ConfigError` naming the
    /// field and leaves the running shadow.
    #[pyo3(signature = (now, config=None, *, preset=None, env=None, env_prefix=None))]
    fn set_shadow(
        &self,
        py: Python<'_>,
        now: f64,
        config: Option<&Bound<'_, PyAny>>,
        preset: Option<&str>,
        env: Option<&Bound<'_, PyAny>>,
        env_prefix: Option<String>,
    ) -> PyResult<()> {
        let config = shadow_config(py, config, preset, env, env_prefix)?;
        let mut state = self.lock(py);
        let r = state.core.set_shadow(ts(now), config);
        state.discard(now);
        r.map_err(|e| config_error(py, &e))
    }

    /// What the shadow would have decided beside what this controller decided, as JSON text
    /// (the core's `ShadowReport`: instants in nanoseconds, waits in seconds); `None` without a
    /// shadow.
    fn shadow_report_json(&self, py: Python<'_>, now: f64) -> Option<String> {
        let mut state = self.lock(py);
        let r = state.core.shadow_report(ts(now));
        state.discard(now);
        r.map(|r| r.to_json())
    }

    /// The metrics as of `now`, as JSON text (the core's `Metrics` with its `families`; the
    /// snapshot's times in nanoseconds).
    fn metrics_json(&self, py: Python<'_>, now: f64) -> String {
        let mut state = self.lock(py);
        let m = state.core.metrics(ts(now));
        state.discard(now);
        m.to_json()
    }

    /// The metrics as of `now` in Prometheus's text exposition format.
    fn metrics_text(&self, py: Python<'_>, now: f64) -> String {
        let mut state = self.lock(py);
        let m = state.core.metrics(ts(now));
        state.discard(now);
        m.to_prometheus()
    }

    /// Every limit's state and the queue depths as of `now`, as plain data:
    /// `{"at", "limits": {name: {"kind", "capacity", "used", "reserved", "available", "next_free",
    /// "balance", "pause"}}, "waiting": {"critical", "high", "normal", "low"}, "in_flight",
    /// "reservations"}`; `pause` is `{"until", "server_until", "reason", "strikes"}` or None.
    fn snapshot<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = {
            let mut state = self.lock(py);
            let s = state.core.snapshot(ts(now));
            state.discard(now);
            s
        };
        let limits = PyDict::new(py);
        for l in &snapshot.limits {
            let d = PyDict::new(py);
            let kind = serde_json::to_value(l.kind).map_err(|e| PyValueError::new_err(e.to_string()))?;
            d.set_item("kind", to_py(py, &kind)?)?;
            d.set_item("capacity", l.capacity)?;
            d.set_item("used", l.used)?;
            d.set_item("reserved", l.reserved)?;
            d.set_item("available", l.available)?;
            d.set_item("next_free", ms(l.next_free))?;
            d.set_item("balance", l.balance)?;
            match &l.pause {
                Some(p) => {
                    let pause = PyDict::new(py);
                    pause.set_item("until", p.until.as_millis_f64())?;
                    pause.set_item("server_until", p.server_until.as_millis_f64())?;
                    pause.set_item("reason", p.reason)?;
                    pause.set_item("strikes", p.strikes)?;
                    d.set_item("pause", pause)?;
                }
                None => d.set_item("pause", py.None())?,
            }
            limits.set_item(&l.name, d)?;
        }
        let waiting = PyDict::new(py);
        for (name, n) in ["critical", "high", "normal", "low"].iter().zip(snapshot.waiting) {
            waiting.set_item(name, n)?;
        }
        let out = PyDict::new(py);
        out.set_item("at", snapshot.at.as_millis_f64())?;
        out.set_item("limits", limits)?;
        out.set_item("waiting", waiting)?;
        out.set_item("in_flight", snapshot.in_flight)?;
        out.set_item("reservations", snapshot.reservations)?;
        Ok(out)
    }

    /// The URL of the free status request that reports the budgets' balance (Keepa's `/token`),
    /// made from a request to the same API; None when the config has no status request.
    fn status_url(&self, py: Python<'_>, url: &str) -> Option<String> {
        self.lock(py).core.status_url(url)
    }

    /// Requests waiting in the queue, all priorities.
    #[getter]
    fn waiting(&self, py: Python<'_>) -> usize {
        self.lock(py).core.waiting()
    }

    /// Whether a request is waiting in the queue.
    fn is_waiting(&self, py: Python<'_>, request: u64) -> bool {
        self.lock(py).core.is_waiting(RequestId(request))
    }
}

/// An outcome from `complete`'s arguments.
pub(crate) fn outcome_of(
    status: Option<u16>,
    headers: Option<&Bound<'_, PyAny>>,
    body: Option<&Bound<'_, PyAny>>,
    unix_time: Option<f64>,
) -> PyResult<Outcome> {
    // Status 0: an end whose outcome the host does not know (see `Outcome::unreported`).
    let mut outcome = if status == Some(0) { Outcome::unreported() } else { Outcome::default() };
    outcome.status = status.filter(|&s| s != 0);
    outcome.unix_time = unix_time;
    if let Some(headers) = headers {
        outcome.headers = header_pairs(headers)?;
    }
    if let Some(body) = body {
        outcome.body = Some(body_text(body)?);
    }
    Ok(outcome)
}

/// Headers from a mapping (`httpx.Headers`, a dict) or an iterable of `(name, value)` pairs.
fn header_pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let bad = || PyTypeError::new_err("headers: a mapping of str to str, or (name, value) pairs");
    let items = match headers.cast::<PyMapping>() {
        Ok(m) => m.items()?.into_any(),
        Err(_) => headers.clone(),
    };
    let mut pairs = Vec::new();
    for item in items.try_iter().map_err(|_| bad())? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract().map_err(|_| bad())?;
        pairs.push((text(&name).ok_or_else(bad)?, text(&value).ok_or_else(bad)?));
    }
    Ok(pairs)
}

/// `str`, or `bytes` decoded as UTF-8 (invalid bytes replaced).
fn text(obj: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Some(String::from_utf8_lossy(b.as_bytes()).into_owned());
    }
    obj.extract::<String>().ok()
}

fn body_text(body: &Bound<'_, PyAny>) -> PyResult<String> {
    text(body).ok_or_else(|| PyTypeError::new_err("body: str or bytes"))
}
