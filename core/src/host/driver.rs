//! The shared store's [`SharedDriver`] at a host boundary: one entry, [`DriverHost::step`], takes an
//! input as JSON and answers with the outputs it caused, the next timeout and the number of
//! waiters, as JSON. Times are the host's milliseconds (`f64`). The JavaScript scheduler
//! (`js/src/shared.ts`) and the Python hosts (`traffic_control/shared.py`, asyncio and threads) each
//! keep only their timer, their promises or futures, their Redis and HTTP calls, and this one call.
//!
//! Inputs (`{"input": ...}`): `acquire {request, maxWait?}` → handle; `cancel {handle}`;
//! `complete {request, status?, headers?, body?, unixTime?}` → handle (`unixTime`: the host's wall
//! clock in ms, which a server's absolute times are measured from); `release {reservation}` → handle;
//! `syncBudget {limit, tokensLeft, refillIn?}` → handle; `snapshot` → handle; `metrics` → handle
//! (the `metrics` feature); `reply {call, reply}`;
//! `storeError {call, reason}`; `woken`; `subscribed {ok}`; `statusDone {handle, status?, headers?,
//! body?}` (no status: no response came); `timeout`; `close`; `events {on}` (events as outputs, or
//! not); `processTag {tag}` (a host that may not draw random
//! values when it builds the driver, as a Worker at load, names its process at first use).
//!
//! Outputs (`{"output": ...}`): `run {call, keys, args}`; `go {handle, request, reservations}`
//! (an acquire's permit, or a completion's retry); `fail {handle, code, message}`; `done {handle,
//! live}`; `giveUp {handle}` (a rate-limited completion that may not be retried); `snapshot
//! {handle, snapshot}`; `metrics {handle, metrics, text}` (the metrics as JSON and as Prometheus
//! text); `status {handle, url}`; `subscribe {channel}`; `unsubscribe`; `event {event}` (one event,
//! as the in-memory controller's listeners get it).

use serde_json::{json, Value};

use super::{outcome_from_parts, shared::snapshot_json, HostError};
use crate::driver::{CallId, DriverOptions, Handle, Output, SharedDriver, Unavailable};
use crate::error::StoreError;
use crate::request::{Request, RequestId, ReservationId};
use crate::shared::{ReplyValue, StoreOptions};
use crate::time::Timestamp;
use crate::Config;

/// A JSON object's field: absent and `null` are `None`. Read by hand from a `Value` rather than
/// through derived deserializers: an internally tagged enum brings serde's buffering machinery,
/// about 40 KB of the wasm module.
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.get(name).filter(|f| !f.is_null())
}

fn num(v: &Value, name: &str) -> Result<Option<f64>, HostError> {
    field(v, name).map(|f| f.as_f64().ok_or_else(|| HostError::Invalid(format!("{name} must be a number")))).transpose()
}

fn need_num(v: &Value, name: &str) -> Result<f64, HostError> {
    num(v, name)?.ok_or_else(|| HostError::Invalid(format!("{name} is missing")))
}

fn text(v: &Value, name: &str) -> Result<Option<String>, HostError> {
    field(v, name)
        .map(|f| f.as_str().map(str::to_string).ok_or_else(|| HostError::Invalid(format!("{name} must be a string"))))
        .transpose()
}

fn need_text(v: &Value, name: &str) -> Result<String, HostError> {
    text(v, name)?.ok_or_else(|| HostError::Invalid(format!("{name} is missing")))
}

fn flag(v: &Value, name: &str) -> Result<Option<bool>, HostError> {
    field(v, name)
        .map(|f| f.as_bool().ok_or_else(|| HostError::Invalid(format!("{name} must be true or false"))))
        .transpose()
}

/// A response's status, flat headers and body.
type Response = (Option<u32>, Vec<String>, Option<String>);

