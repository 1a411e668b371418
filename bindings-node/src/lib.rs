//! The Node and Bun binding of traffic-control: a napi-rs class over the core's
//! [`TrafficControl`](traffic_control_core::TrafficControl).
//!
//! Each method converts its arguments, makes one core call and converts the result; the promises,
//! the timer and `fetch` live in the JavaScript scheduler (`js/src`), shared with the wasm package.
//! Time crosses the boundary as `f64` milliseconds on the host's monotonic clock
//! (`performance.now()`), ids as `f64` (exact below 2^53).
//!
//! This class is internal: users see the JavaScript `TrafficControl` built on it.

use std::collections::HashMap;
use std::time::Duration;

use napi::bindgen_prelude::{External, Float64Array};
use napi_derive::napi;
use traffic_control_core::{
    self as tc, host, ConfigError, Decision, Event, EventKind, Request, RequestError, RequestId, ReservationId,
    Timestamp,
};

pub mod shared;

/// An error whose JavaScript `code` is the core's stable code (`CONFIG`, `QUEUE_FULL`, ...).
pub(crate) type CodedError = napi::Error<String>;

pub(crate) fn config_error(e: &ConfigError) -> CodedError {
    napi::Error::new(e.code().to_string(), e.to_string())
}

pub(crate) fn request_error(e: &RequestError) -> CodedError {
    napi::Error::new(e.code().to_string(), e.to_string())
}

pub(crate) fn host_error(e: &host::HostError) -> CodedError {
    napi::Error::new(e.code().to_string(), e.message())
}

pub(crate) fn invalid(reason: impl ToString) -> CodedError {
    napi::Error::new("INVALID_ARGUMENT".to_string(), reason.to_string())
}

fn millis(t: Timestamp) -> f64 {
    t.as_millis_f64()
}

fn id(id: f64) -> RequestId {
    RequestId(id as u64)
}

/// One event, flattened: the `rate_limit_logs` fields plus what its kind carries.
#[napi(object)]
pub struct NativeEvent {
    /// `queued`, `go`, `completed`, `rate_limited`, `retried`, `rejected`, `expired`, `cancelled`,
    /// `lease_expired`, `reservation_expired`, `reservation_released`, `limit_lowered`, `budget_low`,
    /// `breaker_opened`, `breaker_half_open`, `breaker_closed`.
    #[napi(js_name = "type")]
    pub kind: String,
    /// The same as `type` (its former name).
    pub status: String,
    /// When, in the host's milliseconds.
    pub timestamp_ms: f64,
    /// The request (for reservation events: the request that made the reservation).
    pub request_id: f64,
    /// `METHOD /path` without secrets, or the route name.
    pub endpoint: String,
    /// The route matched.
    pub route: Option<String>,
    /// `critical`, `high`, `normal` or `low`.
    pub priority: String,
    /// The HTTP status of a completed or rate-limited request.
    pub response_status: Option<u32>,
    /// Completed: request duration; go: time waited; lease expired: time held.
    pub duration_ms: Option<f64>,
    /// The error code of a rejected or expired request.
    pub error: Option<String>,
    /// The error's message.
    pub message: Option<String>,
    /// Go: the reservations made for the permit's follow-ups.
    pub reservations: Option<Vec<f64>>,
    /// Rate limited: until when the request's limits are paused.
    pub until: Option<f64>,
    /// Retried: 1 for the first retry.
    pub attempt: Option<u32>,
    /// Retried: the earliest instant the retry may go.
    pub retry_at: Option<f64>,
    /// Reservation expired or released: which.
    pub reservation: Option<f64>,
    /// Limit lowered: the window.
    pub limit: Option<String>,
    /// Limit lowered: its max from now on (the server's quota).
    pub max: Option<f64>,
    /// Limit lowered: the max it had.
    pub previous: Option<f64>,
    /// Budget low: the balance left after the request's estimated cost.
    pub balance: Option<f64>,
    /// Budget low: the request's estimated cost.
    pub cost: Option<f64>,
    /// Budget low: `cost_over_half` or `below_warning`; breaker opened: why.
    pub reason: Option<String>,
    /// Go: the id of the pool key it went on.
    pub key: Option<String>,
}

