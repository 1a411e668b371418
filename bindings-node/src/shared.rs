//! The shared store (Redis) for Node and Bun: argument conversion around the core's
//! [`host::SharedHost`] (the same calls as the wasm package's). The JavaScript side
//! (`js/src/shared.ts`) runs each call with the application's Redis client and hands the reply
//! back as JSON text.

use std::collections::HashMap;

use napi::bindgen_prelude::External;
use napi_derive::napi;
use traffic_control_core::{self as tc, host, StoreCall};

use crate::{config_error, host_error, CodedError};

type SharedHandle = External<host::SharedHost>;

/// One script call: run `EVALSHA sha keys.length ...keys ...args`.
#[napi(object)]
pub struct NativeStoreCall {
    /// For an admission: the token to hand back with its reply.
    pub token: Option<u32>,
    /// The keys, all hash-tagged with the account.
    pub keys: Vec<String>,
    /// The arguments.
    pub args: Vec<String>,
}

/// An admission's answer (see [`host::SharedDecision`]).
#[napi(object)]
pub struct NativeSharedDecision {
    /// `go`, `wait` or `reject`.
    pub decision: String,
    /// Go: the request id (unique across processes).
    pub request_id: Option<f64>,
    /// Go: the reservations made for its follow-ups.
    pub reservations: Option<Vec<f64>>,
    /// Wait: how long until it is worth asking again (ms); absent: only a completion makes room.
    pub wait_ms: Option<f64>,
    /// Reject: the error code.
    pub code: Option<String>,
    /// Reject: the message.
    pub message: Option<String>,
}

fn shared(
    config: Result<tc::Config, tc::ConfigError>,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedHandle, CodedError> {
    let store = config.and_then(|c| host::SharedHost::new(c, account, waiter_ttl_ms)).map_err(|e| config_error(&e))?;
    Ok(External::new(store))
}

fn call(c: StoreCall, token: Option<u32>) -> NativeStoreCall {
    NativeStoreCall { token, keys: c.keys, args: c.args }
}

/// The Lua script and its SHA1: `[script, sha]`.
#[napi]
pub fn shared_script() -> Vec<String> {
    host::script().into()
}

/// A shared store from a config in JSON text.
#[napi]
pub fn shared_create(
    config_json: String,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedHandle, CodedError> {
    shared(tc::Config::from_json(&config_json), account, waiter_ttl_ms)
}

/// A shared store from a preset, with overrides from `env`.
#[napi]
pub fn shared_create_from_preset(
    name: String,
    env: HashMap<String, String>,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedHandle, CodedError> {
    shared(tc::Preset::named(&name).and_then(|p| p.config_with_env(env)), account, waiter_ttl_ms)
}

/// The call that admits a request (JSON in the core's shape). Never-succeeding requests throw.
#[napi]
pub fn shared_admit(
    h: &mut SharedHandle,
    now: f64,
    request_json: String,
    waiter: Option<String>,
    max_wait_ms: Option<f64>,
) -> Result<NativeStoreCall, CodedError> {
    let (token, c) = h.admit(now, &request_json, waiter, max_wait_ms).map_err(|e| host_error(&e))?;
    Ok(call(c, Some(token)))
}

/// Forgets an admission call whose reply will never come (the store was unreachable).
#[napi]
pub fn shared_forget(h: &mut SharedHandle, token: u32) {
    h.forget(token);
}

/// Reads the reply (JSON array) to an admission call.
#[napi]
pub fn shared_decide(
    h: &mut SharedHandle,
    now: f64,
    token: u32,
    reply_json: String,
) -> Result<NativeSharedDecision, CodedError> {
    let d = h.decide(now, token, &reply_json).map_err(|e| host_error(&e))?;
    Ok(NativeSharedDecision {
        decision: d.decision.into(),
        request_id: d.request_id,
        reservations: d.reservations,
        wait_ms: d.wait_ms,
        code: d.code.map(Into::into),
        message: d.message,
    })
}

/// The call that drops a waiter's claims (it gave up before going).
#[napi]
pub fn shared_withdraw(
    h: &mut SharedHandle,
    now: f64,
    waiter: String,
    request_json: String,
) -> Result<NativeStoreCall, CodedError> {
    h.withdraw(now, &waiter, &request_json).map(|c| call(c, None)).map_err(|e| host_error(&e))
}

/// The call that reports a permitted request's outcome, or null when there is nothing to tell.
/// `headers` is a flat list `[name, value, ...]`.
#[napi]
pub fn shared_complete(
    h: &mut SharedHandle,
    now: f64,
    request: f64,
    status: Option<u32>,
    headers: Option<Vec<String>>,
    body: Option<String>,
) -> Option<NativeStoreCall> {
    h.complete(now, request, status, headers.unwrap_or_default(), body).map(|c| call(c, None))
}

/// The call that releases a reservation early.
#[napi]
pub fn shared_release(h: &mut SharedHandle, now: f64, reservation: f64) -> NativeStoreCall {
    call(h.release(now, reservation), None)
}

/// The call that sets a budget to the server's balance.
#[napi]
pub fn shared_sync_budget(
    h: &mut SharedHandle,
    now: f64,
    limit: String,
    tokens_left: f64,
    refill_in_ms: Option<f64>,
) -> Result<NativeStoreCall, CodedError> {
    h.sync_budget(now, &limit, tokens_left, refill_in_ms).map(|c| call(c, None)).map_err(|e| host_error(&e))
}

/// Takes the reply to any other call; true when a released reservation was live.
#[napi]
pub fn shared_observe(h: &mut SharedHandle, now: f64, reply_json: String) -> Result<bool, CodedError> {
    h.observe(now, &reply_json).map_err(|e| host_error(&e))
}

/// The call that reads every limit's shared state.
#[napi]
pub fn shared_snapshot_call(h: &mut SharedHandle, now: f64) -> NativeStoreCall {
    call(h.snapshot_call(now), None)
}

/// The free status request that reports the budgets' balance (Keepa's `/token`), made from a
/// request's URL; none when the config has none.
#[napi]
pub fn shared_status_url(h: &SharedHandle, url: String) -> Option<String> {
    h.status_url(&url)
}

/// Every limit's shared state (JSON text, times in server milliseconds) from the snapshot reply.
#[napi]
pub fn shared_snapshot(h: &mut SharedHandle, now: f64, reply_json: String) -> Result<String, CodedError> {
    h.snapshot(now, &reply_json).map_err(|e| host_error(&e))
}