/// A response's parts: `status?`, `headers?` (flat `[name, value, ...]`), `body?`.
fn response(v: &Value) -> Result<Response, HostError> {
    let status = num(v, "status")?.map(|s| s as u32);
    let headers = match field(v, "headers") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(|h| h.as_str().unwrap_or_default().to_string()).collect(),
        Some(_) => return Err(HostError::Invalid("headers must be a flat list of strings".into())),
    };
    Ok((status, headers, text(v, "body")?))
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
        let o: Value = serde_json::from_str(options_json).map_err(|e| HostError::Invalid(format!("options: {e}")))?;
        let mut store = StoreOptions::new(need_text(&o, "account")?);
        if let Some(t) = num(&o, "waiterTtl")? {
            store.waiter_ttl = ms(t);
        }
        let mut options = DriverOptions::new(text(&o, "processTag")?.unwrap_or_default());
        options.on_unavailable = match text(&o, "onUnavailable")?.as_deref() {
            None | Some("wait") => Unavailable::Wait,
            Some("fail") => Unavailable::Fail,
            Some(other) => {
                return Err(HostError::Invalid(format!("onUnavailable must be \"wait\" or \"fail\", not {other:?}")))
            }
        };
        if let Some(t) = num(&o, "unavailableMaxWait")? {
            options.unavailable_max_wait = ms(t);
        }
        options.wake = flag(&o, "wake")?.unwrap_or(true);
        options.learn_budgets = flag(&o, "learnBudgets")?.unwrap_or(true);
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

    /// Takes one input at `now_ms`; answers `{result, outputs, timeout, waiting, wakeups}` as JSON
    /// (`wakeups`: the wake-up messages received so far).
    pub fn step(&mut self, now_ms: f64, input_json: &str) -> Result<String, HostError> {
        let s = self.step_outputs(now_ms, input_json)?;
        Ok(json!({
            "result": s.result,
            "outputs": s.outputs.into_iter().map(output_json).collect::<Vec<_>>(),
            "timeout": s.timeout,
            "waiting": s.waiting,
            "wakeups": self.driver.wakeups(),
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
        let mut v: Value = serde_json::from_str(input_json).map_err(|e| HostError::Invalid(e.to_string()))?;
        let now = Timestamp::from_millis_f64(now_ms);
        let handle = |v: &Value| need_num(v, "handle").map(|h| Handle(h as u64));
        let call = |v: &Value| need_num(v, "call").map(|c| CallId(c as u64));
        let d = &mut self.driver;
        let result = match need_text(&v, "input")?.as_str() {
            "acquire" => {
                let max_wait = num(&v, "maxWait")?.map(ms);
                // From text, as every other host call reads a request: a second deserializer (from a
                // Value) would add its own copy of the request's to the wasm module.
                let text = field(&v, "request").map(Value::to_string).unwrap_or_default();
                let request: Request =
                    serde_json::from_str(&text).map_err(|e| HostError::Invalid(format!("request: {e}")))?;
                Some(d.acquire(now, request, max_wait).map_err(host_error)?.0)
            }
            "cancel" => {
                d.cancel(now, handle(&v)?);
                None
            }
            "complete" => {
                let (status, headers, body) = response(&v)?;
                // The host's wall clock: what a server's absolute times (an HTTP date, a reset
                // as an epoch, BaseLinker's "blocked until") are measured from.
                let outcome = outcome_from_parts(status, headers, body, num(&v, "unixTime")?);
                Some(d.complete(now, RequestId(need_num(&v, "request")? as u64), &outcome).0)
            }
            "release" => Some(d.release(now, ReservationId(need_num(&v, "reservation")? as u64)).0),
            "syncBudget" => {
                let (limit, tokens, refill) =
                    (need_text(&v, "limit")?, need_num(&v, "tokensLeft")?, num(&v, "refillIn")?);
                Some(d.sync_budget(now, &limit, tokens as i64, refill.map(ms)).map_err(host_error)?.0)
            }
            "snapshot" => Some(d.snapshot(now).0),
            #[cfg(feature = "metrics")]
            "metrics" => Some(d.metrics(now).0),
            "reply" => {
                let call = call(&v)?;
                let reply = match v.get_mut("reply").map(Value::take) {
                    Some(Value::Array(items)) => reply_values(items),
                    _ => Err(StoreError::Reply { reason: "not an array".into() }),
                };
                match reply {
                    Ok(values) => d.on_reply(now, call, &values),
                    Err(e) => d.on_reply_error(now, call, e),
                }
                None
            }
            "storeError" => {
                d.on_store_error(now, call(&v)?, &text(&v, "reason")?.unwrap_or_default());
                None
            }
            "woken" => {
                d.woken(now);
                None
            }
            "subscribed" => {
                d.subscribed(now, flag(&v, "ok")?.unwrap_or(false));
                None
            }
            "statusDone" => {
                let (status, headers, body) = response(&v)?;
                let outcome = status.map(|s| outcome_from_parts(Some(s), headers, body, None));
                d.status_done(now, handle(&v)?, outcome.as_ref());
                None
            }
            "timeout" => {
                d.handle_timeout(now);
                None
            }
            "close" => {
                d.close();
                None
            }
            "events" => {
                d.set_events(flag(&v, "on")?.unwrap_or(false));
                None
            }
            "processTag" => {
                d.set_process_tag(need_text(&v, "tag")?);
                None
            }
            other => return Err(HostError::Invalid(format!("unknown input {other:?}"))),
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
        Output::GiveUp { handle } => json!({ "output": "giveUp", "handle": handle.0 }),
        Output::Snapshot { handle, snapshot } => {
            json!({ "output": "snapshot", "handle": handle.0, "snapshot": snapshot_json(&snapshot) })
        }
        #[cfg(feature = "metrics")]
        Output::Metrics { handle, metrics } => json!({
            "output": "metrics", "handle": handle.0,
            "metrics": serde_json::from_str::<Value>(&metrics.to_json()).unwrap_or(Value::Null),
            "text": metrics.to_prometheus(),
        }),
        Output::Status { handle, url } => json!({ "output": "status", "handle": handle.0, "url": url }),
        Output::Subscribe { channel } => json!({ "output": "subscribe", "channel": channel }),
        Output::Unsubscribe => json!({ "output": "unsubscribe" }),
        Output::Event(e) => json!({ "output": "event", "event": super::event_json(&e) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> DriverHost {
        let config = r#"{"limits":{"api":{"kind":"window","max":1,"per":"1s"}},"global":["api"]}"#;
        DriverHost::new(Config::from_json(config).unwrap(), r#"{"account":"acct","processTag":"p"}"#).unwrap()
    }

    fn step(h: &mut DriverHost, input: &str) -> Value {
        serde_json::from_str(&h.step(0.0, input).unwrap()).unwrap()
    }

    #[test]
    fn an_acquire_runs_one_call_and_its_reply_lets_it_go() {
        let mut h = host();
        let a = step(&mut h, r#"{"input":"acquire","request":{"target":{"http":{"method":"GET","url":"/x"}}}}"#);
        assert_eq!(a["result"], 1);
        assert_eq!(a["waiting"], 1);
        let run = &a["outputs"][0];
        assert_eq!((run["output"].as_str(), run["keys"][0].as_str()), (Some("run"), Some("tc:{acct}:meta")));
        let input = format!(r#"{{"input":"reply","call":{},"reply":[1,1700000000000000,"e",7]}}"#, run["call"]);
        let go = step(&mut h, &input);
        assert_eq!(go["outputs"][0], json!({"output": "go", "handle": 1, "request": 7, "reservations": []}));
        assert_eq!(go["waiting"], 0);
        let bad = format!(r#"{{"input":"reply","call":{},"reply":[1.5]}}"#, 99);
        assert_eq!(step(&mut h, &bad)["outputs"], json!([]), "a reply to no call is ignored");
    }

    #[test]
    fn bad_input_keeps_its_code() {
        let mut h = host();
        assert_eq!(h.step(0.0, "{").unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(h.step(0.0, r#"{"input":"nope"}"#).unwrap_err().code(), "INVALID_ARGUMENT");
        let e = h.step(0.0, r#"{"input":"acquire","request":{"target":{"route":"nope"}}}"#).unwrap_err();
        assert_eq!(e.code(), "UNKNOWN_ROUTE");
        let e = h.step(0.0, r#"{"input":"syncBudget","limit":"nosuch","tokensLeft":5}"#).unwrap_err();
        assert_eq!(e.code(), "UNKNOWN_LIMIT");
        let config = Config::from_json(r#"{"limits":{"api":{"kind":"window","max":1,"per":"1s"}},"global":["api"]}"#);
        let e = DriverHost::new(config.unwrap(), r#"{"account":"a{b}"}"#).unwrap_err();
        assert_eq!(e.code(), "CONFIG");
        let done = step(&mut h, r#"{"input":"complete","request":3,"status":200}"#);
        assert_eq!(done["outputs"][0], json!({"output": "done", "handle": 1, "live": false}), "nothing to tell");
    }
}
