//! Conversions at the boundary: time as `f64` milliseconds, configs as plain Python data,
//! priorities as ints or names, requests from keyword arguments.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use serde_json::{Map, Number, Value};
use traffic_control_core::{FollowUp, Priority, Request, ReservationId, Timestamp};

/// An instant in milliseconds on the host clock.
pub(crate) fn ts(millis: f64) -> Timestamp {
    Timestamp::from_millis_f64(millis)
}

/// An optional instant as milliseconds.
pub(crate) fn ms(t: Option<Timestamp>) -> Option<f64> {
    t.map(Timestamp::as_millis_f64)
}

/// Plain Python data (dict, list, str, int, float, bool, None) as JSON, for configs.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>, path: &mut String) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: True is an int in Python.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyValueError::new_err(format!("invalid config at {}: integer out of range", at(path))));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let n = Number::from_f64(f.value())
            .ok_or_else(|| PyValueError::new_err(format!("invalid config at {}: not a finite number", at(path))))?;
        return Ok(Value::Number(n));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.extract::<String>()?));
    }
    if let Ok(d) = obj.cast::<PyMapping>() {
        let mut map = Map::new();
        for item in d.items()?.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            let key: String = k.extract().map_err(|_| {
                PyTypeError::new_err(format!("invalid config at {}: keys must be strings, not {k:?}", at(path)))
            })?;
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
            let value = to_value(&v, path)?;
            path.truncate(len);
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut list = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            list.push(to_value(&item?, path)?);
            path.truncate(len);
        }
        return Ok(Value::Array(list));
    }
    Err(PyTypeError::new_err(format!(
        "invalid config at {}: expected dict, list, str, int, float, bool or None, not {}",
        at(path),
        obj.get_type().name()?
    )))
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

/// JSON as plain Python data.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)?
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)?
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?
            }
        }
        Value::String(s) => s.into_bound_py_any(py)?,
        Value::Array(a) => PyList::new(py, a.iter().map(|v| to_py(py, v)).collect::<PyResult<Vec<_>>>()?)?.into_any(),
        Value::Object(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(k, to_py(py, v)?)?;
            }
            d.into_any()
        }
    })
}

/// A priority from `Priority.HIGH` (an int: 0 critical … 3 low) or a name (`"high"`, any case).
pub(crate) fn priority(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Priority> {
    let Some(obj) = obj else { return Ok(Priority::Normal) };
    if let Ok(level) = obj.extract::<i64>() {
        return usize::try_from(level).ok().and_then(|i| Priority::ALL.get(i).copied()).ok_or_else(|| {
            PyValueError::new_err(format!("priority {level}: use Priority.CRITICAL (0), HIGH, NORMAL or LOW (3)"))
        });
    }
    if let Ok(name) = obj.extract::<String>() {
        return Priority::parse(&name).ok_or_else(|| {
            PyValueError::new_err(format!("priority {name:?}: use \"critical\", \"high\", \"normal\" or \"low\""))
        });
    }
    Err(PyTypeError::new_err("priority: a Priority, an int 0..3 or a name such as \"high\""))
}

/// An environment mapping (`os.environ` or any `Mapping[str, str]`) as pairs.
pub(crate) fn env_pairs(env: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let mapping = env.cast::<PyMapping>().map_err(|_| PyTypeError::new_err("env: a mapping of str to str"))?;
    let mut pairs = Vec::new();
    for item in mapping.items()?.iter() {
        let (k, v): (String, String) =
            item.extract().map_err(|_| PyTypeError::new_err("env: a mapping of str to str"))?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// What a request targets, from `url` (+ `method`) or `route`.
pub(crate) enum Aim {
    Http(String, String),
    Route(String),
    None,
}

pub(crate) fn aim(url: Option<String>, method: Option<String>, route: Option<String>) -> PyResult<Aim> {
    match (url, method, route) {
        (Some(url), method, None) => Ok(Aim::Http(method.unwrap_or_else(|| "GET".to_owned()), url)),
        (None, None, Some(route)) => Ok(Aim::Route(route)),
        (None, None, None) => Ok(Aim::None),
        (None, Some(_), _) => Err(PyValueError::new_err("method needs a url")),
        (Some(_), _, Some(_)) => Err(PyValueError::new_err("give a url (and method) or a route, not both")),
    }
}

/// The fields of a request, as the keyword arguments of `try_acquire` and `submit` give them.
pub(crate) struct RequestArgs {
    pub(crate) aim: Aim,
    pub(crate) limits: Option<Vec<String>>,
    pub(crate) cost: Option<u64>,
    pub(crate) priority: Priority,
    pub(crate) deadline: Option<f64>,
    pub(crate) reserve: Vec<FollowUp>,
    pub(crate) spend: Option<u64>,
    pub(crate) tenant: Option<String>,
    pub(crate) key: Option<String>,
}

impl RequestArgs {
    pub(crate) fn into_request(self) -> Request {
        let mut request = match self.aim {
            Aim::Http(method, url) => Request::http(method, url),
            Aim::Route(route) => Request::route(route),
            Aim::None => Request::default(),
        };
        if let Some(limits) = self.limits {
            request.limits = limits;
        }
        request.cost = self.cost;
        request.priority = self.priority;
        request.deadline = self.deadline.map(ts);
        request.reserve = self.reserve;
        request.spend = self.spend.map(ReservationId);
        request.tenant = self.tenant;
        request.key = self.key;
        request
    }
}
