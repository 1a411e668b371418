//! Errors keep their kind across the boundary: one base class, one subclass per core
//! [`ErrorKind`], each instance carrying the core's stable `code` and the error's details.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{create_exception, PyTypeInfo};
use traffic_control_core::{ConfigError as CoreConfigError, ErrorKind, RequestError};

use crate::convert::ms;

// `create_exception!` expands to public items without docs; the doc comments below are theirs.
create_exception!(
    traffic_control,
    TrafficControlError,
    PyException,
    "Base class of every traffic-control error; `code` is the core's stable code."
);
create_exception!(
    traffic_control,
    ConfigError,
    TrafficControlError,
    "An invalid config: `field` names the offending field, `reason` says what is wrong (code CONFIG)."
);
create_exception!(
    traffic_control,
    NeverSucceedsError,
    TrafficControlError,
    "The request can never go as asked: UNKNOWN_ROUTE, UNKNOWN_LIMIT, COST_EXCEEDS_CAPACITY."
);
create_exception!(
    traffic_control,
    DeadlineError,
    TrafficControlError,
    "The request's deadline passed (DEADLINE_EXCEEDED) or cannot be met (DEADLINE_UNREACHABLE)."
);
create_exception!(
    traffic_control,
    QueueFullError,
    TrafficControlError,
    "The waiting queue holds its configured maximum (QUEUE_FULL)."
);
create_exception!(
    traffic_control,
    InsufficientBudgetError,
    TrafficControlError,
    "Not enough budget within the allowed wait (INSUFFICIENT_BUDGET), or its balance unknown (BUDGET_UNKNOWN)."
);
create_exception!(
    traffic_control,
    RequestCancelledError,
    TrafficControlError,
    "The request was cancelled before it could go (CANCELLED)."
);
create_exception!(
    traffic_control,
    StoreError,
    TrafficControlError,
    "The shared store (Redis) could not answer: STORE_UNAVAILABLE or STORE_REPLY. Never a reason to admit."
);
create_exception!(
    traffic_control,
    StoreUnavailableError,
    StoreError,
    "The shared store was unreachable for longer than the request could wait (STORE_UNAVAILABLE)."
);
create_exception!(
    traffic_control,
    StoreReplyError,
    StoreError,
    "The shared store answered something its script never sends (STORE_REPLY)."
);

/// Class-level defaults, so every class has `code`, `kind` and its details (instances set their
/// own; a detail the error does not carry reads `None`).
pub(crate) fn init_classes(py: Python<'_>) -> PyResult<()> {
    type Class<'py> = (Bound<'py, PyType>, Option<&'static str>, Option<&'static str>, &'static [&'static str]);
    let classes: [Class<'_>; 10] = [
        (TrafficControlError::type_object(py), None, None, &["retry_after"]),
        (ConfigError::type_object(py), Some("CONFIG"), Some("config"), &["field", "reason"]),
        (NeverSucceedsError::type_object(py), None, Some("never_succeeds"), &["route", "limit", "cost", "capacity"]),
        (DeadlineError::type_object(py), None, Some("deadline"), &["deadline", "now", "earliest"]),
        (QueueFullError::type_object(py), Some("QUEUE_FULL"), Some("queue_full"), &["max_waiting"]),
        (
            InsufficientBudgetError::type_object(py),
            None,
            Some("budget"),
            &["limit", "needed", "available", "ahead", "enough_at"],
        ),
        (RequestCancelledError::type_object(py), Some("CANCELLED"), Some("cancelled"), &[]),
        (StoreError::type_object(py), None, Some("store"), &[]),
        (StoreUnavailableError::type_object(py), Some("STORE_UNAVAILABLE"), Some("store"), &[]),
        (StoreReplyError::type_object(py), Some("STORE_REPLY"), Some("store"), &[]),
    ];
    for (class, code, kind, details) in classes {
        class.setattr("code", code)?;
        class.setattr("kind", kind)?;
        for detail in details {
            class.setattr(*detail, py.None())?;
        }
    }
    Ok(())
}

/// A config error as `ConfigError` with `code`, `field` and `reason`.
pub(crate) fn config_error(py: Python<'_>, e: &CoreConfigError) -> PyErr {
    let err = ConfigError::new_err(e.to_string());
    let reason = match e {
        CoreConfigError::Parse { reason, .. } | CoreConfigError::Invalid { reason, .. } => reason.as_str(),
        _ => "",
    };
    let value = err.value(py);
    // Setting an attribute on a fresh exception instance cannot fail short of memory exhaustion.
    let _ = value.setattr("code", e.code());
    let _ = value.setattr("field", e.field());
    let _ = value.setattr("reason", reason);
    err
}

