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
