//! `traffic_control._traffic_control`: the CPython binding of `traffic-control-core`.
//!
//! Thin: every method extracts its arguments, makes one core call and converts the result. Time
//! crosses the boundary as `f64` milliseconds on the host's monotonic clock
//! (`time.monotonic() * 1000`). The asyncio/thread driver, which owns the one timer, is the pure
//! Python package around this module (`python/traffic_control/`).

mod controller;
mod convert;
mod driver;
mod errors;
mod shared;
mod types;

use pyo3::prelude::*;

/// The sans-IO traffic controller and its values; the asyncio/thread layer lives in
/// `traffic_control`.
#[pymodule]
mod _traffic_control {
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    #[pymodule_export]
    use crate::controller::PyTrafficControl;
    #[pymodule_export]
    use crate::driver::{PyAsyncPermit, PyDone, PyDriver, PySyncPermit};
    #[pymodule_export]
    use crate::errors::{
        ConfigError, DeadlineError, InsufficientBudgetError, NeverSucceedsError, QueueFullError, RequestCancelledError,
        StoreError, StoreReplyError, StoreUnavailableError, TrafficControlError,
    };
    #[pymodule_export]
    use crate::shared::PySharedDriver;
    #[pymodule_export]
    use crate::types::{PyCompletion, PyEvent, PyFollowUp, PyPermit, PyWait};

    /// Whether a host must read a response's body for the core to see what it says about limits
    /// (JSON at any status, short text pages of a 403, 429 or 503): the one rule every host follows.
    #[pyfunction]
    #[pyo3(signature = (status, content_type = None, content_length = None))]
    fn wants_body(status: u16, content_type: Option<&str>, content_length: Option<u64>) -> bool {
        traffic_control_core::Outcome::wants_body(status, content_type, content_length)
    }

    /// The what-if simulator: one JSON document in (configs, workload, server model), one out
    /// (reports, text, and the HTML page when asked). A config it cannot use raises `ConfigError`
    /// (with `field` and `reason`); a workload or server model it cannot use, `ValueError`.
    #[pyfunction]
    fn simulate_json(py: Python<'_>, input: &str) -> PyResult<String> {
        py.detach(|| traffic_control_sim::simulate_json(input)).map_err(|e| crate::errors::sim_error(py, &e))
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        // Name → environment prefix of every preset that ships with the core.
        let presets = PyDict::new(py);
        for p in traffic_control_core::PRESETS {
            presets.set_item(p.name, p.env_prefix)?;
        }
        m.add("PRESETS", presets)?;
        crate::errors::init_classes(py)
    }
}
