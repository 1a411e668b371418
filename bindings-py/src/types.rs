//! The values that cross the boundary: permits, decisions to wait, completions, follow-ups and
//! events. Immutable (`frozen`): safe to share between threads.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use traffic_control_core::{Completion, Event, EventKind, FollowUp, Permit};

use crate::convert::{aim, Aim};
use crate::errors::request_error;

/// The right to send one request now. Report its outcome with `complete(now, permit.request, ...)`.
#[pyclass(name = "Permit", module = "traffic_control", frozen)]
pub(crate) struct PyPermit {
    /// The admitted request's id.
    #[pyo3(get)]
    request: u64,
    /// The ids of the reservations made for its follow-ups, in the order they were asked.
    #[pyo3(get)]
    reservations: Vec<u64>,
    /// When it was admitted, milliseconds on the host clock.
    #[pyo3(get)]
    at: f64,
    /// The key of a pool it was admitted on (the config's `pools`): send it with that key's
    /// credentials. `None` outside pools.
    #[pyo3(get)]
    key: Option<String>,
}

impl PyPermit {
    pub(crate) fn new(permit: &Permit) -> Self {
        PyPermit {
            request: permit.request.0,
            reservations: permit.reservations.iter().map(|r| r.0).collect(),
            at: permit.at.as_millis_f64(),
            key: permit.key.as_deref().map(str::to_string),
        }
    }

    pub(crate) fn key_id(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.request
    }

    pub(crate) fn reservation_ids(&self) -> &[u64] {
        &self.reservations
    }

    pub(crate) fn at_ms(&self) -> f64 {
        self.at
    }
}

#[pymethods]
impl PyPermit {
    fn __repr__(&self) -> String {
        format!("Permit(request={}, reservations={:?}, at={})", self.request, self.reservations, self.at)
    }
}

/// `try_acquire`'s answer when the request may not go now: ask again at `until`.
#[pyclass(name = "Wait", module = "traffic_control", frozen)]
pub(crate) struct PyWait {
    /// The earliest instant (ms) worth asking again; `None` when only a completion or a cancel can
    /// make room.
    #[pyo3(get)]
    until: Option<f64>,
}

impl PyWait {
    pub(crate) fn new(until: Option<f64>) -> Self {
        PyWait { until }
    }
}

#[pymethods]
impl PyWait {
    fn __repr__(&self) -> String {
        format!("Wait(until={})", self.until.map_or("None".to_owned(), |u| u.to_string()))
    }
}

/// What to do after `complete`: `kind` is `"done"`, `"retry"` (the request is queued again; its
/// go comes no earlier than `at`), `"give_up"` (rate limited, retries spent) or `"unknown"` (the
/// request was not in flight).
#[pyclass(name = "Completion", module = "traffic_control", frozen)]
pub(crate) struct PyCompletion {
    /// `"done"`, `"retry"`, `"give_up"` or `"unknown"`.
    #[pyo3(get)]
    kind: &'static str,
    /// For a retry: the earliest instant (ms) it may go again.
    #[pyo3(get)]
    at: Option<f64>,
}

impl PyCompletion {
    pub(crate) fn new(completion: Completion) -> Self {
        let (kind, at) = match completion {
            Completion::Done => ("done", None),
            Completion::Retry { at } => ("retry", Some(at.as_millis_f64())),
            Completion::GiveUp => ("give_up", None),
            Completion::Unknown => ("unknown", None),
            _ => ("unknown", None),
        };
        PyCompletion { kind, at }
    }
}

#[pymethods]
impl PyCompletion {
    fn __repr__(&self) -> String {
        match self.at {
            Some(at) => format!("Completion({:?}, at={at})", self.kind),
            None => format!("Completion({:?})", self.kind),
        }
    }
}

/// A follow-up whose capacity a request reserves in its own admission (the Dip reserves the Peak).
#[pyclass(name = "FollowUp", module = "traffic_control", frozen)]
pub(crate) struct PyFollowUp {
    pub(crate) inner: FollowUp,
}