fn native_event(e: &Event) -> NativeEvent {
    let log = e.log();
    let mut out = NativeEvent {
        kind: log.status.to_string(),
        status: log.status.to_string(),
        timestamp_ms: log.timestamp_ms,
        request_id: log.request_id as f64,
        endpoint: log.endpoint.to_string(),
        route: log.route.map(str::to_string),
        priority: log.priority.to_string(),
        response_status: log.response_status.map(u32::from),
        duration_ms: log.duration_ms,
        error: log.error.map(str::to_string),
        message: None,
        reservations: None,
        until: None,
        attempt: None,
        retry_at: None,
        reservation: None,
        limit: None,
        max: None,
        previous: None,
        balance: None,
        cost: None,
        reason: None,
        key: None,
    };
    match &e.kind {
        EventKind::Go { permit, .. } => {
            out.reservations = Some(permit.reservations.iter().map(|r| r.0 as f64).collect());
            out.key = permit.key.as_deref().map(str::to_string);
        }
        EventKind::Rejected { error } | EventKind::Expired { error } => out.message = Some(error.to_string()),
        EventKind::RateLimited { until, .. } => out.until = Some(millis(*until)),
        EventKind::Retried { attempt, at } => {
            out.attempt = Some(*attempt);
            out.retry_at = Some(millis(*at));
        }
        EventKind::ReservationExpired { reservation } | EventKind::ReservationReleased { reservation } => {
            out.reservation = Some(reservation.0 as f64);
        }
        EventKind::LimitLowered { limit, from, to } => {
            out.limit = Some(limit.clone());
            out.max = Some(*to as f64);
            out.previous = Some(*from as f64);
        }
        EventKind::BudgetLow { limit, balance, cost, reason } => {
            out.limit = Some(limit.clone());
            out.balance = Some(*balance as f64);
            out.cost = Some(*cost as f64);
            out.reason = Some((*reason).to_string());
        }
        EventKind::BreakerOpened { limit, reason, until } => {
            out.limit = Some(limit.clone());
            out.reason = Some((*reason).to_string());
            out.until = Some(millis(*until));
        }
        EventKind::BreakerHalfOpen { limit } | EventKind::BreakerClosed { limit } => out.limit = Some(limit.clone()),
        _ => {}
    }
    out
}

/// The answer of `tryAcquire`.
#[napi(object)]
pub struct NativeDecision {
    /// `go`, `wait` or `reject`.
    pub decision: String,
    /// Go: the admitted request.
    pub request_id: Option<f64>,
    /// Go: the reservations made for its follow-ups.
    pub reservations: Option<Vec<f64>>,
    /// Wait: the earliest instant worth asking again (absent: only a completion can make room).
    pub until: Option<f64>,
    /// Reject: the error code.
    pub code: Option<String>,
    /// Reject: the error's message.
    pub message: Option<String>,
}

/// The core's controller, held by JavaScript as an opaque handle (`External`): a free function per
/// core call costs ~145 ns a call here against ~320 ns for a `#[napi]` class method, whose receiver
/// goes through napi-rs's borrow registration on every call. The garbage collector frees it.
type Handle = External<Controller>;

/// The core's controller plus the failures drained by [`drain_actionable`], kept until the
/// scheduler takes them with [`take_failures`].
pub struct Controller {
    core: tc::TrafficControl,
    failures: Vec<Event>,
    refused: Vec<NativeError>,
}

impl std::ops::Deref for Controller {
    type Target = tc::TrafficControl;
    fn deref(&self) -> &tc::TrafficControl {
        &self.core
    }
}

impl std::ops::DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut tc::TrafficControl {
        &mut self.core
    }
}

fn handle(config: Result<tc::Config, ConfigError>) -> Result<Handle, CodedError> {
    let config = config.map_err(|e| config_error(&e))?;
    let core = tc::TrafficControl::new(config).map_err(|e| config_error(&e))?;
    Ok(External::new(Controller { core, failures: Vec::new(), refused: Vec::new() }))
}

/// A controller from a config in JSON text (the core's serde shape).
#[napi]
pub fn create(config_json: String) -> Result<Handle, CodedError> {
    handle(tc::Config::from_json(&config_json))
}

