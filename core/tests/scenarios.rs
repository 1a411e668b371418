//! Replays the shared scenario files in `tests/scenarios/*.json` (format: `tests/README.md`).
//!
//! The same files are replayed by the Node/Bun, Python and wasm bindings; every replayer must reach
//! the same decisions. A failure names the file, the step index and the difference.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use traffic_control_core::{
    Completion, Config, Decision, Event, EventKind, Outcome, Permit, Request, RequestId, ReservationId, Snapshot,
    Timestamp, TrafficControl,
};

type Res<T> = Result<T, String>;

/// Keys whose values are times or durations in milliseconds: compared as whole nanoseconds.
const TIME_KEYS: &[&str] = &["at", "until", "waited", "duration", "held", "next_free", "retry_at"];

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files in {}", dir.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy();
            replay_file(path).err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

fn replay_file(path: &Path) -> Res<()> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let scenario: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = scenario.as_object().ok_or("a scenario must be an object")?;
    allow_keys(obj, &["name", "description", "config", "steps"], "scenario")?;
    obj.get("name").and_then(Value::as_str).ok_or("scenario: \"name\" (a string) is required")?;
    let config = obj.get("config").ok_or("scenario: \"config\" is required")?;
    let config = Config::from_value(config.clone()).map_err(|e| format!("config: {e}"))?;
    let steps = obj.get("steps").and_then(Value::as_array).ok_or("scenario: \"steps\" (an array) is required")?;
    let mut replay = Replay {
        tc: TrafficControl::new(config).map_err(|e| format!("config: {e}"))?,
        ids: HashMap::new(),
        labels: HashMap::new(),
        reservations: HashMap::new(),
        reservation_names: HashMap::new(),
        last_at: 0.0,
    };
    for (i, step) in steps.iter().enumerate() {
        replay.step(step).map_err(|e| format!("step {i} {}: {e}", short(step)))?;
    }
    Ok(())
}

/// The scenario's friendly request shape → the core's `Request`, through the core's serde shape.
/// `reservations` maps `"<label>#<index>"` to the reservation ids seen in permits.
fn to_request(friendly: &Value, reservations: &HashMap<String, ReservationId>) -> Res<Request> {
    const KEYS: &[&str] =
        &["method", "url", "route", "limits", "cost", "priority", "deadline", "reserve", "spend", "key", "tenant"];
    let mut core = with_target(friendly, KEYS)?;
    if let Some(deadline) = core.remove("deadline") {
        let ms = deadline.as_f64().ok_or("request.deadline must be a number of milliseconds")?;
        core.insert("deadline".into(), json!(Timestamp::from_millis_f64(ms).as_nanos()));
    }
    if let Some(spend) = core.remove("spend") {
        let name = spend.as_str().ok_or("request.spend must be a \"<label>#<index>\" string")?;
        let id = reservations.get(name).ok_or_else(|| format!("request.spend: no permit has shown {name:?}"))?;
        core.insert("spend".into(), json!(id.0));
    }
    if let Some(reserve) = core.remove("reserve") {
        let list = reserve.as_array().ok_or("request.reserve must be an array")?;
        // A follow-up's `ttl` is already what the core reads: a number of milliseconds.
        let keys = &["method", "url", "route", "limits", "cost", "ttl"];
        let list: Vec<Value> = list.iter().map(|f| with_target(f, keys).map(Value::Object)).collect::<Res<_>>()?;
        core.insert("reserve".into(), Value::Array(list));
    }
    serde_json::from_value(Value::Object(core)).map_err(|e| format!("request {friendly}: {e}"))
}

/// `method` + `url` → `{"http": {...}}`, `route` → `{"route": name}`, neither → `"none"`.
fn with_target(friendly: &Value, keys: &[&str]) -> Res<Map<String, Value>> {
    let mut m = friendly.as_object().ok_or("a request must be an object")?.clone();
    allow_keys(&m, keys, "request")?;
    let target = match (m.remove("method"), m.remove("url"), m.remove("route")) {
        (Some(method), Some(url), None) => json!({ "http": { "method": method, "url": url } }),
        (None, None, Some(route)) => json!({ "route": route }),
        (None, None, None) => json!("none"),
        _ => return Err(format!("request {friendly}: give \"method\" and \"url\", or \"route\", or neither")),
    };
    m.insert("target".into(), target);
    Ok(m)
}

