//! The example alerting rules (`examples/prometheus/alerts.yml`) name only metrics the core
//! exposes, with labels those metrics carry. `promtool check rules` and `promtool test rules`
//! (run by the test command) check the rules themselves.

use std::collections::BTreeSet;

use traffic_control_core::{Config, Outcome, Request, Timestamp, TrafficControl};

#[test]
fn the_rules_name_only_exposed_families_and_labels() {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/prometheus/alerts.yml")).unwrap();
    let config = r#"{
        "limits": { "tokens": { "kind": "budget", "refill": 20, "per": "1m", "max": 100, "initial": 100, "warn_below": 50 },
                    "w": { "kind": "window", "max": 1, "per": "1s" } },
        "routes": [ { "name": "r", "path": "^/", "limits": [{ "limit": "tokens", "cost": 60 }, "w"] } ]
    }"#;
    let mut tc = TrafficControl::new(Config::from_json(config).unwrap()).unwrap();
    let now = Timestamp::from_millis_f64(0.0);
    for _ in 0..2 {
        if let traffic_control_core::Decision::Go(p) = tc.try_acquire(now, Request::http("GET", "/x")) {
            let _ = tc.complete(now, p.request, Outcome::status(429));
        }
    }
    let families = tc.metrics(now).families();
    let mut exposed = BTreeSet::new();
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for f in &families {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            let name = f.name.strip_prefix("traffic_control_").unwrap_or(&f.name);
            exposed.insert(format!("traffic_control_{name}{suffix}"));
        }
        for s in &f.samples {
            for (k, _) in &s.labels {
                labels.insert(k.to_string());
            }
        }
    }
    labels.extend(["instance", "job"].map(String::from));
    let mut named = 0;
    for (i, _) in rules.match_indices("traffic_control_") {
        let name: String = rules[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(exposed.contains(&name), "alerts.yml names {name}, which the core does not expose");
        named += 1;
    }
    assert!(named >= 6);
    for cap in rules.split("by (").skip(1) {
        for label in cap.split(')').next().unwrap().split(',') {
            assert!(labels.contains(label.trim()), "alerts.yml groups by {label:?}, which no sample carries");
        }
    }
}
