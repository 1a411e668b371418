//! What the JavaScript bindings (napi for Node and Bun, wasm-bindgen for browsers and Workers) do
//! alike at their boundary, where every number is an `f64`: time in milliseconds on the host's
//! clock, ids exact below 2^53. Each binding only converts its runtime's values to these.

use crate::{
    Completion, Event, EventKind, Outcome, Priority, Request, RequestError, RequestId, StoreError, Timestamp,
    TrafficControl,
};

mod driver;
mod shared;
pub use driver::{DriverHost, Stepped};
pub use shared::script;

/// An error of a call made at the boundary: the core's, or an argument the host got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The core refused the request.
    Request(RequestError),
    /// The shared store's reply could not be read.
    Store(StoreError),
    /// The configuration (or a store option) is invalid.
    Config(crate::ConfigError),
    /// The call was made wrong (code `INVALID_ARGUMENT`); the reason says how.
    Invalid(String),
}

impl HostError {
    /// The stable code: the core's, or `INVALID_ARGUMENT`.
    pub fn code(&self) -> &'static str {
        match self {
            HostError::Request(e) => e.code(),
            HostError::Store(e) => e.code(),
            HostError::Config(e) => e.code(),
            HostError::Invalid(_) => "INVALID_ARGUMENT",
        }
    }

    /// The message.
    pub fn message(&self) -> String {
        match self {
            HostError::Request(e) => e.to_string(),
            HostError::Store(e) => e.to_string(),
            HostError::Config(e) => e.to_string(),
            HostError::Invalid(reason) => reason.clone(),
        }
    }
}

/// A request given by its parts, as the scheduler's common case sends it (no follow-ups, no
/// spend): a URL (with its method) or a route name or neither, priority 0 (critical) to 3 (low),
/// an explicit cost, a deadline in milliseconds.
pub fn request_from_parts(
    method: Option<String>,
    url: Option<String>,
    route: Option<String>,
    priority: u32,
    cost: Option<f64>,
    deadline_ms: Option<f64>,
) -> Result<Request, HostError> {
    let invalid = |reason: String| Err(HostError::Invalid(reason));
    let mut request = match (url, route) {
        (Some(url), None) => Request::http(method.unwrap_or_else(|| "GET".into()), url),
        (None, Some(route)) => Request::route(route),
        (None, None) => Request::default(),
        (Some(_), Some(_)) => return invalid("a request has a url or a route, not both".into()),
    };
    request = request.priority(match priority {
        0 => Priority::Critical,
        1 => Priority::High,
        2 => Priority::Normal,
        3 => Priority::Low,
        p => return invalid(format!("priority must be 0 (critical) to 3 (low), not {p}")),
    });
    if let Some(cost) = cost {
        if !(cost >= 0.0 && cost.fract() == 0.0 && cost <= 9_007_199_254_740_991.0) {
            // Shown by serde_json (already here): core's float formatting would add about 15 KB to
            // the wasm module.
            let shown =
                serde_json::Number::from_f64(cost).map_or_else(|| "a non-finite number".to_string(), |n| n.to_string());
            return invalid(format!("cost must be a whole number ≥ 0, not {shown}"));
        }
        request = request.cost(cost as u64);
    }
    if let Some(deadline) = deadline_ms {
        request = request.deadline(Timestamp::from_millis_f64(deadline));
    }
    Ok(request)
}

/// Queues a request; its id, positive when it was admitted at once, negative when it waits.
pub fn submit(tc: &mut TrafficControl, now_ms: f64, request: &Request) -> Result<f64, RequestError> {
    let id = tc.submit(Timestamp::from_millis_f64(now_ms), request)?;
    Ok(if tc.is_waiting(id) { -(id.0 as f64) } else { id.0 as f64 })
}

/// Queues many requests given by their parts in one call: 4 numbers a request in `spec` (priority
/// level, cost or -1 for the route's, deadline or NaN for none, index of its `method, url, route`
/// triple or -1), `text(i)` the i-th string of the triples. Returns one number a request as
/// [`submit`] does, or 0 for a refused one, whose error goes to `refused`, in order.
pub fn submit_batch(
    tc: &mut TrafficControl,
    now_ms: f64,
    spec: &[f64],
    text: impl Fn(usize) -> Option<String>,
    mut refused: impl FnMut(HostError),
) -> Vec<f64> {
    let mut out = Vec::with_capacity(spec.len() / 4);
    for r in spec.chunks_exact(4) {
        let strings = |k: usize| if r[3] >= 0.0 { text(r[3] as usize * 3 + k) } else { None };
        let cost = (r[1] >= 0.0).then_some(r[1]);
        let deadline = (!r[2].is_nan()).then_some(r[2]);
        let submitted = request_from_parts(strings(0), strings(1), strings(2), r[0] as u32, cost, deadline)
            .and_then(|q| submit(tc, now_ms, &q).map_err(HostError::Request));
        out.push(submitted.unwrap_or_else(|e| {
            refused(e);
            0.0
        }));
    }
    out
}

