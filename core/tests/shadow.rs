//! Shadow mode: a config run beside the enforced one reports what it would have decided.
//!
//! The checker is independent of the shadow's code: the same workload (arrivals, priorities,
//! deadlines, latencies drawn up front) is run a second time on a plain controller with the
//! shadow's config, and the shadow's report must equal what that controller did. That holds
//! exactly for limits that never wait for a response (windows counted at go, token buckets), where
//! the shadow's one approximation (a response is replayed no earlier than it arrived) cannot
//! matter. The enforced side of the report must equal what the enforced controller did.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use traffic_control_core::{
    Config, Decision, EventKind, FollowUp, Outcome, Priority, Request, RequestId, ShadowReport, Timestamp,
    TrafficControl,
};

#[derive(Debug, Clone)]
struct Arrival {
    at_ms: u64,
    route: usize,
    priority: Priority,
    deadline_ms: Option<u64>,
    latency_ms: u64,
}

/// What a run decided, counted the way the report counts.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    went_at_once: u64,
    went_after_wait: u64,
    refused: BTreeMap<String, u64>,
    wait_max: Duration,
    wait_total: Duration,
}

const PATHS: [&str; 3] = ["/ws/orders", "/ws/listings", "/ws/backbox/v1/competitors"];

/// Windows counted from each request's go (`hold: "go"`): completion times cannot matter.
fn config(global: u64, listings: u64, per: &str, max_waiting: usize) -> Config {
    config_held(global, listings, per, max_waiting, "go")
}

fn config_held(global: u64, listings: u64, per: &str, max_waiting: usize, hold: &str) -> Config {
    Config::from_json(&format!(
        r#"{{
        "limits": {{
            "global": {{ "kind": "window", "max": {global}, "per": "{per}", "hold": "{hold}" }},
            "listings": {{ "kind": "window", "max": {listings}, "per": "{per}", "hold": "{hold}" }}
        }},
        "global": ["global"],
        "queue": {{ "max_waiting": {max_waiting} }},
        "routes": [ {{ "name": "listings", "path": "^/ws/listings", "limits": ["listings"] }} ]
    }}"#
    ))
    .unwrap()
}

fn request(a: &Arrival) -> Request {
    let mut r = Request::http("GET", format!("https://api.example{}", PATHS[a.route])).priority(a.priority);
    if let Some(d) = a.deadline_ms {
        r = r.deadline(Timestamp::from_millis(a.at_ms + d));
    }
    r
}

