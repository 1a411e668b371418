//! The shared store against a real redis-server (started here, killed at the end):
//!
//! - differential: the same random workload with the same timestamps through the in-memory
//!   controller (`try_acquire`) and through the Redis script (test clock) gives the same
//!   admissions, waits and rejections, and the same used and reserved cost on every limit after
//!   every step, with or without tenants served by weight (requests naming them);
//! - behaviours: hash-tagged keys that all expire, EVALSHA with the EVAL fallback in one round
//!   trip on the fast path, cross-process priority claims, lease expiry, 429 pauses shared by
//!   every process, quarantine after a lost state;
//! - the host driver's retries after rate-limited answers, two processes on random workloads: under
//!   the request's id, never inside a pause, at most `max_retries`, every operation settled.
//!
//! Without redis-server the tests say SKIPPED and pass, unless TC_REQUIRE_REDIS=1 (CI sets it).

mod redis_support;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use redis_support::{Client, RedisServer, Resp};
use traffic_control_core::driver::{DriverOptions, Output, SharedDriver, Unavailable};
use traffic_control_core::{
    AdmitOptions, Config, Decision, Event, EventKind, FollowUp, Outcome, Priority, Request, RequestId, ReservationId,
    SharedStore, StoreOptions, Timestamp, TrafficControl,
};

static ACCOUNT: AtomicU64 = AtomicU64::new(1);

fn account(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), ACCOUNT.fetch_add(1, Ordering::Relaxed))
}

fn ms(v: u64) -> Timestamp {
    Timestamp::from_millis(v)
}

// ---- differential --------------------------------------------------------------------------------

/// Every duration of the differential workloads is this many times the generated one. Redis expires
/// keys on its own clock while the store runs on the test's: at 20x, a key outlives the fake time it
/// covers unless one step of the test takes over a second of real time on a loaded machine (at 1x, a
/// 93 ms window's key expired under a parallel test run and the store forgot 3 admissions).
const SCALE: u64 = 20;

/// The workloads with bulk steps scale their durations this much more: one bulk step is up to 1,500
/// admissions, over a second of real time on a loaded CI machine, and a token bucket's key lives only
/// until the bucket is full again (a bucket refilling a token a second lost its key during a bulk
/// step of 643 and the store saw it full while the controller did not).
const BULK_SCALE: u64 = 30;

#[derive(Debug, Clone)]
enum LimitSpec {
    Window {
        max: u64,
        per_ms: u64,
    },
    /// A window counting from the go (`hold: "go"`).
    WindowGo {
        max: u64,
        per_ms: u64,
    },
    Bucket {
        capacity: u64,
        refill: u64,
        per_ms: u64,
    },
    Concurrency {
        max: u64,
    },
    Budget {
        refill: u64,
        per_ms: u64,
        max: u64,
        floor: u64,
        initial: u64,
    },
}