/// An outcome from its parts: the status (none: no response came; 0: the host does not know, see
/// [`Outcome::unreported`]), headers as alternating names and values, the body, the host's wall
/// clock in Unix milliseconds.
pub fn outcome_from_parts(
    status: Option<u32>,
    headers: impl IntoIterator<Item = String>,
    body: Option<String>,
    unix_time_ms: Option<f64>,
) -> Outcome {
    let mut outcome = match status {
        Some(0) => Outcome::unreported(),
        Some(s) => Outcome::status(u16::try_from(s).unwrap_or(u16::MAX)),
        None => Outcome::failed(),
    };
    let mut pairs = headers.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        outcome = outcome.header(name, value);
    }
    if let Some(body) = body {
        outcome = outcome.body(body);
    }
    if let Some(t) = unix_time_ms {
        outcome = outcome.unix_time(t / 1e3);
    }
    outcome
}

/// Whether the host must read this response's body ([`Outcome::wants_body`]), or the request
/// spends a budget (its token fields); `request` is `None` for the shared store.
pub fn reads_body(
    tc: Option<&TrafficControl>,
    request: f64,
    status: u32,
    content_type: Option<&str>,
    content_length: Option<f64>,
) -> bool {
    let status = u16::try_from(status).unwrap_or(u16::MAX);
    tc.is_some_and(|tc| tc.reads_body(RequestId(request as u64)))
        || Outcome::wants_body(status, content_type, content_length.map(|n| n.max(0.0) as u64))
}

/// Reports an outcome; the answer as one number: the instant of the retry (≥ 0) when the core
/// queued the request again, -1 done, -2 give up, -3 unknown request.
pub fn complete(tc: &mut TrafficControl, now_ms: f64, request: f64, outcome: Outcome) -> f64 {
    match tc.complete(Timestamp::from_millis_f64(now_ms), RequestId(request as u64), outcome) {
        Completion::Retry { at } => at.as_millis_f64(),
        Completion::Done => -1.0,
        Completion::GiveUp => -2.0,
        _ => -3.0,
    }
}

/// Ends, in one call, requests whose task returned no HTTP response.
pub fn complete_batch(tc: &mut TrafficControl, now_ms: f64, requests: &[f64]) {
    for &r in requests {
        let _ = complete(tc, now_ms, r, Outcome::unreported());
    }
}

/// Drains the events ready at `now`, keeping only what the scheduler acts on, flat: `1, request,
/// n, reservation × n` for a go; `2, request, 0` for a rejection or expiry, whose event is kept in
/// `failures` for the host to turn into an object. The rest is dropped: with no event listener,
/// building one object per event would cost more than the admission.
pub fn drain_actionable(tc: &mut TrafficControl, now_ms: f64, failures: &mut Vec<Event>) -> Vec<f64> {
    let now = Timestamp::from_millis_f64(now_ms);
    let mut out = Vec::new();
    while let Some(e) = tc.poll(now) {
        match &e.kind {
            EventKind::Go { permit, .. } => {
                out.extend([1.0, e.request.0 as f64, permit.reservations.len() as f64]);
                out.extend(permit.reservations.iter().map(|r| r.0 as f64));
            }
            EventKind::Rejected { .. } | EventKind::Expired { .. } => {
                out.extend([2.0, e.request.0 as f64, 0.0]);
                failures.push(e);
            }
            _ => {}
        }
    }
    out
}

