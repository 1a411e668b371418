//! The fast path of the host-side driver: `tc.acquire(...)` / `tc.acquire_sync(...)` and their
//! context managers, in native code.
//!
//! Why native: a Python-level `async with` object (a class, `__aenter__`/`__aexit__` coroutines)
//! costs more than aiolimiter's whole acquire before it reaches the core. Here a request that may go
//! at once costs one native call to build it, one `try_acquire` and one `complete`, with no
//! coroutine and no event object (unless someone listens). Everything that waits (the queue, the
//! waiters, the timer thread, listeners) stays in the Python subclass (`traffic_control.TrafficControl`),
//! which these methods call into: `_drain(now)` when events are kept, `_enter_slow(permit, now)` /
//! `_wait_slow_sync(permit, now)` when the request must wait.

use std::time::Instant;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use traffic_control_core::{Completion, Decision, Outcome, Permit, Request, RequestId, Timestamp};

use crate::controller::{outcome_of, request_args, PyTrafficControl};
use crate::convert::ts;
use crate::errors::request_error_at;
use crate::types::{PyCompletion, PyFollowUp, PyPermit};

/// An awaitable that is already done and answers `None` (what `__aexit__` returns: `None` lets
/// exceptions propagate).
#[pyclass(name = "_Done", module = "traffic_control", frozen)]
pub(crate) struct PyDone;

#[pymethods]
impl PyDone {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<Py<PyAny>> {
        None
    }
}

/// The host clock: `time.monotonic()` in milliseconds, read without calling into Python, or the
/// host's own clock function.
enum Clock {
    /// `time.monotonic()` is `CLOCK_MONOTONIC` on Linux (and the platform's monotonic clock
    /// elsewhere), the clock `Instant` reads: one reading of both at start gives the offset, and
    /// every later reading costs no Python call (the fast path reads the clock twice).
    Monotonic { start: Instant, start_ms: f64 },
    /// A clock function given by the host (tests, simulations): seconds.
    Host(Py<PyAny>),
}

/// The base of `traffic_control.TrafficControl`: holds the native controller, the clock and the
/// default timeout, and runs the fast path of `acquire` and `acquire_sync`.
#[pyclass(name = "Driver", module = "traffic_control", subclass, frozen)]
pub(crate) struct PyDriver {
    core: Py<PyTrafficControl>,
    clock: Clock,
    /// Seconds a request may wait by default; `None`: as long as it takes.
    timeout: Option<f64>,
    done: Py<PyDone>,
}

impl PyDriver {
    pub(crate) fn now(&self, py: Python<'_>) -> PyResult<f64> {
        match &self.clock {
            Clock::Monotonic { start, start_ms } => Ok(start_ms + start.elapsed().as_secs_f64() * 1000.0),
            Clock::Host(clock) => Ok(clock.bind(py).call0()?.extract::<f64>()? * 1000.0),
        }
    }

    fn native(&self) -> &PyTrafficControl {
        self.core.get()
    }
}

fn check_timeout(timeout: Option<f64>) -> PyResult<Option<f64>> {
    match timeout {
        Some(t) if t.is_nan() || t < 0.0 => {
            Err(PyValueError::new_err("max_wait: seconds >= 0, or None to wait as long as it takes"))
        }
        t => Ok(t),
    }
}

#[pymethods]
impl PyDriver {
    /// `core`: the native controller; `clock`: seconds on a monotonic clock (default
    /// `time.monotonic`); `timeout`: how long requests may wait by default (seconds).
    #[new]
    #[pyo3(signature = (core, *, clock=None, timeout=None))]
    fn new(
        py: Python<'_>,
        core: Py<PyTrafficControl>,
        clock: Option<Py<PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let clock = match clock {
            Some(c) => Clock::Host(c),
            None => {
                let monotonic = py.import("time")?.getattr("monotonic")?;
                // Read it on both sides of the Instant: the middle is within half a call of it.
                let before = monotonic.call0()?.extract::<f64>()?;
                let start = Instant::now();
                let after = monotonic.call0()?.extract::<f64>()?;
                Clock::Monotonic { start, start_ms: (before + after) * 500.0 }
            }
        };
        Ok(PyDriver { core, clock, timeout: check_timeout(timeout)?, done: Py::new(py, PyDone)? })
    }

    /// The sans-IO controller this one drives. Read from it freely (`snapshot`, `poll_timeout`);
    /// calling its mutating methods directly bypasses the waiting requests' bookkeeping.
    #[getter]
    fn core(&self, py: Python<'_>) -> Py<PyTrafficControl> {
        self.core.clone_ref(py)
    }

