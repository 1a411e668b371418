//! The shared store's host driver at its JSON boundary (`DriverHost::step`): a sequence of inputs
//! (acquire, cancel, complete, release, syncBudget, snapshot, reply, storeError, woken, subscribed,
//! statusDone, timeout, close, processTag, or garbage) on a clock that mostly moves forward (or
//! jumps to the timeout the driver asked for) and is sometimes NaN, infinite, negative or huge.
//! Replies are shaped like the script's (status 1 go / 2 wait / 3 reject with a code, server time,
//! epoch, fields), matched to the call's op or not, and sometimes garbage.
//!
//! Checks: no panic; every answer is JSON of the documented shape; every handle gets at most one
//! result (`go`/`fail` for an acquire; `done`/`giveUp`/`fail`, or a retry's `go`, for a completion;
//! `done`/`fail`/`snapshot` for the others); `waiting` is at least the acquires not yet resolved
//! (no acquire is dropped without a result) and at most those plus the completions not yet settled
//! (a rate-limited completion waits as a retry);
//! a `timeout` at the instant the driver named leaves the next timeout later (no busy loop).
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use traffic_control_core::host::DriverHost;
use traffic_control_core::Config;

/// core/tests/driver.rs's config (a window, a concurrency limit, a budget with a status route),
/// with room for two in the window so that a request can reserve a follow-up.
const CONFIG: &str = r#"{
  "limits": {
    "api": { "kind": "window", "max": 2, "per": "1s" },
    "slots": { "kind": "concurrency", "max": 1 },
    "tokens": { "kind": "budget", "refill": 20, "per": "1m", "max": 100 }
  },
  "global": ["api"],
  "routes": [
    { "name": "slow", "path": "^/slow", "limits": ["slots"] },
    { "name": "token", "path": "^/token", "limits": [{ "limit": "tokens", "cost": 0 }], "status": { "path": "/token", "query": ["key"] } },
    { "name": "product", "path": "^/product", "limits": ["tokens"] }
  ]
}"#;

const URLS: &[&str] = &[
    "/x",
    "/slow",
    "https://api.keepa.com/product?key=K&asin=1",
    "https://api.keepa.com/product?key=L",
    "https://api.keepa.com/token?key=K",
    "/slow/2",
];
const LIMITS: &[&str] = &["api", "slots", "tokens", "nosuch"];
const PRIORITIES: &[&str] = &["critical", "high", "normal", "low"];
const CODES: &[&str] = &["BUDGET_UNKNOWN", "COST_EXCEEDS_CAPACITY", "INSUFFICIENT_BUDGET", "DEADLINE_UNREACHABLE"];
const HEADERS: &[&str] = &[
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "date",
    "cf-mitigated",
];
/// The limit count of CONFIG: a snapshot reply has 4 + 9 fields per limit.
const LIMIT_COUNT: usize = 3;

#[derive(Debug, Arbitrary)]
struct Options {
    fail: bool,
    no_wake: bool,
    no_learn: bool,
    unavailable_max_wait: Option<u16>,
    waiter_ttl: Option<u16>,
}

/// The host's clock at a step.
#[derive(Debug, Arbitrary)]
enum Clock {
    Same,
    Ms(u8),
    Secs(u16),
    /// The instant of the last `timeout` the driver announced (what a host's timer does).
    Due,
    /// Later, possibly past what a `Timestamp` holds; the clock stays there.
    Huge(u64),
    /// Sent once; the clock is not moved.
    Odd(Odd),
}

#[derive(Debug, Arbitrary)]
enum Odd {
    Nan,
    Inf,
    NegInf,
    Neg,
    Max,
}

/// One of the ids seen so far (by index), or any number.
#[derive(Debug, Arbitrary)]
enum Pick {
    Known(u8),
    Any(u64),
}

#[derive(Debug, Arbitrary)]
enum Val {
    Int(i64),
    Text(String),
    Float(f64),
    Bool(bool),
    Null,
}