/// A controller from a shipped preset (`backmarket`, `keepa`, `baselinker`), with overrides read
/// from `env` under the preset's prefix (`BM_RATE_LIMIT_CATALOG_MAX_REQUESTS`).
#[napi]
pub fn create_from_preset(name: String, env: HashMap<String, String>) -> Result<Handle, CodedError> {
    let preset = tc::Preset::named(&name).map_err(|e| config_error(&e))?;
    handle(preset.config_with_env(env))
}

/// The config's JSON text, as the core reads it (defaults filled in; durations as text and in ms).
#[napi]
pub fn config_json(tc: &Handle) -> Result<String, CodedError> {
    Ok(tc.config().to_json_compact())
}

/// Queues a request given by its parts (the common case: no follow-ups, no spend). Returns its
/// id, positive when it was admitted at once, negative when it waits.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn submit(
    tc: &mut Handle,
    now: f64,
    method: Option<String>,
    url: Option<String>,
    route: Option<String>,
    priority: u32,
    cost: Option<f64>,
    deadline: Option<f64>,
) -> Result<f64, CodedError> {
    let request = host::request_from_parts(method, url, route, priority, cost, deadline).map_err(|e| host_error(&e))?;
    host::submit(tc, now, &request).map_err(|e| request_error(&e))
}

/// Queues many simple requests in one call: the scheduler gathers a tick's `schedule()` calls, so
/// a job whose limits do not bind costs a share of one boundary crossing instead of one each.
/// See [`host::submit_batch`] for `spec`; refused requests answer 0 and their errors wait for
/// [`take_refused`], in order.
#[napi]
pub fn submit_batch(
    tc: &mut Handle,
    now: f64,
    spec: Float64Array,
    strings: Option<Vec<Option<String>>>,
) -> Float64Array {
    let strings = strings.unwrap_or_default();
    let mut refused = Vec::new();
    let ids = host::submit_batch(
        tc,
        now,
        &spec,
        |i| strings.get(i).cloned().flatten(),
        |e| refused.push(NativeError { code: e.code().to_string(), message: e.message() }),
    );
    tc.refused.extend(refused);
    Float64Array::new(ids)
}

/// An error of a batched call.
#[napi(object)]
pub struct NativeError {
    /// The core's stable code.
    pub code: String,
    /// Its message.
    pub message: String,
}

/// The errors of the requests [`submit_batch`] refused, in order.
#[napi]
pub fn take_refused(tc: &mut Handle) -> Vec<NativeError> {
    std::mem::take(&mut tc.refused)
}

/// Reports, in one call, the end of requests whose task returned no HTTP response.
#[napi]
pub fn complete_batch(tc: &mut Handle, now: f64, requests: Float64Array) {
    host::complete_batch(tc, now, &requests);
}

/// Queues a request given as JSON text in the core's serde shape (follow-ups, spends, limits).
/// Returns its id, positive when it was admitted at once, negative when it waits.
#[napi]
pub fn submit_json(tc: &mut Handle, now: f64, request_json: String) -> Result<f64, CodedError> {
    let request: Request = serde_json::from_str(&request_json).map_err(invalid)?;
    host::submit(tc, now, &request).map_err(|e| request_error(&e))
}

/// Decides at once without queueing (the request given as JSON text in the core's shape).
#[napi]
pub fn try_acquire_json(tc: &mut Handle, now: f64, request_json: String) -> Result<NativeDecision, CodedError> {
    let request: Request = serde_json::from_str(&request_json).map_err(invalid)?;
    decide(tc, now, &request)
}

/// Decides at once without queueing a request given by its parts (as [`submit`]): the scheduler's
/// path for requests without follow-ups, spends or named limits, with no JSON to build or read.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn try_acquire(
    tc: &mut Handle,
    now: f64,
    method: Option<String>,
    url: Option<String>,
    route: Option<String>,
    priority: u32,
    cost: Option<f64>,
    deadline: Option<f64>,
) -> Result<NativeDecision, CodedError> {
    let request = host::request_from_parts(method, url, route, priority, cost, deadline).map_err(|e| host_error(&e))?;
    decide(tc, now, &request)
}

