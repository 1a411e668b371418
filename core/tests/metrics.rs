//! Metrics against the event log: over random workloads on a fake clock (submits by URL and by
//! route at every priority, deadlines, a full queue, cancels, completions with 200s and 429s), the
//! counters the controller keeps say what its events said, request by request; and the text
//! exposition is well formed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use traffic_control_core::{Config, EventKind, Outcome, Priority, Request, RequestId, Timestamp, TrafficControl};

const CONFIG: &str = r#"{
  "limits": {
    "global": {"kind": "window", "max": 4, "per": "1s"},
    "catalog": {"kind": "window", "max": 2, "per": "2s"},
    "slots": {"kind": "concurrency", "max": 3}
  },
  "global": ["global", "slots"],
  "routes": [
    {"name": "catalog", "path": "^/catalog", "limits": ["catalog"]},
    {"name": "orders", "path": "^/orders"}
  ],
  "queue": {"max_waiting": 6},
  "feedback": {"block": "300ms", "max_retries": 0}
}"#;

#[derive(Debug, Clone)]
enum Op {
    Submit { target: u8, priority: u8, deadline_ms: Option<u16> },
    Cancel(u8),
    Complete { pick: u8, status: u16 },
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..4, proptest::option::of(1u16..1500)).prop_map(|(target, priority, deadline_ms)| Op::Submit { target, priority, deadline_ms }),
        1 => any::<u8>().prop_map(Op::Cancel),
        3 => (any::<u8>(), prop_oneof![4 => Just(200u16), 1 => Just(429u16)]).prop_map(|(pick, status)| Op::Complete { pick, status }),
        3 => (1u16..800).prop_map(Op::Advance),
    ]
}