#[pymethods]
impl PyFollowUp {
    /// `FollowUp(url, method="GET")`, `FollowUp(route=name)` or `FollowUp(limits=[...])`; `cost`
    /// defaults to the route's; `ttl_ms` to the config's `reservation_ttl`.
    #[new]
    #[pyo3(signature = (url=None, *, method=None, route=None, limits=None, cost=None, ttl_ms=None))]
    fn new(
        url: Option<String>,
        method: Option<String>,
        route: Option<String>,
        limits: Option<Vec<String>>,
        cost: Option<u64>,
        ttl_ms: Option<f64>,
    ) -> PyResult<Self> {
        let mut inner = match aim(url, method, route)? {
            Aim::Http(method, url) => FollowUp::http(method, url),
            Aim::Route(route) => FollowUp::route(route),
            Aim::None => FollowUp::default(),
        };
        if let Some(limits) = limits {
            inner.limits = limits;
        }
        inner.cost = cost;
        if let Some(ttl) = ttl_ms {
            if !(ttl.is_finite() && ttl >= 0.0) {
                return Err(pyo3::exceptions::PyValueError::new_err("ttl_ms: a finite number of milliseconds >= 0"));
            }
            inner.ttl = Some(Duration::from_secs_f64(ttl / 1e3));
        }
        Ok(PyFollowUp { inner })
    }

    fn __repr__(&self) -> String {
        format!("FollowUp({:?})", self.inner)
    }
}

/// Something that happened: every step of a request's life. `type` is the `status` column of the
/// `rate_limit_logs` table; `log()` is the whole row.
#[pyclass(name = "Event", module = "traffic_control", frozen)]
pub(crate) struct PyEvent {
    inner: Event,
}

impl PyEvent {
    pub(crate) fn new(inner: Event) -> Self {
        PyEvent { inner }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[pymethods]
impl PyEvent {
    /// `queued`, `go`, `completed`, `rate_limited`, `retried`, `rejected`, `expired`, `cancelled`,
    /// `lease_expired`, `reservation_expired` or `reservation_released`.
    #[getter]
    fn r#type(&self) -> &'static str {
        self.inner.status()
    }

    /// The request it is about (for reservation events: the request that made the reservation).
    #[getter]
    fn request(&self) -> u64 {
        self.inner.request.0
    }

    /// When it happened, ms on the host clock.
    #[getter]
    fn at(&self) -> f64 {
        self.inner.at.as_millis_f64()
    }

    /// `METHOD /path` without the query string (or with its values redacted), the route name for
    /// requests by route, `-` for neither.
    #[getter]
    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    /// The route matched, if any.
    #[getter]
    fn route(&self) -> Option<&str> {
        self.inner.route()
    }

    /// `critical`, `high`, `normal` or `low`.
    #[getter]
    fn priority(&self) -> &'static str {
        self.inner.priority.as_str()
    }

    /// For `go`: the permit.
    #[getter]
    fn permit(&self) -> Option<PyPermit> {
        match &self.inner.kind {
            EventKind::Go { permit, .. } => Some(PyPermit::new(permit)),
            _ => None,
        }
    }

    /// For `go`: ms from submit to go.
    #[getter]
    fn waited(&self) -> Option<f64> {
        match &self.inner.kind {
            EventKind::Go { waited, .. } => Some(millis(*waited)),
            _ => None,
        }
    }

    /// For `completed` and `rate_limited`: the HTTP status reported (`None`: no response).
    #[getter]
    fn status(&self) -> Option<u16> {
        match &self.inner.kind {
            EventKind::Completed { status, .. } | EventKind::RateLimited { status, .. } => *status,
            _ => None,
        }
    }

    /// For `completed`: ms from go to completion.
    #[getter]
    fn duration(&self) -> Option<f64> {
        match &self.inner.kind {
            EventKind::Completed { duration, .. } => Some(millis(*duration)),
            _ => None,
        }
    }

    /// For `rate_limited`: the instant (ms) the request's limits are paused until; for
    /// `breaker_opened`: the instant it half-opens.
    #[getter]
    fn until(&self) -> Option<f64> {
        match &self.inner.kind {
            EventKind::RateLimited { until, .. } | EventKind::BreakerOpened { until, .. } => {
                Some(until.as_millis_f64())
            }
            _ => None,
        }
    }

    /// For `retried`: 1 for the first retry.
    #[getter]
    fn attempt(&self) -> Option<u32> {
        match &self.inner.kind {
            EventKind::Retried { attempt, .. } => Some(*attempt),
            _ => None,
        }
    }

    /// For `retried`: the earliest instant (ms) the retry may go.
    #[getter]
    fn retry_at(&self) -> Option<f64> {
        match &self.inner.kind {
            EventKind::Retried { at, .. } => Some(at.as_millis_f64()),
            _ => None,
        }
    }

