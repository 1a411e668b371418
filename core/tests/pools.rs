//! Key pools (`Config::pools`): each key has its own copy of the pool's limits; a request goes on
//! the least-loaded key that can admit it now, or the key it names; a key whose breaker is open is
//! skipped. Checked on examples and on random workloads against a mock server that counts each
//! key's arrivals in exact sliding windows after a random latency, revokes a key at a random
//! instant (401 from then on), and fails a key for a while (503): an independent checker holds
//!
//! 1. no key ever exceeds its own window as the server counts it (0 violations, no 429);
//! 2. no request goes on a key while that key's breaker is open;
//! 3. a revoked key is skipped after its breaker opens: at most `failures` more requests reach it
//!    (here 1, a 401 opens at once) until its half-open probes;
//! 4. every request ends, and while a key has room and is not open, nobody waits (work
//!    conservation across keys).

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use traffic_control_core::{
    Completion, Config, Decision, Event, EventKind, Outcome, Request, RequestId, Timestamp, TrafficControl,
};

const MS: u64 = 1_000_000;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * MS)
}

fn ms(at: Timestamp) -> u64 {
    at.as_nanos() / MS
}

fn config(keys: &[&str], max: u64) -> Config {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    Config::from_json(&format!(
        r#"{{
          "limits": {{
            "requests": {{ "kind": "window", "max": {max}, "per": "1s" }},
            "key": {{ "kind": "breaker", "failures": 3, "open_for": "2s", "max_open": "8s" }}
          }},
          "global": ["requests", "key"],
          "pools": {{ "tokens": {{ "keys": [{}], "limits": ["requests", "key"] }} }},
          "feedback": {{ "max_retries": 0 }}
        }}"#,
        keys.join(", ")
    ))
    .unwrap()
}

fn key_of(d: &Decision) -> Option<String> {
    match d {
        Decision::Go(p) => p.key.as_deref().map(str::to_string),
        _ => None,
    }
}

#[test]
fn the_least_loaded_key_that_can_admit_now() {
    let mut tc = TrafficControl::new(config(&["a", "b"], 2)).unwrap();
    let keys: Vec<Option<String>> = (0..4).map(|_| key_of(&tc.try_acquire(t(0), Request::http("GET", "/x")))).collect();
    assert_eq!(keys, [Some("a".into()), Some("b".into()), Some("a".into()), Some("b".into())]);
    // Both full: it waits for the soonest.
    assert!(matches!(tc.try_acquire(t(0), Request::http("GET", "/x")), Decision::Wait { .. }));
    // Each key's copy of the limits is in the snapshot.
    let snapshot = tc.snapshot(t(0));
    let used: HashMap<&str, u64> = snapshot.limits.iter().map(|l| (l.name.as_str(), l.used)).collect();
    assert_eq!((used["requests@a"], used["requests@b"], used["requests"]), (2, 2, 0), "{used:?}");
}

#[test]
fn a_named_key_is_kept_and_an_unknown_one_refused() {
    let mut tc = TrafficControl::new(config(&["a", "b"], 2)).unwrap();
    for _ in 0..2 {
        assert_eq!(key_of(&tc.try_acquire(t(0), Request::http("GET", "/x").key("b"))), Some("b".into()));
    }
    assert!(matches!(tc.try_acquire(t(0), Request::http("GET", "/x").key("b")), Decision::Wait { .. }));
    assert_eq!(key_of(&tc.try_acquire(t(0), Request::http("GET", "/x"))), Some("a".into()));
    let Decision::Reject(e) = tc.try_acquire(t(0), Request::http("GET", "/x").key("zzz")) else { panic!() };
    assert_eq!(e.code(), "UNKNOWN_LIMIT");
    assert!(e.to_string().contains("requests@zzz"), "{e}");
}

#[test]
fn a_revoked_key_is_skipped_and_the_run_goes_on_on_the_other() {
    let mut tc = TrafficControl::new(config(&["a", "b"], 100)).unwrap();
    let Decision::Go(p) = tc.try_acquire(t(0), Request::http("GET", "/x")) else { panic!() };
    assert_eq!(p.key.as_deref(), Some("a"));
    assert_eq!(tc.complete(t(5), p.request, Outcome::status(401)), Completion::Done);
    let keys: Vec<Option<String>> =
        (0..10).map(|i| key_of(&tc.try_acquire(t(10 + i), Request::http("GET", "/x")))).collect();
    assert!(keys.iter().all(|k| k.as_deref() == Some("b")), "{keys:?}");
    let events: Vec<String> = std::iter::from_fn(|| tc.poll(t(20))).map(|e| e.status().to_string()).collect();
    assert!(events.contains(&"breaker_opened".to_string()), "{events:?}");
}

