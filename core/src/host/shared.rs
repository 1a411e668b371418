//! The shared store (Redis) at the JavaScript boundary, what the napi and the wasm bindings do
//! alike around [`SharedStore`]: requests and replies cross as JSON text, time and ids as `f64`
//! milliseconds, and an admission call waits under a numeric token for its reply. The JavaScript
//! side (`js/src/shared.ts`) runs each call with the application's Redis client.

use std::time::Duration;

use serde::Serialize;

use super::{outcome_from_parts, HostError};
use crate::error::{ConfigError, StoreError};
use crate::request::{Decision, Request, RequestId, ReservationId};
use crate::shared::{script_sha1, AdmitOptions, Admitted, ReplyValue, SharedStore, StoreCall, StoreOptions, SCRIPT};
use crate::time::Timestamp;
use crate::Config;

/// The Lua script and its SHA1, as `EVALSHA` names it: `[script, sha]`.
pub fn script() -> [String; 2] {
    [SCRIPT.to_string(), script_sha1().to_string()]
}

fn at(ms: f64) -> Timestamp {
    Timestamp::from_millis_f64(ms)
}

/// Milliseconds as a duration: negative and NaN are zero, too large is the largest.
fn duration(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms.max(0.0) / 1e3).unwrap_or(Duration::MAX)
}

fn request(json: &str) -> Result<Request, HostError> {
    serde_json::from_str(json).map_err(|e| HostError::Invalid(e.to_string()))
}

/// A reply's JSON array: integers and strings. Read through `serde_json::Value`, which the bindings
/// carry anyway, rather than `ReplyValue`'s own (untagged) deserializer, which would add serde's
/// buffering machinery to the wasm module.
fn reply(json: &str) -> Result<Vec<ReplyValue>, HostError> {
    let bad = |reason: String| HostError::Store(StoreError::Reply { reason });
    // A Value, then its array: a typed Vec would keep serde's type-error formatting (and with it
    // core's float formatting) in the wasm module.
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Array(values) = value else { return Err(bad(format!("not an array: {value}"))) };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::Number(n) => {
                n.as_i64().map(ReplyValue::Int).ok_or_else(|| bad(format!("not an integer: {n}")))
            }
            serde_json::Value::String(s) => Ok(ReplyValue::Text(s)),
            other => Err(bad(format!("not an integer or a string: {other}"))),
        })
        .collect()
}

/// An admission's answer, flat for JavaScript (absent fields are left out of its JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SharedDecision {
    /// `go`, `wait` or `reject`.
    pub decision: &'static str,
    /// Go: the request id (unique across processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<f64>,
    /// Go: the reservations made for its follow-ups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Vec<f64>>,
    /// Wait: how long until it is worth asking again (ms, server time); absent: only another
    /// process's completion can make room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    /// Reject: the error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// Reject: the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A shared store as a JavaScript binding holds it: the store, and the admission calls whose
/// replies are not in yet, by token (a few at a time: one per class of waiters asking).
#[derive(Debug)]
pub struct SharedHost {
    store: SharedStore,
    pending: Vec<(u32, StoreCall)>,
    next: u32,
}

impl SharedHost {
    /// A store for `account`; `waiter_ttl_ms` overrides how long a waiter's claim outlives the
    /// instant it said it would ask again.
    pub fn new(config: Config, account: String, waiter_ttl_ms: Option<f64>) -> Result<Self, ConfigError> {
        let mut options = StoreOptions::new(account);
        if let Some(ms) = waiter_ttl_ms {
            options.waiter_ttl = duration(ms);
        }
        Ok(SharedHost { store: SharedStore::new(config, options)?, pending: Vec::new(), next: 1 })
    }

    /// The call that admits a request (JSON in the core's shape), and the token to hand back with
    /// its reply to [`decide`](Self::decide). Requests that can never go are errors.
    pub fn admit(
        &mut self,
        now_ms: f64,
        request_json: &str,
        waiter: Option<String>,
        max_wait_ms: Option<f64>,
    ) -> Result<(u32, StoreCall), HostError> {
        let options = AdmitOptions { waiter, max_wait: max_wait_ms.map(duration), ..AdmitOptions::default() };
        let call = self.store.admit(at(now_ms), &request(request_json)?, &options).map_err(HostError::Request)?;
        let token = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.pending.push((token, call.clone()));
        Ok((token, call))
    }