    /// For `lease_expired`: ms from go to the lease's expiry.
    #[getter]
    fn held(&self) -> Option<f64> {
        match &self.inner.kind {
            EventKind::LeaseExpired { held } => Some(millis(*held)),
            _ => None,
        }
    }

    /// For `reservation_expired` and `reservation_released`: the reservation's id.
    #[getter]
    fn reservation(&self) -> Option<u64> {
        match &self.inner.kind {
            EventKind::ReservationExpired { reservation } | EventKind::ReservationReleased { reservation } => {
                Some(reservation.0)
            }
            _ => None,
        }
    }

    /// For `limit_lowered`: the window; for `budget_low`: the budget; for `breaker_*`: the breaker.
    #[getter]
    fn limit(&self) -> Option<&str> {
        match &self.inner.kind {
            EventKind::LimitLowered { limit, .. }
            | EventKind::BudgetLow { limit, .. }
            | EventKind::BreakerOpened { limit, .. }
            | EventKind::BreakerHalfOpen { limit }
            | EventKind::BreakerClosed { limit } => Some(limit),
            _ => None,
        }
    }

    /// For `budget_low`: the balance left after the request's estimated cost.
    #[getter]
    fn balance(&self) -> Option<i64> {
        match &self.inner.kind {
            EventKind::BudgetLow { balance, .. } => Some(*balance),
            _ => None,
        }
    }

    /// For `budget_low`: the request's estimated cost.
    #[getter]
    fn cost(&self) -> Option<u64> {
        match &self.inner.kind {
            EventKind::BudgetLow { cost, .. } => Some(*cost),
            _ => None,
        }
    }

    /// For `budget_low`: `cost_over_half` or `below_warning`; for `breaker_opened`: `failures`,
    /// `auth`, `rate_limited` or `probe_failed`.
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        match &self.inner.kind {
            EventKind::BudgetLow { reason, .. } | EventKind::BreakerOpened { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// For `limit_lowered`: its max from now on (the server's quota).
    #[getter]
    fn max(&self) -> Option<u64> {
        match &self.inner.kind {
            EventKind::LimitLowered { to, .. } => Some(*to),
            _ => None,
        }
    }

    /// For `limit_lowered`: the max it had.
    #[getter]
    fn previous(&self) -> Option<u64> {
        match &self.inner.kind {
            EventKind::LimitLowered { from, .. } => Some(*from),
            _ => None,
        }
    }

    /// For `completed` and `rate_limited`: the HTTP status (the log row's name for `status`).
    #[getter]
    fn response_status(&self) -> Option<u16> {
        match &self.inner.kind {
            EventKind::Completed { status, .. } | EventKind::RateLimited { status, .. } => *status,
            _ => None,
        }
    }

    /// For `rejected` and `expired`: the error code.
    #[getter]
    fn code(&self) -> Option<&'static str> {
        match &self.inner.kind {
            EventKind::Rejected { error } | EventKind::Expired { error } => Some(error.code()),
            _ => None,
        }
    }

    /// For `rejected` and `expired`: the error, as the exception a waiting caller gets.
    #[getter]
    fn error(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match &self.inner.kind {
            EventKind::Rejected { error } | EventKind::Expired { error } => {
                Some(request_error(py, error).into_value(py).into_any())
            }
            _ => None,
        }
    }

    /// The event as one row of the `rate_limit_logs` table: `timestamp_ms`, `request_id`,
    /// `endpoint`, `route`, `priority`, `status`, `response_status`, `duration_ms`, `error`.
    fn log<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let row = self.inner.log();
        let d = PyDict::new(py);
        d.set_item("timestamp_ms", row.timestamp_ms)?;
        d.set_item("request_id", row.request_id)?;
        d.set_item("endpoint", row.endpoint)?;
        d.set_item("route", row.route)?;
        d.set_item("priority", row.priority)?;
        d.set_item("status", row.status)?;
        d.set_item("response_status", row.response_status)?;
        d.set_item("duration_ms", row.duration_ms)?;
        d.set_item("error", row.error)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Event({}, request={}, at={}, endpoint={:?})",
            self.inner.status(),
            self.inner.request.0,
            self.inner.at.as_millis_f64(),
            self.inner.endpoint()
        )
    }
}
