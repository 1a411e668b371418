//! The wasm binding of traffic-control (browsers, Cloudflare Workers, Node): wasm-bindgen
//! functions over the core's [`TrafficControl`](traffic_control_core::TrafficControl).
//!
//! The functions are the same, one for one, as the napi addon's (the `Native` interface of the
//! shared JavaScript scheduler in `js/src`): each converts its arguments, makes one core call and
//! converts the result. Time crosses as `f64` milliseconds on the host's clock and ids as `f64`
//! (exact below 2^53): a `u64` would arrive in JavaScript as a `BigInt` here but as a number from
//! napi, and the scheduler is one source for both. Events and decisions cross as JSON text parsed
//! on the JavaScript side, which keeps the module free of per-field glue.
//!
//! Nothing here reads a clock or the environment: the module imports no `env` functions.

use std::time::Duration;

use js_sys::{Array, JsString, Object, JSON};
use serde_json::{json, Value};
use traffic_control_core::{
    self as tc, host, ConfigError, Decision, Event, Request, RequestError, RequestId, ReservationId, Timestamp,
};
use wasm_bindgen::prelude::*;

#[cfg(feature = "shared")]
pub mod shared;

// Talc rather than the default dlmalloc: about half its code (the module's size is budgeted) and
// faster on wasm's single thread. A target without atomics only: a threaded wasm build would need
// a locking allocator.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// A JavaScript `Error` whose `code` is the core's stable code (`CONFIG`, `QUEUE_FULL`, ...).
fn coded(code: &str, message: impl ToString) -> JsValue {
    let error = js_sys::Error::new(&message.to_string());
    // Setting a property on a fresh Error cannot fail.
    let _ = js_sys::Reflect::set(&error, &"code".into(), &code.into());
    error.into()
}

pub(crate) fn config_error(e: &ConfigError) -> JsValue {
    coded(e.code(), e)
}

fn request_error(e: &RequestError) -> JsValue {
    coded(e.code(), e)
}

pub(crate) fn host_error(e: &host::HostError) -> JsValue {
    coded(e.code(), e.message())
}

fn invalid(reason: impl ToString) -> JsValue {
    coded("INVALID_ARGUMENT", reason)
}

fn at(now: f64) -> Timestamp {
    Timestamp::from_millis_f64(now)
}

fn millis(t: Timestamp) -> f64 {
    t.as_millis_f64()
}

pub(crate) fn parse(value: &Value) -> JsValue {
    // serde_json writes valid JSON: parsing it back cannot fail.
    JSON::parse(&value.to_string()).unwrap_or(JsValue::NULL)
}

/// The core's controller, held by JavaScript as an opaque handle.
#[wasm_bindgen]
pub struct Controller {
    core: tc::TrafficControl,
    failures: Vec<Event>,
    refused: Vec<Value>,
}

fn handle(config: Result<tc::Config, ConfigError>) -> Result<Controller, JsValue> {
    let config = config.map_err(|e| config_error(&e))?;
    let core = tc::TrafficControl::new(config).map_err(|e| config_error(&e))?;
    Ok(Controller { core, failures: Vec::new(), refused: Vec::new() })
}

/// A controller from a config in JSON text (the core's serde shape).
#[wasm_bindgen]
pub fn create(config_json: &str) -> Result<Controller, JsValue> {
    handle(tc::Config::from_json(config_json))
}

/// A controller from a shipped preset (`backmarket`, `keepa`, `baselinker`), with overrides read
/// from `env` (an object of strings) under the preset's prefix.
#[wasm_bindgen(js_name = createFromPreset)]
pub fn create_from_preset(name: &str, env: &Object) -> Result<Controller, JsValue> {
    let preset = tc::Preset::named(name).map_err(|e| config_error(&e))?;
    handle(preset.config_with_env(env_vars(env)))
}

/// The string entries of an object (a preset's environment overrides).
pub(crate) fn env_vars(env: &Object) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for entry in Object::entries(env).iter() {
        let pair = Array::from(&entry);
        if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
            vars.push((k, v));
        }
    }
    vars
}