/// The server time of a reply: near the host's clock, or anything.
#[derive(Debug, Arbitrary)]
enum Server {
    Host(i16),
    Any(i64),
}

#[derive(Debug, Arbitrary)]
enum Reply {
    /// Shaped for the call's op: go / wait / reject for an admission, a snapshot's fields, else
    /// "observed".
    Auto {
        kind: u8,
        n: u16,
    },
    Go {
        request: u64,
        reservations: Vec<u32>,
        strikes: bool,
    },
    Wait {
        until: Option<i32>,
        since: u32,
    },
    Reject {
        code: u8,
        other: Option<String>,
        limit: u8,
        fields: Vec<i64>,
    },
    Observed {
        live: bool,
    },
    Snapshot {
        fields: Vec<i32>,
    },
    Status {
        status: i64,
        rest: Vec<Val>,
    },
    Values(Vec<Val>),
    NotArray(Val),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Acquire { url: u8, priority: u8, cost: Option<u8>, max_wait: Option<u32>, reserve: bool, spend: Option<Pick> },
    Cancel(Pick),
    Complete { request: Pick, status: Option<u16>, headers: Vec<(u8, String)>, body: Option<String> },
    Release(Pick),
    SyncBudget { limit: u8, tokens: i32, refill_in: Option<u32> },
    Snapshot,
    Reply { call: Pick, server: Server, epoch: bool, reply: Reply },
    StoreError { call: Pick, reason: String },
    Woken,
    Subscribed(bool),
    StatusDone { handle: Pick, status: Option<u16>, tokens_left: Option<i32>, body: Option<String> },
    Timeout,
    Close,
    ProcessTag(String),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    options: Options,
    steps: Vec<(Clock, Op)>,
}

fn pick(ids: &[u64], p: &Pick) -> u64 {
    match p {
        Pick::Known(i) if !ids.is_empty() => ids[usize::from(*i) % ids.len()],
        Pick::Known(i) => u64::from(*i),
        Pick::Any(n) => *n,
    }
}

fn val(v: &Val) -> Value {
    match v {
        Val::Int(i) => json!(i),
        Val::Text(s) => json!(s),
        Val::Float(f) => json!(f),
        Val::Bool(b) => json!(b),
        Val::Null => Value::Null,
    }
}

/// What the harness knows of the host's side.
#[derive(Default)]
struct Host {
    now: f64,
    due: Option<f64>,
    /// Acquire handles, and those that got their go or fail.
    acquires: Vec<u64>,
    acquired: HashSet<u64>,
    resolved: HashSet<u64>,
    /// Handles that got their result (any kind of operation).
    finished: HashSet<u64>,
    /// Completion handles, and those settled (done, give-up, a retry's go, or a fail): between
    /// the two, a rate-limited completion may wait as a retry.
    completions: HashSet<u64>,
    settled_completions: HashSet<u64>,
    /// Calls run and not answered yet: id and op.
    calls: Vec<(u64, String)>,
    requests: Vec<u64>,
    reservations: Vec<u64>,
    status_handles: Vec<u64>,
    next_request: u64,
}

impl Host {
    fn clock(&mut self, c: &Clock) -> f64 {
        match c {
            Clock::Same => {}
            Clock::Ms(ms) => self.now += f64::from(*ms),
            Clock::Secs(s) => self.now += f64::from(*s) * 1e3,
            Clock::Due => self.now = self.now.max(self.due.unwrap_or(self.now)),
            Clock::Huge(n) => self.now = self.now.max(*n as f64 * 1e3),
            Clock::Odd(o) => {
                return match o {
                    Odd::Nan => f64::NAN,
                    Odd::Inf => f64::INFINITY,
                    Odd::NegInf => f64::NEG_INFINITY,
                    Odd::Neg => -1.0,
                    Odd::Max => f64::MAX,
                }
            }
        }
        self.now
    }