    /// How long a request may wait by default, in seconds (`None`: as long as it takes).
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.timeout
    }

    /// Now, in milliseconds on the driver's clock (the `now` every core call gets).
    #[pyo3(name = "now")]
    fn now_ms(&self, py: Python<'_>) -> PyResult<f64> {
        self.now(py)
    }

    /// Waits (asyncio) until the request may go: `async with tc.acquire(url) as permit: ...`, or
    /// `permit = await tc.acquire(url)` (then report it yourself).
    ///
    /// The request takes the limits of the route its `method` (default GET) and `url` match, or of
    /// `route` by name, plus `limits` and the global ones; `cost` defaults to the route's.
    /// `max_wait` (seconds; `timeout` is its former name) bounds the wait: a request that cannot go within it fails at once
    /// (`InsufficientBudgetError`, `DeadlineError`) or when it runs out. `reserve` reserves capacity
    /// for follow-ups in the same admission; `spend` spends a reservation (an id from
    /// `permit.reservations`). Cancelling the waiting task removes the request from the queue.
    #[pyo3(signature = (url=None, *, method=None, route=None, limits=None, cost=None, priority=None, max_wait=None, reserve=None, spend=None, timeout=None, tenant=None, key=None))]
    // One Rust argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn acquire(
        slf: &Bound<'_, Self>,
        url: Option<String>,
        method: Option<String>,
        route: Option<String>,
        limits: Option<Vec<String>>,
        cost: Option<u64>,
        priority: Option<&Bound<'_, PyAny>>,
        max_wait: Option<f64>,
        reserve: Option<Vec<PyRef<'_, PyFollowUp>>>,
        spend: Option<u64>,
        timeout: Option<f64>,
        tenant: Option<String>,
        key: Option<String>,
    ) -> PyResult<PyAsyncPermit> {
        let request =
            request_args(url, method, route, limits, cost, priority, None, reserve, spend, tenant, key)?.into_request();
        let timeout = check_timeout(max_wait.or(timeout))?.or(slf.get().timeout);
        Ok(PyAsyncPermit { ticket: Ticket::new(slf, request, timeout) })
    }

    /// Blocks the calling thread until the request may go (same arguments as `acquire`):
    /// `with tc.acquire_sync(url) as permit: ...`. Safe from any number of threads; the wait
    /// releases the GIL.
    #[pyo3(signature = (url=None, *, method=None, route=None, limits=None, cost=None, priority=None, max_wait=None, reserve=None, spend=None, timeout=None, tenant=None, key=None))]
    // One Rust argument per keyword of the Python signature.
    #[allow(clippy::too_many_arguments)]
    fn acquire_sync(
        slf: &Bound<'_, Self>,
        url: Option<String>,
        method: Option<String>,
        route: Option<String>,
        limits: Option<Vec<String>>,
        cost: Option<u64>,
        priority: Option<&Bound<'_, PyAny>>,
        max_wait: Option<f64>,
        reserve: Option<Vec<PyRef<'_, PyFollowUp>>>,
        spend: Option<u64>,
        timeout: Option<f64>,
        tenant: Option<String>,
        key: Option<String>,
    ) -> PyResult<Py<PySyncPermit>> {
        let py = slf.py();
        let request =
            request_args(url, method, route, limits, cost, priority, None, reserve, spend, tenant, key)?.into_request();
        let timeout = check_timeout(max_wait.or(timeout))?.or(slf.get().timeout);
        let mut ticket = Ticket::new(slf, request, timeout);
        let now = slf.get().now(py)?;
        let go = ticket.try_go(slf, now)?;
        let permit = Py::new(py, PySyncPermit { ticket })?;
        if !go {
            slf.call_method1("_wait_slow_sync", (permit.clone_ref(py), now))?;
        }
        Ok(permit)
    }

    /// Completes a request without a response (an exception left the block: a failure), or as an
    /// end whose outcome is not known (`unreported`: a `with` block left without a report).
    #[pyo3(signature = (request, unreported = false))]
    fn _finish(slf: &Bound<'_, Self>, request: u64, unreported: bool) -> PyResult<Py<PyCompletion>> {
        let py = slf.py();
        let this = slf.get();
        let now = this.now(py)?;
        let outcome = if unreported { Outcome::unreported() } else { Outcome::failed() };
        let (completion, keep) =
            this.native().with_core(py, now, |core| core.complete(ts(now), RequestId(request), outcome));
        if keep {
            slf.call_method1("_drain", (now,))?;
        }
        this.native().completion(py, completion)
    }
}

/// Whether leaving a permit's block ends its request as unreported (no exception, or a cancel:
/// nothing is known of the server) rather than as a request that got no answer.
fn unreported_exit(exc_type: &Bound<'_, PyAny>) -> PyResult<bool> {
    if exc_type.is_none() {
        return Ok(true);
    }
    let cancelled = exc_type.py().import("asyncio")?.getattr("CancelledError")?;
    Ok(exc_type.cast::<pyo3::types::PyType>().is_ok_and(|t| t.is_subclass(&cancelled).unwrap_or(false)))
}