impl LimitSpec {
    /// The limit's config, its durations times `scale`.
    fn json(&self, scale: u64) -> String {
        match *self {
            LimitSpec::Window { max, per_ms } => format!(r#"{{"kind":"window","max":{max},"per":{}}}"#, per_ms * scale),
            LimitSpec::WindowGo { max, per_ms } => {
                format!(r#"{{"kind":"window","max":{max},"per":{},"hold":"go"}}"#, per_ms * scale)
            }
            LimitSpec::Bucket { capacity, refill, per_ms } => {
                format!(r#"{{"kind":"token_bucket","capacity":{capacity},"refill":{refill},"per":{}}}"#, per_ms * scale)
            }
            LimitSpec::Concurrency { max } => format!(r#"{{"kind":"concurrency","max":{max}}}"#),
            LimitSpec::Budget { refill, per_ms, max, floor, initial } => format!(
                r#"{{"kind":"budget","refill":{refill},"per":{},"max":{max},"floor":{floor},"initial":{initial}}}"#,
                per_ms * scale
            ),
        }
    }
}

fn limit_spec() -> impl Strategy<Value = LimitSpec> {
    prop_oneof![
        3 => (1u64..6, 50u64..600).prop_map(|(max, per_ms)| LimitSpec::Window { max, per_ms }),
        1 => (1u64..6, 1u64..4, 50u64..400).prop_map(|(capacity, refill, per_ms)| LimitSpec::Bucket { capacity, refill, per_ms }),
        1 => (1u64..4).prop_map(|max| LimitSpec::Concurrency { max }),
        1 => (2u64..6, 100u64..500, 4u64..12, 0u64..2, 0u64..12).prop_map(|(refill, per_ms, max, floor, initial)| {
            LimitSpec::Budget { refill, per_ms, max, floor, initial: initial.min(max) }
        }),
    ]
}

/// A step of a differential workload; its durations are in units of the workload's `scale`.
#[derive(Debug, Clone)]
enum Op {
    Ask {
        route: usize,
        cost: u64,
        priority: u8,
        reserve: Option<(usize, u64, u64)>,
        spend: Option<usize>,
        max_wait_ms: Option<u64>,
        /// Its tenant (modulo the workload's tenants; `None`: the default class).
        tenant: Option<usize>,
    },
    Complete(usize, Answer),
    Release(usize),
    Advance(u64),
    /// This many requests on the route `rbulk` (limit `lbig` only), each reserving a follow-up
    /// there: thousands of live reservations beside the workload's. Only in workloads without
    /// global limits (whose room would refuse them).
    Bulk(u64),
}

/// What a completed request's response said (times in seconds, quotas in cost units).
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    TooMany,
    RetryAfter(u64),
    ResetOnly(u64),
    Exhausted(u64),
    Quota(u64),
}

impl Answer {
    fn outcome(&self) -> Outcome {
        match *self {
            Answer::Ok => Outcome::status(200),
            Answer::TooMany => Outcome::status(429),
            Answer::RetryAfter(s) => Outcome::status(429).header("Retry-After", s.to_string()),
            Answer::ResetOnly(s) => Outcome::status(429).header("X-RateLimit-Reset", s.to_string()),
            Answer::Exhausted(s) => {
                Outcome::status(200).header("RateLimit-Remaining", "0").header("RateLimit-Reset", s.to_string())
            }
            Answer::Quota(q) => Outcome::status(200).header("X-RateLimit-Limit", q.to_string()),
        }
    }
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => Just(Answer::Ok),
        2 => Just(Answer::TooMany),
        1 => (1u64..8).prop_map(Answer::RetryAfter),
        1 => (1u64..8).prop_map(Answer::ResetOnly),
        1 => (1u64..8).prop_map(Answer::Exhausted),
        1 => (1u64..6).prop_map(Answer::Quota),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, 1u64..3, 0u8..4, proptest::option::weighted(0.3, (0usize..3, 1u64..3, 20u64..400)),
              proptest::option::weighted(0.3, 0usize..8), proptest::option::weighted(0.2, 0u64..300),
              proptest::option::weighted(0.8, 0usize..4))
            .prop_map(|(route, cost, priority, reserve, spend, max_wait_ms, tenant)| Op::Ask {
                route,
                cost,
                priority,
                reserve,
                spend,
                max_wait_ms,
                tenant,
            }),
        2 => (0usize..8, answer()).prop_map(|(i, a)| Op::Complete(i, a)),
        1 => (0usize..8).prop_map(Op::Release),
        3 => prop_oneof![Just(0u64), 1u64..50, 50u64..400].prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct Workload {
    /// Every duration (limits' periods, advances, reservation ttls, maximum waits) is generated in
    /// units of this many milliseconds: `SCALE`, or `BULK_SCALE` with bulk steps.
    scale: u64,
    /// The named tenants' weights (t0, t1, ...); empty: no tenants.
    tenants: Vec<u32>,
    limits: Vec<LimitSpec>,
    global: Vec<bool>,
    routes: Vec<Vec<bool>>,
    ops: Vec<Op>,
}

fn workload() -> impl Strategy<Value = Workload> {
    proptest::collection::vec(limit_spec(), 1..5).prop_flat_map(|limits| {
        let n = limits.len();
        (
            Just(limits),
            proptest::collection::vec(proptest::bool::weighted(0.3), n),
            proptest::collection::vec(proptest::collection::vec(proptest::bool::weighted(0.5), n), 3),
            proptest::collection::vec(op(), 1..80),
            prop_oneof![Just(Vec::new()), proptest::collection::vec(1u32..6, 1..4)],
        )
            .prop_map(|(limits, global, routes, ops, tenants)| Workload {
                scale: SCALE,
                tenants,
                limits,
                global,
                routes,
                ops,
            })
    })
}

/// Workloads without global limits in which thousands of reservations come and go beside the
/// ordinary requests, on `lbig` (a window of 2,500: the bulk fills it, so its reservations decide
/// admissions there), which the workload's routes may share.
fn bulk_workload() -> impl Strategy<Value = Workload> {
    let ops = proptest::collection::vec(prop_oneof![12 => op(), 1 => (300u64..1500).prop_map(Op::Bulk)], 1..40);
    (proptest::collection::vec(limit_spec(), 1..4), ops).prop_flat_map(|(mut limits, ops)| {
        limits.push(LimitSpec::WindowGo { max: 2500, per_ms: 600 });
        let n = limits.len();
        (
            Just(limits),
            proptest::collection::vec(proptest::collection::vec(proptest::bool::weighted(0.5), n), 3),
            Just(ops),
        )
            .prop_map(move |(limits, routes, ops)| Workload {
                scale: BULK_SCALE,
                tenants: Vec::new(),
                limits,
                global: vec![false; n],
                routes,
                ops,
            })
    })
}

fn config_of(w: &Workload) -> Config {
    let limits: Vec<String> =
        w.limits.iter().enumerate().map(|(i, l)| format!(r#""l{i}":{}"#, l.json(w.scale))).collect();
    let names = |mask: &[bool]| -> String {
        mask.iter().enumerate().filter(|(_, b)| **b).map(|(i, _)| format!(r#""l{i}""#)).collect::<Vec<_>>().join(",")
    };
    let routes: Vec<String> = w
        .routes
        .iter()
        .enumerate()
        .map(|(r, mask)| format!(r#"{{"name":"r{r}","path":"^/r{r}","limits":[{}]}}"#, names(mask)))
        .collect();
    let mut routes = routes;
    if w.global.iter().all(|g| !g) {
        routes.push(format!(r#"{{"name":"rbulk","path":"^/bulk","limits":["l{}"]}}"#, w.limits.len() - 1));
    }
    let tenants: Vec<String> =
        w.tenants.iter().enumerate().map(|(i, w)| format!(r#""t{i}":{{"weight":{w}}}"#)).collect();
    let json = format!(
        r#"{{"limits":{{{}}},"global":[{}],"routes":[{}],"lease_ttl":{},"reservation_ttl":{},"tenants":{{{}}},
            "feedback":{{"block":{},"max_block":{},"max_retries":0,"jitter":0.3,"seed":7}}}}"#,
        limits.join(","),
        names(&w.global),
        routes.join(","),
        700 * w.scale,
        300 * w.scale,
        tenants.join(","),
        100 * w.scale,
        400 * w.scale
    );
    Config::from_json(&json).unwrap()
}

fn kind(d: &Decision) -> String {
    match d {
        Decision::Go(p) => format!("go with {} reservations", p.reservations.len()),
        Decision::Wait { .. } => "wait".into(),
        Decision::Reject(e) => format!("reject {}", e.code()),
        _ => "other".into(),
    }
}

fn run_differential(client: &mut Client, w: &Workload) -> Result<(), TestCaseError> {
    let config = config_of(w);
    let mut tc = TrafficControl::new(config.clone()).unwrap();
    let mut store = SharedStore::new(config, StoreOptions::new(account("diff"))).unwrap();
    // The store's clock origin is the account's creation (budget refills count from it), the
    // controller's is 0: create the account at 0.
    store.set_test_clock(Some(ms(0)));
    let call = store.snapshot_call(ms(0));
    store.snapshot(ms(0), &client.run(&call)).unwrap();
    let mut now = 0u64;
    let mut in_flight: Vec<(RequestId, RequestId)> = Vec::new();
    let mut reservations: Vec<(ReservationId, ReservationId)> = Vec::new();
    for (step, op) in w.ops.iter().enumerate() {
        let t = ms(now);
        store.set_test_clock(Some(t));
        match op {
            Op::Ask { route, cost, priority, reserve, spend, max_wait_ms, tenant } => {
                let priority = Priority::ALL[usize::from(*priority)];
                let mut base = Request::route(format!("r{route}")).cost(*cost).priority(priority);
                if let (Some(t), false) = (tenant, w.tenants.is_empty()) {
                    base = base.tenant(format!("t{}", t % w.tenants.len()));
                }
                if let Some((r, c, ttl)) = reserve {
                    base = base
                        .reserve(FollowUp::route(format!("r{r}")).cost(*c).ttl(Duration::from_millis(ttl * w.scale)));
                }
                let mut core_req = base.clone();
                let mut store_req = base;
                if let (Some(i), false) = (spend, reservations.is_empty()) {
                    let (a, b) = reservations[i % reservations.len()];
                    core_req = core_req.spend(a);
                    store_req = store_req.spend(b);
                }
                let mut options = AdmitOptions::default();
                if let Some(mw) = max_wait_ms.map(|mw| mw * w.scale) {
                    core_req = core_req.deadline(ms(now + mw));
                    options.max_wait = Some(Duration::from_millis(mw));
                }
                let expected = tc.try_acquire(t, &core_req);
                let got = match store.admit(t, &store_req, &options) {
                    Ok(call) => store.decide(t, &call, &client.run(&call)).unwrap().decision,
                    Err(e) => Decision::Reject(e),
                };
                prop_assert_eq!(kind(&expected), kind(&got), "step {} {:?} at {} ms", step, op, now);
                if let (Decision::Go(a), Decision::Go(b)) = (&expected, &got) {
                    in_flight.push((a.request, b.request));
                    reservations.extend(a.reservations.iter().copied().zip(b.reservations.iter().copied()));
                }
            }
            Op::Complete(i, answer) if !in_flight.is_empty() => {
                let (a, b) = in_flight.remove(i % in_flight.len());
                // Without retries (max_retries 0): a rate-limited request gives up rather than
                // waiting in the controller's queue, which the store does not have.
                let _ = tc.complete(t, a, answer.outcome());
                if let Some(call) = store.complete(t, b, &answer.outcome()) {
                    store.observe(t, &client.run(&call)).unwrap();
                }
            }
            Op::Release(i) if !reservations.is_empty() => {
                let (a, b) = reservations.remove(i % reservations.len());
                let expected = tc.release(t, a);
                let call = store.release(t, b);
                let got = store.observe(t, &client.run(&call)).unwrap();
                prop_assert_eq!(expected, got, "release at step {}", step);
            }
            Op::Advance(d) => now += d * w.scale,
            Op::Bulk(n) if w.global.iter().all(|g| !g) => {
                let req = Request::route("rbulk").reserve(FollowUp::route("rbulk"));
                for i in 0..*n {
                    let expected = tc.try_acquire(t, &req);
                    let call = store.admit(t, &req, &AdmitOptions::default()).unwrap();
                    let got = store.decide(t, &call, &client.run(&call)).unwrap().decision;
                    prop_assert_eq!(kind(&expected), kind(&got), "step {} bulk request {} at {} ms", step, i, now);
                    if let (Decision::Go(a), Decision::Go(b)) = (&expected, &got) {
                        reservations.extend(a.reservations.iter().copied().zip(b.reservations.iter().copied()));
                    }
                }
            }
            _ => {}
        }
        // The same state on every limit after every step.
        let t = ms(now);
        store.set_test_clock(Some(t));
        let expected = tc.snapshot(t);
        let call = store.snapshot_call(t);
        let got = store.snapshot(t, &client.run(&call)).unwrap();
        for (a, b) in expected.limits.iter().zip(&got.limits) {
            prop_assert_eq!(
                (a.used, a.reserved, a.capacity, &a.pause),
                (b.used, b.reserved, b.capacity, &b.pause),
                "limit {} after step {} ({:?})",
                &a.name,
                step,
                op
            );
        }
    }
    Ok(())
}

/// Runs a property against one redis-server started for it: `cases` from the environment variable
/// `env` (else `default`), no failure persistence (the workloads name accounts of this run).
fn property<S: Strategy>(
    env: &str,
    default: u32,
    strategy: S,
    check: impl Fn(&mut Client, &S::Value) -> Result<(), TestCaseError>,
) {
    let Some(server) = RedisServer::start() else { return };
    let client = std::cell::RefCell::new(server.client());
    let cases = std::env::var(env).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut runner = TestRunner::new(RunnerConfig { cases, failure_persistence: None, ..RunnerConfig::default() });
    if let Err(e) = runner.run(&strategy, |v| check(&mut client.borrow_mut(), &v)) {
        panic!("{e}");
    }
}

#[test]
fn the_store_admits_exactly_like_the_in_memory_controller() {
    property("TC_DIFF_CASES", 200, workload(), run_differential);
}

// ---- thousands of waiters and reservations ------------------------------------------------------

const CROWD: &str = r#"{
  "limits": {
    "big":   { "kind": "window", "max": 1000000000, "per": "1h", "hold": "go" },
    "slots": { "kind": "window", "max": MAX, "per": "10s", "hold": "go" }
  },
  "global": ["big"],
  "routes": [{ "name": "slots", "path": "^/slots", "limits": ["slots"] }],
  "lease_ttl": "1h",
  "reservation_ttl": "1h"
}"#;

#[derive(Debug, Clone)]
struct Crowd {
    max: u64,
    /// Per waiter: priority, cost, a random id (so that id order differs from arrival order).
    waiters: Vec<(u8, u64, u32)>,
    /// How many arrive within one millisecond (equal registration instants: the id decides).
    together: u64,
    freed: u64,
    /// Steps: which waiter asks again (modulo those still registered, or among the first six in
    /// the rule's order for odd actions), or (action 0) withdraws it.
    steps: Vec<(usize, u8)>,
}

fn crowd() -> impl Strategy<Value = Crowd> {
    // Few CRITICAL and HIGH waiters, many NORMAL and LOW: the lanes ahead are sometimes small enough
    // that the totals decide, sometimes not.
    let priority = prop_oneof![1 => Just(0u8), 3 => Just(1u8), 30 => Just(2u8), 60 => Just(3u8)];
    (4u64..60, proptest::collection::vec((priority, 1u64..5, any::<u32>()), 500..2500), 1u64..8, 1u64..60)
        .prop_flat_map(|(max, waiters, together, freed)| {
            let n = waiters.len();
            (
                Just(max),
                Just(waiters),
                Just(together),
                Just(freed.min(max)),
                proptest::collection::vec((0..n, 0u8..8), 200..400),
            )
        })
        .prop_map(|(max, waiters, together, freed, steps)| Crowd { max, waiters, together, freed, steps })
}

/// Cross-process priority with thousands of registered waiters follows the rule stated by a full
/// scan: a request goes on a limit only if the claims of every live waiter ahead of it (a lower
/// lane, or its lane and registered earlier, equal instants by id) still fit beside it. The store
/// keeps lane totals and walks only as far as the room; this model adds up every claim.
fn run_crowd(client: &mut Client, w: &Crowd) -> Result<(), TestCaseError> {
    let config = Config::from_json(&CROWD.replace("MAX", &w.max.to_string())).unwrap();
    let store_account = account("crowd");
    let mut options = StoreOptions::new(store_account.clone());
    options.waiter_ttl = Duration::from_secs(3600);
    let mut store = SharedStore::new(config, options).unwrap();
    let ask = |store: &mut SharedStore, client: &mut Client, at: u64, req: &Request, o: &AdmitOptions| {
        store.set_test_clock(Some(ms(at)));
        let call = store.admit(ms(at), req, o).unwrap();
        store.decide(ms(at), &call, &client.run(&call)).unwrap()
    };
    let slot = |priority: u8, cost: u64| {
        Request::http("GET", "/slots").cost(cost).priority(Priority::ALL[usize::from(priority)])
    };
    // The limit full: `freed` admissions at 0 ms, the others at 1 ms (a 10 s window).
    for i in 0..w.max {
        let at = u64::from(i >= w.freed);
        let d = ask(&mut store, client, at, &slot(2, 1), &AdmitOptions::default());
        prop_assert!(matches!(d.decision, Decision::Go(_)), "{:?}", d.decision);
    }
    // Every waiter registers from 2 ms on: (lane, since, id, cost, its options).
    let mut registered: Vec<(u8, u64, String, u64, AdmitOptions)> = Vec::new();
    for (i, (priority, cost, id)) in w.waiters.iter().enumerate() {
        let at = 2 + i as u64 / w.together;
        let wid = format!("{id:08x}-{i}");
        let mut o = AdmitOptions::waiter(wid.clone());
        let d = ask(&mut store, client, at, &slot(*priority, *cost), &o);
        prop_assert!(matches!(d.decision, Decision::Wait { .. }), "waiter {} on a full limit: {:?}", i, d.decision);
        o.since = d.since;
        o.request = d.request;
        registered.push((priority + 1, d.since.unwrap(), wid, *cost, o));
    }
    // At 10 s the admissions of 0 ms leave the window: `freed` units of room.
    let at = 10_000;
    let mut used = w.max - w.freed;
    let ahead = |registered: &[(u8, u64, String, u64, AdmitOptions)], me: usize| -> u64 {
        let (lane, since, id, _, _) = &registered[me];
        registered
            .iter()
            .enumerate()
            .filter(|(j, (l, s, i, _, _))| {
                *j != me && (l < lane || (l == lane && (s < since || (s == since && i < id))))
            })
            .map(|(_, (_, _, _, c, _))| c)
            .sum()
    };
    for (step, &(pick, action)) in w.steps.iter().enumerate() {
        if registered.is_empty() {
            break;
        }
        // Half the steps ask one of the first few in the rule's order: those are the ones that may go.
        let me = if action % 2 == 1 {
            let mut order: Vec<usize> = (0..registered.len()).collect();
            order.sort_by(|&a, &b| {
                let (x, y) = (&registered[a], &registered[b]);
                (x.0, x.1, &x.2).cmp(&(y.0, y.1, &y.2))
            });
            order[pick % order.len().min(6)]
        } else {
            pick % registered.len()
        };
        match action {
            0 => {
                // It gives up: its claims leave at once.
                let (_, _, wid, _, _) = registered.remove(me);
                let probe = store.admit(ms(at), &slot(2, 1), &AdmitOptions::waiter(wid.clone())).unwrap();
                let call = store.withdraw(ms(at), &wid, &probe);
                store.observe(ms(at), &client.run(&call)).unwrap();
            }
            _ => {
                let expected_go = used + ahead(&registered, me) + registered[me].3 <= w.max;
                let (lane, _, _, cost, o) = registered[me].clone();
                let d = ask(&mut store, client, at, &slot(lane - 1, cost), &o);
                match d.decision {
                    Decision::Go(_) => {
                        if !expected_go {
                            let mut lanes = [0u64; 5];
                            for r in &registered {
                                lanes[usize::from(r.0)] += r.3;
                            }
                            let h = client.cmd(&["HGETALL", &format!("tc:{{{}}}:h:slots", store_account)]);
                            let h: Vec<String> = match h {
                                Resp::Array(v) => v
                                    .into_iter()
                                    .filter_map(|x| if let Resp::Bulk(Some(s)) = x { Some(s) } else { None })
                                    .collect(),
                                _ => vec![],
                            };
                            let lfields: Vec<_> = h
                                .chunks(2)
                                .filter(|c| c[0].starts_with('L'))
                                .map(|c| format!("{}={}", c[0], c[1]))
                                .collect();
                            let mine: Vec<_> = h
                                .chunks(2)
                                .filter(|c| c[0] == format!("w{}", registered[me].2))
                                .map(|c| c[1].clone())
                                .collect();
                            prop_assert!(false, "step {}: waiter {} {:?} went with {} claims ahead, {} used; model lanes {:?} store {:?} mine {:?} n {}", step, me, (&registered[me].0, &registered[me].1, &registered[me].3), ahead(&registered, me), used, lanes, lfields, mine, registered.len());
                        }
                        used += cost;
                        registered.remove(me);
                    }
                    Decision::Wait { .. } => {
                        prop_assert!(!expected_go, "step {}: waiter {} waited though the rule lets it go", step, me)
                    }
                    other => prop_assert!(false, "step {}: {:?}", step, other),
                }
            }
        }
    }
    // The store counts the waiters still registered.
    store.set_test_clock(Some(ms(at)));
    let call = store.snapshot_call(ms(at));
    let snap = store.snapshot(ms(at), &client.run(&call)).unwrap();
    let slots = snap.limits.iter().find(|l| l.name == "slots").unwrap();
    prop_assert_eq!(slots.used, used);
    Ok(())
}

#[test]
fn cross_process_priority_with_thousands_of_waiters_follows_the_full_scan_rule() {
    property("TC_CROWD_CASES", 10, crowd(), run_crowd);
}

/// Thousands of live reservations: counted on their limit as they come, released one by one, and
/// gone through their expiry index when their time is up (the hash and the index empty after).
#[test]
fn thousands_of_reservations_are_counted_released_and_expired_without_a_scan() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let config = Config::from_json(&CROWD.replace("MAX", "5")).unwrap();
    let acct = account("reservations");
    let mut store = SharedStore::new(config, StoreOptions::new(acct.clone())).unwrap();
    let n = 3000u64;
    let mut ids = Vec::new();
    let req = Request::http("GET", "/other").reserve(FollowUp::http("GET", "/other").cost(2));
    for i in 0..n {
        store.set_test_clock(Some(ms(i / 10)));
        ids.extend(go(ask(&mut c, &mut store, ms(i / 10), &req, &AdmitOptions::default())).reservations);
    }
    let reserved = |store: &mut SharedStore, c: &mut Client, at: u64| {
        store.set_test_clock(Some(ms(at)));
        let call = store.snapshot_call(ms(at));
        store.snapshot(ms(at), &c.run(&call)).unwrap().limits.iter().find(|l| l.name == "big").unwrap().reserved
    };
    assert_eq!(reserved(&mut store, &mut c, 300), 2 * n);
    for id in ids.iter().take(100) {
        let call = store.release(ms(300), *id);
        assert!(store.observe(ms(300), &c.run(&call)).unwrap());
    }
    assert_eq!(reserved(&mut store, &mut c, 300), 2 * (n - 100));
    // The first 1,000 were made by 99 ms: at 1 h + 99 ms they are gone, the rest not.
    assert_eq!(reserved(&mut store, &mut c, 3_600_000 + 99), 2 * (n - 1000));
    assert_eq!(reserved(&mut store, &mut c, 3_600_000 + 300), 0);
    for key in ["rv", "rx", "rt", "ri"] {
        assert_eq!(c.cmd(&["EXISTS", &format!("tc:{{{acct}}}:{key}")]), Resp::Int(0), "{key} left behind");
    }
}

/// A pause that grows extends the reservations of the paused limits only, found through the index
/// by limit: with 2,000 reservations on other limits, the 429 reads and rewrites three.
#[test]
fn a_growing_pause_extends_the_paused_limits_reservations_without_reading_the_others() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let config = Config::from_json(&CROWD.replace("MAX", "100")).unwrap();
    let acct = account("grown");
    let mut store = SharedStore::new(config, StoreOptions::new(acct.clone())).unwrap();
    store.set_test_clock(Some(ms(0)));
    // 2,000 reservations on the global limit only, three on `slots` (and global).
    let other = Request::http("GET", "/other").reserve(FollowUp::http("GET", "/other"));
    for _ in 0..2000 {
        go(ask(&mut c, &mut store, ms(0), &other, &AdmitOptions::default()));
    }
    let slots = Request::http("GET", "/slots").reserve(FollowUp::http("GET", "/slots"));
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.extend(go(ask(&mut c, &mut store, ms(0), &slots, &AdmitOptions::default())).reservations);
    }
    let expiries = |c: &mut Client| -> Vec<(String, String)> {
        let Resp::Array(items) = c.cmd(&["ZRANGE", &format!("tc:{{{acct}}}:rx"), "0", "-1", "WITHSCORES"]) else {
            panic!("rx")
        };
        let text = |r: &Resp| match r {
            Resp::Bulk(Some(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        items.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect()
    };
    let before = expiries(&mut c);
    assert_eq!(before.len(), 2003);
    // A request on `slots` is answered 429 "5 s": `slots` pauses (a route's 429 pauses its own limits).
    let hit = go(ask(&mut c, &mut store, ms(0), &Request::http("GET", "/slots"), &AdmitOptions::default()));
    store.set_test_clock(Some(ms(100)));
    let call = store.complete(ms(100), hit.request, &Outcome::status(429).header("Retry-After", "5")).unwrap();
    assert_eq!(c.cmd(&["CONFIG", "RESETSTAT"]), Resp::Simple("OK".into()));
    store.observe(ms(100), &c.run(&call)).unwrap();
    let Resp::Bulk(Some(stats)) = c.cmd(&["INFO", "commandstats"]) else { panic!("INFO") };
    let calls = |cmd: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .map_or(0, |rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
    };
    assert_eq!(calls("hgetall"), 0, "{stats}");
    assert_eq!(calls("hget"), 3, "only the paused limit's reservations are read: {stats}");
    let after = expiries(&mut c);
    let moved: Vec<_> = after.iter().filter(|e| !before.contains(e)).map(|(id, _)| id.clone()).collect();
    let mut want: Vec<_> = mine.iter().map(|r| r.0.to_string()).collect();
    want.sort();
    let mut got = moved.clone();
    got.sort();
    assert_eq!(got, want, "exactly the three reservations on `slots` live longer");
    for (id, at) in &after {
        if moved.contains(id) {
            let was = &before.iter().find(|(b, _)| b == id).unwrap().1;
            let grew = at.parse::<u64>().unwrap() - was.parse::<u64>().unwrap();
            assert_eq!(grew, 5_000_000, "by as much as the pause grew (0 -> 100 ms + 5 s, less the 100 ms it had)");
        }
    }
}

/// The differential with thousands of live reservations in the workloads (see `bulk_workload`).
#[test]
fn the_store_admits_like_the_in_memory_controller_with_thousands_of_reservations() {
    property("TC_DIFF_BULK_CASES", 8, bulk_workload(), run_differential);
}

// ---- behaviours ---------------------------------------------------------------------------------

const BM: &str = r#"{
  "limits": {
    "global":   { "kind": "window", "max": 5, "per": "1s", "hold": "go" },
    "catalog":  { "kind": "window", "max": 2, "per": "1s", "hold": "go" },
    "inflight": { "kind": "concurrency", "max": 1 },
    "bucket":   { "kind": "token_bucket", "capacity": 3, "refill": 1, "per": "1s" },
    "tokens":   { "kind": "budget", "refill": 5, "per": "1m", "max": 100, "initial": 50 }
  },
  "global": ["global"],
  "routes": [
    { "name": "catalog", "path": "^/ws/listings", "limits": ["catalog"] },
    { "name": "slow", "path": "^/slow", "limits": ["inflight"] },
    { "name": "bucket", "path": "^/bucket", "limits": ["bucket", "tokens"] },
    { "name": "tokens", "path": "^/tokens", "limits": [{ "limit": "global", "cost": 1 }, "tokens"] }
  ],
  "lease_ttl": "2s",
  "reservation_ttl": "3s"
}"#;

fn store(account: &str) -> SharedStore {
    SharedStore::new(Config::from_json(BM).unwrap(), StoreOptions::new(account)).unwrap()
}

fn ask(client: &mut Client, s: &mut SharedStore, now: Timestamp, req: &Request, o: &AdmitOptions) -> Decision {
    let call = s.admit(now, req, o).unwrap();
    s.decide(now, &call, &client.run(&call)).unwrap().decision
}

#[track_caller]
fn go(d: Decision) -> traffic_control_core::Permit {
    match d {
        Decision::Go(p) => p,
        other => panic!("expected go, got {other:?}"),
    }
}

#[test]
fn keys_are_hash_tagged_and_every_key_expires() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("ttl");
    let mut s = store(&acct);
    let now = ms(0);
    let dip = Request::http("POST", "/ws/listings/1").reserve(FollowUp::http("POST", "/ws/listings/1"));
    go(ask(&mut c, &mut s, now, &dip, &AdmitOptions::default()));
    go(ask(&mut c, &mut s, now, &Request::http("GET", "/slow"), &AdmitOptions::default()));
    go(ask(&mut c, &mut s, now, &Request::http("GET", "/bucket"), &AdmitOptions::default()));
    // A waiter's claim and a pause.
    let w = ask(&mut c, &mut s, now, &Request::http("GET", "/slow"), &AdmitOptions::waiter("w1"));
    assert!(matches!(w, Decision::Wait { .. }));
    // (A NORMAL newcomer would now leave the waiter's claim on global; a HIGH one goes.)
    let orders = Request::http("GET", "/orders");
    assert!(matches!(ask(&mut c, &mut s, now, &orders, &AdmitOptions::default()), Decision::Wait { .. }));
    let p = go(ask(&mut c, &mut s, now, &orders.priority(Priority::High), &AdmitOptions::default()));
    // A pause with a strike, and a quota learnt for global (a route with no window of its own).
    let outcome = Outcome::status(429).header("Retry-After", "1").header("X-RateLimit-Limit", "4");
    let call = s.complete(now, p.request, &outcome).unwrap();
    s.observe(now, &c.run(&call)).unwrap();
    let Resp::Array(keys) = c.cmd(&["KEYS", "*"]) else { panic!() };
    let keys: Vec<String> = keys.into_iter().map(|k| if let Resp::Bulk(Some(k)) = k { k } else { panic!() }).collect();
    assert!(keys.len() >= 8, "{keys:?}");
    assert!(keys.contains(&format!("tc:{{{acct}}}:s:global")), "{keys:?}");
    assert!(keys.contains(&format!("tc:{{{acct}}}:m:global")), "{keys:?}");
    for k in &keys {
        assert!(k.starts_with(&format!("tc:{{{acct}}}:")), "{k} is not hash-tagged by account");
        let Resp::Int(ttl) = c.cmd(&["PTTL", k]) else { panic!() };
        assert!(ttl > 0, "{k} has no expiry ({ttl})");
    }
}

#[test]
fn evalsha_falls_back_to_eval_and_the_fast_path_is_one_round_trip() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    c.cmd(&["SCRIPT", "FLUSH"]);
    let mut s = store(&account("sha"));
    let req = Request::http("GET", "/orders");
    let before = c.round_trips;
    go(ask(&mut c, &mut s, ms(0), &req, &AdmitOptions::default()));
    assert_eq!(c.round_trips - before, 2, "NOSCRIPT, then EVAL");
    assert!(c.script_loaded());
    let before = c.round_trips;
    let p = go(ask(&mut c, &mut s, ms(0), &req, &AdmitOptions::default()));
    assert_eq!(c.round_trips - before, 1, "one EVALSHA per admission");
    assert!(s.complete(ms(0), p.request, &Outcome::status(200)).is_none(), "nothing to tell the store");
}

#[test]
fn a_waiting_high_keeps_the_room_it_needs_from_a_low_flood_of_another_process() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("prio");
    let (mut a, mut b) = (store(&acct), store(&acct));
    let t = |s: &mut SharedStore, v| {
        s.set_test_clock(Some(ms(v)));
        ms(v)
    };
    // Process A fills the catalog limit (2 per s): at 1 s one unit frees.
    let catalog = Request::http("POST", "/ws/listings/1");
    let now = t(&mut a, 0);
    go(ask(&mut c, &mut a, now, &catalog, &AdmitOptions::default()));
    let now = t(&mut a, 5);
    go(ask(&mut c, &mut a, now, &catalog, &AdmitOptions::default()));
    // Process B's HIGH waits and registers its claim.
    let now = t(&mut b, 10);
    let high = catalog.clone().priority(Priority::High);
    let mut o = AdmitOptions::waiter("B-high");
    let call = b.admit(now, &high, &o).unwrap();
    let wait = b.decide(now, &call, &c.run(&call)).unwrap();
    let Decision::Wait { until: Some(until) } = wait.decision else { panic!("{wait:?}") };
    assert_eq!(until, ms(1000));
    o.since = wait.since;
    // When room comes, A's LOW flood (waiters too) cannot take it.
    let now = t(&mut a, 1000);
    for i in 0..20 {
        let low = catalog.clone().priority(Priority::Low);
        let d = ask(&mut c, &mut a, now, &low, &AdmitOptions::waiter(format!("A-low-{i}")));
        assert!(matches!(d, Decision::Wait { .. }), "LOW {i} took the room a waiting HIGH needs: {d:?}");
    }
    // B's HIGH, back at its instant, goes; a NORMAL newcomer without claims ahead could too.
    let now = t(&mut b, 1000);
    go(ask(&mut c, &mut b, now, &high, &o));
    // Once the HIGH went, its claim is gone: the registered LOW waiters go by arrival.
    let now = t(&mut a, 1005);
    let low = catalog.clone().priority(Priority::Low);
    let d = ask(&mut c, &mut a, now, &low, &AdmitOptions::waiter("A-low-1"));
    assert!(matches!(d, Decision::Wait { .. }), "A-low-1 passed A-low-0: {d:?}");
    go(ask(&mut c, &mut a, now, &low, &AdmitOptions::waiter("A-low-0")));
}

#[test]
fn a_window_holds_a_request_until_its_completion_plus_per_in_every_process() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("hold");
    let config = r#"{"limits":{"api":{"kind":"window","max":2,"per":"1s"}},"global":["api"],"lease_ttl":"5s"}"#;
    let new = || SharedStore::new(Config::from_json(config).unwrap(), StoreOptions::new(acct.clone())).unwrap();
    let (mut a, mut b) = (new(), new());
    let req = Request::http("GET", "/items");
    a.set_test_clock(Some(ms(0)));
    let first = go(ask(&mut c, &mut a, ms(0), &req, &AdmitOptions::default()));
    go(ask(&mut c, &mut a, ms(0), &req, &AdmitOptions::default()));
    // In flight, both count in every process however long they take: only a completion or a lease
    // lapsing starts a count-down, so nothing can free before now + per (the hint to ask again).
    b.set_test_clock(Some(ms(3000)));
    assert_eq!(ask(&mut c, &mut b, ms(3000), &req, &AdmitOptions::default()), Decision::Wait { until: Some(ms(4000)) });
    // A completion at 3.2 s: that request may have arrived then, it counts until 4.2 s.
    a.set_test_clock(Some(ms(3200)));
    let call =
        a.complete(ms(3200), first.request, &Outcome::status(200)).expect("a window's hold is released in the store");
    a.observe(ms(3200), &c.run(&call)).unwrap();
    b.set_test_clock(Some(ms(3300)));
    assert_eq!(ask(&mut c, &mut b, ms(3300), &req, &AdmitOptions::default()), Decision::Wait { until: Some(ms(4200)) });
    b.set_test_clock(Some(ms(4200)));
    go(ask(&mut c, &mut b, ms(4200), &req, &AdmitOptions::default()));
    // The second request never completes: it counts until its lease's end (5 s) plus per.
    b.set_test_clock(Some(ms(5999)));
    assert!(matches!(ask(&mut c, &mut b, ms(5999), &req, &AdmitOptions::default()), Decision::Wait { .. }));
    b.set_test_clock(Some(ms(6000)));
    go(ask(&mut c, &mut b, ms(6000), &req, &AdmitOptions::default()));
}

#[test]
fn a_crashed_callers_lease_expires_and_its_slot_returns() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("lease");
    let (mut a, mut b) = (store(&acct), store(&acct));
    let slow = Request::http("GET", "/slow");
    a.set_test_clock(Some(ms(0)));
    go(ask(&mut c, &mut a, ms(0), &slow, &AdmitOptions::default()));
    // A "crashes": it never completes. B waits until the lease lapses (lease_ttl 2 s), then goes.
    b.set_test_clock(Some(ms(100)));
    let Decision::Wait { until } = ask(&mut c, &mut b, ms(100), &slow, &AdmitOptions::default()) else { panic!() };
    assert_eq!(until, Some(ms(2000)));
    b.set_test_clock(Some(ms(1999)));
    assert!(matches!(ask(&mut c, &mut b, ms(1999), &slow, &AdmitOptions::default()), Decision::Wait { .. }));
    b.set_test_clock(Some(ms(2000)));
    let p = go(ask(&mut c, &mut b, ms(2000), &slow, &AdmitOptions::default()));
    // A completion releases at once.
    let call = b.complete(ms(2000), p.request, &Outcome::status(200)).unwrap();
    b.observe(ms(2000), &c.run(&call)).unwrap();
    go(ask(&mut c, &mut b, ms(2000), &slow, &AdmitOptions::default()));
}

#[test]
fn a_429_pauses_the_limits_for_every_process() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("pause");
    let (mut a, mut b) = (store(&acct), store(&acct));
    a.set_test_clock(Some(ms(0)));
    b.set_test_clock(Some(ms(0)));
    let p = go(ask(&mut c, &mut a, ms(0), &Request::http("POST", "/ws/listings/1"), &AdmitOptions::default()));
    let call = a.complete(ms(0), p.request, &Outcome::status(429).header("Retry-After", "3")).unwrap();
    a.observe(ms(0), &c.run(&call)).unwrap();
    // The 429 points at the route's own limit (catalog): paused for B too; global is not.
    let d = ask(&mut c, &mut b, ms(0), &Request::http("POST", "/ws/listings/2"), &AdmitOptions::default());
    assert_eq!(d, Decision::Wait { until: Some(ms(3000)) }, "catalog is paused for B too");
    go(ask(&mut c, &mut b, ms(0), &Request::http("GET", "/orders"), &AdmitOptions::default()));
    let call = b.snapshot_call(ms(0));
    let snap = b.snapshot(ms(0), &c.run(&call)).unwrap();
    let catalog = snap.limits.iter().find(|l| l.name == "catalog").unwrap();
    let pause = catalog.pause.as_ref().expect("the snapshot shows the pause");
    assert_eq!((pause.until, pause.reason), (ms(3000), "retry_after"));
    assert!(snap.limits.iter().filter(|l| l.name != "catalog").all(|l| l.pause.is_none()));
    b.set_test_clock(Some(ms(3000)));
    go(ask(&mut c, &mut b, ms(3000), &Request::http("POST", "/ws/listings/2"), &AdmitOptions::default()));
    // A 429 on a route with no narrower limit pauses global, for the configured block.
    let p = go(ask(&mut c, &mut b, ms(3000), &Request::http("GET", "/orders"), &AdmitOptions::default()));
    let call = b.complete(ms(3000), p.request, &Outcome::status(429)).unwrap();
    b.observe(ms(3000), &c.run(&call)).unwrap();
    let d = ask(&mut c, &mut a, ms(3000), &Request::http("GET", "/orders"), &AdmitOptions::default());
    assert!(matches!(d, Decision::Wait { until: Some(t) } if t > ms(3000)), "{d:?}");
}

#[test]
fn a_follow_up_waiting_to_spend_its_reservation_keeps_it_past_its_ttl() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let mut s = store(&account("keep"));
    let listing = Request::http("POST", "/ws/listings/1");
    s.set_test_clock(Some(ms(0)));
    let dip = listing.clone().reserve(FollowUp::http("POST", "/ws/listings/1"));
    let dip = go(ask(&mut c, &mut s, ms(0), &dip, &AdmitOptions::default()));
    // The Dip is rate limited: its limits pause for 5 s, past the reservation's ttl (3 s).
    let call = s.complete(ms(0), dip.request, &Outcome::status(429).header("Retry-After", "5")).unwrap();
    s.observe(ms(0), &c.run(&call)).unwrap();
    let peak = listing.clone().spend(dip.reservations[0]);
    s.set_test_clock(Some(ms(100)));
    let d = ask(&mut c, &mut s, ms(100), &peak, &AdmitOptions::waiter("peak"));
    assert_eq!(d, Decision::Wait { until: Some(ms(5000)) });
    let reserved = |c: &mut Client, s: &mut SharedStore, t: u64| {
        s.set_test_clock(Some(ms(t)));
        let call = s.snapshot_call(ms(t));
        let snap = s.snapshot(ms(t), &c.run(&call)).unwrap();
        snap.limits.iter().map(|l| l.reserved).sum::<u64>()
    };
    assert!(reserved(&mut c, &mut s, 4000) > 0, "the reservation outlives its ttl while its follow-up waits");
    s.set_test_clock(Some(ms(5000)));
    go(ask(&mut c, &mut s, ms(5000), &peak, &AdmitOptions::waiter("peak")));
    assert_eq!(reserved(&mut c, &mut s, 5000), 0, "spent");
    // Unspent and unclaimed, a reservation lapses at its ttl.
    s.set_test_clock(Some(ms(6000)));
    let dip = listing.clone().reserve(FollowUp::http("POST", "/ws/listings/1"));
    go(ask(&mut c, &mut s, ms(6000), &dip, &AdmitOptions::default()));
    assert!(reserved(&mut c, &mut s, 8999) > 0);
    assert_eq!(reserved(&mut c, &mut s, 9000), 0);
}

#[test]
fn a_pause_keeps_the_reservations_on_its_limits_alive_as_long_as_it_grew() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let mut s = store(&account("pause-resv"));
    let listing = Request::http("POST", "/ws/listings/1");
    s.set_test_clock(Some(ms(0)));
    // The Dip reserves its Peak (ttl 3 s); a request on global only is answered 429 "5 s": global
    // pauses, and the reservation holds global too.
    go(ask(
        &mut c,
        &mut s,
        ms(0),
        &listing.clone().reserve(FollowUp::http("POST", "/ws/listings/1")),
        &AdmitOptions::default(),
    ));
    let other = go(ask(&mut c, &mut s, ms(0), &Request::http("GET", "/orders"), &AdmitOptions::default()));
    s.set_test_clock(Some(ms(100)));
    let call = s.complete(ms(100), other.request, &Outcome::status(429).header("Retry-After", "5")).unwrap();
    s.observe(ms(100), &c.run(&call)).unwrap();
    let reserved = |c: &mut Client, s: &mut SharedStore, t: u64| {
        s.set_test_clock(Some(ms(t)));
        let call = s.snapshot_call(ms(t));
        s.snapshot(ms(t), &c.run(&call)).unwrap().limits.iter().map(|l| l.reserved).sum::<u64>()
    };
    // Without the pause it would lapse at 3 s; the pause grew by 5 s: it lives until 8 s.
    assert!(reserved(&mut c, &mut s, 7_900) > 0, "the reservation lapsed while the pause held its follow-up back");
    assert_eq!(reserved(&mut c, &mut s, 8_000), 0);
}

#[test]
fn a_lost_state_closes_each_limit_for_its_own_window() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("lost");
    let mut s = store(&acct);
    let req = Request::http("GET", "/orders");
    s.set_test_clock(Some(ms(10_000)));
    go(ask(&mut c, &mut s, ms(0), &req, &AdmitOptions::default()));
    c.cmd(&["FLUSHALL"]);
    // This host saw the state 1 ms ago: the empty account is a lost one, not an idle one.
    s.set_test_clock(Some(ms(10_001)));
    let d = ask(&mut c, &mut s, ms(1), &req, &AdmitOptions::default());
    assert_eq!(s.quarantine(), Duration::from_secs(3), "the bucket's full refill is the longest");
    // /orders needs only the global window (1 s per): closed 1 s, not the account's longest.
    assert_eq!(d, Decision::Wait { until: Some(ms(11_001)) });
    // /slow needs the concurrency limit too, whose leases (2 s) the store forgot.
    let slow = Request::http("GET", "/slow");
    assert_eq!(ask(&mut c, &mut s, ms(1), &slow, &AdmitOptions::default()), Decision::Wait { until: Some(ms(12_001)) });
    // A process that never saw the old state is held too: the quarantine lives in Redis.
    let mut fresh = store(&acct);
    fresh.set_test_clock(Some(ms(10_500)));
    assert_eq!(ask(&mut c, &mut fresh, ms(0), &req, &AdmitOptions::default()), d);
    s.set_test_clock(Some(ms(11_001)));
    go(ask(&mut c, &mut s, ms(1001), &req, &AdmitOptions::default()));
    assert!(matches!(ask(&mut c, &mut s, ms(1001), &slow, &AdmitOptions::default()), Decision::Wait { .. }));
    s.set_test_clock(Some(ms(12_001)));
    go(ask(&mut c, &mut s, ms(2001), &slow, &AdmitOptions::default()));
}

