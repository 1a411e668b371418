//! The shared store (Redis) for browsers, Workers and Node: argument conversion around the core's
//! [`host::SharedHost`], the same functions (names, arguments, results) as the napi addon's. The
//! JavaScript side (`js/src/shared.ts`) runs each call with the application's Redis client and
//! hands the reply back as JSON text.

use js_sys::{JsString, Object};
use serde_json::json;
use traffic_control_core::{self as tc, host, StoreCall};
use wasm_bindgen::prelude::*;

use crate::{config_error, env_vars, host_error, parse};

/// The core's shared store, held by JavaScript as an opaque handle.
#[wasm_bindgen]
pub struct SharedStore(host::SharedHost);

fn shared(
    config: Result<tc::Config, tc::ConfigError>,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedStore, JsValue> {
    let store = config.and_then(|c| host::SharedHost::new(c, account, waiter_ttl_ms)).map_err(|e| config_error(&e))?;
    Ok(SharedStore(store))
}

/// One script call, `{token, keys, args}`: run `EVALSHA sha keys.length ...keys ...args`.
fn call(c: StoreCall, token: Option<u32>) -> JsValue {
    parse(&json!({ "token": token, "keys": c.keys, "args": c.args }))
}

/// The Lua script and its SHA1: `[script, sha]`.
#[wasm_bindgen(js_name = sharedScript)]
pub fn shared_script() -> Vec<String> {
    host::script().into()
}

/// A shared store from a config in JSON text.
#[wasm_bindgen(js_name = sharedCreate)]
pub fn shared_create(config_json: &str, account: String, waiter_ttl_ms: Option<f64>) -> Result<SharedStore, JsValue> {
    shared(tc::Config::from_json(config_json), account, waiter_ttl_ms)
}

/// A shared store from a preset, with overrides from `env` (an object of strings).
#[wasm_bindgen(js_name = sharedCreateFromPreset)]
pub fn shared_create_from_preset(
    name: &str,
    env: &Object,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedStore, JsValue> {
    shared(tc::Preset::named(name).and_then(|p| p.config_with_env(env_vars(env))), account, waiter_ttl_ms)
}

/// The call that admits a request (JSON in the core's shape). Never-succeeding requests throw.
#[wasm_bindgen(js_name = sharedAdmit)]
pub fn shared_admit(
    h: &mut SharedStore,
    now: f64,
    request_json: &str,
    waiter: Option<String>,
    max_wait_ms: Option<f64>,
) -> Result<JsValue, JsValue> {
    let (token, c) = h.0.admit(now, request_json, waiter, max_wait_ms).map_err(|e| host_error(&e))?;
    Ok(call(c, Some(token)))
}

/// Forgets an admission call whose reply will never come (the store was unreachable).
#[wasm_bindgen(js_name = sharedForget)]
pub fn shared_forget(h: &mut SharedStore, token: u32) {
    h.0.forget(token);
}

/// Reads the reply (JSON array) to an admission call: `{decision, requestId?, reservations?,
/// waitMs?, code?, message?}`.
#[wasm_bindgen(js_name = sharedDecide)]
pub fn shared_decide(h: &mut SharedStore, now: f64, token: u32, reply_json: &str) -> Result<JsValue, JsValue> {
    let d = h.0.decide(now, token, reply_json).map_err(|e| host_error(&e))?;
    Ok(parse(&json!(d)))
}

/// The call that drops a waiter's claims (it gave up before going).
#[wasm_bindgen(js_name = sharedWithdraw)]
pub fn shared_withdraw(h: &mut SharedStore, now: f64, waiter: &str, request_json: &str) -> Result<JsValue, JsValue> {
    h.0.withdraw(now, waiter, request_json).map(|c| call(c, None)).map_err(|e| host_error(&e))
}

/// The call that reports a permitted request's outcome, or null when there is nothing to tell.
/// `headers` is a flat list `[name, value, ...]`.
#[wasm_bindgen(js_name = sharedComplete)]
pub fn shared_complete(
    h: &mut SharedStore,
    now: f64,
    request: f64,
    status: Option<u32>,
    headers: Option<Vec<JsString>>,
    body: Option<String>,
) -> JsValue {
    let headers = headers.unwrap_or_default().into_iter().map(String::from);
    h.0.complete(now, request, status, headers, body).map_or(JsValue::NULL, |c| call(c, None))
}

/// The call that releases a reservation early.
#[wasm_bindgen(js_name = sharedRelease)]
pub fn shared_release(h: &mut SharedStore, now: f64, reservation: f64) -> JsValue {
    call(h.0.release(now, reservation), None)
}

/// The call that sets a budget to the server's balance.
#[wasm_bindgen(js_name = sharedSyncBudget)]
pub fn shared_sync_budget(
    h: &mut SharedStore,
    now: f64,
    limit: &str,
    tokens_left: f64,
    refill_in_ms: Option<f64>,
) -> Result<JsValue, JsValue> {
    h.0.sync_budget(now, limit, tokens_left, refill_in_ms).map(|c| call(c, None)).map_err(|e| host_error(&e))
}

/// Takes the reply to any other call; true when a released reservation was live.
#[wasm_bindgen(js_name = sharedObserve)]
pub fn shared_observe(h: &mut SharedStore, now: f64, reply_json: &str) -> Result<bool, JsValue> {
    h.0.observe(now, reply_json).map_err(|e| host_error(&e))
}

/// The call that reads every limit's shared state.
#[wasm_bindgen(js_name = sharedSnapshotCall)]
pub fn shared_snapshot_call(h: &SharedStore, now: f64) -> JsValue {
    call(h.0.snapshot_call(now), None)
}

/// The free status request that reports the budgets' balance (Keepa's `/token`), made from a
/// request's URL; none when the config has none.
#[wasm_bindgen(js_name = sharedStatusUrl)]
pub fn shared_status_url(h: &SharedStore, url: String) -> Option<String> {
    h.0.status_url(&url)
}

/// Every limit's shared state (JSON text, times in server milliseconds) from the snapshot reply.
#[wasm_bindgen(js_name = sharedSnapshot)]
pub fn shared_snapshot(h: &mut SharedStore, now: f64, reply_json: &str) -> Result<String, JsValue> {
    h.0.snapshot(now, reply_json).map_err(|e| host_error(&e))
}