/// What a permit holds once its request may go.
struct Held {
    request: u64,
    reservations: Vec<u64>,
    at: f64,
    key: Option<String>,
}

impl Held {
    fn of(permit: &Permit) -> Self {
        Held {
            request: permit.request.0,
            reservations: permit.reservations.iter().map(|r| r.0).collect(),
            at: permit.at.as_millis_f64(),
            key: permit.key.as_deref().map(str::to_string),
        }
    }
}

/// The state shared by async and sync permits: the request, then what it was granted.
struct Ticket {
    driver: Py<PyDriver>,
    request: Request,
    timeout: Option<f64>,
    held: Option<Held>,
    completion: Option<Py<PyCompletion>>,
}

impl Ticket {
    fn new(driver: &Bound<'_, PyDriver>, request: Request, timeout: Option<f64>) -> Self {
        Ticket { driver: driver.clone().unbind(), request, timeout, held: None, completion: None }
    }

    /// The direct path: `try_acquire` at `now`. True when the request may go (it is then held);
    /// false when it must wait in the queue (the caller hands it to the driver's slow path).
    fn try_go(&mut self, driver: &Bound<'_, PyDriver>, now: f64) -> PyResult<bool> {
        let py = driver.py();
        if let Some(t) = self.timeout {
            self.request.deadline = Some(Timestamp::from_millis_f64(now + t * 1000.0));
        }
        let request = &self.request;
        let (decision, keep) = driver.get().native().with_core(py, now, |core| core.try_acquire(ts(now), request));
        if keep {
            driver.call_method1("_drain", (now,))?;
        }
        match decision {
            Decision::Go(permit) => {
                self.held = Some(Held::of(&permit));
                Ok(true)
            }
            Decision::Wait { .. } => Ok(false),
            Decision::Reject(error) => Err(request_error_at(py, &error, now)),
            _ => Err(PyRuntimeError::new_err("unknown decision")),
        }
    }

    fn held(&self) -> PyResult<&Held> {
        self.held.as_ref().ok_or_else(|| PyRuntimeError::new_err("no permit yet: the request has not been let go"))
    }

    /// Queues the request (the slow path); returns its id. Events are kept from here on, so its go
    /// reaches the driver however soon it comes.
    fn submit(&self, py: Python<'_>, now: f64) -> PyResult<u64> {
        let driver = self.driver.get();
        driver.native().keep_events_now(py);
        let request = &self.request;
        let (result, _) = driver.native().with_core(py, now, |core| core.submit(ts(now), request));
        result.map(|id| id.0).map_err(|e| request_error_at(py, &e, now))
    }

    /// Completes, unless already reported: with no response when an exception left the block,
    /// else as an end whose outcome is not known.
    fn finish(&mut self, py: Python<'_>, unreported: bool) -> PyResult<()> {
        let Some(held) = &self.held else { return Ok(()) };
        if self.completion.is_some() {
            return Ok(());
        }
        let driver = self.driver.bind(py);
        let completion = PyDriver::_finish(driver, held.request, unreported)?;
        self.completion = Some(completion);
        Ok(())
    }

    /// Reports the outcome. A retry is not taken here (the block cannot run again): the request
    /// leaves the queue and the completion says when its limits reopen.
    fn report(
        &mut self,
        py: Python<'_>,
        status: Option<u16>,
        headers: Option<&Bound<'_, PyAny>>,
        body: Option<&Bound<'_, PyAny>>,
        unix_time: Option<f64>,
    ) -> PyResult<Py<PyCompletion>> {
        let request = RequestId(self.held()?.request);
        let outcome = outcome_of(status, headers, body, unix_time)?;
        let driver = self.driver.bind(py);
        let this = driver.get();
        let now = this.now(py)?;
        let (completion, keep) = this.native().with_core(py, now, |core| {
            let completion = core.complete(ts(now), request, outcome);
            if let Completion::Retry { .. } = completion {
                core.cancel(ts(now), request);
            }
            completion
        });
        if keep {
            driver.call_method1("_drain", (now,))?;
        }
        let completion = this.native().completion(py, completion)?;
        self.completion = Some(completion.clone_ref(py));
        Ok(completion)
    }
}

