//! The budget guard warns before it refuses (the Keepa report's rule): a request costing more
//! than half the balance it finds, and a balance taken below `warn_below`, each as a `budget_low`
//! event and a `traffic_control_budget_warnings_total` count; never for requests that leave the
//! balance comfortable, and a crossing is warned once, not at every request below the line.

use traffic_control_core::{Config, EventKind, Outcome, Request, Timestamp, TrafficControl};

const CONFIG: &str = r#"{
    "limits": { "tokens": { "kind": "budget", "refill": 20, "per": "1m", "max": 1200, "initial": 300, "warn_below": 100 } },
    "routes": [ { "name": "product", "path": "^/product", "limits": ["tokens"] } ]
}"#;

fn warnings(tc: &mut TrafficControl, now: Timestamp) -> Vec<(String, i64, u64, &'static str)> {
    let mut out = Vec::new();
    while let Some(e) = tc.poll(now) {
        if let EventKind::Go { permit, .. } = &e.kind {
            let _ = tc.complete(now, permit.request, Outcome::status(200));
        }
        if let EventKind::BudgetLow { limit, balance, cost, reason } = &e.kind {
            assert_eq!(e.status(), "budget_low");
            out.push((limit.clone(), *balance, *cost, *reason));
        }
    }
    out
}

#[test]
fn a_costly_request_and_a_crossing_are_warned_once_each() {
    let mut tc = TrafficControl::new(Config::from_json(CONFIG).unwrap()).unwrap();
    tc.set_event_log(true);
    let now = Timestamp::from_millis_f64(1.0);
    let mut all = Vec::new();
    // 300 → 200 → 110: comfortable, no warning.
    for cost in [100, 90] {
        tc.submit(now, Request::http("GET", "https://api.keepa.com/product?asin=A").cost(cost)).unwrap();
        all.extend(warnings(&mut tc, now));
    }
    assert!(all.is_empty(), "{all:?}");
    // 110 → 90: below 100, warned once; 90 → 80 → 70: no second warning for the same crossing.
    for cost in [20, 10, 10] {
        tc.submit(now, Request::http("GET", "https://api.keepa.com/product?asin=A").cost(cost)).unwrap();
        all.extend(warnings(&mut tc, now));
    }
    assert_eq!(all, vec![("tokens".to_string(), 90, 20, "below_warning")]);
    // 70 → 30: the request takes more than half of what it found.
    tc.submit(now, Request::http("GET", "https://api.keepa.com/product?asin=A").cost(40)).unwrap();
    let w = warnings(&mut tc, now);
    assert_eq!(w, vec![("tokens".to_string(), 30, 40, "cost_over_half")]);
    // The counter says the same.
    let text = tc.metrics(now).to_prometheus();
    assert!(
        text.contains(r#"traffic_control_budget_warnings_total{limit="tokens",reason="below_warning"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"traffic_control_budget_warnings_total{limit="tokens",reason="cost_over_half"} 1"#),
        "{text}"
    );
    // The server says the balance is back above the line: the next crossing warns again.
    tc.sync_budget(now, "tokens", 150, None).unwrap();
    tc.submit(now, Request::http("GET", "https://api.keepa.com/product?asin=A").cost(60)).unwrap();
    assert_eq!(warnings(&mut tc, now), vec![("tokens".to_string(), 90, 60, "below_warning")]);
}

#[test]
fn warn_below_is_checked_and_written_back() {
    let bad = CONFIG.replace(r#""warn_below": 100"#, r#""warn_below": 5000"#);
    let e = Config::from_json(&bad).unwrap_err().to_string();
    assert!(e.contains("limits.tokens.warn_below") && e.contains("not above max"), "{e}");
    let window = r#"{"limits":{"w":{"kind":"window","max":1,"per":"1s","warn_below":1}}}"#;
    let e = Config::from_json(window).unwrap_err().to_string();
    assert!(e.contains("`warn_below` does not apply to a window limit"), "{e}");
    let config = Config::from_json(CONFIG).unwrap();
    let again = Config::from_json(&config.to_json()).unwrap();
    assert_eq!(config, again);
    assert!(config.to_json().contains("\"warn_below\": 100"));
}