#[test]
fn writes_lost_in_a_failover_close_the_account_when_a_host_that_saw_them_asks() {
    // A replica promoted before it had the last writes: the account's state is there (same epoch)
    // but older than what a host got from it. Simulated on one server by rolling the state back.
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("rollback");
    let (mut a, mut b) = (store(&acct), store(&acct));
    let req = Request::http("GET", "/orders");
    for s in [&mut a, &mut b] {
        s.set_test_clock(Some(ms(10_000)));
    }
    go(ask(&mut c, &mut b, ms(0), &req, &AdmitOptions::default()));
    // What the replica has: a copy of the state now.
    let (meta, window) = (format!("tc:{{{acct}}}:meta"), format!("tc:{{{acct}}}:w:global"));
    for k in [&meta, &window] {
        assert_eq!(c.cmd(&["COPY", k, &format!("{k}:replica")]), Resp::Int(1), "{k}");
    }
    // A admits three more; the failover loses them (and the seq that drew their ids).
    for _ in 0..3 {
        go(ask(&mut c, &mut a, ms(0), &req, &AdmitOptions::default()));
    }
    for k in [&meta, &window] {
        assert_eq!(c.cmd(&["COPY", &format!("{k}:replica"), k, "REPLACE"]), Resp::Int(1));
    }
    // B saw nothing lost: the state looks whole to it, and it admits (as it would on the new master).
    s_clock(&mut a, &mut b, 10_001);
    go(ask(&mut c, &mut b, ms(1), &req, &AdmitOptions::default()));
    // A got ids the state no longer knows: the account closes for the longest window, for everyone.
    let d = ask(&mut c, &mut a, ms(1), &req, &AdmitOptions::default());
    assert_eq!(d, Decision::Wait { until: Some(ms(11_001)) }, "the global window's per");
    assert_eq!(ask(&mut c, &mut b, ms(1), &req, &AdmitOptions::default()), d, "the quarantine lives in Redis");
    // Once: A asking again does not push it further, and the ids it drew are never drawn again.
    s_clock(&mut a, &mut b, 10_500);
    assert_eq!(ask(&mut c, &mut a, ms(500), &req, &AdmitOptions::default()), d);
    s_clock(&mut a, &mut b, 11_001);
    let p = go(ask(&mut c, &mut b, ms(1001), &req, &AdmitOptions::default()));
    assert!(p.request.0 > 4, "{p:?}: ids above every id handed out before the failover");
}

