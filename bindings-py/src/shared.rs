//! `SharedStore`: the core's [`SharedStore`](traffic_control_core::SharedStore) (limit state in
//! Redis, shared by every process of an account), one method per core call. The Python layer
//! (`traffic_control/shared.py`) runs each call with the application's Redis client.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use traffic_control_core::host::{self, HostError, SharedHost};
use traffic_control_core::{self as tc, Decision, Outcome, Preset, ReplyValue, RequestId, ReservationId, StoreCall};

use crate::convert::{env_pairs, ts};
use crate::errors::{config_error, request_error, TrafficControlError};

/// One script call: `(keys, args)` for `EVALSHA sha len(keys) *keys *args`.
type Call = (Vec<String>, Vec<String>);

/// An admission's answer: `(decision, request id, reservations, wait ms, error)`, decision one of
/// `go`, `wait`, `reject`.
type Answer = (String, Option<u64>, Vec<u64>, Option<f64>, Option<PyErr>);

/// The sans-IO shared store: builds script calls and reads their replies. The admission calls
/// awaiting their replies are kept by the core's [`SharedHost`], as for the JavaScript bindings.
#[pyclass(name = "SharedStore", module = "traffic_control._traffic_control")]
pub struct PySharedStore {
    host: std::sync::Mutex<SharedHost>,
}

impl PySharedStore {
    fn host(&self) -> std::sync::MutexGuard<'_, SharedHost> {
        self.host.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn replies(reply: &Bound<'_, PyAny>) -> PyResult<Vec<ReplyValue>> {
    let mut out = Vec::new();
    for item in reply.try_iter()? {
        let item = item?;
        out.push(if let Ok(b) = item.cast::<PyBytes>() {
            ReplyValue::Text(String::from_utf8_lossy(b.as_bytes()).into_owned())
        } else if let Ok(s) = item.cast::<PyString>() {
            ReplyValue::Text(s.to_cow()?.into_owned())
        } else if let Ok(i) = item.extract::<i64>() {
            ReplyValue::Int(i)
        } else {
            return Err(PyTypeError::new_err("a script reply holds integers and strings"));
        });
    }
    Ok(out)
}

fn store_error(e: &tc::StoreError) -> PyErr {
    TrafficControlError::new_err(format!("{} ({})", e, e.code()))
}

fn host_error(py: Python<'_>, e: &HostError) -> PyErr {
    match e {
        HostError::Request(e) => request_error(py, e),
        HostError::Store(e) => store_error(e),
        HostError::Invalid(reason) => PyValueError::new_err(format!("invalid argument: {reason}")),
    }
}

fn parts(c: StoreCall) -> Call {
    (c.keys, c.args)
}

#[pymethods]
impl PySharedStore {
    /// A store for `account` from a config (JSON text) or a preset name, with environment
    /// overrides for presets.
    #[new]
    #[pyo3(signature = (config, account, env = None, waiter_ttl_ms = None))]
    fn new(
        py: Python<'_>,
        config: &str,
        account: String,
        env: Option<&Bound<'_, PyAny>>,
        waiter_ttl_ms: Option<f64>,
    ) -> PyResult<Self> {
        let config = if config.trim_start().starts_with('{') {
            tc::Config::from_json(config)
        } else {
            let preset = Preset::named(config).map_err(|e| config_error(py, &e))?;
            let env: Vec<(String, String)> = match env {
                Some(e) => env_pairs(e)?,
                None => Vec::new(),
            };
            preset.config_with_env(env)
        }
        .map_err(|e| config_error(py, &e))?;
        let host = SharedHost::new(config, account, waiter_ttl_ms).map_err(|e| config_error(py, &e))?;
        Ok(PySharedStore { host: std::sync::Mutex::new(host) })
    }

    /// The Lua script and its SHA1.
    #[staticmethod]
    fn script() -> (String, String) {
        let [script, sha] = host::script();
        (script, sha)
    }

    /// The call that admits a request (JSON in the core's shape): `(token, keys, args)`.
    #[pyo3(signature = (now, request_json, waiter = None, max_wait_ms = None))]
    fn admit(
        &self,
        py: Python<'_>,
        now: f64,
        request_json: &str,
        waiter: Option<String>,
        max_wait_ms: Option<f64>,
    ) -> PyResult<(u32, Vec<String>, Vec<String>)> {
        let (token, c) = self.host().admit(now, request_json, waiter, max_wait_ms).map_err(|e| host_error(py, &e))?;
        Ok((token, c.keys, c.args))
    }