/// A simulator input error: `ConfigError` (code, field, reason) for a config, `ValueError` for the
/// rest (the workload, the server model, the call).
pub(crate) fn sim_error(py: Python<'_>, e: &traffic_control_sim::SimError) -> PyErr {
    if e.code() != "CONFIG" {
        return pyo3::exceptions::PyValueError::new_err(e.to_string());
    }
    let err = ConfigError::new_err(e.to_string());
    let value = err.value(py);
    let _ = value.setattr("code", "CONFIG");
    let _ = value.setattr("field", e.field.as_str());
    let _ = value.setattr("reason", e.reason.as_str());
    err
}

/// A store error as `StoreUnavailableError` or `StoreReplyError`, with its `code`.
pub(crate) fn store_error(py: Python<'_>, e: &traffic_control_core::StoreError) -> PyErr {
    let err = match e {
        traffic_control_core::StoreError::Unavailable { .. } => StoreUnavailableError::new_err(e.to_string()),
        _ => StoreReplyError::new_err(e.to_string()),
    };
    let _ = err.value(py).setattr("code", e.code());
    err
}

/// A request error as the exception of its kind, with `code` and the error's details.
pub(crate) fn request_error(py: Python<'_>, e: &RequestError) -> PyErr {
    if let RequestError::Store { error } = e {
        return store_error(py, error);
    }
    let message = e.to_string();
    let err = match e.kind() {
        ErrorKind::NeverSucceeds => NeverSucceedsError::new_err(message),
        ErrorKind::Deadline => DeadlineError::new_err(message),
        ErrorKind::QueueFull => QueueFullError::new_err(message),
        ErrorKind::Budget => InsufficientBudgetError::new_err(message),
        ErrorKind::Cancelled => RequestCancelledError::new_err(message),
        ErrorKind::Config => ConfigError::new_err(message),
        _ => TrafficControlError::new_err(message),
    };
    let value = err.value(py);
    let _ = value.setattr("code", e.code());
    let details: PyResult<()> = (|| {
        match e {
            RequestError::UnknownRoute { route } => value.setattr("route", route)?,
            RequestError::UnknownLimit { limit } => value.setattr("limit", limit)?,
            RequestError::CostExceedsCapacity { limit, cost, capacity } => {
                value.setattr("limit", limit)?;
                value.setattr("cost", cost)?;
                value.setattr("capacity", capacity)?;
            }
            RequestError::DeadlineExceeded { deadline, now } => {
                value.setattr("deadline", deadline.as_millis_f64())?;
                value.setattr("now", now.as_millis_f64())?;
            }
            RequestError::DeadlineUnreachable { earliest, deadline } => {
                value.setattr("deadline", deadline.as_millis_f64())?;
                value.setattr("earliest", earliest.as_millis_f64())?;
            }
            RequestError::InsufficientBudget { limit, needed, available, ahead, enough_at } => {
                value.setattr("limit", limit)?;
                value.setattr("needed", needed)?;
                value.setattr("available", available)?;
                value.setattr("ahead", ahead)?;
                value.setattr("enough_at", ms(*enough_at))?;
            }
            RequestError::BudgetUnknown { limit } => value.setattr("limit", limit)?,
            RequestError::QueueFull { max_waiting } => value.setattr("max_waiting", max_waiting)?,
            _ => {}
        }
        Ok(())
    })();
    // Setting an attribute on a fresh exception instance cannot fail short of memory exhaustion.
    drop(details);
    err
}

/// A request error raised to a caller waiting at `now` (ms): errors that know when the request
/// could go also get `retry_after`, in seconds from now.
pub(crate) fn request_error_at(py: Python<'_>, e: &RequestError, now: f64) -> PyErr {
    let err = request_error(py, e);
    let at = match e {
        RequestError::InsufficientBudget { enough_at, .. } => *enough_at,
        RequestError::DeadlineUnreachable { earliest, .. } => Some(*earliest),
        _ => None,
    };
    if let Some(at) = at {
        let _ = err.value(py).setattr("retry_after", ((at.as_millis_f64() - now) / 1e3).max(0.0));
    }
    err
}
