//! The shared store (Redis) for Node and Bun: argument conversion around the core's
//! [`SharedStore`](traffic_control_core::SharedStore). The JavaScript side (`js/src/shared.ts`)
//! runs each call with the application's Redis client and hands the reply back as JSON text.

use std::collections::HashMap;
use std::time::Duration;

use napi::bindgen_prelude::External;
use napi_derive::napi;
use traffic_control_core::{
    self as tc, AdmitOptions, Decision, Outcome, ReplyValue, Request, RequestId, ReservationId, StoreCall, Timestamp,
};

use crate::{config_error, invalid, request_error, CodedError};

/// The store plus the admission calls whose replies are not in yet, by token.
pub struct Shared {
    store: tc::SharedStore,
    pending: HashMap<u32, StoreCall>,
    next: u32,
}

type SharedHandle = External<Shared>;

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

/// An admission's answer.
#[napi(object)]
pub struct NativeSharedDecision {
    /// `go`, `wait` or `reject`.
    pub decision: String,
    /// Go: the request id (unique across processes).
    pub request_id: Option<f64>,
    /// Go: the reservations made for its follow-ups.
    pub reservations: Option<Vec<f64>>,
    /// Wait: how long until it is worth asking again (ms, server time); absent: only another
    /// process's completion can make room.
    pub wait_ms: Option<f64>,
    /// Reject: the error code.
    pub code: Option<String>,
    /// Reject: the message.
    pub message: Option<String>,
}

fn options(account: String, waiter_ttl_ms: Option<f64>) -> tc::StoreOptions {
    let mut o = tc::StoreOptions::new(account);
    if let Some(ms) = waiter_ttl_ms {
        o.waiter_ttl = Duration::from_secs_f64(ms.max(0.0) / 1000.0);
    }
    o
}

fn shared(config: Result<tc::Config, tc::ConfigError>, o: tc::StoreOptions) -> Result<SharedHandle, CodedError> {
    let store = tc::SharedStore::new(config.map_err(|e| config_error(&e))?, o).map_err(|e| config_error(&e))?;
    Ok(External::new(Shared { store, pending: HashMap::new(), next: 1 }))
}

fn call(c: StoreCall, token: Option<u32>) -> NativeStoreCall {
    NativeStoreCall { token, keys: c.keys, args: c.args }
}

fn reply(json: &str) -> Result<Vec<ReplyValue>, CodedError> {
    serde_json::from_str(json).map_err(|e| {
        napi::Error::new("STORE_REPLY".to_string(), format!("unexpected reply from the shared store: {e}"))
    })
}

fn store_error(e: &tc::StoreError) -> CodedError {
    napi::Error::new(e.code().to_string(), e.to_string())
}

fn ts(ms: f64) -> Timestamp {
    Timestamp::from_millis_f64(ms)
}

/// The Lua script and its SHA1: `[script, sha]`.
#[napi]
pub fn shared_script() -> Vec<String> {
    vec![tc::SCRIPT.to_string(), tc::script_sha1().to_string()]
}

