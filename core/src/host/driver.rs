//! The shared store's [`SharedDriver`] at a host boundary: one entry, [`DriverHost::step`], takes an
//! input as JSON and answers with the outputs it caused, the next timeout and the number of
//! waiters, as JSON. Times are the host's milliseconds (`f64`). The JavaScript scheduler
//! (`js/src/shared.ts`) and the Python hosts (`traffic_control/shared.py`, asyncio and threads) each
//! keep only their timer, their promises or futures, their Redis and HTTP calls, and this one call.
//!
//! Inputs (`{"input": ...}`): `acquire {request, maxWait?}` → handle; `cancel {handle}`;
//! `complete {request, status?, headers?, body?}` → handle; `release {reservation}` → handle;
//! `syncBudget {limit, tokensLeft, refillIn?}` → handle; `snapshot` → handle; `reply {call, reply}`;
//! `storeError {call, reason}`; `woken`; `subscribed {ok}`; `statusDone {handle, status?, headers?,
//! body?}` (no status: no response came); `timeout`; `close`; `processTag {tag}` (a host that may not draw random
//! values when it builds the driver, as a Worker at load, names its process at first use).
//!
//! Outputs (`{"output": ...}`): `run {call, keys, args}`; `go {handle, request, reservations}`;
//! `fail {handle, code, message}`; `done {handle, live}`; `snapshot {handle, snapshot}`; `status
//! {handle, url}`; `subscribe {channel}`; `unsubscribe`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{outcome_from_parts, shared::snapshot_json, HostError};
use crate::driver::{CallId, DriverOptions, Handle, Output, SharedDriver, Unavailable};
use crate::error::StoreError;
use crate::request::{Request, RequestId, ReservationId};
use crate::shared::{ReplyValue, StoreOptions};
use crate::time::Timestamp;
use crate::Config;

/// The options a host gives, as JSON (`{account, processTag, waiterTtl?, onUnavailable?,
/// unavailableMaxWait?, wake?, learnBudgets?}`, milliseconds).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Options {
    account: String,
    process_tag: String,
    waiter_ttl: Option<f64>,
    on_unavailable: Option<String>,
    unavailable_max_wait: Option<f64>,
    wake: Option<bool>,
    learn_budgets: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "input", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
enum Input {
    Acquire { request: Request, max_wait: Option<f64> },
    Cancel { handle: u64 },
    Complete { request: f64, status: Option<u32>, headers: Option<Vec<String>>, body: Option<String> },
    Release { reservation: f64 },
    SyncBudget { limit: String, tokens_left: f64, refill_in: Option<f64> },
    Snapshot,
    Reply { call: u64, reply: Vec<Value> },
    StoreError { call: u64, reason: String },
    Woken,
    Subscribed { ok: bool },
    StatusDone { handle: u64, status: Option<u32>, headers: Option<Vec<String>>, body: Option<String> },
    Timeout,
    Close,
    ProcessTag { tag: String },
}

fn host_error(e: crate::driver::DriverError) -> HostError {
    match e {
        crate::driver::DriverError::Request(e) => HostError::Request(e),
        crate::driver::DriverError::Store(e) => HostError::Store(e),
    }
}

fn ms(d: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(d.max(0.0) / 1e3).unwrap_or(std::time::Duration::MAX)
}

/// A [`SharedDriver`] behind JSON.
#[derive(Debug)]
pub struct DriverHost {
    driver: SharedDriver,
}

impl DriverHost {
    /// A driver for `config` with the host's options (JSON, see [`Options`]).
    pub fn new(config: Config, options_json: &str) -> Result<Self, HostError> {
        let o: Options = serde_json::from_str(options_json).map_err(|e| HostError::Invalid(format!("options: {e}")))?;
        let mut store = StoreOptions::new(o.account);
        if let Some(t) = o.waiter_ttl {
            store.waiter_ttl = ms(t);
        }
        let mut options = DriverOptions::new(o.process_tag);
        options.on_unavailable = match o.on_unavailable.as_deref() {
            None | Some("wait") => Unavailable::Wait,
            Some("fail") => Unavailable::Fail,
            Some(other) => {
                return Err(HostError::Invalid(format!("onUnavailable must be \"wait\" or \"fail\", not {other:?}")))
            }
        };
        if let Some(t) = o.unavailable_max_wait {
            options.unavailable_max_wait = ms(t);
        }
        options.wake = o.wake.unwrap_or(true);
        options.learn_budgets = o.learn_budgets.unwrap_or(true);
        let driver = SharedDriver::new(config, store, options).map_err(HostError::Config)?;
        Ok(DriverHost { driver })
    }

    /// The driver.
    pub fn driver(&mut self) -> &mut SharedDriver {
        &mut self.driver
    }

    /// The free status request made from a request's URL, if the config has one.
    pub fn status_url(&self, url: &str) -> Option<String> {
        self.driver.store().config().status_url(url)
    }

    /// Takes one input at `now_ms`; answers `{result, outputs, timeout, waiting}` as JSON.
    pub fn step(&mut self, now_ms: f64, input_json: &str) -> Result<String, HostError> {
        let s = self.step_outputs(now_ms, input_json)?;
        Ok(json!({
            "result": s.result,
            "outputs": s.outputs.into_iter().map(output_json).collect::<Vec<_>>(),
            "timeout": s.timeout,
            "waiting": s.waiting,
        })
        .to_string())
    }