#[test]
fn a_waiter_moves_to_whichever_key_frees_first() {
    let mut tc = TrafficControl::new(config(&["a", "b"], 1)).unwrap();
    let Decision::Go(a) = tc.try_acquire(t(0), Request::http("GET", "/x")) else { panic!() };
    let Decision::Go(b) = tc.try_acquire(t(500), Request::http("GET", "/x")) else { panic!() };
    assert_eq!((a.key.as_deref(), b.key.as_deref()), (Some("a"), Some("b")));
    // Queued on the key that frees first (a, whose request completes first)...
    let _ = tc.complete(t(600), b.request, Outcome::status(200));
    let _ = tc.complete(t(700), a.request, Outcome::status(200));
    let w = tc.submit(t(800), Request::http("GET", "/x")).unwrap();
    let _ = std::iter::from_fn(|| tc.poll(t(800))).count();
    // b's window frees at 1600, a's at 1700: it goes on b at 1600.
    assert_eq!(tc.poll_timeout(), Some(t(1600)));
    let go = std::iter::from_fn(|| tc.poll(t(1600))).find(|e| e.request == w);
    let Some(Event { kind: EventKind::Go { permit, .. }, .. }) = go else { panic!("{go:?}") };
    assert_eq!(permit.key.as_deref(), Some("b"));
}

