//! Property tests of server feedback, over random workloads with random responses on a fake clock:
//!
//! - pauses never shorten: after a 429 at `t` saying "retry after d" (or naming nothing: the
//!   configured block), nothing touching the limits it points at (the route's own; global for a
//!   route with none) goes before `t + d`, whatever comes later (shorter Retry-After values
//!   included); and no pause runs past `max_block`, however many 429s come;
//! - reconciliation never raises the balance above what the server said;
//! - cost estimates from query strings stay within `[plus, max]`, whatever the query.

use std::collections::HashMap;

use proptest::prelude::*;
use traffic_control_core::{Config, EventKind, Outcome, Priority, Request, RequestId, Timestamp, TrafficControl};

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    TooMany { retry_after_s: Option<u8> },
    Tokens { left: i16, refill_in_ms: u32 },
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        5 => Just(Answer::Ok),
        3 => prop::option::of(0u8..=12).prop_map(|retry_after_s| Answer::TooMany { retry_after_s }),
        2 => (-50i16..=300, 1u32..=60_000).prop_map(|(left, refill_in_ms)| Answer::Tokens { left, refill_in_ms }),
    ]
}

#[derive(Debug, Clone)]
struct Step {
    dt_ms: u16,
    route: u8,
    priority: u8,
    answer: Answer,
}

fn step() -> impl Strategy<Value = Step> {
    (0u16..=3000, 0u8..3, 0u8..4, answer()).prop_map(|(dt_ms, route, priority, answer)| Step {
        dt_ms,
        route,
        priority,
        answer,
    })
}

const CONFIG: &str = r#"{
  "limits": {
    "global": {"kind": "window", "max": 5, "per": "1s"},
    "catalog": {"kind": "window", "max": 2, "per": "1s"},
    "tokens": {"kind": "budget", "refill": 20, "per": "1m", "max": 300, "initial": 300}
  },
  "global": ["global"],
  "routes": [
    {"name": "catalog", "path": "^/catalog", "limits": ["catalog"]},
    {"name": "product", "path": "^/product", "limits": ["tokens"], "cost": {"count": "asin", "max": 100}}
  ],
  "feedback": {"block": "2s", "max_block": "20s", "max_retries": 2}
}"#;

const ROUTES: [&str; 3] = ["/catalog/1", "/product?asin=A,B,C", "/other"];
/// Limit indexes (config limits sorted by name: catalog 0, global 1, tokens 2) per route.
const TOUCHES: [&[usize]; 3] = [&[0, 1], &[1, 2], &[1]];
/// What a 429 pauses per route: the route's own limit; global only for a route with none.
const POINTS_AT: [&[usize]; 3] = [&[0], &[2], &[1]];

