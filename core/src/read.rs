//! Reading configs and requests from JSON values, with errors that name the field
//! (`routes[1].limits[0]`) and the reason.
//!
//! Written here rather than derived with serde: the derived deserializers, instantiated for each
//! input and wrapped by `serde_path_to_error` for the field paths, were about a fifth of the wasm
//! module (its budget is 150 KB gzipped). JSON text is parsed once into a [`Value`] by serde_json;
//! this module walks the value, and builds a field's path only when it reports an error. The
//! messages keep serde's wording (`invalid type: string "3", expected u64`, `unknown field ...`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// Why a value could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadError {
    /// The field's path (`limits.api.per`); `.` for the whole value.
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) reason: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

pub(crate) type Read<T> = Result<T, ReadError>;

/// Where a value sits, as a chain of keys and indexes from the root: nothing is allocated unless
/// an error needs the path.
#[derive(Clone, Copy)]
pub(crate) enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl<'a> At<'a> {
    pub(crate) fn key(&'a self, key: &'a str) -> At<'a> {
        At::Key(self, key)
    }

    pub(crate) fn index(&'a self, i: usize) -> At<'a> {
        At::Index(self, i)
    }

    /// An error at this path.
    pub(crate) fn error(&self, reason: impl Into<String>) -> ReadError {
        let mut field = String::new();
        self.write(&mut field);
        if field.is_empty() {
            field.push('.');
        }
        ReadError { field, reason: reason.into() }
    }

    fn write(&self, out: &mut String) {
        match self {
            At::Root => {}
            At::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            At::Index(parent, i) => {
                parent.write(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }

    /// `invalid type: <what the value is>, expected <expected>` (serde's wording).
    pub(crate) fn invalid_type(&self, value: &Value, expected: &str) -> ReadError {
        let found = match value {
            Value::Null => "null".to_string(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
            Value::Number(n) => format!("integer `{n}`"),
            Value::String(s) => format!("string {s:?}"),
            Value::Array(_) => "sequence".to_string(),
            Value::Object(_) => "map".to_string(),
        };
        self.error(format!("invalid type: {found}, expected {expected}"))
    }
}

/// `` `a` ``, `` `a` or `b` ``, `` one of `a`, `b`, `c` `` (serde's wording).
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        1 => quoted[0].clone(),
        2 => format!("{} or {}", quoted[0], quoted[1]),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

/// The fields of an object, every one of them among `allowed`.
pub(crate) struct Fields<'v, 'a> {
    at: &'a At<'a>,
    map: &'v Map<String, Value>,
}

/// Reads `value` as an object whose fields are all in `allowed`; `what` names it in errors.
pub(crate) fn object<'v, 'a>(at: &'a At<'a>, value: &'v Value, what: &str, allowed: &[&str]) -> Read<Fields<'v, 'a>> {
    let Value::Object(map) = value else { return Err(at.invalid_type(value, what)) };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(at.key(key).error(format!("unknown field `{key}`, expected {}", one_of(allowed))));
    }
    Ok(Fields { at, map })
}

impl<'v, 'a> Fields<'v, 'a> {
    /// The path of field `key`.
    pub(crate) fn at(&self, key: &'a str) -> At<'a> {
        At::Key(self.at, key)
    }

    /// Optional field `key`: absent or `null` is `None`.
    pub(crate) fn opt<T>(&self, key: &'a str, read: fn(&At<'_>, &Value) -> Read<T>) -> Read<Option<T>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => read(&self.at(key), v).map(Some),
        }
    }

    /// Field `key`, `default` when absent.
    pub(crate) fn or<T>(
        &self,
        key: &'a str,
        read: fn(&At<'_>, &Value) -> Read<T>,
        default: impl FnOnce() -> T,
    ) -> Read<T> {
        match self.map.get(key) {
            None => Ok(default()),
            Some(v) => read(&self.at(key), v),
        }
    }

    /// Duration field `key`, or `key_ms`: the same duration as a number of milliseconds, as
    /// `config` gives it back beside the text. Both present must agree (within a microsecond).
    pub(crate) fn duration(&self, key: &'a str, key_ms: &'a str) -> Read<Option<Duration>> {
        // The text field as before: present means a duration (`null` is no duration).
        let text = match self.map.get(key) {
            None => None,
            Some(v) => Some(duration_at(&self.at(key), v)?),
        };
        let ms = self.opt(key_ms, millis_at)?;
        match (text, ms) {
            (Some(t), Some(m)) if t.abs_diff(m) > Duration::from_micros(1) => Err(self.at(key_ms).error(format!(
                "{} disagrees with `{key}` ({}): give one of them, or both alike",
                humantime::format_duration(m),
                humantime::format_duration(t)
            ))),
            (t, m) => Ok(t.or(m)),
        }
    }

    /// Required field `key`.
    pub(crate) fn req<T>(&self, key: &'a str, read: fn(&At<'_>, &Value) -> Read<T>) -> Read<T> {
        match self.map.get(key) {
            None => Err(self.at.error(format!("missing field `{key}`"))),
            Some(v) => read(&self.at(key), v),
        }
    }
}

/// An unsigned integer no larger than `max` (`name` is its Rust type, for serde's wording).
fn unsigned(at: &At<'_>, value: &Value, max: u64, name: &str) -> Read<u64> {
    match value {
        Value::Number(n) if !n.is_f64() => match n.as_u64() {
            Some(u) if u <= max => Ok(u),
            _ => Err(at.error(format!("invalid value: integer `{n}`, expected {name}"))),
        },
        _ => Err(at.invalid_type(value, name)),
    }
}

pub(crate) fn u64_at(at: &At<'_>, value: &Value) -> Read<u64> {
    unsigned(at, value, u64::MAX, "u64")
}

pub(crate) fn u32_at(at: &At<'_>, value: &Value) -> Read<u32> {
    unsigned(at, value, u32::MAX.into(), "u32").map(|u| u as u32)
}

pub(crate) fn usize_at(at: &At<'_>, value: &Value) -> Read<usize> {
    unsigned(at, value, usize::MAX as u64, "usize").map(|u| u as usize)
}

pub(crate) fn f64_at(at: &At<'_>, value: &Value) -> Read<f64> {
    value.as_f64().ok_or_else(|| at.invalid_type(value, "f64"))
}

pub(crate) fn string_at(at: &At<'_>, value: &Value) -> Read<String> {
    value.as_str().map(str::to_string).ok_or_else(|| at.invalid_type(value, "a string"))
}

pub(crate) fn strings_at(at: &At<'_>, value: &Value) -> Read<Vec<String>> {
    list_at(at, value, string_at)
}

/// A duration as a number of milliseconds only (the `_ms` fields).
pub(crate) fn millis_at(at: &At<'_>, value: &Value) -> Read<Duration> {
    match value {
        Value::Number(_) => duration_at(at, value),
        _ => Err(at.invalid_type(value, "a number of milliseconds")),
    }
}

/// A duration: a humantime string (`"10s"`, `"1m 30s"`, `"250ms"`) or a number of milliseconds.
pub(crate) fn duration_at(at: &At<'_>, value: &Value) -> Read<Duration> {
    match value {
        Value::Number(n) => {
            if let Some(ms) = n.as_u64() {
                Ok(Duration::from_millis(ms))
            } else if n.is_i64() {
                Err(at.error("a duration cannot be negative"))
            } else {
                // try_from: a number too large for a Duration is an error, not a panic (found by fuzzing).
                n.as_f64()
                    .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .ok_or_else(|| at.error("a duration must be a finite, non-negative number of milliseconds"))
            }
        }
        Value::String(s) => humantime::parse_duration(s).map_err(|e| at.error(format!("{s:?} is not a duration: {e}"))),
        _ => Err(at.invalid_type(value, "a duration such as \"10s\" or a number of milliseconds")),
    }
}

/// An array, each item read by `read`.
pub(crate) fn list_at<T>(at: &At<'_>, value: &Value, read: fn(&At<'_>, &Value) -> Read<T>) -> Read<Vec<T>> {
    let Value::Array(items) = value else { return Err(at.invalid_type(value, "a sequence")) };
    items.iter().enumerate().map(|(i, v)| read(&at.index(i), v)).collect()
}