    fn reply(&mut self, call: &Pick, server: &Server, epoch: bool, reply: &Reply) -> Value {
        let pending = self.calls.iter().map(|(c, _)| *c).collect::<Vec<_>>();
        let call = pick(&pending, call);
        let op = self.calls.iter().find(|(c, _)| *c == call).map(|(_, op)| op.clone()).unwrap_or_default();
        self.calls.retain(|(c, _)| *c != call);
        let server_us = match server {
            Server::Host(d) => ((self.now + f64::from(*d)) * 1e3) as i64,
            Server::Any(t) => *t,
        };
        let head = |status: i64| vec![json!(status), json!(server_us), json!(if epoch { "e" } else { "f" })];
        let reply = match reply {
            Reply::Auto { kind, n } => match op.as_str() {
                "admit" => match kind % 4 {
                    0 => {
                        self.next_request += 1;
                        let mut r = head(1);
                        r.push(json!(self.next_request));
                        r.extend((0..kind / 4 % 3).map(|i| json!(self.next_request * 10 + u64::from(i))));
                        Value::Array(r)
                    }
                    1 => {
                        let mut r = head(2);
                        r.extend([json!(server_us.saturating_add(i64::from(*n) * 1000)), json!(7)]);
                        Value::Array(r)
                    }
                    2 => Value::Array([head(2), vec![json!(-1), json!(7)]].concat()),
                    _ => Value::Array([head(3), vec![json!("BUDGET_UNKNOWN"), json!("tokens")]].concat()),
                },
                "snapshot" => {
                    let mut r = head(1);
                    r.push(json!(0));
                    for i in 0..LIMIT_COUNT {
                        let n = i64::from(*n) + i as i64;
                        let reason = ["block", "cooldown", "exhausted", "?"][usize::from(*kind) % 4];
                        r.extend([json!(n % 3), json!(1), json!(0), json!(server_us.saturating_add(n)), json!(n % 2)]);
                        r.extend([json!(-1), json!(reason), json!(server_us.saturating_add(2 * n)), json!(kind % 5)]);
                    }
                    Value::Array(r)
                }
                _ => Value::Array([head(1), vec![json!(kind % 2)]].concat()),
            },
            Reply::Go { request, reservations, strikes } => {
                let mut r = head(1);
                r.push(json!(request));
                r.extend(reservations.iter().map(|x| json!(x)));
                r.push(json!(i64::from(*strikes)));
                Value::Array(r)
            }
            Reply::Wait { until, since } => {
                let until = until.map_or(-1, |u| server_us.saturating_add(i64::from(u) * 1000));
                Value::Array([head(2), vec![json!(until), json!(since)]].concat())
            }
            Reply::Reject { code, other, limit, fields } => {
                let code = other.clone().unwrap_or_else(|| CODES[usize::from(*code) % CODES.len()].to_string());
                let mut r = head(3);
                r.extend([json!(code), json!(LIMITS[usize::from(*limit) % LIMITS.len()])]);
                r.extend(fields.iter().map(|f| json!(f)));
                Value::Array(r)
            }
            Reply::Observed { live } => Value::Array([head(1), vec![json!(i64::from(*live))]].concat()),
            Reply::Snapshot { fields } => {
                Value::Array([head(1), fields.iter().map(|f| json!(f)).collect::<Vec<_>>()].concat())
            }
            Reply::Status { status, rest } => Value::Array([head(*status), rest.iter().map(val).collect()].concat()),
            Reply::Values(values) => Value::Array(values.iter().map(val).collect()),
            Reply::NotArray(v) => val(v),
        };
        json!({"input": "reply", "call": call, "reply": reply})
    }