fn s_clock(a: &mut SharedStore, b: &mut SharedStore, at: u64) {
    a.set_test_clock(Some(ms(at)));
    b.set_test_clock(Some(ms(at)));
}

#[test]
fn bad_requests_are_refused_without_a_round_trip_and_deadlines_without_waiting() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let mut s = store(&account("bad"));
    let e = s.admit(ms(0), &Request::http("GET", "/orders").cost(6), &AdmitOptions::default()).unwrap_err();
    assert_eq!(e.code(), "COST_EXCEEDS_CAPACITY");
    let e = s.admit(ms(0), &Request::route("nope"), &AdmitOptions::default()).unwrap_err();
    assert_eq!(e.code(), "UNKNOWN_ROUTE");
    s.set_test_clock(Some(ms(0)));
    let req = Request::http("POST", "/ws/listings/1");
    go(ask(&mut c, &mut s, ms(0), &req, &AdmitOptions::default()));
    go(ask(&mut c, &mut s, ms(0), &req, &AdmitOptions::default()));
    let mut o = AdmitOptions::default();
    o.max_wait = Some(Duration::from_millis(500));
    let Decision::Reject(e) = ask(&mut c, &mut s, ms(0), &req, &o) else { panic!() };
    assert_eq!(e.code(), "DEADLINE_UNREACHABLE");
    // The budget: 50 tokens, 5 more a minute; 60 cannot be there within 500 ms.
    let Decision::Reject(e) = ask(&mut c, &mut s, ms(0), &Request::route("tokens").cost(60), &o) else { panic!() };
    assert_eq!(e.code(), "INSUFFICIENT_BUDGET", "{e}");
    assert!(SharedStore::new(Config::from_json(BM).unwrap(), StoreOptions::new("a{b}")).is_err());
}