/// An object used as a map, each value read by `read`.
pub(crate) fn map_at<T>(at: &At<'_>, value: &Value, read: fn(&At<'_>, &Value) -> Read<T>) -> Read<BTreeMap<String, T>> {
    let Value::Object(map) = value else { return Err(at.invalid_type(value, "a map")) };
    // Inserted one by one: collecting would sort first, with a sort instantiated per map type.
    let mut out = BTreeMap::new();
    for (k, v) in map {
        out.insert(k.clone(), read(&at.key(k), v)?);
    }
    Ok(out)
}

/// One of `names` (an enum's variants written as strings); its index.
pub(crate) fn variant_at(at: &At<'_>, value: &Value, names: &[&str], what: &str) -> Read<usize> {
    let Some(s) = value.as_str() else { return Err(at.invalid_type(value, what)) };
    variant_of(at, s, names)
}

/// [`variant_at`] for a name already in hand (an externally tagged enum's key).
pub(crate) fn variant_of(at: &At<'_>, name: &str, names: &[&str]) -> Read<usize> {
    names
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| at.error(format!("unknown variant `{name}`, expected {}", one_of(names))))
}

/// Reads a whole value with `read`, from the root.
pub(crate) fn root<T>(value: &Value, read: fn(&At<'_>, &Value) -> Read<T>) -> Read<T> {
    read(&At::Root, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_wording() {
        let e = root(&json!({"a": [1, "x"]}), |at, v| {
            let f = object(at, v, "an object", &["a"])?;
            f.req("a", |at, v| list_at(at, v, u64_at))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "a[1]: invalid type: string \"x\", expected u64");
        let e = root(&json!({"b": 1}), |at, v| object(at, v, "an object", &["a", "c"]).map(|_| ())).unwrap_err();
        assert_eq!(e.to_string(), "b: unknown field `b`, expected `a` or `c`");
        let e = root(&json!(-1), u64_at).unwrap_err();
        assert_eq!(e.to_string(), "invalid value: integer `-1`, expected u64");
        let e = root(&json!(5_000_000_000u64), u32_at).unwrap_err();
        assert_eq!(e.to_string(), "invalid value: integer `5000000000`, expected u32");
        let e = root(&json!(1.5), u64_at).unwrap_err();
        assert_eq!(e.to_string(), "invalid type: floating point `1.5`, expected u64");
        assert_eq!(root(&json!(1.5), duration_at).unwrap(), Duration::from_micros(1500));
        assert_eq!(root(&json!("1m 30s"), duration_at).unwrap(), Duration::from_secs(90));
        assert!(root(&json!(-3), duration_at).unwrap_err().reason.contains("negative"));
        assert!(root(&json!(1e300), duration_at).unwrap_err().reason.contains("finite"));
        let e = root(&json!("c"), |at, v| variant_at(at, v, &["a", "b", "d"], "a letter")).unwrap_err();
        assert_eq!(e.to_string(), "unknown variant `c`, expected one of `a`, `b`, `d`");
    }
}