    /// The store itself, for the calls that need no token (a host with its own argument shapes).
    pub fn store_mut(&mut self) -> &mut SharedStore {
        &mut self.store
    }

    /// Forgets an admission call whose reply will never come (the store was unreachable).
    pub fn forget(&mut self, token: u32) {
        self.take(token);
    }

    fn take(&mut self, token: u32) -> Option<StoreCall> {
        let i = self.pending.iter().position(|(t, _)| *t == token)?;
        Some(self.pending.swap_remove(i).1)
    }

    /// Reads the reply to the admission call of `token`, already parsed (a host whose Redis client
    /// hands over values, as Python's does).
    pub fn decide_reply(&mut self, now_ms: f64, token: u32, reply: &[ReplyValue]) -> Result<Admitted, HostError> {
        let call =
            self.take(token).ok_or_else(|| HostError::Invalid(format!("no admission call with token {token}")))?;
        self.store.decide(at(now_ms), &call, reply).map_err(HostError::Store)
    }

    /// Reads the reply (a JSON array) to the admission call of `token`.
    pub fn decide(&mut self, now_ms: f64, token: u32, reply_json: &str) -> Result<SharedDecision, HostError> {
        let admitted = self.decide_reply(now_ms, token, &reply(reply_json)?)?;
        Ok(match admitted.decision {
            Decision::Go(permit) => SharedDecision {
                decision: "go",
                request_id: Some(permit.request.0 as f64),
                reservations: Some(permit.reservations.iter().map(|r| r.0 as f64).collect()),
                ..SharedDecision::default()
            },
            Decision::Wait { until } => SharedDecision {
                decision: "wait",
                wait_ms: until.map(|u| u.saturating_since(admitted.server_now).as_secs_f64() * 1e3),
                ..SharedDecision::default()
            },
            Decision::Reject(e) => SharedDecision {
                decision: "reject",
                code: Some(e.code()),
                message: Some(e.to_string()),
                ..SharedDecision::default()
            },
        })
    }

    /// The call that drops a waiter's claims (it gave up before going).
    pub fn withdraw(&mut self, now_ms: f64, waiter: &str, request_json: &str) -> Result<StoreCall, HostError> {
        let admit = self
            .store
            .admit(at(now_ms), &request(request_json)?, &AdmitOptions::default())
            .map_err(HostError::Request)?;
        Ok(self.store.withdraw(at(now_ms), waiter, &admit))
    }

    /// The call that reports a permitted request's outcome (headers alternate names and values),
    /// or `None` when there is nothing to tell.
    pub fn complete(
        &mut self,
        now_ms: f64,
        request: f64,
        status: Option<u32>,
        headers: impl IntoIterator<Item = String>,
        body: Option<String>,
    ) -> Option<StoreCall> {
        let outcome = outcome_from_parts(status, headers, body, None);
        self.store.complete(at(now_ms), RequestId(request as u64), &outcome)
    }

    /// The call that releases a reservation early.
    pub fn release(&mut self, now_ms: f64, reservation: f64) -> StoreCall {
        self.store.release(at(now_ms), ReservationId(reservation as u64))
    }

    /// The call that sets a budget to the server's balance.
    pub fn sync_budget(
        &mut self,
        now_ms: f64,
        limit: &str,
        tokens_left: f64,
        refill_in_ms: Option<f64>,
    ) -> Result<StoreCall, HostError> {
        self.store
            .sync_budget(at(now_ms), limit, tokens_left as i64, refill_in_ms.map(duration))
            .map_err(HostError::Request)
    }

    /// Takes the reply to any call but an admission; true when a released reservation was live.
    pub fn observe(&mut self, now_ms: f64, reply_json: &str) -> Result<bool, HostError> {
        self.store.observe(at(now_ms), &reply(reply_json)?).map_err(HostError::Store)
    }

    /// The free status request that reports the budgets' balance, made from a request's URL
    /// ([`Config::status_url`](crate::Config::status_url)).
    pub fn status_url(&self, url: &str) -> Option<String> {
        self.store.config().status_url(url)
    }