struct Replay {
    tc: TrafficControl,
    /// Label → the id the core returned (`None`: the call returned no id).
    ids: HashMap<String, Option<RequestId>>,
    labels: HashMap<RequestId, String>,
    /// `"<label>#<index>"` → reservation, learned from permits.
    reservations: HashMap<String, ReservationId>,
    reservation_names: HashMap<ReservationId, String>,
    last_at: f64,
}

impl Replay {
    fn step(&mut self, step: &Value) -> Res<()> {
        let s = step.as_object().ok_or("a step must be an object")?;
        let op = s.get("op").and_then(Value::as_str).ok_or("\"op\" (a string) is required")?;
        let at = s.get("at").and_then(Value::as_f64).ok_or("\"at\" (milliseconds) is required")?;
        if at < self.last_at {
            return Err(format!("\"at\" goes backwards ({at} after {})", self.last_at));
        }
        self.last_at = at;
        let now = Timestamp::from_millis_f64(at);
        let expect = s.get("expect");
        let common = ["at", "op", "comment", "expect"];
        let keys = |extra: &[&str]| allow_keys(s, &[&common[..], extra].concat(), "step");
        match op {
            "submit" => {
                keys(&["label", "request"])?;
                let label = self.new_label(s)?;
                let request = to_request(s.get("request").ok_or("\"request\" is required")?, &self.reservations)?;
                let result = self.tc.submit(now, request);
                let actual = match &result {
                    Ok(_) => json!({}),
                    Err(e) => json!({ "error": e.code() }),
                };
                self.bind(label, result.ok());
                compare_all(expect.unwrap_or(&json!({})), &actual, "submit")
            }
            "try_acquire" => {
                keys(&["label", "request"])?;
                let label = self.new_label(s)?;
                let request = to_request(s.get("request").ok_or("\"request\" is required")?, &self.reservations)?;
                let (actual, id) = match self.tc.try_acquire(now, request) {
                    Decision::Go(permit) => (json!({ "decision": "go" }), Some(permit)),
                    Decision::Wait { until } => (json!({ "decision": "wait", "until": ms(until) }), None),
                    Decision::Reject(e) => (json!({ "decision": "reject", "code": e.code() }), None),
                    other => return Err(format!("unknown decision {other:?}")),
                };
                self.bind(label.clone(), id.as_ref().map(|p| p.request));
                if let Some(permit) = &id {
                    self.learn(&label, permit);
                }
                let expect = expect.ok_or("\"expect\" is required")?;
                compare_all(expect, &actual, "try_acquire")
            }
            "poll" => {
                keys(&[])?;
                let mut events = Vec::new();
                while let Some(event) = self.tc.poll(now) {
                    events.push(self.observe(&event));
                }
                let expected = expect.and_then(|e| e.get("events")).and_then(Value::as_array);
                let expected = expected.ok_or("\"expect\": {\"events\": [...]} is required")?;
                allow_keys(expect.and_then(Value::as_object).expect("object"), &["events"], "expect")?;
                compare_events(expected, &events)
            }
            "poll_timeout" => {
                keys(&[])?;
                let expect = expect.ok_or("\"expect\": {\"at\": ms or null} is required")?;
                compare_all(expect, &json!({ "at": ms(self.tc.poll_timeout()) }), "poll_timeout")
            }
            "complete" => {
                keys(&["label", "status", "headers", "body"])?;
                let id = self.id_of(s)?;
                let status = match s.get("status") {
                    Some(Value::Null) => None,
                    Some(v) => {
                        Some(v.as_u64().and_then(|v| u16::try_from(v).ok()).ok_or("\"status\": an HTTP status")?)
                    }
                    None => return Err("\"status\" (an HTTP status or null) is required".into()),
                };
                let mut outcome = status.map_or_else(Outcome::failed, Outcome::status);
                for pair in s.get("headers").and_then(Value::as_array).into_iter().flatten() {
                    match pair.as_array().map(Vec::as_slice) {
                        Some([Value::String(n), Value::String(v)]) => outcome = outcome.header(n, v),
                        _ => return Err(format!("a header is a [name, value] pair, not {pair}")),
                    }
                }
                if let Some(body) = s.get("body") {
                    outcome = outcome.body(body.as_str().ok_or("\"body\": the response body as a string")?);
                }
                let actual = match self.tc.complete(now, id, outcome) {
                    Completion::Done => json!({ "completion": "done" }),
                    Completion::Unknown => json!({ "completion": "unknown" }),
                    Completion::Retry { at } => json!({ "completion": "retry", "at": at.as_millis_f64() }),
                    Completion::GiveUp => json!({ "completion": "give_up" }),
                    other => return Err(format!("unknown completion {other:?}")),
                };
                compare_all(expect.unwrap_or(&json!({ "completion": "done" })), &actual, "complete")
            }
            "cancel" => {
                keys(&["label"])?;
                let id = self.id_of(s)?;
                let ok = self.tc.cancel(now, id);
                compare_all(expect.unwrap_or(&json!({ "ok": true })), &json!({ "ok": ok }), "cancel")
            }
            "sync_budget" => {
                keys(&["limit", "tokens_left", "refill_in"])?;
                let limit = s.get("limit").and_then(Value::as_str).ok_or("\"limit\" is required")?;
                let left = s.get("tokens_left").and_then(Value::as_i64).ok_or("\"tokens_left\": a whole number")?;
                let refill_in =
                    s.get("refill_in").and_then(Value::as_f64).map(|ms| std::time::Duration::from_secs_f64(ms / 1e3));
                let ok = self.tc.sync_budget(now, limit, left, refill_in).map_err(|e| e.code());
                let actual = match ok {
                    Ok(()) => json!({ "ok": true }),
                    Err(code) => json!({ "ok": false, "code": code }),
                };
                compare_all(expect.unwrap_or(&json!({ "ok": true })), &actual, "sync_budget")
            }
            "release" => {
                keys(&["reservation"])?;
                let name = s.get("reservation").and_then(Value::as_str).ok_or("\"reservation\" is required")?;
                let rid = *self.reservations.get(name).ok_or_else(|| format!("no permit has shown {name:?}"))?;
                let ok = self.tc.release(now, rid);
                compare_all(expect.unwrap_or(&json!({ "ok": true })), &json!({ "ok": ok }), "release")
            }
            "snapshot" => {
                keys(&[])?;
                let snapshot = self.tc.snapshot(now);
                compare(expect.ok_or("\"expect\" is required")?, &observe_snapshot(&snapshot), "snapshot")
            }
            other => Err(format!("unknown op {other:?}")),
        }
    }

