//! The simulator against its models: the presets keep the real APIs' limits as the server counts
//! them (at arrival, after random latency) over many seeds; a config looser than the API is
//! caught; the same seed gives the same run; bad inputs name their field; a recorded event log
//! replays its requests.

use std::time::Duration;

use traffic_control_core::{Config, Outcome, Request, Timestamp, TrafficControl};
use traffic_control_sim::{config_from, simulate, simulate_json, spec};

fn backmarket(seed: u64, minutes: u64) -> (spec::Workload, spec::Server) {
    let mut w = spec::workload_from("backmarket", None).unwrap();
    w.seed = seed;
    w.duration = Duration::from_secs(60 * minutes);
    (w, spec::server_from("backmarket", None).unwrap())
}

#[test]
fn the_presets_never_exceed_the_real_limits_as_the_server_counts() {
    for seed in 1..=12 {
        let (w, s) = backmarket(seed, 3);
        let sim = simulate(vec![config_from("backmarket", None, &[]).unwrap()], &w, Some(&s)).unwrap();
        let (r, _) = &sim.runs[0];
        let server = r.server.as_ref().unwrap();
        assert_eq!(server.refused, 0, "seed {seed}: {}", sim.text());
        for win in &server.windows {
            assert!(win.peak <= win.max, "seed {seed}: {} counted {} > {}", win.name, win.peak, win.max);
        }
        assert!(r.went > 500, "seed {seed}: the workload ran ({} admissions)", r.went);
    }
    for (preset, seed) in [("keepa", 3), ("baselinker", 4)] {
        let mut w = spec::workload_from(preset, None).unwrap();
        w.seed = seed;
        let s = spec::server_from(preset, None).unwrap();
        let sim = simulate(vec![config_from(preset, None, &[]).unwrap()], &w, Some(&s)).unwrap();
        assert_eq!(sim.runs[0].0.server.as_ref().unwrap().refused, 0, "{preset}: {}", sim.text());
    }
}

#[test]
fn a_config_looser_than_the_api_is_caught_and_compared() {
    let (w, s) = backmarket(7, 5);
    let safe = config_from("backmarket", None, &[]).unwrap();
    let loose_vars = [("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS".to_string(), "30".to_string())];
    let loose = config_from("backmarket", None, &loose_vars).unwrap();
    assert_eq!(loose.label, "backmarket BM_RATE_LIMIT_CATALOG_MAX_REQUESTS=30");
    let sim = simulate(vec![safe, loose], &w, Some(&s)).unwrap();
    let refused: Vec<u64> = sim.runs.iter().map(|(r, _)| r.server.as_ref().unwrap().refused).collect();
    assert_eq!(refused[0], 0);
    assert!(refused[1] > 0, "a catalog of 30 against the real 20 is refused: {}", sim.text());
    let catalog = sim.runs[1].0.server.as_ref().unwrap().windows.iter().find(|w| w.name == "catalog").unwrap().clone();
    assert!(catalog.exceeded > 0);
    // The core saw the 429s and paused: rate_limited events and retries follow.
    assert!(sim.runs[1].0.rate_limited > 0 && sim.runs[1].0.retries > 0);
    let text = sim.text();
    assert!(text.contains("backmarket BM_RATE_LIMIT_CATALOG_MAX_REQUESTS=30"), "{text}");
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let (w, s) = backmarket(5, 2);
    let run = |w: &spec::Workload| {
        simulate(vec![config_from("backmarket", None, &[]).unwrap()], w, Some(&s)).unwrap().reports_json()
    };
    assert_eq!(run(&w), run(&w));
    let mut other = w.clone();
    other.seed = 6;
    assert_ne!(run(&w), run(&other));
}

#[test]
fn every_priority_reports_percentiles_in_order_and_streams_add_up() {
    let (w, s) = backmarket(9, 4);
    let sim = simulate(vec![config_from("backmarket", None, &[]).unwrap()], &w, Some(&s)).unwrap();
    let (r, series) = &sim.runs[0];
    assert_eq!(r.arrived, r.streams.iter().map(|s| s.arrived).sum::<u64>());
    for s in &r.streams {
        assert_eq!(s.arrived, s.done + s.failed, "{}: every arrival ends", s.name);
    }
    for p in &r.priorities {
        assert!(p.p50_ms <= p.p95_ms && p.p95_ms <= p.p99_ms && p.p99_ms <= p.max_ms, "{p:?}");
    }
    assert_eq!(r.went as usize, series.waits.iter().map(Vec::len).sum::<usize>());
    for (l, u) in r.limits.iter().zip(&series.utilisation) {
        assert_eq!(u.len(), series.t.len());
        assert!(l.peak <= l.capacity, "{}: the core never holds more than its capacity", l.name);
    }
}