/// What the event log says, per (route, priority, result) and per (route, priority, code).
#[derive(Default, Debug)]
struct Log {
    results: BTreeMap<(String, Priority, &'static str), u64>,
    rejected: BTreeMap<(String, Priority, &'static str), u64>,
    went_total: u64,
}

fn drain(
    tc: &mut TrafficControl,
    now: Timestamp,
    queued: &mut HashSet<RequestId>,
    live: &mut Vec<RequestId>,
    log: &mut Log,
) {
    while let Some(e) = tc.poll(now) {
        let route = e.route().unwrap_or("none").to_string();
        let result = match &e.kind {
            EventKind::Queued => {
                queued.insert(e.request);
                continue;
            }
            EventKind::Go { permit, .. } => {
                live.push(permit.request);
                log.went_total += 1;
                if queued.remove(&e.request) {
                    "went_after_wait"
                } else {
                    "went_at_once"
                }
            }
            EventKind::Rejected { error } => {
                queued.remove(&e.request);
                *log.rejected.entry((route.clone(), e.priority, error.code())).or_default() += 1;
                "rejected"
            }
            EventKind::Expired { .. } => {
                queued.remove(&e.request);
                "expired"
            }
            EventKind::Cancelled => {
                queued.remove(&e.request);
                "cancelled"
            }
            EventKind::RateLimited { .. } => "rate_limited",
            _ => continue,
        };
        *log.results.entry((route, e.priority, result)).or_default() += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_counters_say_what_the_event_log_said(ops in proptest::collection::vec(op(), 1..120)) {
        let mut tc = TrafficControl::new(Config::from_json(CONFIG).unwrap()).unwrap();
        let mut now = Timestamp::ZERO;
        let mut queued = HashSet::new();
        let mut live: Vec<RequestId> = Vec::new();
        let mut waiting: Vec<RequestId> = Vec::new();
        let mut log = Log::default();
        for op in ops {
            match op {
                Op::Submit { target, priority, deadline_ms } => {
                    let request = match target {
                        0 => Request::http("GET", "/catalog/1"),
                        1 => Request::http("POST", "/orders/2"),
                        2 => Request::route("catalog"),
                        _ => Request::http("GET", "/elsewhere"),
                    };
                    let mut request = request.priority(Priority::ALL[usize::from(priority)]);
                    if let Some(d) = deadline_ms {
                        request = request.deadline(now + Duration::from_millis(u64::from(d)));
                    }
                    if let Ok(id) = tc.submit(now, request) {
                        waiting.push(id);
                    }
                }
                Op::Cancel(pick) if !waiting.is_empty() => {
                    let id = waiting.remove(usize::from(pick) % waiting.len());
                    tc.cancel(now, id);
                }
                Op::Complete { pick, status } if !live.is_empty() => {
                    let id = live.remove(usize::from(pick) % live.len());
                    let _ = tc.complete(now, id, Outcome::status(status));
                }
                Op::Advance(ms) => now = now + Duration::from_millis(u64::from(ms)),
                _ => {}
            }
            drain(&mut tc, now, &mut queued, &mut live, &mut log);
            waiting.retain(|id| tc.is_waiting(*id));
        }

        let m = tc.metrics(now);
        let counted: BTreeMap<_, _> = m.requests.iter().map(|r| ((r.route.clone(), r.priority, r.result), r.count)).collect();
        prop_assert_eq!(&counted, &log.results);
        let rejected: BTreeMap<_, _> = m.rejected.iter().map(|r| ((r.route.clone(), r.priority, r.code), r.count)).collect();
        prop_assert_eq!(&rejected, &log.rejected);
        let observed: u64 = m.wait.iter().map(|h| h.count).sum();
        prop_assert_eq!(observed, log.went_total);
        for h in &m.wait {
            prop_assert!(h.buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            prop_assert_eq!(h.buckets.last().unwrap().1, h.count);
        }
        let pauses: u64 = m.pauses.iter().map(|p| p.count).sum();
        let rate_limited: u64 = m.requests.iter().filter(|r| r.result == "rate_limited").map(|r| r.count).sum();
        prop_assert!(pauses <= rate_limited * 3, "{pauses} pauses for {rate_limited} 429s");

        well_formed(&m.to_prometheus())?;
    }
}

/// Every line is a comment or `name{labels} value`; every sample's family was announced with
/// HELP and TYPE before it, once.
fn well_formed(text: &str) -> Result<(), TestCaseError> {
    let mut families = HashSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            prop_assert!(families.insert(name.clone()), "family {name} twice");
            current = name;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            prop_assert_eq!(parts.next().unwrap(), current.as_str());
            prop_assert!(matches!(parts.next(), Some("counter" | "gauge" | "histogram")));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            prop_assert!(name.starts_with(&current), "{name} outside {current}");
            prop_assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
        }
    }
    Ok(())
}

#[test]
fn a_scrape_names_routes_limits_and_priorities_never_urls() {
    let mut tc = TrafficControl::new(Config::from_json(CONFIG).unwrap()).unwrap();
    let t = Timestamp::from_millis;
    let id = tc.submit(t(0), Request::http("GET", "/orders/1")).unwrap();
    for i in 0..6 {
        let _ = tc.submit(t(0), Request::http("GET", format!("/catalog/{i}?api_key=secret")).priority(Priority::High));
    }
    while tc.poll(t(0)).is_some() {}
    let _ = tc.complete(t(10), id, Outcome::status(429));
    let text = tc.metrics(t(20)).to_prometheus();
    assert!(!text.contains("secret") && !text.contains("/catalog"), "{text}");
    assert!(
        text.contains(r#"traffic_control_requests_total{route="catalog",priority="high",result="went_at_once"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"traffic_control_requests_total{route="orders",priority="normal",result="rate_limited"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"traffic_control_pauses_total{limit="global",reason="block"} 1"#), "{text}");
    assert!(text.contains(r#"traffic_control_queue_depth{priority="high"} 4"#), "{text}");
    assert!(text.contains(r#"traffic_control_limit_paused{limit="global"} 1"#), "{text}");
    assert!(text.contains(r#"traffic_control_wait_seconds_bucket{priority="high",le="+Inf"} 2"#), "{text}");
}