    fn input(&mut self, op: &Op) -> String {
        let v = match op {
            Op::Acquire { url, priority, cost, max_wait, reserve, spend } => {
                let mut request = json!({
                    "target": {"http": {"method": "GET", "url": URLS[usize::from(*url) % URLS.len()]}},
                    "priority": PRIORITIES[usize::from(*priority) % PRIORITIES.len()],
                });
                if let Some(c) = cost {
                    request["cost"] = json!(c % 4);
                }
                if *reserve {
                    request["reserve"] = json!([{"target": {"http": {"method": "GET", "url": "/x"}}, "ttl": "2s"}]);
                }
                if let Some(s) = spend {
                    request["spend"] = json!(pick(&self.reservations, s));
                }
                let mut v = json!({"input": "acquire", "request": request});
                if let Some(m) = max_wait {
                    v["maxWait"] = json!(m);
                }
                v
            }
            Op::Cancel(h) => json!({"input": "cancel", "handle": pick(&self.acquires, h)}),
            Op::Complete { request, status, headers, body } => {
                let flat: Vec<&str> =
                    headers.iter().flat_map(|(n, v)| [HEADERS[usize::from(*n) % HEADERS.len()], v.as_str()]).collect();
                json!({"input": "complete", "request": pick(&self.requests, request), "status": status,
                       "headers": flat, "body": body})
            }
            Op::Release(r) => json!({"input": "release", "reservation": pick(&self.reservations, r)}),
            Op::SyncBudget { limit, tokens, refill_in } => json!({"input": "syncBudget",
                "limit": LIMITS[usize::from(*limit) % LIMITS.len()], "tokensLeft": tokens, "refillIn": refill_in}),
            Op::Snapshot => json!({"input": "snapshot"}),
            Op::Reply { call, server, epoch, reply } => self.reply(call, server, *epoch, reply),
            Op::StoreError { call, reason } => {
                let pending = self.calls.iter().map(|(c, _)| *c).collect::<Vec<_>>();
                let call = pick(&pending, call);
                self.calls.retain(|(c, _)| *c != call);
                json!({"input": "storeError", "call": call, "reason": reason})
            }
            Op::Woken => json!({"input": "woken"}),
            Op::Subscribed(ok) => json!({"input": "subscribed", "ok": ok}),
            Op::StatusDone { handle, status, tokens_left, body } => {
                let body = match (tokens_left, body) {
                    (Some(t), _) => Some(format!(r#"{{"tokensLeft": {t}, "refillIn": 3000, "refillRate": 20}}"#)),
                    (None, b) => b.clone(),
                };
                json!({"input": "statusDone", "handle": pick(&self.status_handles, handle), "status": status,
                       "body": body})
            }
            Op::Timeout => json!({"input": "timeout"}),
            Op::Close => json!({"input": "close"}),
            Op::ProcessTag(tag) => json!({"input": "processTag", "tag": tag}),
            Op::Raw(text) => return text.clone(),
        };
        v.to_string()
    }

    /// Checks one answer and learns the ids it names.
    fn answer(&mut self, now: f64, op: &Op, answer: &str) {
        let a: Value = serde_json::from_str(answer).expect("the answer is JSON");
        let result = &a["result"];
        assert!(result.is_null() || result.is_u64(), "result: {a}");
        assert!(a["timeout"].is_null() || a["timeout"].is_number(), "timeout: {a}");
        if let Some(h) = result.as_u64() {
            assert!(!self.acquired.contains(&h) && !self.finished.contains(&h), "handle {h} given twice: {a}");
            if matches!(op, Op::Acquire { .. }) {
                self.acquires.push(h);
                self.acquired.insert(h);
            }
            if matches!(op, Op::Complete { .. }) {
                // A retry waits under the completion's handle: a cancel may name it.
                self.acquires.push(h);
                self.completions.insert(h);
            }
        }
        for o in a["outputs"].as_array().expect("outputs is a list") {
            let handle = o["handle"].as_u64();
            match o["output"].as_str().expect("output names itself") {
                "run" => {
                    let call = o["call"].as_u64().expect("run names its call");
                    let op = o["args"][0].as_str().expect("run has an op").to_string();
                    assert!(o["keys"].is_array(), "run: {o}");
                    self.calls.retain(|(c, _)| *c != call);
                    self.calls.push((call, op));
                }
                kind @ ("go" | "fail" | "done" | "giveUp" | "snapshot") => {
                    let h = handle.unwrap_or_else(|| panic!("{kind} names a handle: {o}"));
                    if self.completions.contains(&h) {
                        assert!(kind != "snapshot", "a completion answered with a snapshot: {o}");
                        self.settled_completions.insert(h);
                    } else if kind == "go" || (kind == "fail" && self.acquired.contains(&h)) {
                        assert!(self.acquired.contains(&h), "go for a handle no acquire returned: {o}");
                        assert!(self.resolved.insert(h), "acquire {h} resolved twice: {o}");
                    }
                    assert!(kind != "giveUp" || self.completions.contains(&h), "give-up for no completion: {o}");
                    assert!(self.finished.insert(h), "handle {h} got a second result: {o}");
                    if kind == "go" {
                        self.requests.push(o["request"].as_u64().expect("go names its request"));
                        let reservations = o["reservations"].as_array().expect("go lists its reservations");
                        self.reservations.extend(reservations.iter().filter_map(Value::as_u64));
                    }
                    if kind == "fail" {
                        assert!(o["code"].is_string() && o["message"].is_string(), "fail: {o}");
                    }
                }
                "status" => {
                    let h = handle.expect("status names a handle");
                    assert!(o["url"].is_string(), "status: {o}");
                    assert!(!self.status_handles.contains(&h), "status request {h} sent twice: {o}");
                    self.status_handles.push(h);
                }
                "subscribe" => assert!(o["channel"].is_string(), "subscribe: {o}"),
                "unsubscribe" => {}
                other => panic!("unknown output {other:?}: {o}"),
            }
        }
        let waiting = a["waiting"].as_u64().expect("waiting is a count");
        let unresolved = (self.acquired.len() - self.resolved.len()) as u64;
        let retrying = (self.completions.len() - self.settled_completions.len()) as u64;
        assert!(waiting <= unresolved + retrying, "{waiting} waiting, only {unresolved} acquires and {retrying} completions unresolved: {a}");
        assert!(waiting >= unresolved, "an acquire was dropped without a go or a fail: {a}");
        // A host's timer loop makes progress: a `timeout` at (or past) the instant the driver
        // named leaves the next one later. Checked where milliseconds hold nanoseconds exactly.
        let next = a["timeout"].as_f64();
        if let (Op::Timeout, Some(due), Some(next)) = (op, self.due, next) {
            if now >= due && now < 1e9 {
                assert!(next > now, "a timeout at {now} (due {due}) names {next} again: {a}");
            }
        }
        self.due = next;
    }
}

static TRACE: OnceLock<bool> = OnceLock::new();

fuzz_target!(|input: Input| {
    let o = &input.options;
    let mut options = json!({
        "account": "acct",
        "processTag": "p1",
        "onUnavailable": if o.fail { "fail" } else { "wait" },
        "wake": !o.no_wake,
        "learnBudgets": !o.no_learn,
    });
    if let Some(t) = o.unavailable_max_wait {
        options["unavailableMaxWait"] = json!(t);
    }
    if let Some(t) = o.waiter_ttl {
        options["waiterTtl"] = json!(u32::from(t) + 2);
    }
    let config = Config::from_json(CONFIG).expect("the config is valid");
    let mut driver = DriverHost::new(config, &options.to_string()).expect("the options are valid");
    let mut host = Host::default();
    // DRIVER_INPUTS_TRACE=1: print each step (to replay a crash by hand or in a regression test).
    let trace = *TRACE.get_or_init(|| std::env::var_os("DRIVER_INPUTS_TRACE").is_some());
    if trace {
        eprintln!("options {options}");
    }
    for (clock, op) in input.steps.iter().take(256) {
        let now = host.clock(clock);
        let text = host.input(op);
        let answer = driver.step(now, &text);
        if trace {
            eprintln!("step({now:?}, {text})\n  -> {answer:?}");
        }
        match answer {
            Ok(answer) => host.answer(now, op, &answer),
            Err(e) => assert!(!e.code().is_empty()),
        }
    }
});