    /// The call that reads every limit's shared state.
    pub fn snapshot_call(&self, now_ms: f64) -> StoreCall {
        self.store.snapshot_call(at(now_ms))
    }

    /// Every limit's shared state from the snapshot reply, as JSON text (times in server
    /// milliseconds): `{at, limits: [{name, kind, capacity, used, reserved, available, nextFree,
    /// balance, pause: {until, serverUntil, reason, strikes} | null}], waiters}`.
    pub fn snapshot(&mut self, now_ms: f64, reply_json: &str) -> Result<String, HostError> {
        let s = self.store.snapshot(at(now_ms), &reply(reply_json)?).map_err(HostError::Store)?;
        Ok(snapshot_json(&s).to_string())
    }
}

/// A store snapshot as the JavaScript and Python hosts read it (times in server milliseconds):
/// `{at, limits: [{name, kind, capacity, used, reserved, available, nextFree, balance, pause:
/// {until, serverUntil, reason, strikes} | null}], waiters}`.
pub(crate) fn snapshot_json(s: &crate::Snapshot) -> serde_json::Value {
    let limits: Vec<serde_json::Value> = s
        .limits
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name, "kind": l.kind, "capacity": l.capacity, "used": l.used, "reserved": l.reserved,
                "available": l.available, "nextFree": l.next_free.map(|t| t.as_millis_f64()), "balance": l.balance,
                "pause": l.pause.as_ref().map(|p| serde_json::json!({
                    "until": p.until.as_millis_f64(), "serverUntil": p.server_until.as_millis_f64(),
                    "reason": p.reason, "strikes": p.strikes,
                })),
            })
        })
        .collect();
    serde_json::json!({ "at": s.at.as_millis_f64(), "limits": limits, "waiters": s.waiting[2] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> SharedHost {
        let config = r#"{"limits":{"api":{"kind":"window","max":1,"per":"1s"}},"global":["api"]}"#;
        SharedHost::new(Config::from_json(config).unwrap(), "acct".into(), Some(500.0)).unwrap()
    }

    fn json(request: Request) -> String {
        serde_json::to_string(&request).unwrap()
    }

    #[test]
    fn an_admission_waits_under_its_token_for_its_reply() {
        let mut h = host();
        let (token, call) = h.admit(0.0, &json(Request::http("GET", "/x")), None, None).unwrap();
        assert_eq!(call.keys[0], "tc:{acct}:meta");
        let go = h.decide(0.0, token, "[1, 1700000000000000, 1700000000000000, 7]").unwrap();
        assert_eq!((go.decision, go.request_id), ("go", Some(7.0)));
        assert_eq!(serde_json::to_string(&go).unwrap(), r#"{"decision":"go","requestId":7.0,"reservations":[]}"#);
        let again = h.decide(0.0, token, "[]").unwrap_err();
        assert_eq!((again.code(), again.message().as_str()), ("INVALID_ARGUMENT", "no admission call with token 1"));
        let (token, _) = h.admit(0.0, &json(Request::http("GET", "/x")), None, None).unwrap();
        h.forget(token);
        assert!(h.decide(0.0, token, "[]").is_err());
    }

    #[test]
    fn bad_input_keeps_its_code() {
        let mut h = host();
        assert_eq!(h.admit(0.0, "{", None, None).unwrap_err().code(), "INVALID_ARGUMENT");
        assert_eq!(h.admit(0.0, &json(Request::route("nope")), None, None).unwrap_err().code(), "UNKNOWN_ROUTE");
        for bad in ["not json", "[1.5]", "[null]"] {
            let e = h.observe(0.0, bad).unwrap_err();
            assert_eq!(e.code(), "STORE_REPLY");
            assert!(e.message().starts_with("unexpected reply from the shared store"), "{}", e.message());
        }
        assert_eq!(h.sync_budget(0.0, "nosuch", 5.0, None).unwrap_err().code(), "UNKNOWN_LIMIT");
        assert!(h.complete(0.0, 1.0, Some(200), Vec::new(), None).is_none(), "nothing to tell");
    }
}