/// The methods both permit kinds share, plus each kind's own (`pyo3` takes one `#[pymethods]`
/// block per class).
macro_rules! permit_methods {
    ($ty:ty, { $($own:tt)* }) => {
        #[pymethods]
        impl $ty {
            $($own)*

            /// The request's id.
            #[getter]
            fn request(&self) -> PyResult<u64> {
                Ok(self.ticket.held()?.request)
            }

            /// The ids of the reservations made for its follow-ups, in the order they were asked:
            /// pass one as `spend=` to the follow-up, or to `release()`.
            #[getter]
            fn reservations(&self) -> PyResult<Vec<u64>> {
                Ok(self.ticket.held()?.reservations.clone())
            }

            /// When it went, milliseconds on the host clock.
            #[getter]
            fn at(&self) -> PyResult<f64> {
                Ok(self.ticket.held()?.at)
            }

            /// The key of a pool it went on (the config's `pools`): send it with that key's
            /// credentials. `None` outside pools.
            #[getter]
            fn key(&self) -> PyResult<Option<String>> {
                Ok(self.ticket.held()?.key.clone())
            }

            /// The core's answer to the reported outcome, once reported.
            #[getter]
            fn completion(&self, py: Python<'_>) -> Option<Py<PyCompletion>> {
                self.ticket.completion.as_ref().map(|c| c.clone_ref(py))
            }

            #[setter]
            fn set_completion(&mut self, completion: Option<Py<PyCompletion>>) {
                self.ticket.completion = completion;
            }

            /// Reports the outcome: the HTTP `status` (`None`: no response came), response
            /// `headers` and `body` (only what carries limit fields is read: `Retry-After`,
            /// `RateLimit`, Keepa's token fields, ...). Returns the core's `Completion`: a
            /// `"retry"` means the server rate limited the request and its limits are paused until
            /// `completion.at` (acquire again to retry; `TrafficControl.run` and the httpx
            /// transports retry for you). Reporting twice answers `"unknown"`.
            #[pyo3(signature = (status=None, headers=None, body=None, *, unix_time=None))]
            fn report(
                &mut self,
                py: Python<'_>,
                status: Option<u16>,
                headers: Option<&Bound<'_, PyAny>>,
                body: Option<&Bound<'_, PyAny>>,
                unix_time: Option<f64>,
            ) -> PyResult<Py<PyCompletion>> {
                self.ticket.report(py, status, headers, body, unix_time)
            }

            /// Queues the request (the driver's slow path); returns its id.
            fn _submit(&self, py: Python<'_>, now: f64) -> PyResult<u64> {
                self.ticket.submit(py, now)
            }

            /// The driver hands over the permit that came out of the queue.
            fn _go(&mut self, permit: PyRef<'_, PyPermit>) {
                self.ticket.held = Some(Held {
                    request: permit.request_id(),
                    reservations: permit.reservation_ids().to_vec(),
                    at: permit.at_ms(),
                    key: permit.key_id().map(str::to_string),
                });
                self.ticket.completion = None;
            }

            fn __repr__(&self) -> String {
                match &self.ticket.held {
                    Some(h) => format!(
                        "<{} request={} reservations={:?} at={}>",
                        stringify!($ty).trim_start_matches("Py"),
                        h.request,
                        h.reservations,
                        h.at
                    ),
                    None => format!("<{} waiting>", stringify!($ty).trim_start_matches("Py")),
                }
            }
        }
    };
}

/// What `TrafficControl.acquire` returns: `async with` it (waits for the permit, reports at exit
/// unless you did) or `await` it (returns itself once the request may go; report it yourself).
#[pyclass(name = "AsyncPermit", module = "traffic_control")]
pub(crate) struct PyAsyncPermit {
    ticket: Ticket,
}

permit_methods!(PyAsyncPermit, {
    fn __aenter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        if this.ticket.held.is_some() {
            return Ok(slf.clone().into_any().unbind());
        }
        let driver = this.ticket.driver.bind(py).clone();
        let now = driver.get().now(py)?;
        if this.ticket.try_go(&driver, now)? {
            // Already done: awaiting it answers itself at once (see `__next__`).
            return Ok(slf.clone().into_any().unbind());
        }
        drop(this);
        Ok(driver.call_method1("_enter_slow", (slf, now))?.unbind())
    }

    fn __aexit__(
        &mut self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyDone>> {
        self.ticket.finish(py, unreported_exit(exc_type)?)?;
        Ok(self.ticket.driver.get().done.clone_ref(py))
    }

    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let awaitable = PyAsyncPermit::__aenter__(slf)?;
        let awaitable = awaitable.bind(slf.py());
        if awaitable.is(slf) {
            return Ok(awaitable.clone().unbind());
        }
        Ok(awaitable.call_method0("__await__")?.unbind())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Awaiting a permit that is held answers the permit itself, at once.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        Err(PyStopIteration::new_err(slf.clone().into_py_any(slf.py())?))
    }
});

/// What `TrafficControl.acquire_sync` returns once the request may go; `with` it to report at exit
/// (no response when an exception leaves the block; else, unless you reported, an end whose outcome
/// is not known: breakers do not judge it).
#[pyclass(name = "SyncPermit", module = "traffic_control")]
pub(crate) struct PySyncPermit {
    ticket: Ticket,
}

permit_methods!(PySyncPermit, {
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.ticket.finish(py, unreported_exit(exc_type)?)
    }
});