fn decide(tc: &mut Handle, now: f64, request: &Request) -> Result<NativeDecision, CodedError> {
    let mut out = NativeDecision {
        decision: String::new(),
        request_id: None,
        reservations: None,
        until: None,
        code: None,
        message: None,
    };
    match tc.try_acquire(Timestamp::from_millis_f64(now), request) {
        Decision::Go(permit) => {
            out.decision = "go".into();
            out.request_id = Some(permit.request.0 as f64);
            out.reservations = Some(permit.reservations.iter().map(|r| r.0 as f64).collect());
        }
        Decision::Wait { until } => {
            out.decision = "wait".into();
            out.until = until.map(millis);
        }
        Decision::Reject(e) => {
            out.decision = "reject".into();
            out.code = Some(e.code().into());
            out.message = Some(e.to_string());
        }
        _ => return Err(invalid("unknown decision")),
    }
    Ok(out)
}

/// Drains every event ready at `now`, as objects (for event listeners and scenario replays).
#[napi]
pub fn drain(tc: &mut Handle, now: f64) -> Vec<NativeEvent> {
    let now = Timestamp::from_millis_f64(now);
    let mut out = Vec::new();
    while let Some(e) = tc.poll(now) {
        out.push(native_event(&e));
    }
    out
}

/// Drains the events ready at `now`, keeping only what the scheduler acts on, flat in one array:
/// `1, request, n, reservation × n` for a go; `2, request, 0` for a rejection or expiry, whose
/// event waits for [`take_failures`]. The rest is dropped unseen. Building one object per event
/// costs ~2 µs through napi, more than the whole admission; this path has no event listener.
#[napi]
pub fn drain_actionable(tc: &mut Handle, now: f64) -> Float64Array {
    let Controller { core, failures, .. } = &mut **tc;
    Float64Array::new(host::drain_actionable(core, now, failures))
}

/// The rejections and expiries [`drain_actionable`] kept, as objects.
#[napi]
pub fn take_failures(tc: &mut Handle) -> Vec<NativeEvent> {
    tc.failures.drain(..).map(|e| native_event(&e)).collect()
}

/// The next instant anything can change by time alone, or `null`.
#[napi]
pub fn poll_timeout(tc: &Handle) -> Option<f64> {
    tc.poll_timeout().map(millis)
}

/// Reports an outcome. `headers` alternate names and values; `unix_time_ms` is the host's wall
/// clock. Returns, as one number: the instant of the retry (≥ 0) when the core queued the request
/// again, -1 done, -2 give up (report the failure), -3 unknown request.
#[napi]
pub fn complete(
    tc: &mut Handle,
    now: f64,
    request: f64,
    status: Option<u32>,
    headers: Option<Vec<String>>,
    body: Option<String>,
    unix_time_ms: Option<f64>,
) -> f64 {
    let outcome = host::outcome_from_parts(status, headers.unwrap_or_default(), body, unix_time_ms);
    host::complete(tc, now, request, outcome)
}

/// Whether the host must read this response's body (the core's one rule; a budget route's always).
#[napi]
pub fn reads_body(
    tc: &Handle,
    request: f64,
    status: u32,
    content_type: Option<String>,
    content_length: Option<f64>,
) -> bool {
    host::reads_body(Some(&tc.core), request, status, content_type.as_deref(), content_length)
}

/// The id of the pool key an in-flight request went on (its permit's `key`), if any.
#[napi]
pub fn key_of(tc: &Handle, request: f64) -> Option<String> {
    tc.core.key_of(RequestId(request as u64)).map(str::to_string)
}

/// The same rule without a controller (the shared store).
#[napi]
pub fn wants_body(status: u32, content_type: Option<String>, content_length: Option<f64>) -> bool {
    host::reads_body(None, 0.0, status, content_type.as_deref(), content_length)
}

/// Removes a waiting request, or gives back the slots of an admitted one. Whether it was known.
#[napi]
pub fn cancel(tc: &mut Handle, now: f64, request: f64) -> bool {
    tc.cancel(Timestamp::from_millis_f64(now), id(request))
}

/// Releases a reservation early. Whether it was live and not being spent.
#[napi]
pub fn release(tc: &mut Handle, now: f64, reservation: f64) -> bool {
    tc.release(Timestamp::from_millis_f64(now), ReservationId(reservation as u64))
}