    /// Forgets an admission call whose reply will never come.
    fn forget(&self, token: u32) {
        self.host().forget(token);
    }

    /// Reads an admission's reply: `(decision, request_id, reservations, wait_ms, error)`.
    fn decide(&self, py: Python<'_>, now: f64, token: u32, reply: &Bound<'_, PyAny>) -> PyResult<Answer> {
        let reply = replies(reply)?;
        let a = self.host().decide_reply(now, token, &reply).map_err(|e| host_error(py, &e))?;
        Ok(match a.decision {
            Decision::Go(p) => {
                ("go".into(), Some(p.request.0), p.reservations.iter().map(|r| r.0).collect(), None, None)
            }
            Decision::Wait { until } => (
                "wait".into(),
                None,
                Vec::new(),
                until.map(|u| u.saturating_since(a.server_now).as_secs_f64() * 1000.0),
                None,
            ),
            Decision::Reject(e) => ("reject".into(), None, Vec::new(), None, Some(request_error(py, &e))),
            _ => return Err(PyValueError::new_err("unknown decision")),
        })
    }

    /// The call that drops a waiter's claims.
    fn withdraw(&self, py: Python<'_>, now: f64, waiter: &str, request_json: &str) -> PyResult<Call> {
        self.host().withdraw(now, waiter, request_json).map(parts).map_err(|e| host_error(py, &e))
    }

    /// The call that reports an outcome, or None when there is nothing to tell the store.
    #[pyo3(signature = (now, request, status = None, headers = None, body = None))]
    fn complete(
        &self,
        now: f64,
        request: u64,
        status: Option<u16>,
        headers: Option<Vec<(String, String)>>,
        body: Option<String>,
    ) -> Option<Call> {
        let mut outcome = Outcome::default();
        outcome.status = status;
        outcome.headers = headers.unwrap_or_default();
        outcome.body = body;
        self.host().store_mut().complete(ts(now), RequestId(request), &outcome).map(parts)
    }

    /// The call that releases a reservation early.
    fn release(&self, now: f64, reservation: u64) -> Call {
        parts(self.host().store_mut().release(ts(now), ReservationId(reservation)))
    }

    /// The call that sets a budget to the server's balance.
    #[pyo3(signature = (now, limit, tokens_left, refill_in_ms = None))]
    fn sync_budget(
        &self,
        py: Python<'_>,
        now: f64,
        limit: &str,
        tokens_left: i64,
        refill_in_ms: Option<f64>,
    ) -> PyResult<Call> {
        let refill = refill_in_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        self.host()
            .store_mut()
            .sync_budget(ts(now), limit, tokens_left, refill)
            .map(parts)
            .map_err(|e| request_error(py, &e))
    }

    /// Takes the reply to any other call; True when a released reservation was live.
    fn observe(&self, now: f64, reply: &Bound<'_, PyAny>) -> PyResult<bool> {
        let reply = replies(reply)?;
        self.host().store_mut().observe(ts(now), &reply).map_err(|e| store_error(&e))
    }

    /// The call that reads every limit's shared state.
    /// The free status request that reports the budgets' balance (Keepa's `/token`), made from a
    /// request's URL; None when the config has none.
    fn status_url(&self, url: &str) -> Option<String> {
        self.host().status_url(url)
    }

    fn snapshot_call(&self, now: f64) -> Call {
        parts(self.host().store_mut().snapshot_call(ts(now)))
    }

    /// Every limit's shared state from the snapshot reply: `[(name, used, capacity, reserved,
    /// pause)]`, `pause` being `(until_ms, reason)` in Redis server time while a 429 or a block
    /// pauses the limit, else None.
    #[allow(clippy::type_complexity)]
    fn snapshot(
        &self,
        now: f64,
        reply: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<(String, u64, u64, u64, Option<(f64, &'static str)>)>> {
        let reply = replies(reply)?;
        let s = self.host().store_mut().snapshot(ts(now), &reply).map_err(|e| store_error(&e))?;
        Ok(s.limits
            .into_iter()
            .map(|l| {
                let pause = l.pause.map(|p| (p.until.as_millis_f64(), p.reason));
                (l.name, l.used, l.capacity, l.reserved, pause)
            })
            .collect())
    }
}