    fn new_label(&self, s: &Map<String, Value>) -> Res<String> {
        let label = s.get("label").and_then(Value::as_str).ok_or("\"label\" (a string) is required")?;
        if label.is_empty() || label.contains('#') {
            return Err(format!("label {label:?}: must be non-empty, without '#'"));
        }
        if self.ids.contains_key(label) {
            return Err(format!("label {label:?} is used twice"));
        }
        Ok(label.to_string())
    }

    fn bind(&mut self, label: String, id: Option<RequestId>) {
        if let Some(id) = id {
            self.labels.insert(id, label.clone());
        }
        self.ids.insert(label, id);
    }

    fn id_of(&self, s: &Map<String, Value>) -> Res<RequestId> {
        let label = s.get("label").and_then(Value::as_str).ok_or("\"label\" (a string) is required")?;
        match self.ids.get(label) {
            Some(Some(id)) => Ok(*id),
            Some(None) => Err(format!("label {label:?} never got a request id")),
            None => Err(format!("unknown label {label:?}")),
        }
    }

    /// Names the reservations of a permit `"<label>#<index>"`.
    fn learn(&mut self, label: &str, permit: &Permit) {
        for (i, rid) in permit.reservations.iter().enumerate() {
            let name = format!("{label}#{i}");
            self.reservations.insert(name.clone(), *rid);
            self.reservation_names.insert(*rid, name);
        }
    }

    /// An event as a scenario describes it.
    fn observe(&mut self, event: &Event) -> Value {
        let label = self.labels.get(&event.request).cloned();
        let mut v = json!({
            "type": event.status(),
            "label": label,
            "at": event.at.as_millis_f64(),
            "endpoint": event.endpoint(),
            "route": event.route(),
            "priority": event.priority.as_str(),
        });
        let m = v.as_object_mut().expect("object");
        match &event.kind {
            EventKind::Go { permit, waited } => {
                if let Some(label) = &label {
                    self.learn(label, permit);
                }
                let names: Vec<_> = permit.reservations.iter().map(|r| self.reservation_names.get(r)).collect();
                m.insert("waited".into(), json!(waited.as_secs_f64() * 1e3));
                m.insert("reservations".into(), json!(names));
                m.insert("key".into(), json!(permit.key.as_deref()));
            }
            EventKind::Completed { status, duration } => {
                m.insert("status".into(), json!(status));
                m.insert("duration".into(), json!(duration.as_secs_f64() * 1e3));
            }
            EventKind::Rejected { error } | EventKind::Expired { error } => {
                m.insert("code".into(), json!(error.code()));
            }
            EventKind::RateLimited { status, until } => {
                m.insert("status".into(), json!(status));
                m.insert("until".into(), json!(until.as_millis_f64()));
            }
            EventKind::Retried { attempt, at } => {
                m.insert("attempt".into(), json!(attempt));
                m.insert("retry_at".into(), json!(at.as_millis_f64()));
            }
            EventKind::LeaseExpired { held } => {
                m.insert("held".into(), json!(held.as_secs_f64() * 1e3));
            }
            EventKind::ReservationExpired { reservation } | EventKind::ReservationReleased { reservation } => {
                m.insert("reservation".into(), json!(self.reservation_names.get(reservation)));
            }
            EventKind::BreakerOpened { limit, reason, until } => {
                m.insert("limit".into(), json!(limit));
                m.insert("reason".into(), json!(reason));
                m.insert("until".into(), json!(until.as_millis_f64()));
            }
            EventKind::BreakerHalfOpen { limit } | EventKind::BreakerClosed { limit } => {
                m.insert("limit".into(), json!(limit));
            }
            _ => {}
        }
        v
    }
}