/// The config's JSON text, as the core reads it (defaults filled in; durations as text and in ms).
#[wasm_bindgen(js_name = configJson)]
pub fn config_json(h: &Controller) -> Result<String, JsValue> {
    Ok(h.core.config().to_json_compact())
}

/// Queues a request given by its parts (no follow-ups, no spend). Returns its id, positive when
/// it was admitted at once, negative when it waits.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn submit(
    h: &mut Controller,
    now: f64,
    method: Option<String>,
    url: Option<String>,
    route: Option<String>,
    priority: u32,
    cost: Option<f64>,
    deadline: Option<f64>,
) -> Result<f64, JsValue> {
    let request = host::request_from_parts(method, url, route, priority, cost, deadline).map_err(|e| host_error(&e))?;
    host::submit(&mut h.core, now, &request).map_err(|e| request_error(&e))
}

/// Queues many simple requests in one call (a tick's `schedule()` jobs); see
/// [`host::submit_batch`] for `spec`. Refused requests answer 0 and their errors wait for
/// [`take_refused`], in order.
#[wasm_bindgen(js_name = submitBatch)]
pub fn submit_batch(h: &mut Controller, now: f64, spec: &[f64], strings: Option<Vec<JsValue>>) -> Vec<f64> {
    let strings = strings.unwrap_or_default();
    let Controller { core, refused, .. } = h;
    host::submit_batch(
        core,
        now,
        spec,
        |i| strings.get(i).and_then(JsValue::as_string),
        |e| refused.push(json!({ "code": e.code(), "message": e.message() })),
    )
}

/// The errors of the requests [`submit_batch`] refused, in order: `{code, message}`.
#[wasm_bindgen(js_name = takeRefused)]
pub fn take_refused(h: &mut Controller) -> JsValue {
    parse(&Value::Array(std::mem::take(&mut h.refused)))
}

/// Reports, in one call, the end of requests whose task returned no HTTP response.
#[wasm_bindgen(js_name = completeBatch)]
pub fn complete_batch(h: &mut Controller, now: f64, requests: &[f64]) {
    host::complete_batch(&mut h.core, now, requests);
}

/// Queues a request given as JSON text in the core's serde shape (follow-ups, spends, limits).
#[wasm_bindgen(js_name = submitJson)]
pub fn submit_json(h: &mut Controller, now: f64, request_json: &str) -> Result<f64, JsValue> {
    let request = Request::from_json(request_json).map_err(invalid)?;
    host::submit(&mut h.core, now, &request).map_err(|e| request_error(&e))
}

/// Decides at once without queueing: `{decision: 'go', requestId, reservations}`,
/// `{decision: 'wait', until}` or `{decision: 'reject', code, message}`.
#[wasm_bindgen(js_name = tryAcquireJson)]
pub fn try_acquire_json(h: &mut Controller, now: f64, request_json: &str) -> Result<JsValue, JsValue> {
    let request = Request::from_json(request_json).map_err(invalid)?;
    decide(h, now, &request)
}

/// [`try_acquire_json`] for a request given by its parts (as [`submit`]): the scheduler's path for
/// requests without follow-ups, spends or named limits.
#[wasm_bindgen(js_name = tryAcquire)]
#[allow(clippy::too_many_arguments)]
pub fn try_acquire(
    h: &mut Controller,
    now: f64,
    method: Option<String>,
    url: Option<String>,
    route: Option<String>,
    priority: u32,
    cost: Option<f64>,
    deadline: Option<f64>,
) -> Result<JsValue, JsValue> {
    let request = host::request_from_parts(method, url, route, priority, cost, deadline).map_err(|e| host_error(&e))?;
    decide(h, now, &request)
}