    /// The reply to a call, its values already read (a host whose Redis client hands values over).
    pub fn reply(&mut self, now_ms: f64, call: u64, reply: &[ReplyValue]) -> Stepped {
        self.driver.on_reply(Timestamp::from_millis_f64(now_ms), CallId(call), reply);
        self.drain(None)
    }

    /// [`step`](Self::step) with the outputs as the core's values, for a host that converts them itself.
    pub fn step_outputs(&mut self, now_ms: f64, input_json: &str) -> Result<Stepped, HostError> {
        let input: Input = serde_json::from_str(input_json).map_err(|e| HostError::Invalid(e.to_string()))?;
        let now = Timestamp::from_millis_f64(now_ms);
        let d = &mut self.driver;
        let result = match input {
            Input::Acquire { request, max_wait } => {
                let h = d.acquire(now, request, max_wait.map(ms)).map_err(host_error)?;
                Some(h.0)
            }
            Input::Cancel { handle } => {
                d.cancel(now, Handle(handle));
                None
            }
            Input::Complete { request, status, headers, body } => {
                let outcome = outcome_from_parts(status, headers.unwrap_or_default(), body, None);
                Some(d.complete(now, RequestId(request as u64), &outcome).0)
            }
            Input::Release { reservation } => Some(d.release(now, ReservationId(reservation as u64)).0),
            Input::SyncBudget { limit, tokens_left, refill_in } => {
                let h = d.sync_budget(now, &limit, tokens_left as i64, refill_in.map(ms)).map_err(host_error)?;
                Some(h.0)
            }
            Input::Snapshot => Some(d.snapshot(now).0),
            Input::Reply { call, reply } => {
                match reply_values(reply) {
                    Ok(values) => d.on_reply(now, CallId(call), &values),
                    Err(e) => d.on_reply_error(now, CallId(call), e),
                }
                None
            }
            Input::StoreError { call, reason } => {
                d.on_store_error(now, CallId(call), &reason);
                None
            }
            Input::Woken => {
                d.woken(now);
                None
            }
            Input::Subscribed { ok } => {
                d.subscribed(now, ok);
                None
            }
            Input::StatusDone { handle, status, headers, body } => {
                let outcome = status.map(|s| outcome_from_parts(Some(s), headers.unwrap_or_default(), body, None));
                d.status_done(now, Handle(handle), outcome.as_ref());
                None
            }
            Input::Timeout => {
                d.handle_timeout(now);
                None
            }
            Input::Close => {
                d.close();
                None
            }
            Input::ProcessTag { tag } => {
                d.set_process_tag(tag);
                None
            }
        };
        Ok(self.drain(result))
    }

    fn drain(&mut self, result: Option<u64>) -> Stepped {
        let d = &mut self.driver;
        let outputs = std::iter::from_fn(|| d.poll_output()).collect();
        Stepped { result, outputs, timeout: d.poll_timeout().map(Timestamp::as_millis_f64), waiting: d.waiting() }
    }
}

/// What one input caused.
#[derive(Debug)]
#[non_exhaustive]
pub struct Stepped {
    /// The handle of the operation the input started, if it started one.
    pub result: Option<u64>,
    /// What the host must do, in order.
    pub outputs: Vec<Output>,
    /// When to come back with a `timeout` input (host milliseconds).
    pub timeout: Option<f64>,
    /// Requests of this process waiting.
    pub waiting: usize,
}

fn reply_values(reply: Vec<Value>) -> Result<Vec<ReplyValue>, StoreError> {
    let bad = |reason: String| StoreError::Reply { reason };
    reply
        .into_iter()
        .map(|v| match v {
            Value::Number(n) => n.as_i64().map(ReplyValue::Int).ok_or_else(|| bad(format!("not an integer: {n}"))),
            Value::String(s) => Ok(ReplyValue::Text(s)),
            other => Err(bad(format!("not an integer or a string: {other}"))),
        })
        .collect()
}

fn output_json(o: Output) -> Value {
    match o {
        Output::Run { call, store_call } => {
            json!({ "output": "run", "call": call.0, "keys": store_call.keys, "args": store_call.args })
        }
        Output::Go { handle, request, reservations } => json!({
            "output": "go", "handle": handle.0, "request": request.0,
            "reservations": reservations.iter().map(|r| r.0).collect::<Vec<_>>(),
        }),
        Output::Fail { handle, error } => {
            json!({ "output": "fail", "handle": handle.0, "code": error.code(), "message": error.to_string() })
        }
        Output::Done { handle, live } => json!({ "output": "done", "handle": handle.0, "live": live }),
        Output::Snapshot { handle, snapshot } => {
            json!({ "output": "snapshot", "handle": handle.0, "snapshot": snapshot_json(&snapshot) })
        }
        Output::Status { handle, url } => json!({ "output": "status", "handle": handle.0, "url": url }),
        Output::Subscribe { channel } => json!({ "output": "subscribe", "channel": channel }),
        Output::Unsubscribe => json!({ "output": "unsubscribe" }),
    }
}