/// Runs the workload on `tc` with a fake clock: each request completes `latency_ms` after it went.
/// Returns what it decided, and the shadow's report at the end if one ran.
fn run(tc: &mut TrafficControl, arrivals: &[Arrival], end_ms: u64) -> (Tally, Option<ShadowReport>) {
    // Nanoseconds: the controller's own instants, never rounded (a late poll could let a waiter
    // go after its deadline).
    const MS: u64 = 1_000_000;
    let mut tally = Tally::default();
    let mut arrived: BTreeMap<RequestId, (u64, u64)> = BTreeMap::new(); // id → (arrival, latency)
    let mut completions: Vec<(u64, RequestId)> = Vec::new();
    let mut next = 0;
    let mut now = 0u64;
    loop {
        let mut pending = Vec::new();
        if let Some(a) = arrivals.get(next) {
            pending.push(a.at_ms * MS);
        }
        if let Some(c) = completions.iter().map(|c| c.0).min() {
            pending.push(c);
        }
        if let Some(t) = tc.poll_timeout() {
            pending.push(t.as_nanos().max(now));
        }
        let Some(t) = pending.into_iter().min() else { break };
        if t > end_ms * MS {
            break;
        }
        now = t;
        let at = Timestamp::from_nanos(now);
        completions.sort_unstable();
        while completions.first().is_some_and(|c| c.0 <= now) {
            let (_, id) = completions.remove(0);
            let _ = tc.complete(at, id, Outcome::status(200));
        }
        while arrivals.get(next).is_some_and(|a| a.at_ms * MS <= now) {
            let a = &arrivals[next];
            next += 1;
            // A refusal is counted from its Rejected event below.
            if let Ok(id) = tc.submit(at, request(a)) {
                arrived.insert(id, (now, a.latency_ms * MS));
            }
        }
        while let Some(event) = tc.poll(at) {
            match event.kind {
                EventKind::Go { permit, .. } => {
                    let (came, latency) = arrived[&permit.request];
                    let waited = Duration::from_nanos(now - came);
                    if waited.is_zero() {
                        tally.went_at_once += 1;
                    } else {
                        tally.went_after_wait += 1;
                    }
                    tally.wait_max = tally.wait_max.max(waited);
                    tally.wait_total += waited;
                    completions.push((now + latency, permit.request));
                }
                EventKind::Rejected { error } | EventKind::Expired { error } => {
                    *tally.refused.entry(error.code().to_string()).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    // The shadow plays its own wake-ups lazily: ask it when the run is over.
    let report = tc.shadow_report(Timestamp::from_millis(end_ms));
    (tally, report)
}

fn side_tally(s: &traffic_control_core::SideReport) -> Tally {
    Tally {
        went_at_once: s.went_at_once,
        went_after_wait: s.went_after_wait,
        refused: s.refused.iter().cloned().collect(),
        wait_max: s.wait_max,
        wait_total: s.wait_total,
    }
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    prop::collection::vec((0u64..3_000, 0usize..3, 0u8..4, prop::option::weighted(0.2, 0u64..2_000), 1u64..400), 1..120)
        .prop_map(|mut v| {
            v.sort_by_key(|x| x.0);
            v.into_iter()
                .map(|(at_ms, route, p, deadline_ms, latency_ms)| Arrival {
                    at_ms,
                    route,
                    priority: Priority::ALL[usize::from(p)],
                    deadline_ms,
                    latency_ms,
                })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The shadow's report equals a plain run of its config on the same workload, whatever the
    /// enforced config (stricter, looser, a smaller queue), and the enforced side equals what the
    /// enforced controller did.
    #[test]
    fn the_shadow_decides_what_its_config_decides_alone(
        workload in arrivals(),
        enforced in (1u64..12, 1u64..6, 1usize..40),
        shadowed in (1u64..12, 1u64..6, 1usize..40),
        per in prop::sample::select(vec!["500ms", "1s", "2s"]),
    ) {
        // Long enough for every request to end on both sides.
        let end = 1_000_000;
        let mut alone = TrafficControl::new(config(shadowed.0, shadowed.1, per, shadowed.2)).unwrap();
        let (expected, none) = run(&mut alone, &workload, end);
        prop_assert!(none.is_none());

        let mut tc = TrafficControl::new(config(enforced.0, enforced.1, per, enforced.2)).unwrap();
        tc.set_shadow(Timestamp::ZERO, Some(config(shadowed.0, shadowed.1, per, shadowed.2))).unwrap();
        let (did, report) = run(&mut tc, &workload, end);
        let report = report.unwrap();
        prop_assert_eq!(report.shadow.requests, workload.len() as u64);
        prop_assert_eq!(report.enforced.requests, workload.len() as u64);
        prop_assert_eq!(side_tally(&report.shadow), expected);
        prop_assert_eq!(side_tally(&report.enforced), did);
        prop_assert_eq!(report.shadow.waiting, 0);
        prop_assert_eq!(report.enforced.waiting, 0);
        prop_assert_eq!(report.tracked, 0);
    }
}

#[test]
fn a_stricter_shadow_waits_where_the_enforced_config_went_at_once() {
    // Windows held until completion plus `per` (the presets' rule): the shadow's first five
    // finish when the enforced ones do (50 ms), so the next five wait 1.05 s.
    let mut tc = TrafficControl::new(config_held(10, 10, "1s", 100, "completion")).unwrap();
    tc.set_shadow(Timestamp::ZERO, Some(config_held(5, 5, "1s", 100, "completion"))).unwrap();
    let workload: Vec<Arrival> = (0..10)
        .map(|_| Arrival { at_ms: 0, route: 0, priority: Priority::Normal, deadline_ms: None, latency_ms: 50 })
        .collect();
    let (did, report) = run(&mut tc, &workload, 10_000);
    let report = report.unwrap();
    assert_eq!(did.went_at_once, 10);
    assert_eq!((report.enforced.went_at_once, report.enforced.went_after_wait), (10, 0));
    assert_eq!((report.shadow.went_at_once, report.shadow.went_after_wait), (5, 5));
    assert_eq!(report.shadow.wait_max, Duration::from_millis(1_050));
    assert!(
        report.shadow.wait_p99 <= Duration::from_millis(1_050) && report.shadow.wait_p99 >= Duration::from_millis(920)
    );
    assert_eq!(report.shadow.wait_p50, Duration::ZERO);
    let text = report.to_text();
    assert!(text.contains("went after a wait"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["shadow"]["went_after_wait"], 5);
    assert_eq!(json["shadow"]["wait_max"], 1.05);
}

#[test]
fn a_looser_shadow_takes_what_the_enforced_queue_refused() {
    // Enforced: 1 per second and room for 2 waiters; the shadow: 10 per second.
    let mut tc = TrafficControl::new(config(1, 1, "1s", 2)).unwrap();
    tc.set_shadow(Timestamp::ZERO, Some(config(10, 10, "1s", 2))).unwrap();
    let workload: Vec<Arrival> = (0..6)
        .map(|_| Arrival { at_ms: 0, route: 0, priority: Priority::High, deadline_ms: None, latency_ms: 10 })
        .collect();
    let (_, report) = run(&mut tc, &workload, 10_000);
    let report = report.unwrap();
    assert_eq!(report.enforced.refused_count("QUEUE_FULL"), 3);
    assert_eq!(report.shadow.refused_count("QUEUE_FULL"), 0);
    assert_eq!(report.shadow.went_at_once, 6);
}

#[test]
fn a_shadow_with_the_enforced_config_agrees_on_concurrency_and_follow_ups() {
    let json = r#"{
        "limits": {
            "global": { "kind": "window", "max": 4, "per": "1s" },
            "slots": { "kind": "concurrency", "max": 2 }
        },
        "global": ["global", "slots"]
    }"#;
    let mut tc = TrafficControl::new(Config::from_json(json).unwrap()).unwrap();
    tc.set_shadow(Timestamp::ZERO, Some(Config::from_json(json).unwrap())).unwrap();
    assert!(tc.shadow_config().is_some());
    // A probe that reserves its follow-up, then the follow-up spending it, among others.
    let t0 = Timestamp::ZERO;
    let probe = tc.submit(t0, Request::http("GET", "/probe").reserve(FollowUp::http("PUT", "/price"))).unwrap();
    let mut reservation = None;
    let mut went = Vec::new();
    for i in 0..5 {
        tc.submit(t0, Request::http("GET", format!("/other/{i}"))).unwrap();
    }
    let mut now = t0;
    for step in 0..200u64 {
        now = Timestamp::from_millis(step * 50);
        while let Some(e) = tc.poll(now) {
            if let EventKind::Go { permit, .. } = e.kind {
                if permit.request == probe {
                    reservation = permit.reservations.first().copied();
                }
                went.push((permit.request, now));
            }
        }
        // Each request holds its slot 120 ms.
        let due: Vec<_> = went.iter().filter(|(_, at)| *at + Duration::from_millis(120) <= now).cloned().collect();
        for (id, _) in due {
            let _ = tc.complete(now, id, Outcome::status(200));
            went.retain(|(w, _)| *w != id);
            if id == probe {
                tc.submit(now, Request::http("PUT", "/price").spend(reservation.unwrap())).unwrap();
            }
        }
    }
    let report = tc.shadow_report(now).unwrap();
    assert_eq!(report.enforced.requests, 7);
    assert_eq!(report.enforced, report.shadow, "{}", report.to_text());
}

#[test]
fn the_direct_path_is_shadowed_by_its_final_answers() {
    let mut tc = TrafficControl::new(config(2, 2, "1s", 10)).unwrap();
    tc.set_shadow(Timestamp::ZERO, Some(config(1, 1, "1s", 10))).unwrap();
    let t = Timestamp::from_millis(1);
    for _ in 0..3 {
        let _ = tc.try_acquire(t, Request::http("GET", "/ws/orders"));
    }
    // Two went, one was told to wait (not seen by the shadow until it comes back).
    let report = tc.shadow_report(t).unwrap();
    assert_eq!(report.enforced.requests, 2);
    assert_eq!(report.enforced.went_at_once, 2);
    assert_eq!((report.shadow.went_at_once, report.shadow.waiting), (1, 1));
    assert!(matches!(tc.try_acquire(t, Request::http("GET", "/nowhere").limit("nope")), Decision::Reject(_)));
    let report = tc.shadow_report(t).unwrap();
    assert_eq!(report.enforced.refused_count("UNKNOWN_LIMIT"), 1);
    assert_eq!(report.shadow.refused_count("UNKNOWN_LIMIT"), 1);
}

#[test]
fn an_invalid_shadow_config_names_the_field_and_keeps_the_running_shadow() {
    let mut tc = TrafficControl::new(config(2, 2, "1s", 10)).unwrap();
    assert!(tc.shadow_report(Timestamp::ZERO).is_none());
    tc.set_shadow(Timestamp::ZERO, Some(config(1, 1, "1s", 10))).unwrap();
    let bad = Config::from_json(r#"{"limits":{"a":{"kind":"window","max":0,"per":"1s"}},"global":["a"]}"#);
    let e = match bad {
        Err(e) => e,
        Ok(c) => tc.set_shadow(Timestamp::ZERO, Some(c)).unwrap_err(),
    };
    assert!(e.to_string().contains("limits.a.max"), "{e}");
    assert!(tc.shadow_report(Timestamp::ZERO).is_some());
    tc.set_shadow(Timestamp::ZERO, None).unwrap();
    assert!(tc.shadow_report(Timestamp::ZERO).is_none());
}

#[test]
fn memory_stays_bounded_over_many_requests() {
    // Not a timing test: the report's waiting counts and the shadow's own queue stay empty, and
    // a million requests run through a shadow (entries are dropped when both sides are done).
    let mut tc = TrafficControl::new(config(1_000_000, 1_000_000, "1s", 10)).unwrap();
    tc.set_shadow(Timestamp::ZERO, Some(config(1_000_000, 1_000_000, "1s", 10))).unwrap();
    for i in 0..200_000u64 {
        let now = Timestamp::from_micros_for_test(i);
        let id = tc.submit(now, Request::http("GET", "/ws/orders")).unwrap();
        while tc.poll(now).is_some() {}
        let _ = tc.complete(now, id, Outcome::status(200));
    }
    let report = tc.shadow_report(Timestamp::from_millis(1_000)).unwrap();
    assert_eq!(report.shadow.went_at_once, 200_000);
    assert_eq!((report.shadow.waiting, report.enforced.waiting), (0, 0));
    assert_eq!(report.tracked, 0);
}

trait MicrosForTest {
    fn from_micros_for_test(micros: u64) -> Timestamp;
}
impl MicrosForTest for Timestamp {
    fn from_micros_for_test(micros: u64) -> Timestamp {
        Timestamp::from_nanos(micros * 1_000)
    }
}