#[test]
fn bad_inputs_name_their_field() {
    let e = spec::workload_from(
        r#"{"duration":"1m","streams":[{"name":"x","rate":0,"request":{"url":"/a"}}]}"#,
        Some("w.json"),
    )
    .unwrap_err();
    assert_eq!(e.field, "workload.streams[0].rate");
    let e = spec::workload_from(
        r#"{"duration":"1m","streams":[{"name":"x","rate":1,"request":{"url":"/a","priority":"urgent"}}]}"#,
        Some("w.json"),
    )
    .unwrap_err();
    assert_eq!(e.field, "workload.streams[0].sequence[0].priority");
    let e = spec::workload_from(r#"{"duration":"1m","streams":[{"name":"x","rate":1}]}"#, Some("w.json")).unwrap_err();
    assert!(e.reason.contains("exactly one of `request` and `sequence`"), "{e}");
    let e = spec::workload_from(r#"{"duration":"1m","streamz":[]}"#, Some("w.json")).unwrap_err();
    assert!(e.reason.contains("unknown field `streamz`"), "{e}");
    let e = spec::workload_from("nope", None).unwrap_err();
    assert!(e.reason.contains("backmarket, keepa, baselinker"), "{e}");
    let e =
        spec::server_from(r#"{"windows":[{"name":"w","path":"(","max":1,"per":"1s"}]}"#, Some("s.json")).unwrap_err();
    assert_eq!(e.field, "server.windows[0].path");
    let e =
        config_from("backmarket", None, &[("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS".into(), "lots".into())]).unwrap_err();
    assert!(e.reason.contains("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS"), "{e}");
    let e = simulate_json(r#"{"configs":[{"nothing":1}],"workload":"backmarket"}"#).unwrap_err();
    assert_eq!(e.field, "configs[0]");
}

#[test]
fn a_recorded_event_log_replays_its_requests() {
    // Record a real controller's events (as `event.log()` rows, JSON lines), then replay them.
    let mut tc = TrafficControl::new(Config::preset("backmarket").unwrap()).unwrap();
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let now = Timestamp::from_nanos(i * 250_000_000);
        let url = format!("https://www.backmarket.fr/ws/listings/{i}?key=SECRET");
        ids.push(tc.submit(now, Request::http("GET", url)).unwrap());
        while let Some(e) = tc.poll(now) {
            if let traffic_control_core::EventKind::Go { permit, .. } = &e.kind {
                let _ = tc.complete(now, permit.request, Outcome::status(200));
            }
            lines.push(serde_json::to_string(&e.log()).unwrap());
        }
    }
    let log = lines.join("\n");
    assert!(!log.contains("SECRET"));
    let workload = spec::workload_from(&log, Some("events.jsonl")).unwrap();
    assert_eq!(workload.recorded.len(), 40, "one arrival per request id");
    let sim = simulate(vec![config_from("backmarket", None, &[]).unwrap()], &workload, None).unwrap();
    assert_eq!(sim.runs[0].0.arrived, 40);
    assert_eq!(sim.runs[0].0.went, 40);
}

#[test]
fn the_json_entry_runs_presets_objects_and_overrides() {
    let out = simulate_json(
        r#"{"configs":["baselinker",{"preset":"baselinker","env":{"BASELINKER_RATE_LIMIT_REQUESTS_MAX_REQUESTS":"110"},"label":"loose"}],
            "workload":{"duration":"3m","streams":[{"name":"orders","tenant":"shop-a","rate":2,"request":{"method":"POST","url":"https://api.baselinker.com/connector.php"}}]},
            "server":"baselinker","html":true,"title":"t"}"#,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["label"], "loose");
    assert_eq!(reports[0]["server"]["refused"], 0);
    assert!(reports[1]["server"]["refused"].as_u64().unwrap() > 0, "110/min against BaseLinker's 100 blocks the token");
    assert_eq!(reports[0]["tenants"][0]["name"], "shop-a");
    assert!(v["html"].as_str().unwrap().starts_with("<!doctype html>"));
    assert!(v["text"].as_str().unwrap().contains("== refusals =="));
}