// ---- one pause policy ----------------------------------------------------------------------------

/// The in-memory controller and a store on a fresh account, driven in lockstep on one clock: every
/// answer goes to both, and after each step both must show the same pause on every limit.
struct Twin {
    tc: TrafficControl,
    store: SharedStore,
    client: Client,
    account: String,
}

impl Twin {
    fn new(server: &RedisServer, config: &str) -> Twin {
        let config = Config::from_json(config).unwrap();
        let tc = TrafficControl::new(config.clone()).unwrap();
        let account = account("twin");
        let store = SharedStore::new(config, StoreOptions::new(account.clone())).unwrap();
        Twin { tc, store, client: server.client(), account }
    }

    /// Options for another process on the same account.
    fn store_options(&self) -> StoreOptions {
        StoreOptions::new(self.account.clone())
    }

    /// Both decide on `req` at `t`; the decisions must agree (waits to the instant).
    #[track_caller]
    fn ask(&mut self, t: u64, req: &Request) -> Option<(RequestId, RequestId)> {
        self.store.set_test_clock(Some(ms(t)));
        let expected = self.tc.try_acquire(ms(t), req);
        let call = self.store.admit(ms(t), req, &AdmitOptions::default()).unwrap();
        let got = self.store.decide(ms(t), &call, &self.client.run(&call)).unwrap().decision;
        match (&expected, &got) {
            (Decision::Go(a), Decision::Go(b)) => Some((a.request, b.request)),
            (Decision::Wait { until: a }, Decision::Wait { until: b }) => {
                assert_eq!(a, b, "at {t} ms the waits differ");
                None
            }
            _ => panic!("at {t} ms: memory {expected:?}, store {got:?}"),
        }
    }

    #[track_caller]
    fn go(&mut self, t: u64, req: &Request) -> (RequestId, RequestId) {
        self.ask(t, req).unwrap_or_else(|| panic!("at {t} ms: expected go"))
    }

    fn answer(&mut self, t: u64, ids: (RequestId, RequestId), outcome: Outcome) {
        self.store.set_test_clock(Some(ms(t)));
        let _ = self.tc.complete(ms(t), ids.0, outcome.clone());
        if let Some(call) = self.store.complete(ms(t), ids.1, &outcome) {
            self.store.observe(ms(t), &self.client.run(&call)).unwrap();
        }
    }

    /// Both snapshots, limit by limit: (name, capacity, pause).
    fn pauses(&mut self, t: u64) -> (Vec<String>, Vec<String>) {
        self.store.set_test_clock(Some(ms(t)));
        let show = |s: traffic_control_core::Snapshot| -> Vec<String> {
            s.limits.iter().map(|l| format!("{} cap {} {:?}", l.name, l.capacity, l.pause)).collect()
        };
        let memory = show(self.tc.snapshot(ms(t)));
        let call = self.store.snapshot_call(ms(t));
        let store = show(self.store.snapshot(ms(t), &self.client.run(&call)).unwrap());
        (memory, store)
    }

    /// The pause both show on `limit` at `t` (they must agree): (until ms, server until ms, reason,
    /// strikes).
    #[track_caller]
    fn pause(&mut self, t: u64, limit: &str) -> Option<(f64, f64, &'static str, u32)> {
        let (memory, store) = self.pauses(t);
        assert_eq!(memory, store, "at {t} ms the limits differ between memory and the store");
        self.store.set_test_clock(Some(ms(t)));
        let snap = self.tc.snapshot(ms(t));
        let l = snap.limits.iter().find(|l| l.name == limit).unwrap();
        l.pause.as_ref().map(|p| (p.until.as_millis_f64(), p.server_until.as_millis_f64(), p.reason, p.strikes))
    }
}

const DOUBLING: &str = r#"{
  "limits": {
    "global":  { "kind": "window", "max": 100, "per": "10s", "hold": "go" },
    "catalog": { "kind": "window", "max": 10,  "per": "10s", "hold": "go" }
  },
  "global": ["global"],
  "routes": [ { "name": "listings", "path": "^/ws/listings", "limits": ["catalog"] } ],
  "feedback": { "block": "2s", "max_block": "9s", "max_retries": 0, "jitter": 0.25, "seed": 7 },
  "lease_ttl": "1h"
}"#;

#[test]
fn repeated_429s_double_in_the_store_as_in_memory() {
    let Some(server) = RedisServer::start() else { return };
    let mut twin = Twin::new(&server, DOUBLING);
    let listing = Request::http("POST", "/ws/listings/1");
    // A burst: three requests out at 0, three 429s. The first is a strike (one block plus jitter),
    // the others were sent before that pause ended: no doubling, each a block from its own answer.
    let burst: Vec<_> = (0..3).map(|_| twin.go(0, &listing)).collect();
    twin.answer(100, burst[0], Outcome::status(429));
    let (until, server_until, reason, strikes) = twin.pause(100, "catalog").expect("paused");
    assert_eq!((server_until, reason, strikes), (2100.0, "block", 1));
    assert!((2100.0..=2600.0).contains(&until), "one block, up to 25% jitter: {until}");
    twin.answer(150, burst[1], Outcome::status(429));
    twin.answer(200, burst[2], Outcome::status(429));
    let first = twin.pause(200, "catalog").expect("paused");
    assert_eq!((first.1, first.2, first.3), (2200.0, "block", 1), "a burst counts once");
    assert!(twin.pause(200, "global").is_none(), "the 429s point at the route's own limit");
    // Sent after the pause ended: a repeat, the block doubles (4 s, jitter on top).
    let t = first.0.ceil() as u64;
    twin.ask(t - 1, &listing);
    let repeat = twin.go(t, &listing);
    twin.answer(t + 100, repeat, Outcome::status(429));
    let second = twin.pause(t + 100, "catalog").expect("paused");
    assert_eq!((second.1, second.2, second.3), ((t + 2100) as f64, "backoff", 2));
    assert!(second.0 >= (t + 4100) as f64 && second.0 <= (t + 9100) as f64, "{second:?}");
    // CRITICAL waits only for the server's part, in both.
    let critical = listing.clone().priority(Priority::Critical);
    twin.ask(t + 2099, &critical);
    let k = twin.go(t + 2100, &critical);
    twin.answer(t + 2100, k, Outcome::status(201));
    // The critical request's success cleared the strikes; the pause it could not shorten runs on.
    let cleared = twin.pause(t + 2100, "catalog").expect("still paused");
    assert_eq!((cleared.0, cleared.3), (second.0, 0));
    // After it, a 429 is a first strike again; then repeats double up to the cap (9 s).
    let mut t = second.0.ceil() as u64;
    let mut totals = Vec::new();
    for _ in 0..4 {
        let r = twin.go(t, &listing);
        twin.answer(t + 10, r, Outcome::status(429));
        let p = twin.pause(t + 10, "catalog").expect("paused");
        totals.push(p.0 - (t + 10) as f64);
        t = p.0.ceil() as u64 + 1;
    }
    assert!(totals[0] >= 2000.0 && totals[1] >= 4000.0 && totals[2] >= 8000.0, "{totals:?}");
    assert_eq!(totals[3], 9000.0, "the cap, jitter included: {totals:?}");
    // A Retry-After is kept exactly, and counts as a strike (strikes 5, reason retry_after).
    let r = twin.go(t, &listing);
    twin.answer(t + 10, r, Outcome::status(429).header("Retry-After", "3"));
    let p = twin.pause(t + 10, "catalog").expect("paused");
    assert_eq!(p, ((t + 3010) as f64, (t + 3010) as f64, "retry_after", 5));
}