#[test]
fn pool_configs_name_the_field_and_the_shared_store_refuses_pools() {
    let err = |pools: &str| {
        Config::from_json(&format!(
            r#"{{ "limits": {{ "r": {{ "kind": "window", "max": 1, "per": "1s" }}, "s": {{ "kind": "window", "max": 1, "per": "1s" }} }},
                 "global": ["r", "s"], "pools": {pools} }}"#
        ))
        .unwrap_err()
        .to_string()
    };
    assert!(err(r#"{ "p": { "keys": [], "limits": ["r"] } }"#).contains("pools.p.keys"));
    assert!(err(r#"{ "p": { "keys": ["a", "a"], "limits": ["r"] } }"#).contains("pools.p.keys[1]"));
    assert!(err(r#"{ "p": { "keys": ["a@b"], "limits": ["r"] } }"#).contains("pools.p.keys[0]"));
    assert!(err(r#"{ "p": { "keys": ["a"], "limits": ["x"] } }"#).contains("pools.p.limits[0]"));
    assert!(err(r#"{ "p": { "keys": ["a"], "limits": ["r"] }, "q": { "keys": ["b"], "limits": ["r"] } }"#)
        .contains("pools.q.limits[0]"));
    assert!(err(r#"{ "p": { "keys": ["a"], "limits": ["r"] }, "q": { "keys": ["b"], "limits": ["s"] } }"#)
        .contains("global"));
    let e = traffic_control_core::SharedStore::new(config(&["a"], 1), traffic_control_core::StoreOptions::new("acct"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pools") && e.contains("shared store"), "{e}");
    // Written back and read again alike.
    let c = config(&["a", "b"], 3);
    assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
}

#[derive(Debug, Clone)]
struct Workload {
    keys: usize,
    max: u64,
    /// Request arrivals (ms), and per request a latency before the server counts it and after.
    arrivals: Vec<u64>,
    latency: Vec<(u64, u64)>,
    /// A key revoked from this instant on (401).
    revoked: Option<(usize, u64)>,
    /// A key failing (503) during [from, to).
    failing: Option<(usize, u64, u64)>,
}

fn workload() -> impl Strategy<Value = Workload> {
    (2usize..4, 1u64..5).prop_flat_map(|(keys, max)| {
        (
            Just(keys),
            Just(max),
            proptest::collection::vec(0u64..6_000, 10..80),
            proptest::collection::vec((0u64..60, 0u64..60), 80),
            proptest::option::weighted(0.5, (0..keys, 0u64..4_000)),
            proptest::option::weighted(0.5, (0..keys, 0u64..3_000, 100u64..3_000)),
        )
            .prop_map(|(keys, max, mut arrivals, latency, revoked, failing)| {
                arrivals.sort_unstable();
                let failing = failing.map(|(k, from, len)| (k, from, from + len));
                Workload { keys, max, arrivals, latency, revoked, failing }
            })
    })
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn check(w: &Workload) -> Result<(), TestCaseError> {
    let mut tc = TrafficControl::new(config(&NAMES[..w.keys], w.max)).unwrap();
    // The server: arrivals per key (ms), violations of each key's window.
    let mut arrivals: Vec<Vec<u64>> = vec![Vec::new(); w.keys];
    let mut violations = 0;
    let mut after_revoke = 0;
    let mut due: Vec<(u64, RequestId, Outcome)> = Vec::new();
    let mut ended: HashSet<RequestId> = HashSet::new();
    let mut ids = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let (mut next, mut now, mut sent) = (0usize, 0u64, 0usize);
    for _ in 0..100_000 {
        while next < w.arrivals.len() && w.arrivals[next] <= now {
            if let Ok(id) = tc.submit(t(now), Request::http("GET", "/x")) {
                ids.push(id);
            }
            next += 1;
        }
        due.sort_by_key(|d| d.0);
        while due.first().is_some_and(|d| d.0 <= now) {
            let (_, id, outcome) = due.remove(0);
            if !matches!(tc.complete(t(now), id, outcome), Completion::Retry { .. }) {
                ended.insert(id);
            }
        }
        while let Some(e) = tc.poll(t(now)) {
            match &e.kind {
                EventKind::Go { permit, .. } => {
                    let k = NAMES.iter().position(|n| Some(*n) == permit.key.as_deref()).expect("a pool key");
                    let (up, down) = w.latency[sent % w.latency.len()];
                    sent += 1;
                    let at = now + up;
                    // The server counts at arrival: at most `max` in any [s, s + 1000).
                    let within = arrivals[k].iter().filter(|&&a| a + 1000 > at).count() as u64;
                    let status = if within >= w.max {
                        violations += 1;
                        429
                    } else if w.revoked.is_some_and(|(rk, from)| rk == k && at >= from) {
                        after_revoke += 1;
                        401
                    } else if w.failing.is_some_and(|(fk, from, to)| fk == k && (from..to).contains(&at)) {
                        503
                    } else {
                        200
                    };
                    arrivals[k].push(at);
                    due.push((at + down, e.request, Outcome::status(status)));
                }
                EventKind::Rejected { .. } | EventKind::Expired { .. } => {
                    ended.insert(e.request);
                }
                _ => {}
            }
            events.push(e);
        }
        let next_arrival = w.arrivals.get(next).copied();
        let next_due = due.iter().map(|d| d.0).min();
        let timer = tc.poll_timeout().map(|x| x.as_nanos().div_ceil(MS));
        let Some(n) = [next_arrival, next_due, timer].into_iter().flatten().min() else { break };
        now = n.max(now);
        if now > 200_000 {
            break;
        }
    }
    if std::env::var("TC_DEBUG").is_ok() {
        let count = |k: &str| events.iter().filter(|e| e.status() == k).count();
        eprintln!(
            "keys {} reqs {} goes {} opened {} rejected {} 401s {} end {} ms",
            w.keys,
            ids.len(),
            count("go"),
            count("breaker_opened"),
            count("rejected"),
            after_revoke,
            now
        );
    }
    // 1. The server's count: never above a key's window.
    prop_assert_eq!(violations, 0, "requests over a key's window as the server counts");
    // 2. No go on a key while its breaker is open (read from the events alone).
    let mut open_until: HashMap<String, u64> = HashMap::new();
    for e in &events {
        match &e.kind {
            EventKind::BreakerOpened { limit, until, .. } => {
                open_until.insert(limit.trim_start_matches("key@").to_string(), ms(*until));
            }
            EventKind::Go { permit, .. } => {
                let key = permit.key.as_deref().unwrap_or("?");
                let until = open_until.get(key).copied().unwrap_or(0);
                prop_assert!(ms(e.at) >= until, "went on {} at {} ms, open until {} ms", key, ms(e.at), until);
            }
            _ => {}
        }
    }
    // 4. Work conservation: after every instant's events, if a request waits, no key is closed with
    // room in its window (held from go until the answer plus 1 s).
    let mut waiting: HashSet<RequestId> = HashSet::new();
    let mut closed: Vec<bool> = vec![true; w.keys];
    let mut held: Vec<HashMap<RequestId, (u64, Option<u64>)>> = vec![HashMap::new(); w.keys];
    let mut key_of_request: HashMap<RequestId, usize> = HashMap::new();
    let index = |name: &str| NAMES.iter().position(|n| *n == name.trim_start_matches("key@"));
    for (i, e) in events.iter().enumerate() {
        let at = ms(e.at);
        match &e.kind {
            EventKind::Queued => {
                waiting.insert(e.request);
            }
            EventKind::Go { permit, .. } => {
                waiting.remove(&e.request);
                let k = index(permit.key.as_deref().unwrap_or("?")).expect("a key");
                key_of_request.insert(e.request, k);
                held[k].insert(e.request, (at, None));
            }
            EventKind::Completed { .. } | EventKind::LeaseExpired { .. } => {
                if let Some(&k) = key_of_request.get(&e.request) {
                    if let Some(h) = held[k].get_mut(&e.request) {
                        h.1 = Some(at);
                    }
                }
            }
            EventKind::Rejected { .. } | EventKind::Expired { .. } | EventKind::Cancelled => {
                waiting.remove(&e.request);
            }
            EventKind::BreakerOpened { limit, .. } | EventKind::BreakerHalfOpen { limit } => {
                closed[index(limit).expect("a key")] = false;
            }
            EventKind::BreakerClosed { limit } => closed[index(limit).expect("a key")] = true,
            _ => {}
        }
        if events.get(i + 1).is_none_or(|n| ms(n.at) != at) && !waiting.is_empty() {
            for k in 0..w.keys {
                held[k].retain(|_, (_, done)| done.is_none_or(|d| d + 1000 > at));
                prop_assert!(
                    !closed[k] || held[k].len() as u64 >= w.max,
                    "{} wait at {} ms while key {} is closed with {} of {} held",
                    waiting.len(),
                    at,
                    NAMES[k],
                    held[k].len(),
                    w.max
                );
            }
        }
    }
    // 3. A revoked key: its first 401 opens it; after that only one probe per opening (at least
    // 2 s apart) reaches it, besides those already on their way when it opened (at most `max`).
    if let Some((_, from)) = w.revoked {
        let bound = w.max + 1 + now.saturating_sub(from) / 2_000;
        prop_assert!(after_revoke <= bound, "{} requests reached the revoked key (bound {})", after_revoke, bound);
    }
    // 4. Every request ended.
    for id in &ids {
        prop_assert!(ended.contains(id), "{:?} never ended", id);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("TC_POOL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn keys_hold_their_own_windows_and_open_keys_are_skipped(w in workload()) {
        check(&w)?;
    }
}

#[test]
fn a_tenant_with_a_dedicated_key_goes_on_it_and_the_others_share_the_pool() {
    let mut config = config(&["a", "b"], 5);
    let mut json: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
    json["tenants"] = serde_json::json!({ "big": { "weight": 3, "key": "b" }, "small": { "weight": 1 } });
    config = Config::from_json(&json.to_string()).unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let big: Vec<_> = (0..3).map(|_| key_of(&tc.try_acquire(t(0), Request::http("GET", "/x").tenant("big")))).collect();
    assert!(big.iter().all(|k| k.as_deref() == Some("b")), "{big:?}");
    // The shared pool: the least-loaded key, a (b holds big's three).
    assert_eq!(key_of(&tc.try_acquire(t(0), Request::http("GET", "/x").tenant("small"))), Some("a".into()));
    // A request naming a key overrides its tenant's.
    assert_eq!(key_of(&tc.try_acquire(t(0), Request::http("GET", "/x").tenant("big").key("a"))), Some("a".into()));
    json["tenants"]["big"]["key"] = "zzz".into();
    let e = Config::from_json(&json.to_string()).unwrap_err().to_string();
    assert!(e.contains("tenants.big.key"), "{e}");
}

#[test]
fn a_follow_up_on_its_reservations_key_keeps_the_reserved_lane() {
    let mut tc = TrafficControl::new(config(&["a"], 2)).unwrap();
    let dip = Request::http("GET", "/x").reserve(traffic_control_core::FollowUp::http("GET", "/x"));
    let Decision::Go(p) = tc.try_acquire(t(0), dip) else { panic!() };
    // A CRITICAL request waits: the room left is the follow-up's.
    let _critical =
        tc.submit(t(0), Request::http("GET", "/x").priority(traffic_control_core::Priority::Critical)).unwrap();
    let peak = Request::http("GET", "/x").spend(p.reservations[0]);
    assert!(matches!(tc.try_acquire(t(1), peak), Decision::Go(_)), "the covered follow-up goes at once");
}