/// One event, flattened: the `rate_limit_logs` fields plus what its kind carries (the scheduler's
/// `NativeEvent`; absent fields are left out).
pub fn event_json(e: &Event) -> serde_json::Value {
    let log = e.log();
    let mut out = serde_json::json!({
        "type": log.status,
        "status": log.status,
        "timestampMs": log.timestamp_ms,
        "requestId": log.request_id as f64,
        "endpoint": log.endpoint,
        "priority": log.priority,
    });
    let fields = out.as_object_mut().expect("an object");
    let mut put = |k: &str, v: serde_json::Value| {
        fields.insert(k.to_string(), v);
    };
    if let Some(route) = log.route {
        put("route", route.into());
    }
    if let Some(s) = log.response_status {
        put("responseStatus", s.into());
    }
    if let Some(d) = log.duration_ms {
        put("durationMs", d.into());
    }
    if let Some(code) = log.error {
        put("error", code.into());
    }
    match &e.kind {
        EventKind::Go { permit, .. } => {
            put("reservations", permit.reservations.iter().map(|r| r.0 as f64).collect::<Vec<_>>().into());
            #[cfg(feature = "keys")]
            if let Some(key) = &permit.key {
                put("key", (**key).into());
            }
        }
        EventKind::Rejected { error } | EventKind::Expired { error } => put("message", error.to_string().into()),
        EventKind::RateLimited { until, .. } => put("until", until.as_millis_f64().into()),
        EventKind::Retried { attempt, at } => {
            put("attempt", (*attempt).into());
            put("retryAt", at.as_millis_f64().into());
        }
        EventKind::ReservationExpired { reservation } | EventKind::ReservationReleased { reservation } => {
            put("reservation", (reservation.0 as f64).into());
        }
        EventKind::LimitLowered { limit, from, to } => {
            put("limit", limit.as_str().into());
            put("max", (*to as f64).into());
            put("previous", (*from as f64).into());
        }
        EventKind::BudgetLow { limit, balance, cost, reason } => {
            put("limit", limit.as_str().into());
            put("balance", (*balance as f64).into());
            put("cost", (*cost as f64).into());
            put("reason", (*reason).into());
        }
        #[cfg(feature = "keys")]
        EventKind::BreakerOpened { limit, reason, until } => {
            put("limit", limit.as_str().into());
            put("reason", (*reason).into());
            put("until", until.as_millis_f64().into());
        }
        #[cfg(feature = "keys")]
        EventKind::BreakerHalfOpen { limit } | EventKind::BreakerClosed { limit } => {
            put("limit", limit.as_str().into())
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn controller() -> TrafficControl {
        let config = r#"{"limits":{"api":{"kind":"window","max":1,"per":"1s"}},"global":["api"],
                         "routes":[{"name":"items","path":"^/items"}]}"#;
        TrafficControl::new(Config::from_json(config).unwrap()).unwrap()
    }

    #[test]
    fn a_cost_that_is_not_a_whole_number_is_named() {
        let err = |cost: f64| request_from_parts(None, None, None, 2, Some(cost), None).unwrap_err().message();
        assert_eq!(err(1.5), "cost must be a whole number ≥ 0, not 1.5");
        assert_eq!(err(-2.0), "cost must be a whole number ≥ 0, not -2.0");
        assert_eq!(err(f64::NAN), "cost must be a whole number ≥ 0, not a non-finite number");
    }

    #[test]
    fn a_batch_answers_each_request_in_order() {
        let mut tc = controller();
        let strings = [None, Some("/items/1".to_string()), None, None, None, Some("nosuch".to_string())];
        let spec =
            [2.0, -1.0, f64::NAN, 0.0, 2.0, -1.0, f64::NAN, -1.0, 9.0, -1.0, f64::NAN, -1.0, 1.0, -1.0, f64::NAN, 1.0];
        let mut errors = Vec::new();
        let ids = submit_batch(&mut tc, 0.0, &spec, |i| strings.get(i).cloned().flatten(), |e| errors.push(e.code()));
        assert_eq!(ids, vec![1.0, -2.0, 0.0, 0.0]);
        assert_eq!(errors, vec!["INVALID_ARGUMENT", "UNKNOWN_ROUTE"]);
        let mut failures = Vec::new();
        assert_eq!(drain_actionable(&mut tc, 0.0, &mut failures), vec![1.0, 1.0, 0.0, 2.0, 3.0, 0.0]);
        assert_eq!(failures.len(), 1);
        complete_batch(&mut tc, 1.0, &[1.0]);
        // The window holds request 1 until its completion plus `per`.
        assert_eq!(drain_actionable(&mut tc, 1000.0, &mut failures), Vec::<f64>::new());
        assert_eq!(drain_actionable(&mut tc, 1001.0, &mut failures), vec![1.0, 2.0, 0.0]);
    }

    #[test]
    fn outcomes_and_completions_from_parts() {
        let mut tc = controller();
        let id = submit(&mut tc, 0.0, &request_from_parts(None, None, None, 2, Some(1.0), None).unwrap()).unwrap();
        let outcome = outcome_from_parts(Some(429), ["Retry-After".to_string(), "2".to_string()], None, None);
        assert_eq!(complete(&mut tc, 0.0, id, outcome), 2000.0);
        assert_eq!(complete(&mut tc, 0.0, 99.0, Outcome::status(200)), -3.0);
        let e = request_from_parts(Some("GET".into()), Some("/x".into()), Some("r".into()), 2, None, None).unwrap_err();
        assert_eq!((e.code(), e.message().as_str()), ("INVALID_ARGUMENT", "a request has a url or a route, not both"));
        assert!(request_from_parts(None, None, None, 2, Some(1.5), None).is_err());
    }
}
