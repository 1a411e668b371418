//! `SharedDriver`: the core's host driver of the shared store ([`host::DriverHost`]), behind two
//! calls: `step` (an input as JSON) and `reply` (a script's reply as the Redis client returns it).
//! Both answer `(result, outputs, timeout, waiting)`, the outputs as tuples. The Python layer
//! (`traffic_control/shared.py`) keeps its timer, its futures or threads, and its Redis and HTTP
//! calls.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use traffic_control_core::driver::{DriverError, Output};
use traffic_control_core::host::{self, DriverHost, HostError, Stepped};
use traffic_control_core::{self as tc, Preset, ReplyValue};

use crate::controller::shadow_config;
use crate::convert::env_pairs;
use crate::errors::{config_error, request_error, store_error};
use crate::types::PyEvent;

/// `(result, outputs, timeout_ms, waiting)`.
type Answer = (Option<u64>, Vec<Py<PyAny>>, Option<f64>, usize);

/// The sans-IO driver of the shared store; see the module docs.
#[pyclass(name = "SharedDriver", module = "traffic_control._traffic_control")]
pub struct PySharedDriver {
    host: std::sync::Mutex<DriverHost>,
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

fn host_error(py: Python<'_>, e: &HostError) -> PyErr {
    match e {
        HostError::Request(e) => request_error(py, e),
        HostError::Store(e) => store_error(py, e),
        HostError::Config(e) => config_error(py, e),
        HostError::Invalid(reason) => PyValueError::new_err(format!("invalid argument: {reason}")),
    }
}

fn output(py: Python<'_>, o: Output) -> PyResult<Py<PyAny>> {
    let t = match o {
        Output::Run { call, store_call } => ("run", call.0, store_call.keys, store_call.args).into_py_any(py)?,
        Output::Go { handle, request, reservations } => {
            ("go", handle.0, request.0, reservations.iter().map(|r| r.0).collect::<Vec<_>>()).into_py_any(py)?
        }
        Output::Fail { handle, error } => {
            let e = match &error {
                DriverError::Request(e) => request_error(py, e),
                DriverError::Store(e) => store_error(py, e),
                _ => PyValueError::new_err(error.to_string()),
            };
            ("fail", handle.0, e.into_value(py)).into_py_any(py)?
        }
        Output::Done { handle, live } => ("done", handle.0, live).into_py_any(py)?,
        Output::GiveUp { handle } => ("giveUp", handle.0, ()).into_py_any(py)?,
        Output::Snapshot { handle, snapshot } => {
            let limits: Vec<_> = snapshot
                .limits
                .into_iter()
                .map(|l| (l.name, l.used, l.capacity, l.reserved, l.pause.map(|p| (p.until.as_millis_f64(), p.reason))))
                .collect();
            ("snapshot", handle.0, limits).into_py_any(py)?
        }
        Output::Metrics { handle, metrics } => {
            ("metrics", handle.0, (metrics.to_json(), metrics.to_prometheus())).into_py_any(py)?
        }
        Output::Status { handle, url } => ("status", handle.0, url).into_py_any(py)?,
        Output::Subscribe { channel } => ("subscribe", channel).into_py_any(py)?,
        Output::Unsubscribe => PyTuple::new(py, ["unsubscribe"])?.into_py_any(py)?,
        Output::Event(e) => ("event", PyEvent::new(*e)).into_py_any(py)?,
        _ => return Err(PyValueError::new_err("unknown output")),
    };
    Ok(t)
}

fn answer(py: Python<'_>, s: Stepped) -> PyResult<Answer> {
    let outputs = s.outputs.into_iter().map(|o| output(py, o)).collect::<PyResult<Vec<_>>>()?;
    Ok((s.result, outputs, s.timeout, s.waiting))
}

#[pymethods]
impl PySharedDriver {
    /// A driver from a config (JSON text) or a preset name (with environment overrides), and the
    /// host's options as JSON.
    #[new]
    #[pyo3(signature = (config, options_json, env = None))]
    fn new(py: Python<'_>, config: &str, options_json: &str, env: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
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
        let host = DriverHost::new(config, options_json).map_err(|e| host_error(py, &e))?;
        Ok(PySharedDriver { host: std::sync::Mutex::new(host) })
    }

    /// Wake-up messages received so far.
    fn wakeups(&self) -> u64 {
        self.host.lock().map_or(0, |mut h| h.driver().wakeups())
    }

    /// The Lua script and its SHA1.
    #[staticmethod]
    fn script() -> (String, String) {
        let [script, sha] = host::script();
        (script, sha)
    }

    /// One input (JSON) at `now` (ms): `(result, outputs, timeout, waiting)`.
    fn step(&self, py: Python<'_>, now: f64, input_json: &str) -> PyResult<Answer> {
        let s = self.lock().step_outputs(now, input_json).map_err(|e| host_error(py, &e))?;
        answer(py, s)
    }

    /// Runs a config in memory beside this driver's traffic as a shadow (read as
    /// `TrafficControl.set_shadow` reads it); `None` stops it. An invalid config raises
    /// `ConfigError` naming the field and leaves the running shadow.
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
        self.lock().driver().set_shadow(tc::Timestamp::from_millis_f64(now), config).map_err(|e| config_error(py, &e))
    }

    /// The shadow's report as JSON text (the core's `ShadowReport`); `None` without a shadow.
    fn shadow_report_json(&self, now: f64) -> Option<String> {
        self.lock().driver().shadow_report(tc::Timestamp::from_millis_f64(now)).map(|r| r.to_json())
    }

    /// A script call's reply, as the Redis client returned it.
    fn reply(&self, py: Python<'_>, now: f64, call: u64, reply: &Bound<'_, PyAny>) -> PyResult<Answer> {
        let values = replies(reply)?;
        let s = self.lock().reply(now, call, &values);
        answer(py, s)
    }
}

impl PySharedDriver {
    fn lock(&self) -> std::sync::MutexGuard<'_, DriverHost> {
        self.host.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