fn decide(h: &mut Controller, now: f64, request: &Request) -> Result<JsValue, JsValue> {
    let out = match h.core.try_acquire(at(now), request) {
        Decision::Go(permit) => json!({
            "decision": "go",
            "requestId": permit.request.0 as f64,
            "reservations": permit.reservations.iter().map(|r| r.0 as f64).collect::<Vec<_>>(),
        }),
        Decision::Wait { until } => json!({ "decision": "wait", "until": until.map(millis) }),
        Decision::Reject(e) => json!({ "decision": "reject", "code": e.code(), "message": e.to_string() }),
        _ => return Err(invalid("unknown decision")),
    };
    Ok(parse(&out))
}

/// Drains every event ready at `now`, as objects (for event listeners and scenario replays).
#[wasm_bindgen]
pub fn drain(h: &mut Controller, now: f64) -> JsValue {
    let mut events = Vec::new();
    while let Some(e) = h.core.poll(at(now)) {
        events.push(host::event_json(&e));
    }
    parse(&Value::Array(events))
}

/// Drains the events ready at `now`, keeping only what the scheduler acts on, flat in one array:
/// `1, request, n, reservation × n` for a go; `2, request, 0` for a rejection or expiry, whose
/// event waits for [`take_failures`].
#[wasm_bindgen(js_name = drainActionable)]
pub fn drain_actionable(h: &mut Controller, now: f64) -> Vec<f64> {
    let Controller { core, failures, .. } = h;
    host::drain_actionable(core, now, failures)
}

/// The rejections and expiries [`drain_actionable`] kept, as objects.
#[wasm_bindgen(js_name = takeFailures)]
pub fn take_failures(h: &mut Controller) -> JsValue {
    let events: Vec<Value> = h.failures.drain(..).map(|e| host::event_json(&e)).collect();
    parse(&Value::Array(events))
}

/// The next instant anything can change by time alone, or `undefined`.
#[wasm_bindgen(js_name = pollTimeout)]
pub fn poll_timeout(h: &Controller) -> Option<f64> {
    h.core.poll_timeout().map(millis)
}

/// Reports an outcome. `headers` alternate names and values; `unix_time_ms` is the host's wall
/// clock. Returns the instant of the retry (≥ 0) when the core queued the request again, -1 done,
/// -2 give up, -3 unknown request.
#[wasm_bindgen]
pub fn complete(
    h: &mut Controller,
    now: f64,
    request: f64,
    status: Option<u32>,
    headers: Option<Vec<JsString>>,
    body: Option<String>,
    unix_time_ms: Option<f64>,
) -> f64 {
    let headers = headers.unwrap_or_default().into_iter().map(String::from);
    host::complete(&mut h.core, now, request, host::outcome_from_parts(status, headers, body, unix_time_ms))
}

/// Whether the host must read this response's body (the core's one rule; a budget route's always).
#[wasm_bindgen(js_name = readsBody)]
pub fn reads_body(
    h: &Controller,
    request: f64,
    status: u32,
    content_type: Option<String>,
    content_length: Option<f64>,
) -> bool {
    host::reads_body(Some(&h.core), request, status, content_type.as_deref(), content_length)
}

/// The id of the pool key an in-flight request went on (its permit's `key`), if any. Not in the
/// browser build (it has no key pools).
#[cfg(feature = "keys")]
#[wasm_bindgen(js_name = keyOf)]
pub fn key_of(h: &Controller, request: f64) -> Option<String> {
    h.core.key_of(traffic_control_core::RequestId(request as u64)).map(str::to_string)
}

/// The same rule without a controller (the shared store).
#[wasm_bindgen(js_name = wantsBody)]
pub fn wants_body(status: u32, content_type: Option<String>, content_length: Option<f64>) -> bool {
    host::reads_body(None, 0.0, status, content_type.as_deref(), content_length)
}

/// Removes a waiting request, or gives back the slots of an admitted one. Whether it was known.
#[wasm_bindgen]
pub fn cancel(h: &mut Controller, now: f64, request: f64) -> bool {
    h.core.cancel(at(now), RequestId(request as u64))
}

/// Releases a reservation early. Whether it was live and not being spent.
#[wasm_bindgen]
pub fn release(h: &mut Controller, now: f64, reservation: f64) -> bool {
    h.core.release(at(now), ReservationId(reservation as u64))
}