fn observe_snapshot(s: &Snapshot) -> Value {
    let limits: Map<String, Value> = s
        .limits
        .iter()
        .map(|l| {
            let v = json!({
                "kind": l.kind,
                "capacity": l.capacity,
                "used": l.used,
                "reserved": l.reserved,
                "available": l.available,
                "next_free": ms(l.next_free),
                "balance": l.balance,
            });
            (l.name.clone(), v)
        })
        .collect();
    let [critical, high, normal, low] = s.waiting;
    json!({
        "limits": limits,
        "waiting": { "critical": critical, "high": high, "normal": normal, "low": low },
        "in_flight": s.in_flight,
        "reservations": s.reservations,
    })
}

fn ms(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.as_millis_f64()))
}

/// Events must match one for one, in order; each expected field must equal the observed one.
fn compare_events(expected: &[Value], actual: &[Value]) -> Res<()> {
    let fail = |why: String| {
        let show = |list: &[Value]| list.iter().map(|v| format!("\n    {v}")).collect::<String>();
        Err(format!("{why}\n  expected events:{}\n  actual events:{}", show(expected), show(actual)))
    };
    for (i, e) in expected.iter().enumerate() {
        let Some(obj) = e.as_object() else { return fail(format!("expected event {i} is not an object")) };
        if !obj.contains_key("type") || !obj.contains_key("label") {
            return fail(format!("expected event {i} needs \"type\" and \"label\" (null for no id)"));
        }
        match actual.get(i) {
            None => return fail(format!("event {i} missing")),
            Some(a) => {
                if let Err(why) = compare(e, a, &format!("event {i}")) {
                    return fail(why);
                }
            }
        }
    }
    if actual.len() > expected.len() {
        return fail(format!("{} unexpected event(s) after the expected ones", actual.len() - expected.len()));
    }
    Ok(())
}

/// `expected` and `actual` have the same fields, and they are equal.
fn compare_all(expected: &Value, actual: &Value, path: &str) -> Res<()> {
    let keys = |v: &Value| v.as_object().map(|m| m.keys().cloned().collect::<BTreeSet<_>>());
    if keys(expected) != keys(actual) {
        return Err(format!("{path}: expected {expected}, got {actual}"));
    }
    compare(expected, actual, path)
}

/// Every field of `expected` must be in `actual` and equal (times as whole nanoseconds); fields
/// `expected` does not name are not compared.
fn compare(expected: &Value, actual: &Value, path: &str) -> Res<()> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                let av = a.get(k).ok_or_else(|| format!("{p}: no such field (got {actual})"))?;
                if TIME_KEYS.contains(&k.as_str()) && !ev.is_object() {
                    if nanos(ev)? != nanos(av)? {
                        return Err(format!("{p}: expected {ev}, got {av}"));
                    }
                } else {
                    compare(ev, av, &p)?;
                }
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

/// A time in milliseconds (or null) as whole nanoseconds, the way the core stores it.
fn nanos(v: &Value) -> Res<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        v => v.as_f64().map(|ms| Some(Timestamp::from_millis_f64(ms).as_nanos())).ok_or(format!("{v} is not a time")),
    }
}

fn allow_keys(m: &Map<String, Value>, allowed: &[&str], what: &str) -> Res<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{what}: unknown field {k:?} (allowed: {})", allowed.join(", "))),
        None => Ok(()),
    }
}

/// The step without its `expect`, for failure messages.
fn short(step: &Value) -> String {
    let mut s = step.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("expect");
        m.remove("comment");
    }
    s.to_string()
}