// ---- every parsed signal decides, in the store as in memory -------------------------------------

const SIGNALS: &str = r#"{
  "limits": {
    "global":  { "kind": "window", "max": 100, "per": "60s", "hold": "go" },
    "catalog": { "kind": "window", "max": 10,  "per": "10s", "hold": "go" },
    "hourly":  { "kind": "window", "max": 500, "per": "1h",  "hold": "go" }
  },
  "global": ["global"],
  "routes": [
    { "name": "listings", "path": "^/ws/listings", "limits": ["catalog"] },
    { "name": "ingestion", "path": "^/ws/ingest", "limits": ["catalog", "hourly"] }
  ],
  "feedback": { "block": "2s", "max_retries": 0, "jitter": 0.1 },
  "lease_ttl": "1h"
}"#;

fn with_headers(status: u16, headers: &[(&str, &str)]) -> Outcome {
    headers.iter().fold(Outcome::status(status), |o, (k, v)| o.header(*k, *v))
}

#[test]
fn a_429_with_only_a_reset_pauses_until_the_reset_in_the_store_as_in_memory() {
    let Some(server) = RedisServer::start() else { return };
    let forms: [&[(&str, &str)]; 4] = [
        &[("X-RateLimit-Reset", "30")],
        &[("RateLimit-Reset", "30")],
        &[("RateLimit", "\"default\";r=0;t=30"), ("RateLimit-Policy", "\"default\";q=10;w=10")],
        &[("RateLimit", "limit=10, remaining=0, reset=30")],
    ];
    for headers in forms {
        let mut twin = Twin::new(&server, SIGNALS);
        let listing = Request::http("POST", "/ws/listings/1");
        let r = twin.go(0, &listing);
        twin.answer(100, r, with_headers(429, headers));
        assert_eq!(twin.pause(100, "catalog"), Some((30_100.0, 30_100.0, "retry_after", 1)), "{headers:?}");
        assert_eq!(twin.pause(100, "global"), None, "{headers:?}");
        twin.ask(30_099, &listing);
        twin.go(30_100, &listing);
    }
}