fn run(steps: Vec<Step>) {
    let mut tc = TrafficControl::new(Config::from_json(CONFIG).unwrap()).unwrap();
    let mut now = 0u64;
    // The checker's own pauses: no Go on a limit before this instant.
    let mut paused_until = [0u64; 3];
    let mut route_of: HashMap<RequestId, usize> = HashMap::new();
    let mut in_flight: Vec<(RequestId, u64)> = Vec::new();
    let mut answers = steps.iter().map(|s| s.answer.clone()).cycle();
    for s in &steps {
        now += u64::from(s.dt_ms) * MS;
        let t = Timestamp::from_nanos(now);
        let priority = Priority::ALL[usize::from(s.priority)];
        if let Ok(id) = tc.submit(t, Request::http("GET", ROUTES[usize::from(s.route)]).priority(priority)) {
            route_of.insert(id, usize::from(s.route));
        }
        // What went before the answers below arrived is judged by the pauses known before them.
        drive(&mut tc, now, &paused_until, &route_of, &mut in_flight);
        // Answer everything in flight at this instant.
        for (id, _) in std::mem::take(&mut in_flight) {
            let route = route_of[&id];
            let outcome = match answers.next().unwrap() {
                Answer::Ok => Outcome::status(200),
                Answer::TooMany { retry_after_s } => {
                    let o = Outcome::status(429);
                    match retry_after_s {
                        Some(d) => o.header("Retry-After", d.to_string()),
                        None => o,
                    }
                }
                Answer::Tokens { left, refill_in_ms } => Outcome::status(200).body(format!(
                    r#"{{"tokensLeft":{left},"refillIn":{refill_in_ms},"refillRate":20,"tokensConsumed":3}}"#
                )),
            };
            let said_tokens = outcome.body.as_ref().map(|_| outcome.clone());
            let retry = outcome.headers.first().map(|(_, v)| v.parse::<u64>().unwrap() * 1000 * MS);
            let rate_limited = outcome.status == Some(429);
            let said = format!("{:?} {:?}", outcome.status, outcome.headers);
            let c = tc.complete(t, id, outcome);
            if std::env::var_os("TRACE").is_some() {
                eprintln!("{:>8} complete {id:?} route {route}: {said} -> {c:?}", now / MS);
            }
            // What this completion let go was decided before the next answer arrives.
            drive(&mut tc, now, &paused_until, &route_of, &mut in_flight);
            if rate_limited {
                // Told "d" (or nothing: at least the 2 s block) at `now`: no Go before now + d.
                let d = retry.unwrap_or(2000 * MS);
                for &l in POINTS_AT[route] {
                    paused_until[l] = paused_until[l].max(now + d);
                }
                // However many 429s came, no pause runs past max_block (20 s), jitter included.
                for l in tc.snapshot(t).limits {
                    if let Some(p) = l.pause {
                        assert!(
                            p.until.as_nanos() <= now + 20_000 * MS,
                            "{} paused until {:?}, past max_block",
                            l.name,
                            p.until
                        );
                        assert!(p.server_until <= p.until);
                    }
                }
            }
            if let (Some(o), true) = (said_tokens, TOUCHES[route].contains(&2)) {
                let told: i64 = serde_json::from_str::<serde_json::Value>(o.body.as_deref().unwrap()).unwrap()
                    ["tokensLeft"]
                    .as_i64()
                    .unwrap();
                let balance = tc.snapshot(t).limits[2].balance.unwrap();
                assert!(balance <= told, "reconciled to {balance}, above the server's {told}");
            }
        }
        drive(&mut tc, now, &paused_until, &route_of, &mut in_flight);
    }
}

/// Polls at every instant the core names up to `now`, checking each Go against the pauses known
/// when it was admitted.
fn drive(
    tc: &mut TrafficControl,
    now: u64,
    paused_until: &[u64; 3],
    route_of: &HashMap<RequestId, usize>,
    in_flight: &mut Vec<(RequestId, u64)>,
) {
    loop {
        let at = tc.poll_timeout().map(Timestamp::as_nanos).filter(|&x| x <= now).unwrap_or(now);
        let mut any = false;
        while let Some(e) = tc.poll(Timestamp::from_nanos(at)) {
            any = true;
            if std::env::var_os("TRACE").is_some() {
                eprintln!("{:>8} {:?} {:?}", e.at.as_nanos() / MS, e.request, e.kind);
            }
            if let EventKind::Go { permit, .. } = e.kind {
                for &l in TOUCHES[route_of[&permit.request]] {
                    assert!(
                        permit.at.as_nanos() >= paused_until[l],
                        "a request on limit {l} went at {} before its pause ended at {}",
                        permit.at.as_nanos(),
                        paused_until[l]
                    );
                }
                in_flight.push((permit.request, permit.at.as_nanos()));
            }
        }
        if at == now && !any {
            break;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pauses_never_shorten_and_reconciliation_never_raises_the_balance(steps in prop::collection::vec(step(), 1..80)) {
        run(steps);
    }

    #[test]
    fn cost_estimates_stay_within_bounds(query in ".{0,200}", plus in 0u64..10, max in 1u64..200) {
        let config = Config::from_value(serde_json::json!({
            "limits": {"b": {"kind": "budget", "refill": 1, "per": "1m", "max": 100_000, "initial": 100_000}},
            "routes": [{"name": "p", "path": "^/p", "limits": ["b"],
                        "cost": {"count": "asin", "factor": 3, "plus": plus, "max": max}}]
        })).unwrap();
        let mut tc = TrafficControl::new(config).unwrap();
        let _ = tc.try_acquire(Timestamp::ZERO, Request::http("GET", format!("/p?{query}")));
        let used = tc.snapshot(Timestamp::ZERO).limits[0].used;
        prop_assert!(used <= max && (used >= plus.min(max) || used == 0), "cost {used} outside [{plus}, {max}]");
    }
}