/// Sets a budget's balance to what the server reported.
#[wasm_bindgen(js_name = syncBudget)]
pub fn sync_budget(
    h: &mut Controller,
    now: f64,
    limit: &str,
    tokens_left: f64,
    refill_in: Option<f64>,
) -> Result<(), JsValue> {
    let refill_in = refill_in.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3));
    h.core.sync_budget(at(now), limit, tokens_left as i64, refill_in).map_err(|e| request_error(&e))
}

/// Every limit's state and the queue depths, as JSON text (the core's serde shape).
#[wasm_bindgen(js_name = snapshotJson)]
pub fn snapshot_json(h: &mut Controller, now: f64) -> Result<String, JsValue> {
    serde_json::to_string(&h.core.snapshot(at(now))).map_err(invalid)
}

/// The metrics as of `now`, as JSON text (the core's `Metrics`). Not in the browser build (its
/// size is budgeted); the scheduler reads them only when asked.
#[cfg(feature = "metrics")]
#[wasm_bindgen(js_name = metricsJson)]
pub fn metrics_json(h: &mut Controller, now: f64) -> Result<String, JsValue> {
    Ok(h.core.metrics(at(now)).to_json())
}

/// The metrics as of `now` in Prometheus's text exposition format (not in the browser build).
#[cfg(feature = "metrics")]
#[wasm_bindgen(js_name = metricsText)]
pub fn metrics_text(h: &mut Controller, now: f64) -> String {
    h.core.metrics(at(now)).to_prometheus()
}

/// Runs a config beside this controller as a shadow (JSON text), or stops it (`null`). Not in
/// the browser build (its size is budgeted).
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = setShadow)]
pub fn set_shadow(h: &mut Controller, now: f64, config_json: Option<String>) -> Result<(), JsValue> {
    let config = match config_json {
        Some(json) => Some(tc::Config::from_json(&json).map_err(|e| config_error(&e))?),
        None => None,
    };
    h.core.set_shadow(at(now), config).map_err(|e| config_error(&e))
}

/// The same with a shipped preset and overrides read from `env` under its prefix.
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = setShadowPreset)]
pub fn set_shadow_preset(h: &mut Controller, now: f64, name: &str, env: &Object) -> Result<(), JsValue> {
    let preset = tc::Preset::named(name).map_err(|e| config_error(&e))?;
    let config = preset.config_with_env(env_vars(env)).map_err(|e| config_error(&e))?;
    h.core.set_shadow(at(now), Some(config)).map_err(|e| config_error(&e))
}

/// The shadow's report as JSON text (the core's `ShadowReport`); none without a shadow.
#[cfg(feature = "shadow")]
#[wasm_bindgen(js_name = shadowReportJson)]
pub fn shadow_report_json(h: &mut Controller, now: f64) -> Option<String> {
    h.core.shadow_report(at(now)).map(|r| r.to_json())
}

/// The URL of the free status request that reports the budgets' balance (Keepa's `/token`), made
/// from a request to the same API; none when the config has no status request.
#[wasm_bindgen(js_name = statusUrl)]
pub fn status_url(h: &Controller, url: String) -> Option<String> {
    h.core.status_url(&url)
}

/// Requests waiting, all priorities.
#[wasm_bindgen]
pub fn waiting(h: &Controller) -> u32 {
    u32::try_from(h.core.waiting()).unwrap_or(u32::MAX)
}

/// Turns the core's event log on or off (off: only the events that deliver a decision; the
/// scheduler turns it off while nobody listens).
#[wasm_bindgen(js_name = setEventLog)]
pub fn set_event_log(h: &mut Controller, on: bool) {
    h.core.set_event_log(on);
}

/// The family of an error code (`never_succeeds` for `UNKNOWN_ROUTE`, ...), as the core defines it.
#[wasm_bindgen(js_name = errorKind)]
pub fn error_kind(code: &str) -> Option<String> {
    tc::ErrorKind::of_code(code).map(|k| k.as_str().to_string())
}