/// A shared store from a config in JSON text.
#[napi]
pub fn shared_create(
    config_json: String,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedHandle, CodedError> {
    shared(tc::Config::from_json(&config_json), options(account, waiter_ttl_ms))
}

/// A shared store from a preset, with overrides from `env`.
#[napi]
pub fn shared_create_from_preset(
    name: String,
    env: HashMap<String, String>,
    account: String,
    waiter_ttl_ms: Option<f64>,
) -> Result<SharedHandle, CodedError> {
    let preset = tc::Preset::named(&name).map_err(|e| config_error(&e))?;
    shared(preset.config_with_env(env), options(account, waiter_ttl_ms))
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
    let request: Request = serde_json::from_str(&request_json).map_err(invalid)?;
    let mut o = AdmitOptions::default();
    o.waiter = waiter;
    o.max_wait = max_wait_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    let c = h.store.admit(ts(now), &request, &o).map_err(|e| request_error(&e))?;
    let token = h.next;
    h.next = h.next.wrapping_add(1).max(1);
    h.pending.insert(token, c.clone());
    Ok(call(c, Some(token)))
}

/// Forgets an admission call whose reply will never come (the store was unreachable).
#[napi]
pub fn shared_forget(h: &mut SharedHandle, token: u32) {
    h.pending.remove(&token);
}

/// Reads the reply (JSON array) to an admission call.
#[napi]
pub fn shared_decide(
    h: &mut SharedHandle,
    now: f64,
    token: u32,
    reply_json: String,
) -> Result<NativeSharedDecision, CodedError> {
    let c = h.pending.remove(&token).ok_or_else(|| invalid(format!("no admission call with token {token}")))?;
    let a = h.store.decide(ts(now), &c, &reply(&reply_json)?).map_err(|e| store_error(&e))?;
    let mut out = NativeSharedDecision {
        decision: String::new(),
        request_id: None,
        reservations: None,
        wait_ms: None,
        code: None,
        message: None,
    };
    match a.decision {
        Decision::Go(p) => {
            out.decision = "go".into();
            out.request_id = Some(p.request.0 as f64);
            out.reservations = Some(p.reservations.iter().map(|r| r.0 as f64).collect());
        }
        Decision::Wait { until } => {
            out.decision = "wait".into();
            out.wait_ms = until.map(|u| u.saturating_since(a.server_now).as_secs_f64() * 1000.0);
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

/// The call that drops a waiter's claims (it gave up before going).
#[napi]
pub fn shared_withdraw(
    h: &mut SharedHandle,
    now: f64,
    waiter: String,
    request_json: String,
) -> Result<NativeStoreCall, CodedError> {
    let request: Request = serde_json::from_str(&request_json).map_err(invalid)?;
    let admit = h.store.admit(ts(now), &request, &AdmitOptions::default()).map_err(|e| request_error(&e))?;
    Ok(call(h.store.withdraw(ts(now), &waiter, &admit), None))
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
    let mut outcome = Outcome::default();
    outcome.status = status.map(|s| s as u16);
    outcome.headers =
        headers.unwrap_or_default().chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect();
    outcome.body = body;
    h.store.complete(ts(now), RequestId(request as u64), &outcome).map(|c| call(c, None))
}

/// The call that releases a reservation early.
#[napi]
pub fn shared_release(h: &mut SharedHandle, now: f64, reservation: f64) -> NativeStoreCall {
    call(h.store.release(ts(now), ReservationId(reservation as u64)), None)
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
    let refill = refill_in_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    h.store
        .sync_budget(ts(now), &limit, tokens_left as i64, refill)
        .map(|c| call(c, None))
        .map_err(|e| request_error(&e))
}

/// Takes the reply to any other call; true when a released reservation was live.
#[napi]
pub fn shared_observe(h: &mut SharedHandle, now: f64, reply_json: String) -> Result<bool, CodedError> {
    h.store.observe(ts(now), &reply(&reply_json)?).map_err(|e| store_error(&e))
}

/// The call that reads every limit's shared state.
#[napi]
pub fn shared_snapshot_call(h: &mut SharedHandle, now: f64) -> NativeStoreCall {
    call(h.store.snapshot_call(ts(now)), None)
}

/// Every limit's shared state (JSON text, times in server milliseconds) from the snapshot reply.
#[napi]
pub fn shared_snapshot(h: &mut SharedHandle, now: f64, reply_json: String) -> Result<String, CodedError> {
    let s = h.store.snapshot(ts(now), &reply(&reply_json)?).map_err(|e| store_error(&e))?;
    let limits: Vec<serde_json::Value> = s
        .limits
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name, "kind": l.kind, "capacity": l.capacity, "used": l.used, "reserved": l.reserved,
                "available": l.available, "nextFree": l.next_free.map(|t| t.as_millis_f64()), "balance": l.balance,
            })
        })
        .collect();
    Ok(serde_json::json!({ "at": s.at.as_millis_f64(), "limits": limits, "waiters": s.waiting[2] }).to_string())
}