/// Sets a budget's balance to what the server reported.
#[napi]
pub fn sync_budget(
    tc: &mut Handle,
    now: f64,
    limit: String,
    tokens_left: f64,
    refill_in: Option<f64>,
) -> Result<(), CodedError> {
    let refill_in = refill_in.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1e3));
    tc.sync_budget(Timestamp::from_millis_f64(now), &limit, tokens_left as i64, refill_in)
        .map_err(|e| request_error(&e))
}

/// Every limit's state and the queue depths, as JSON text (the core's serde shape, times in
/// nanoseconds).
#[napi]
pub fn snapshot_json(tc: &mut Handle, now: f64) -> Result<String, CodedError> {
    serde_json::to_string(&tc.snapshot(Timestamp::from_millis_f64(now))).map_err(invalid)
}

/// The metrics as of `now`, as JSON text (the core's `Metrics`: counters, wait histograms in
/// seconds, and the snapshot with times in nanoseconds).
#[napi]
pub fn metrics_json(tc: &mut Handle, now: f64) -> Result<String, CodedError> {
    Ok(tc.metrics(Timestamp::from_millis_f64(now)).to_json())
}

/// The metrics as of `now` in Prometheus's text exposition format.
#[napi]
pub fn metrics_text(tc: &mut Handle, now: f64) -> String {
    tc.metrics(Timestamp::from_millis_f64(now)).to_prometheus()
}

/// Runs a config beside this controller as a shadow (JSON text in the core's serde shape), or
/// stops it (`null`): it sees the same traffic and decides on it, but nothing it decides is acted
/// on. An invalid config throws `CONFIG` naming the field and leaves the running shadow.
#[napi]
pub fn set_shadow(tc: &mut Handle, now: f64, config_json: Option<String>) -> Result<(), CodedError> {
    let config = match config_json {
        Some(json) => Some(tc::Config::from_json(&json).map_err(|e| config_error(&e))?),
        None => None,
    };
    tc.set_shadow(Timestamp::from_millis_f64(now), config).map_err(|e| config_error(&e))
}

/// The same with a shipped preset and overrides read from `env` under its prefix.
#[napi]
pub fn set_shadow_preset(
    tc: &mut Handle,
    now: f64,
    name: String,
    env: HashMap<String, String>,
) -> Result<(), CodedError> {
    let preset = tc::Preset::named(&name).map_err(|e| config_error(&e))?;
    let config = preset.config_with_env(env).map_err(|e| config_error(&e))?;
    tc.set_shadow(Timestamp::from_millis_f64(now), Some(config)).map_err(|e| config_error(&e))
}

/// What the shadow would have decided beside what this controller decided, as JSON text (the
/// core's `ShadowReport`: waits in seconds); none without a shadow.
#[napi]
pub fn shadow_report_json(tc: &mut Handle, now: f64) -> Option<String> {
    tc.shadow_report(Timestamp::from_millis_f64(now)).map(|r| r.to_json())
}

/// The URL of the free status request that reports the budgets' balance (Keepa's `/token`), made
/// from a request to the same API; none when the config has no status request.
#[napi]
pub fn status_url(tc: &Handle, url: String) -> Option<String> {
    tc.status_url(&url)
}

/// Requests waiting, all priorities.
#[napi]
pub fn waiting(tc: &Handle) -> u32 {
    u32::try_from(tc.waiting()).unwrap_or(u32::MAX)
}

/// Turns the core's event log on or off (off: only the events that deliver a decision; the
/// scheduler turns it off while nobody listens).
#[napi]
pub fn set_event_log(tc: &mut Handle, on: bool) {
    tc.set_event_log(on);
}

/// The what-if simulator: one JSON document in (configs, workload, server model), one out
/// (reports, text, and the HTML page when asked). See `traffic_control_sim::simulate_json`.
#[napi]
pub fn simulate_json(input: String) -> Result<String, CodedError> {
    traffic_control_sim::simulate_json(&input).map_err(|e| napi::Error::new(e.code().to_string(), e.to_string()))
}

/// The family of an error code (`never_succeeds` for `UNKNOWN_ROUTE`, ...), as the core defines it.
#[napi]
pub fn error_kind(code: String) -> Option<&'static str> {
    tc::ErrorKind::of_code(&code).map(tc::ErrorKind::as_str)
}