#[test]
fn a_success_saying_the_quota_is_used_up_pauses_every_process_until_the_reset() {
    let Some(server) = RedisServer::start() else { return };
    let mut twin = Twin::new(&server, SIGNALS);
    let listing = Request::http("POST", "/ws/listings/1");
    // Strikes first: a 429, then the exhausted success clears them (not a strike itself).
    let r = twin.go(0, &listing);
    twin.answer(0, r, Outcome::status(429));
    assert_eq!(twin.pause(0, "catalog").map(|p| p.3), Some(1));
    let t = twin.pause(0, "catalog").unwrap().0.ceil() as u64;
    let r = twin.go(t, &listing);
    twin.answer(t + 100, r, with_headers(200, &[("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "5")]));
    let exhausted = ((t + 5_100) as f64, (t + 5_100) as f64, "exhausted", 0);
    assert_eq!(twin.pause(t + 100, "catalog"), Some(exhausted));
    assert_eq!(twin.pause(t + 100, "global"), None);
    // CRITICAL waits for it too (the server's count), other routes go.
    twin.ask(t + 100, &listing.clone().priority(Priority::Critical));
    twin.go(t + 100, &Request::http("GET", "/ws/orders"));
    // Another process sees it.
    let mut other = SharedStore::new(Config::from_json(SIGNALS).unwrap(), twin.store_options()).unwrap();
    other.set_test_clock(Some(ms(t + 200)));
    let call = other.admit(ms(t + 200), &listing, &AdmitOptions::default()).unwrap();
    let d = other.decide(ms(t + 200), &call, &twin.client.run(&call)).unwrap().decision;
    assert_eq!(d, Decision::Wait { until: Some(ms(t + 5_100)) });
    twin.go(t + 5_100, &listing);
}

#[test]
fn a_smaller_quota_lowers_the_window_for_every_process_until_the_config_changes() {
    let Some(server) = RedisServer::start() else { return };
    let mut twin = Twin::new(&server, SIGNALS);
    let listing = Request::http("POST", "/ws/listings/1");
    let r = twin.go(0, &listing);
    twin.answer(10, r, with_headers(200, &[("RateLimit-Policy", "\"burst\";q=4;w=10")]));
    twin.pause(10, "catalog");
    let caps = twin.pauses(10).1;
    assert!(caps.iter().any(|c| c.starts_with("catalog cap 4 ")), "{caps:?}");
    assert!(caps.iter().any(|c| c.starts_with("global cap 100 ")), "{caps:?}");
    for _ in 0..3 {
        twin.go(10, &listing);
    }
    twin.ask(10, &listing);
    // Never raised by a larger report; lowered again by a smaller one (any header form).
    let r = twin.go(10_000, &listing);
    twin.answer(10_000, r, with_headers(200, &[("X-RateLimit-Limit", "8")]));
    let r = twin.go(10_010, &listing);
    twin.answer(10_010, r, with_headers(200, &[("RateLimit-Limit", "3")]));
    twin.pause(10_010, "catalog");
    assert!(twin.pauses(10_010).1.iter().any(|c| c.starts_with("catalog cap 3 ")));
    // Another process: the same effective max; a cost above it can never go.
    let options = twin.store_options();
    let mut other = SharedStore::new(Config::from_json(SIGNALS).unwrap(), options.clone()).unwrap();
    other.set_test_clock(Some(ms(30_000)));
    let call = other.admit(ms(30_000), &listing.clone().cost(4), &AdmitOptions::default()).unwrap();
    let d = other.decide(ms(30_000), &call, &twin.client.run(&call)).unwrap().decision;
    let Decision::Reject(e) = d else { panic!("{d:?}") };
    assert_eq!(
        e,
        traffic_control_core::RequestError::CostExceedsCapacity { limit: "catalog".into(), cost: 4, capacity: 3 }
    );
    // A process under another config (catalog max 12) is not bound by what was learnt under 10.
    let changed = SIGNALS.replace(r#""max": 10,"#, r#""max": 12,"#);
    let mut new = SharedStore::new(Config::from_json(&changed).unwrap(), options).unwrap();
    new.set_test_clock(Some(ms(30_000)));
    let call = new.snapshot_call(ms(30_000));
    let snap = new.snapshot(ms(30_000), &twin.client.run(&call)).unwrap();
    assert_eq!(snap.limits.iter().find(|l| l.name == "catalog").unwrap().capacity, 12);
}

// ---- the shared driver's events ------------------------------------------------------------------

/// Runs every store call the driver asks for against Redis until it asks for none; returns the
/// events and the goes and failures (by handle) it put out meanwhile.
fn pump(c: &mut Client, d: &mut SharedDriver, now: Timestamp) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = d.poll_output() {
        match o {
            Output::Run { call, store_call } => d.on_reply(now, call, &c.run(&store_call)),
            other => out.push(other),
        }
    }
    out
}

fn shared_driver(acct: &str, tag: &str) -> SharedDriver {
    let mut options = DriverOptions::new(tag);
    options.wake = false;
    let mut d = SharedDriver::new(Config::from_json(BM).unwrap(), StoreOptions::new(acct), options).unwrap();
    d.set_events(true);
    d
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((**e).clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn shared_events_name_one_id_per_request_across_processes_from_queued_to_completed() {
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("events");
    let (mut a, mut b) = (shared_driver(&acct, "a"), shared_driver(&acct, "b"));
    for d in [&mut a, &mut b] {
        d.store_mut().set_test_clock(Some(ms(0)));
    }
    // A takes the catalog window (2 per second): two goes.
    let h1 = a.acquire(ms(0), Request::http("POST", "/ws/listings/1?key=secret"), None).unwrap();
    let h2 = a.acquire(ms(0), Request::http("POST", "/ws/listings/2"), None).unwrap();
    let ev = events(&pump(&mut c, &mut a, ms(0)));
    assert_eq!(ev.iter().map(Event::status).collect::<Vec<_>>(), ["go", "go"], "{ev:?}");
    let (r1, r2) = (ev[0].request, ev[1].request);
    assert_ne!(r1, r2);
    assert_eq!((ev[0].endpoint(), ev[0].route()), ("POST /ws/listings/1", Some("catalog")), "no secret");
    assert!(h1 != h2);

    // B's catalog request waits: queued, under an id the store drew for it.
    b.acquire(ms(100), Request::http("POST", "/ws/listings/3"), None).unwrap();
    let ev = events(&pump(&mut c, &mut b, ms(100)));
    assert_eq!(ev.iter().map(Event::status).collect::<Vec<_>>(), ["queued"], "{ev:?}");
    let queued = ev[0].request;
    assert!(queued.0 != 0 && queued != r1 && queued != r2, "{queued:?}");

    // A's first answer is a 429 with Retry-After: completed, then rate limited until 2.2 s, and
    // queued again under its id (the caller gives the retry up here: cancelled).
    let retry = a.complete(ms(200), r1, &Outcome::status(429).header("Retry-After", "2"));
    let ev = events(&pump(&mut c, &mut a, ms(200)));
    let kinds: Vec<&str> = ev.iter().map(Event::status).collect();
    assert_eq!(kinds, ["completed", "rate_limited", "retried"], "{ev:?}");
    assert_eq!(ev[0].log().response_status, Some(429));
    assert_eq!(ev[0].log().duration_ms, Some(200.0));
    assert!(matches!(ev[1].kind, EventKind::RateLimited { status: Some(429), until } if until == ms(2200)), "{ev:?}");
    assert!(ev[2].request == r1 && matches!(ev[2].kind, EventKind::Retried { attempt: 1, .. }), "{ev:?}");
    a.cancel(ms(200), retry);
    let ev = events(&pump(&mut c, &mut a, ms(200)));
    assert_eq!((ev.len(), ev[0].status(), ev[0].request), (1, "cancelled", r1), "{ev:?}");
    a.complete(ms(250), r2, &Outcome::status(200));
    let ev = events(&pump(&mut c, &mut a, ms(250)));
    assert_eq!(ev.iter().map(Event::status).collect::<Vec<_>>(), ["completed"], "a success pauses nothing");

    // B goes when the pause ends, under the id of its queued event, having waited 2.1 s.
    for t in [1000, 2200] {
        b.store_mut().set_test_clock(Some(ms(t)));
        b.handle_timeout(ms(t));
        let ev = events(&pump(&mut c, &mut b, ms(t)));
        if t == 2200 {
            assert_eq!(ev.iter().map(Event::status).collect::<Vec<_>>(), ["go"], "{ev:?}");
            assert_eq!(ev[0].request, queued);
            assert_eq!(ev[0].log().duration_ms, Some(2100.0));
        } else {
            assert!(ev.is_empty(), "{ev:?}");
        }
    }

    // A request that cannot go in time is rejected under an id of its own; a cancelled one says so.
    for d in [&mut a, &mut b] {
        d.store_mut().set_test_clock(Some(ms(2300)));
    }
    a.acquire(ms(2300), Request::http("POST", "/ws/listings/4"), None).unwrap();
    a.acquire(ms(2300), Request::http("POST", "/ws/listings/5"), Some(Duration::from_millis(10))).unwrap();
    let h = a.acquire(ms(2300), Request::http("POST", "/ws/listings/6"), None).unwrap();
    let ev = events(&pump(&mut c, &mut a, ms(2300)));
    assert_eq!(ev.iter().map(Event::status).collect::<Vec<_>>(), ["go", "rejected", "queued"], "{ev:?}");
    assert_eq!(ev[1].log().error, Some("DEADLINE_UNREACHABLE"));
    assert!(ev[1].request.0 != 0 && ev[1].request != ev[0].request);
    a.cancel(ms(2400), h);
    let cancelled = events(&pump(&mut c, &mut a, ms(2400)));
    assert_eq!(cancelled.iter().map(Event::status).collect::<Vec<_>>(), ["cancelled"]);
    assert_eq!(cancelled[0].request, ev[2].request, "cancelled under its queued id");

    // Events off: none.
    a.set_events(false);
    a.acquire(ms(2400), Request::http("GET", "/orders"), None).unwrap();
    assert!(events(&pump(&mut c, &mut a, ms(2400))).is_empty());
}

#[test]
fn a_rate_limited_request_is_retried_after_the_pause_under_its_id_ahead_of_lower_priorities_elsewhere() {
    // Process A's HIGH request is answered 429 (Retry-After 1 s): the driver queues it again. B's
    // LOW request, asked before the pause ends, must not take the room the retry needs when the
    // pause ends; the retry goes under its first id, its go naming the completion.
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("retry");
    let (mut a, mut b) = (shared_driver(&acct, "a"), shared_driver(&acct, "b"));
    s_clock(a.store_mut(), b.store_mut(), 0);
    a.acquire(ms(0), Request::http("POST", "/ws/listings/1").priority(Priority::High), None).unwrap();
    let out = pump(&mut c, &mut a, ms(0));
    let Some(Output::Go { request, .. }) = out.iter().find(|o| matches!(o, Output::Go { .. })).cloned() else {
        panic!("{out:?}")
    };
    s_clock(a.store_mut(), b.store_mut(), 100);
    let completion = a.complete(ms(100), request, &Outcome::status(429).header("Retry-After", "1"));
    let out = pump(&mut c, &mut a, ms(100));
    assert!(!out.iter().any(|o| matches!(o, Output::Done { .. } | Output::GiveUp { .. })), "{out:?}");
    assert_eq!(a.waiting(), 1, "the retry waits for the pause");
    b.acquire(ms(200), Request::http("POST", "/ws/listings/2").priority(Priority::Low), None).unwrap();
    assert!(!pump(&mut c, &mut b, ms(200)).iter().any(|o| matches!(o, Output::Go { .. })), "paused");
    // At the pause's end B asks first; the retry's claim keeps it off.
    s_clock(a.store_mut(), b.store_mut(), 1_100);
    b.handle_timeout(ms(1_100));
    let b_first = pump(&mut c, &mut b, ms(1_100));
    a.handle_timeout(ms(1_100));
    let out = pump(&mut c, &mut a, ms(1_100));
    let went = out.iter().find_map(|o| match o {
        Output::Go { handle, request: r, .. } if *handle == completion => Some(*r),
        _ => None,
    });
    assert_eq!(went, Some(request), "the retry goes under its id, naming the completion: {out:?}");
    let b_went = b_first.iter().any(|o| matches!(o, Output::Go { .. }));
    // The catalog window holds 2 a second: B's LOW may go beside the retry, never instead of it.
    let call = a.store().snapshot_call(ms(1_100));
    let snap = a.store_mut().snapshot(ms(1_100), &c.run(&call)).unwrap();
    let used = snap.limits.iter().find(|l| l.name == "catalog").unwrap().used;
    assert!(used <= 2 && (used == 1 + u64::from(b_went)), "used {used}, B went {b_went}");
    // Its second 429 of a row doubles nothing here (the server named the time) and retries again;
    // the third and fourth do too, and past `max_retries` (3) the completion gives up.
    let mut now = 1_200;
    for attempt in 2..=4 {
        s_clock(a.store_mut(), b.store_mut(), now);
        let h = a.complete(ms(now), request, &Outcome::status(429).header("Retry-After", "1"));
        let out = pump(&mut c, &mut a, ms(now));
        if attempt == 4 {
            assert!(out.contains(&Output::GiveUp { handle: h }), "{out:?}");
            break;
        }
        now += 1_100;
        s_clock(a.store_mut(), b.store_mut(), now);
        a.handle_timeout(ms(now));
        let out = pump(&mut c, &mut a, ms(now));
        assert!(
            out.iter().any(|o| matches!(o, Output::Go { handle, .. } if *handle == h)),
            "attempt {attempt}: {out:?}"
        );
        now += 100;
    }
}

#[test]
fn requests_queued_behind_a_waiting_head_of_their_class_are_logged_as_queued_under_their_own_ids() {
    // Only the head of a local class asks the store; the requests behind it wait without a reply
    // of their own. Each is still `queued` (dated at its acquire) under the id it goes with.
    let Some(server) = RedisServer::start() else { return };
    let mut c = server.client();
    let acct = account("classq");
    let (mut a, mut b) = (shared_driver(&acct, "a"), shared_driver(&acct, "b"));
    s_clock(a.store_mut(), b.store_mut(), 0);
    for i in 0..2 {
        a.acquire(ms(0), Request::http("POST", format!("/ws/listings/{i}")), None).unwrap();
    }
    pump(&mut c, &mut a, ms(0));
    for i in 0..3 {
        b.acquire(ms(100 + i), Request::http("POST", format!("/ws/listings/b{i}")), None).unwrap();
    }
    let mut seen = events(&pump(&mut c, &mut b, ms(102)));
    for t in (200..=2_200).step_by(100) {
        b.store_mut().set_test_clock(Some(ms(t)));
        b.handle_timeout(ms(t));
        seen.extend(events(&pump(&mut c, &mut b, ms(t))));
    }
    let kinds: Vec<&str> = seen.iter().map(Event::status).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "queued").count(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "go").count(), 3, "{kinds:?}");
    for go in seen.iter().filter(|e| e.status() == "go") {
        let queued: Vec<&Event> = seen.iter().filter(|e| e.status() == "queued" && e.request == go.request).collect();
        assert_eq!(queued.len(), 1, "one queued event under the id {:?} goes with: {seen:?}", go.request);
        assert!(go.request.0 != 0 && queued[0].at <= ms(102), "{queued:?}");
        assert!(go.log().duration_ms.unwrap() >= 800.0, "each waited for the window: {go:?}");
    }
}

#[test]
fn a_request_refused_because_the_store_is_gone_is_logged_with_its_code() {
    let mut options = DriverOptions::new("gone");
    options.on_unavailable = Unavailable::Fail;
    let mut d = SharedDriver::new(Config::from_json(BM).unwrap(), StoreOptions::new("gone"), options).unwrap();
    d.set_events(true);
    d.acquire(ms(0), Request::http("GET", "/orders"), None).unwrap();
    let Some(Output::Run { call, .. }) = d.poll_output() else { panic!("a call") };
    d.on_store_error(ms(5), call, "connection refused");
    let ev = events(&std::iter::from_fn(|| d.poll_output()).collect::<Vec<_>>());
    assert_eq!(ev.len(), 1, "{ev:?}");
    let log = ev[0].log();
    assert_eq!((log.status, log.error, log.request_id), ("rejected", Some("STORE_UNAVAILABLE"), 0));
}

// ---- retries after rate-limited answers, two processes, random workloads -------------------------

#[derive(Debug, Clone)]
enum RetryOp {
    /// Process, priority.
    Acquire(usize, u8),
    /// Which permit in flight, and the answer: 200, or 429 with Retry-After in tenths of a second
    /// (0: none, the configured block doubled per repeat).
    Answer(usize, Option<u64>),
    /// Milliseconds (in steps of 10).
    Advance(u64),
}

#[derive(Debug, Clone)]
struct RetryWorkload {
    max: u64,
    max_retries: u32,
    ops: Vec<RetryOp>,
}

fn retry_workload() -> impl Strategy<Value = RetryWorkload> {
    let op = prop_oneof![
        4 => (0usize..2, 0u8..4).prop_map(|(p, q)| RetryOp::Acquire(p, q)),
        6 => (0usize..6, proptest::option::weighted(0.6, 0u64..5)).prop_map(|(i, a)| RetryOp::Answer(i, a)),
        3 => (1u64..40).prop_map(|d| RetryOp::Advance(d * 10)),
    ];
    (1u64..4, 0u32..4, proptest::collection::vec(op, 1..120)).prop_map(|(max, max_retries, ops)| RetryWorkload {
        max,
        max_retries,
        ops,
    })
}

/// What each process's outputs said, checked as they come.
#[derive(Default)]
struct RetryLog {
    /// Every go: (order, instant, request id).
    goes: Vec<(usize, u64, RequestId)>,
    /// Pauses announced by `rate_limited` events: (order, until, the part the server imposed).
    pauses: Vec<(usize, u64, u64)>,
    /// The server's part of the pause a 429 answer asked for (its Retry-After, else the block),
    /// by request id: CRITICAL waits for that part only.
    server_part: std::collections::HashMap<RequestId, u64>,
    /// Priorities, by acquire (process, handle) and then by request id.
    acquire_priority: std::collections::HashMap<(usize, u64), u8>,
    priority: std::collections::HashMap<RequestId, u8>,
    /// Outputs seen so far (the order of goes and pauses within one instant).
    seen: usize,
    /// Permits in flight: (process, request id).
    in_flight: Vec<(usize, RequestId)>,
    /// Completions waiting for their answer: (process, handle) → (request id, it was a 429).
    completions: std::collections::HashMap<(usize, u64), (RequestId, bool)>,
    /// Acquires not settled: (process, handle).
    acquires: std::collections::HashSet<(usize, u64)>,
    /// Rate-limited answers per request id.
    limited: std::collections::HashMap<RequestId, u32>,
}

fn retry_outputs(
    p: usize,
    now: u64,
    out: Vec<Output>,
    log: &mut RetryLog,
    max_retries: u32,
) -> Result<(), TestCaseError> {
    for o in out {
        log.seen += 1;
        match o {
            Output::Go { handle, request, .. } => {
                log.goes.push((log.seen, now, request));
                if log.acquires.remove(&(p, handle.0)) {
                    let q = log.acquire_priority[&(p, handle.0)];
                    log.priority.insert(request, q);
                    log.in_flight.push((p, request));
                    continue;
                }
                let Some((id, limited)) = log.completions.remove(&(p, handle.0)) else {
                    return Err(TestCaseError::fail(format!("a go for no one: {handle:?}")));
                };
                prop_assert!(limited, "a retry after a success");
                prop_assert_eq!(request, id, "a retry goes under its id");
                prop_assert!(
                    log.limited[&id] <= max_retries,
                    "{} retries past max_retries {}",
                    log.limited[&id],
                    max_retries
                );
                log.in_flight.push((p, request));
            }
            Output::Done { handle, .. } => {
                let (id, limited) = log.completions.remove(&(p, handle.0)).expect("a completion");
                prop_assert!(!limited, "a 429 answered done for {:?}", id);
            }
            Output::GiveUp { handle } => {
                let (id, limited) = log.completions.remove(&(p, handle.0)).expect("a completion");
                prop_assert!(
                    limited && log.limited[&id] > max_retries,
                    "gave up after {} of {}",
                    log.limited[&id],
                    max_retries
                );
            }
            Output::Fail { error, .. } => prop_assert!(false, "{}", error),
            Output::Event(e) => {
                if let EventKind::RateLimited { until, .. } = e.kind {
                    let server = log.server_part[&e.request];
                    log.pauses.push((log.seen, (until.as_millis_f64()).ceil() as u64, server));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Two processes on one account and one window; random acquires at every priority, answers that
/// are 200 or 429 (with or without Retry-After), a fake clock. Every rate-limited answer is retried
/// under its id until `max_retries`, then given up; no go (first try or retry, either process)
/// falls inside a pause a 429 announced; the window holds at every instant; in the end every
/// acquire and every completion settled and nothing waits.
fn run_retries(client: &mut Client, w: &RetryWorkload) -> Result<(), TestCaseError> {
    let config = format!(
        r#"{{ "limits": {{ "api": {{ "kind": "window", "max": {}, "per": "1s", "hold": "go" }} }}, "global": ["api"],
             "feedback": {{ "block": "150ms", "max_block": "600ms", "max_retries": {} }} }}"#,
        w.max, w.max_retries
    );
    let acct = account("retries");
    let mut ds: Vec<SharedDriver> = ["a", "b"]
        .iter()
        .map(|tag| {
            let mut o = DriverOptions::new(*tag);
            o.wake = false;
            let mut d = SharedDriver::new(Config::from_json(&config).unwrap(), StoreOptions::new(&acct), o).unwrap();
            d.set_events(true);
            d
        })
        .collect();
    let mut log = RetryLog::default();
    let mut now = 0u64;
    let step =
        |ds: &mut Vec<SharedDriver>, c: &mut Client, log: &mut RetryLog, now: u64| -> Result<(), TestCaseError> {
            for (p, d) in ds.iter_mut().enumerate() {
                d.store_mut().set_test_clock(Some(ms(now)));
                d.handle_timeout(ms(now));
                let out = pump(c, d, ms(now));
                retry_outputs(p, now, out, log, w.max_retries)?;
            }
            Ok(())
        };
    for op in w.ops.iter().cloned() {
        match op {
            RetryOp::Acquire(p, q) => {
                ds[p].store_mut().set_test_clock(Some(ms(now)));
                let h = ds[p]
                    .acquire(ms(now), Request::http("GET", "/x").priority(Priority::ALL[usize::from(q)]), None)
                    .unwrap();
                log.acquires.insert((p, h.0));
                log.acquire_priority.insert((p, h.0), q);
            }
            RetryOp::Answer(i, answer) => {
                if log.in_flight.is_empty() {
                    continue;
                }
                let (p, id) = log.in_flight.remove(i % log.in_flight.len());
                let outcome = match answer {
                    None => Outcome::status(200),
                    Some(0) => Outcome::status(429),
                    Some(t) => Outcome::status(429).header("Retry-After", format!("0.{t}")),
                };
                let limited = answer.is_some();
                if let Some(t) = answer {
                    *log.limited.entry(id).or_default() += 1;
                    log.server_part.insert(id, now + if t == 0 { 150 } else { t * 100 });
                }
                ds[p].store_mut().set_test_clock(Some(ms(now)));
                let h = ds[p].complete(ms(now), id, &outcome);
                log.completions.insert((p, h.0), (id, limited));
            }
            RetryOp::Advance(d) => now += d,
        }
        step(&mut ds, client, &mut log, now)?;
    }
    // The drain: every permit answered 200, until everything settled (a bound, not a hang).
    let bound = now + 10_000 + 1_000 * (log.acquires.len() + log.in_flight.len() + log.completions.len()) as u64 * 2;
    while now < bound && !(log.acquires.is_empty() && log.completions.is_empty() && log.in_flight.is_empty()) {
        now += 100;
        while let Some((p, id)) = log.in_flight.pop() {
            ds[p].store_mut().set_test_clock(Some(ms(now)));
            let h = ds[p].complete(ms(now), id, &Outcome::status(200));
            log.completions.insert((p, h.0), (id, false));
        }
        step(&mut ds, client, &mut log, now)?;
    }
    for &(order, at, id) in &log.goes {
        for &(announced, until, server) in &log.pauses {
            // CRITICAL waits only for the part of a pause the server imposed, never our backoff.
            let until = if log.priority[&id] == 0 { server } else { until };
            prop_assert!(
                !(announced < order && at < until),
                "{:?} went at {} inside a pause until {}; goes {:?} pauses {:?}",
                id,
                at,
                until,
                log.goes,
                log.pauses
            );
        }
        let in_window = log.goes.iter().filter(|(_, t, _)| *t <= at && at < t + 1000).count() as u64;
        prop_assert!(in_window <= w.max, "{} goes in the window ending at {} (max {})", in_window, at, w.max);
    }
    if std::env::var("TC_RETRY_STATS").is_ok() {
        let retried: u32 = log.limited.values().sum();
        eprintln!(
            "goes {} pauses {} rate-limited answers {} max_retries {}",
            log.goes.len(),
            log.pauses.len(),
            retried,
            w.max_retries
        );
    }
    prop_assert!(log.acquires.is_empty(), "acquires never settled: {:?}", log.acquires);
    prop_assert!(log.completions.is_empty(), "completions never settled: {:?}", log.completions);
    prop_assert_eq!(ds[0].waiting() + ds[1].waiting(), 0);
    Ok(())
}

#[test]
fn rate_limited_answers_are_retried_under_their_id_never_inside_a_pause_until_max_retries() {
    property("TC_RETRY_CASES", 60, retry_workload(), run_retries);
}

// ---- tenants served by weight across processes -----------------------------------------------------

#[derive(Debug, Clone)]
struct TenantWorkload {
    /// Weights of the named tenants (t0, t1, ...); the default class has weight 1.
    weights: Vec<u32>,
    /// Floods at 0 ms: (tenant, `None` for the default class; the process; how many).
    floods: Vec<(Option<usize>, usize, usize)>,
    /// A late tenant's single request: which tenant, in which process, when (ms).
    late: Option<(usize, usize, u64)>,
    /// The window: this many per 100 ms.
    max: u64,
}

fn tenant_workload() -> impl Strategy<Value = TenantWorkload> {
    (proptest::collection::vec(1u32..6, 2..5), 1u64..4).prop_flat_map(|(weights, max)| {
        let n = weights.len();
        (
            Just(weights),
            proptest::collection::vec((proptest::option::weighted(0.85, 0..n), 0usize..2, 5usize..40), 2..6),
            proptest::option::weighted(0.6, (0..n, 0usize..2, 100u64..2_000)),
            Just(max),
        )
            .prop_map(|(weights, floods, late, max)| TenantWorkload { weights, floods, late, max })
    })
}

/// Two processes on one account, tenants flooding from either (a tenant may flood from both), real
/// wake-ups: the checks of the in-memory tenants test (`core/tests/tenants.rs`) on the trace of
/// goes only. (1) While every flooding class still waits, the admissions split by weight within
/// twice start-time fair queuing's bound, `|n_a/w_a - n_b/w_b| <= 2(1/w_a + 1/w_b)`: the processes
/// take the room of one instant in the order they ask, not by start tag; (2) a newcomer goes after
/// at most the requests of other classes whose tags come first (`w_c / w_new` of each, at least
/// one); the window holds; every request goes.
fn run_tenants(client: &mut Client, w: &TenantWorkload) -> Result<(), TestCaseError> {
    let tenants: Vec<String> =
        w.weights.iter().enumerate().map(|(i, w)| format!(r#""t{i}": {{ "weight": {w} }}"#)).collect();
    let config = format!(
        r#"{{ "limits": {{ "api": {{ "kind": "window", "max": {}, "per": "100ms", "hold": "go" }} }}, "global": ["api"],
             "tenants": {{ {} }} }}"#,
        w.max,
        tenants.join(", ")
    );
    let acct = account("tenants");
    let mut ds: Vec<SharedDriver> = ["a", "b"]
        .iter()
        .map(|tag| {
            SharedDriver::new(Config::from_json(&config).unwrap(), StoreOptions::new(&acct), DriverOptions::new(*tag))
                .unwrap()
        })
        .collect();
    // Wake-ups as the hosts get them: a real subscription, read after every step (a waiter whose
    // claims ahead fill the limit has no instant to wake at; the go that frees it publishes).
    let mut sub = Client::connect(client.port).subscribe(&ds[0].store().wake_channel());
    // Whom each acquire is for, by (process, handle); then by request id once it went.
    let mut acquired: std::collections::HashMap<(usize, u64), Option<usize>> = std::collections::HashMap::new();
    let mut who: std::collections::HashMap<RequestId, Option<usize>> = std::collections::HashMap::new();
    let mut goes: Vec<(u64, RequestId)> = Vec::new();
    // The late request: its (process, handle), its id once it went, and (goes before it, instant).
    let (mut late_handle, mut late_id, mut late_at) = (None, None, None);
    let acquire = |ds: &mut Vec<SharedDriver>, p: usize, tenant: Option<usize>, now: u64| {
        let mut r = Request::http("GET", "/x");
        if let Some(i) = tenant {
            r = r.tenant(format!("t{i}"));
        }
        ds[p].store_mut().set_test_clock(Some(ms(now)));
        ds[p].acquire(ms(now), r, None).unwrap().0
    };
    for &(tenant, p, n) in &w.floods {
        for _ in 0..n {
            let h = acquire(&mut ds, p, tenant, 0);
            acquired.insert((p, h), tenant);
        }
    }
    let mut now = 0u64;
    let mut late = w.late;
    let total = acquired.len() + usize::from(late.is_some());
    let mut woken = false;
    while goes.len() < total && now < 1_000_000 {
        if let Some((tenant, p, _)) = late.filter(|l| l.2 <= now) {
            let h = acquire(&mut ds, p, Some(tenant), now);
            acquired.insert((p, h), Some(tenant));
            late_handle = Some((p, h));
            late_at = Some((goes.len(), now));
            late = None;
        }
        for (p, d) in ds.iter_mut().enumerate() {
            d.store_mut().set_test_clock(Some(ms(now)));
            d.handle_timeout(ms(now));
            let mut out = pump(client, d, ms(now));
            while !out.is_empty() {
                let mut done = Vec::new();
                for o in out {
                    match o {
                        Output::Go { handle, request, .. } => {
                            let tenant = acquired[&(p, handle.0)];
                            who.insert(request, tenant);
                            goes.push((now, request));
                            if late_handle == Some((p, handle.0)) {
                                late_id = Some(request);
                            }
                            done.push(request);
                        }
                        Output::Fail { error, .. } => prop_assert!(false, "{}", error),
                        Output::Subscribe { .. } => d.subscribed(ms(now), true),
                        _ => {}
                    }
                }
                for id in done {
                    d.complete(ms(now), id, &Outcome::status(200));
                }
                out = pump(client, d, ms(now));
            }
            if sub.published() > 0 {
                woken = true;
            }
        }
        if std::mem::take(&mut woken) {
            for d in &mut ds {
                d.woken(ms(now));
            }
            continue;
        }
        let next = ds.iter().filter_map(SharedDriver::poll_timeout).map(|t| t.as_nanos().div_ceil(1_000_000)).min();
        let due = late.map(|l| l.2);
        now = match (next, due) {
            (Some(n), Some(d)) => n.min(d),
            (Some(n), None) => n,
            (None, Some(d)) => d,
            (None, None) => break,
        }
        .max(now + 1);
    }
    prop_assert_eq!(goes.len(), total, "every request goes");
    for (i, &(at, _)) in goes.iter().enumerate() {
        let within = goes[i..].iter().take_while(|(b, _)| *b < at + 100).count() as u64;
        prop_assert!(within <= w.max, "{} goes within 100 ms of {} ms", within, at);
    }
    let weight = |tenant: Option<usize>| tenant.map_or(1.0, |i| f64::from(w.weights[i]));
    // (1) While every flooding class still waits, admissions split by weight, within twice start-time
    // fair queuing's bound. A late request of a flooding tenant is one more of its flood (with
    // requests in two processes, a tenant is served as one class, by its start tags); a newcomer's
    // is left out.
    let flooding: std::collections::HashSet<Option<usize>> = w.floods.iter().map(|f| f.0).collect();
    let counted = goes
        .iter()
        .map(|&(at, id)| (at, who[&id], Some(id) != late_id))
        .filter(|&(_, tenant, flood)| flood || flooding.contains(&tenant));
    let split = support::split_by_weight(counted, w.floods.iter().map(|&(t, _, n)| (t, n)), weight, 2.0);
    prop_assert!(split.is_ok(), "{}", split.unwrap_err());
    let classes: Vec<Option<usize>> = flooding.iter().copied().collect();
    // (2) A newcomer waits behind at most the requests of each other class whose start tags come
    // first (one step of its own weight: w_c / w_new of them, at least one). Goes at the instant it
    // went did not delay it: the processes take the room of one instant in the order they ask.
    if let (Some(id), Some((submitted, at)), Some((tenant, _, _))) = (late_id, late_at, w.late) {
        let pos = goes.iter().position(|g| g.1 == id).expect("the late request went");
        let went = goes[pos].0;
        let before = goes[submitted..pos].iter().filter(|g| g.0 > at && g.0 < went).count();
        let newcomer = !w.floods.iter().any(|f| f.0 == Some(tenant));
        let own = weight(Some(tenant));
        let bound = classes.iter().map(|c| (weight(*c) / own).ceil().max(1.0) as usize).sum::<usize>();
        if newcomer && pos + 1 < goes.len() {
            prop_assert!(before <= bound, "the newcomer waited behind {} (bound {})", before, bound);
        }
    }
    Ok(())
}

#[test]
fn tenants_are_served_by_weight_across_processes_and_a_newcomer_is_not_held_behind_a_flood() {
    property("TC_SHARED_TENANT_CASES", 40, tenant_workload(), run_tenants);
}
