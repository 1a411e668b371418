//! Circuit breakers (`{"kind": "breaker"}`) on random workloads against a server that goes through
//! random phases (healthy, failing with 5xx, unreachable, refusing the key with 401, rate limiting
//! with a `Retry-After`), with random latency before the server counts a request and after. A
//! checker written here reads the event log alone and holds the core to:
//!
//! 1. an open breaker admits nothing: no go between an opening and its end;
//! 2. half-open, at most `probes` requests that went since it half-opened are out at once;
//! 3. it half-opens exactly when its opening ends, and closes only after `close_after` of those
//!    probes succeeded;
//! 4. an opening lasts the server's time exactly when it named one (`rate_limited`), else
//!    `open_for` doubled per opening since it last closed, never past `max_open`; an opening for
//!    `failures` follows at least `failures` failed answers within the window;
//! 5. every request ends (goes and is answered, gives up, expires or is refused), none waits past
//!    the last phase (healthy), and the window limit beside the breaker is never exceeded.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use traffic_control_core::{
    Completion, Config, Event, EventKind, Outcome, Priority, Request, RequestId, Timestamp, TrafficControl,
};

const MS: u64 = 1_000_000;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * MS)
}

fn ms(at: Timestamp) -> u64 {
    at.as_nanos() / MS
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Healthy,
    Failing,
    Unreachable,
    Unauthorized,
    /// 429 with `Retry-After` in whole seconds.
    Limited(u64),
}

#[derive(Debug, Clone)]
struct Workload {
    /// Phases of the server, each lasting so many ms; the last one is healthy and lasts for ever.
    phases: Vec<(Mode, u64)>,
    /// Requests: instant (ms), priority, a deadline after so many ms.
    requests: Vec<(u64, u8, Option<u64>)>,
    /// Latency before the server sees a request and after it answers (ms), by request.
    latency: Vec<(u64, u64)>,
    failures: u64,
    probes: u64,
    close_after: u64,
    /// The window limit beside the breaker (none: the breaker alone).
    window_max: Option<u64>,
}

const PER_MS: u64 = 4_000;
const OPEN_FOR_MS: u64 = 500;
const MAX_OPEN_MS: u64 = 3_000;

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        3 => Just(Mode::Healthy),
        3 => Just(Mode::Failing),
        1 => Just(Mode::Unreachable),
        1 => Just(Mode::Unauthorized),
        1 => (1u64..3).prop_map(Mode::Limited),
    ]
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        proptest::collection::vec((mode(), 200u64..3_000), 1..6),
        proptest::collection::vec((0u64..12_000, 0u8..4, proptest::option::weighted(0.3, 100u64..5_000)), 10..120),
        proptest::collection::vec((0u64..80, 0u64..80), 120),
        1u64..6,
        1u64..3,
        1u64..4,
        proptest::option::weighted(0.7, 5u64..40),
    )
        .prop_map(|(phases, mut requests, latency, failures, probes, close_after, window_max)| {
            requests.sort_by_key(|r| r.0);
            Workload { phases, requests, latency, failures, probes, close_after, window_max }
        })
}

fn config(w: &Workload) -> Config {
    let (window, global) = match w.window_max {
        Some(max) => (format!(r#""api": {{ "kind": "window", "max": {max}, "per": "1s" }},"#), r#""api", "key""#),
        None => (String::new(), r#""key""#),
    };
    Config::from_json(&format!(
        r#"{{
          "limits": {{
            {window}
            "key": {{ "kind": "breaker", "failures": {}, "per": "{PER_MS}ms", "open_for": "{OPEN_FOR_MS}ms",
                      "max_open": "{MAX_OPEN_MS}ms", "probes": {}, "close_after": {} }}
          }},
          "global": [{global}],
          "feedback": {{ "max_retries": 2 }}
        }}"#,
        w.failures, w.probes, w.close_after
    ))
    .unwrap()
}

/// What the server answers to a request it sees at `at` (ms).
fn answer(w: &Workload, at: u64) -> (Mode, Outcome) {
    let mut start = 0;
    let mut mode = Mode::Healthy;
    for &(m, len) in &w.phases {
        if at < start + len {
            mode = m;
            break;
        }
        start += len;
    }
    let outcome = match mode {
        Mode::Healthy => Outcome::status(200),
        Mode::Failing => Outcome::status(503),
        Mode::Unreachable => Outcome::failed(),
        Mode::Unauthorized => Outcome::status(401),
        Mode::Limited(s) => Outcome::status(429).header("Retry-After", s.to_string()),
    };
    (mode, outcome)
}

/// One run's log: every event with the instant it came out, and what the server answered to each
/// request that went (when it answered, and in what mode).
struct Log {
    events: Vec<Event>,
    answers: Vec<(u64, RequestId, Mode)>,
    ended: HashSet<RequestId>,
    ids: Vec<RequestId>,
    end: u64,
}

fn run(w: &Workload) -> Log {
    let mut tc = TrafficControl::new(config(w)).unwrap();
    let mut log = Log { events: Vec::new(), answers: Vec::new(), ended: HashSet::new(), ids: Vec::new(), end: 0 };
    // Responses due: (at ms, request, outcome, mode).
    let mut due: Vec<(u64, RequestId, Outcome, Mode)> = Vec::new();
    let mut next_request = 0;
    let mut now = 0u64;
    let mut sent = 0usize;
    for _ in 0..200_000 {
        while next_request < w.requests.len() && w.requests[next_request].0 <= now {
            let (_, p, deadline) = w.requests[next_request];
            let mut r = Request::http("GET", "/x").priority(Priority::ALL[usize::from(p)]);
            if let Some(d) = deadline {
                r = r.deadline(t(now + d));
            }
            // A refusal at once (its deadline before the half-open) ends it there.
            if let Ok(id) = tc.submit(t(now), r) {
                log.ids.push(id);
            }
            next_request += 1;
        }
        due.sort_by_key(|d| d.0);
        while due.first().is_some_and(|d| d.0 <= now) {
            let (_, id, outcome, mode) = due.remove(0);
            log.answers.push((now, id, mode));
            match tc.complete(t(now), id, outcome) {
                Completion::Retry { .. } => {}
                _ => {
                    log.ended.insert(id);
                }
            }
        }
        while let Some(e) = tc.poll(t(now)) {
            match &e.kind {
                EventKind::Go { .. } => {
                    let (up, down) = w.latency[sent % w.latency.len()];
                    sent += 1;
                    let (mode, outcome) = answer(w, now + up);
                    due.push((now + up + down, e.request, outcome, mode));
                }
                EventKind::Rejected { .. } | EventKind::Expired { .. } => {
                    log.ended.insert(e.request);
                }
                _ => {}
            }
            log.events.push(e);
        }
        let next_arrival = w.requests.get(next_request).map(|r| r.0);
        let next_due = due.iter().map(|d| d.0).min();
        let next_timer = tc.poll_timeout().map(|x| x.as_nanos().div_ceil(MS));
        let Some(next) = [next_arrival, next_due, next_timer].into_iter().flatten().min() else { break };
        now = next.max(now);
    }
    log.end = now;
    log
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { since: u64, until: u64 },
    HalfOpen,
}

fn check(w: &Workload) -> Result<(), TestCaseError> {
    let log = run(w);
    if std::env::var("TC_DEBUG").is_ok() {
        let count = |k: &str| log.events.iter().filter(|e| e.status() == k).count();
        eprintln!(
            "reqs {} goes {} opened {} half {} closed {} rejected {} expired {} end {}",
            log.ids.len(),
            count("go"),
            count("breaker_opened"),
            count("breaker_half_open"),
            count("breaker_closed"),
            count("rejected"),
            count("expired"),
            log.end
        );
    }
    let mut phase = Phase::Closed;
    // Openings since the breaker last closed (the checker's own count).
    let mut opens = 0u32;
    // Probes out (went while half-open, not answered) and probe successes since it half-opened.
    let mut probes_out: HashSet<RequestId> = HashSet::new();
    let mut probe_successes = 0u64;
    let modes: HashMap<(u64, RequestId), Mode> = log.answers.iter().map(|&(at, id, m)| ((at, id), m)).collect();
    // Failed answers (5xx, none) by instant, for the failures' window.
    let failed_at: Vec<u64> = log
        .answers
        .iter()
        .filter(|(_, _, m)| matches!(m, Mode::Failing | Mode::Unreachable))
        .map(|(at, _, _)| *at)
        .collect();
    let mut goes: Vec<u64> = Vec::new();
    // For "nothing sleeps while it could go": who waits, the window's holds (go to answer + 1 s),
    // and the pause a 429 set on the window.
    let mut waiting: HashSet<RequestId> = HashSet::new();
    let mut held: HashMap<RequestId, (u64, Option<u64>)> = HashMap::new();
    let mut paused_until = 0u64;
    for (i, e) in log.events.iter().enumerate() {
        let at = ms(e.at);
        if let Phase::Open { until, .. } = phase {
            let said = matches!(e.kind, EventKind::BreakerHalfOpen { .. } | EventKind::BreakerOpened { .. });
            // Time passed its end: an event after it, or a go at it, must come after the half-open
            // (other events of that very instant, a deadline expiring, may come first).
            if !said && (at > until || (at == until && matches!(e.kind, EventKind::Go { .. }))) {
                prop_assert!(
                    false,
                    "the breaker half-opened at {} ms without an event (event at {} ms: {:?})",
                    until,
                    at,
                    e.kind
                );
            }
        }
        match &e.kind {
            EventKind::Queued | EventKind::Retried { .. } => {
                waiting.insert(e.request);
            }
            EventKind::Rejected { .. } | EventKind::Expired { .. } | EventKind::Cancelled => {
                waiting.remove(&e.request);
            }
            EventKind::RateLimited { until, .. } => paused_until = paused_until.max(ms(*until)),
            _ => {}
        }
        match &e.kind {
            EventKind::Go { .. } => {
                goes.push(at);
                waiting.remove(&e.request);
                held.insert(e.request, (at, None));
                match phase {
                    Phase::Open { since, until } => {
                        prop_assert!(false, "{:?} went at {} ms while open ({} to {} ms)", e.request, at, since, until)
                    }
                    Phase::HalfOpen => {
                        probes_out.insert(e.request);
                        prop_assert!(
                            probes_out.len() as u64 <= w.probes,
                            "{} probes out at {} ms (probes: {})",
                            probes_out.len(),
                            at,
                            w.probes
                        );
                    }
                    Phase::Closed => {}
                }
            }
            EventKind::Completed { .. } | EventKind::LeaseExpired { .. } => {
                if let Some(h) = held.get_mut(&e.request) {
                    h.1 = Some(at);
                }
                if probes_out.remove(&e.request) && modes.get(&(at, e.request)) == Some(&Mode::Healthy) {
                    probe_successes += 1;
                }
            }
            EventKind::BreakerOpened { limit, reason, until } => {
                prop_assert_eq!(limit.as_str(), "key");
                let until = ms(*until);
                let length = until - at;
                if !matches!(phase, Phase::Open { .. }) {
                    opens += 1;
                }
                match *reason {
                    "rate_limited" => {
                        // The answer that opened it: 429 with Retry-After, taken exactly.
                        let Some(&Mode::Limited(s)) = modes.get(&(at, e.request)) else {
                            return Err(TestCaseError::fail(format!("rate_limited opening at {at} ms without a 429")));
                        };
                        prop_assert_eq!(length, s * 1000, "the server's time, exactly");
                    }
                    reason => {
                        prop_assert!(matches!(phase, Phase::Closed | Phase::HalfOpen), "{} while open", reason);
                        let expected = (OPEN_FOR_MS << (opens - 1).min(16)).min(MAX_OPEN_MS);
                        prop_assert_eq!(length, expected, "{} opening number {} since it closed", reason, opens);
                        let mode = modes.get(&(at, e.request)).copied();
                        match reason {
                            "failures" => {
                                prop_assert_eq!(phase, Phase::Closed);
                                let within =
                                    failed_at.iter().filter(|&&f| f <= at && f + PER_MS + PER_MS / 16 > at).count();
                                prop_assert!(
                                    within as u64 >= w.failures,
                                    "opened after {} failures within the window",
                                    within
                                );
                            }
                            "auth" => prop_assert_eq!(mode, Some(Mode::Unauthorized)),
                            "probe_failed" => {
                                prop_assert_eq!(phase, Phase::HalfOpen);
                                prop_assert!(matches!(mode, Some(Mode::Failing | Mode::Unreachable)));
                            }
                            other => prop_assert!(false, "unknown reason {}", other),
                        }
                    }
                }
                phase = Phase::Open { since: at, until };
                probes_out.clear();
                probe_successes = 0;
            }
            EventKind::BreakerHalfOpen { .. } => {
                let Phase::Open { until, .. } = phase else {
                    return Err(TestCaseError::fail(format!("half-open at {at} ms while {phase:?}")));
                };
                prop_assert_eq!(at, until, "it half-opens when its opening ends");
                phase = Phase::HalfOpen;
                probes_out.clear();
                probe_successes = 0;
            }
            EventKind::BreakerClosed { .. } => {
                prop_assert_eq!(phase, Phase::HalfOpen);
                prop_assert!(probe_successes >= w.close_after, "closed after {} probe successes", probe_successes);
                phase = Phase::Closed;
                opens = 0;
            }
            _ => {}
        }
        // Once every event of this instant is out: half-open with a probe's place free, the window
        // not full and not paused, nobody may still wait.
        if log.events.get(i + 1).is_none_or(|next| ms(next.at) != at) && phase == Phase::HalfOpen {
            held.retain(|_, (_, done)| done.is_none_or(|d| d + 1000 > at));
            let used = held.len() as u64;
            let max = w.window_max.unwrap_or(u64::MAX);
            if (probes_out.len() as u64) < w.probes && used < max && at >= paused_until && !waiting.is_empty() {
                prop_assert!(
                    false,
                    "{} wait at {} ms while a probe could go ({} out, window {}/{})",
                    waiting.len(),
                    at,
                    probes_out.len(),
                    used,
                    max
                );
            }
        }
    }
    // 5: every request ended; the window held (at most `window_max` goes in any 1 s is implied by
    // the hold from go to completion + 1 s; goes alone are checked here).
    for id in &log.ids {
        prop_assert!(log.ended.contains(id), "{:?} never ended (run ended at {} ms)", id, log.end);
    }
    let max = w.window_max.unwrap_or(u64::MAX);
    for (i, &at) in goes.iter().enumerate() {
        let within = goes[i..].iter().take_while(|&&b| b < at + 1000).count() as u64;
        prop_assert!(within <= max, "{} goes within 1 s of {} ms", within, at);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("TC_BREAKER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn an_open_breaker_admits_only_its_probes_and_opens_and_closes_for_its_reasons(w in workload()) {
        check(&w)?;
    }
}

/// The seed's defaults, step by step: five 5xx open it for 30 s; the requests behind wait for the
/// half-open; a request whose longest wait ends before it is refused at once; two probe
/// successes close it.
#[test]
fn five_failures_open_it_and_two_probes_close_it() {
    let config = Config::from_json(r#"{ "limits": { "key": { "kind": "breaker" } }, "global": ["key"] }"#).unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let mut kinds = Vec::new();
    let drain = |tc: &mut TrafficControl, now: Timestamp, kinds: &mut Vec<String>| {
        while let Some(e) = tc.poll(now) {
            kinds.push(format!("{}@{}", e.status(), ms(e.at)));
        }
    };
    for i in 0..5 {
        let id = tc.submit(t(i), Request::http("GET", "/x")).unwrap();
        drain(&mut tc, t(i), &mut kinds);
        assert_eq!(tc.complete(t(i), id, Outcome::status(500)), Completion::Done);
    }
    drain(&mut tc, t(4), &mut kinds);
    assert!(kinds.contains(&"breaker_opened@4".to_string()), "{kinds:?}");
    let snapshot = tc.snapshot(t(5));
    assert_eq!(snapshot.limits[0].available, 0, "open: nothing available");
    // Waits for the half-open; one whose longest wait ends sooner is refused at once.
    let a = tc.submit(t(10), Request::http("GET", "/x")).unwrap();
    let b = tc.submit(t(10), Request::http("GET", "/x")).unwrap();
    let err = tc.submit(t(10), Request::http("GET", "/x").deadline(t(20_000))).unwrap_err();
    assert_eq!(err.code(), "DEADLINE_UNREACHABLE", "{err}");
    drain(&mut tc, t(10), &mut kinds);
    assert_eq!(tc.poll_timeout(), Some(t(30_004)));
    kinds.clear();
    drain(&mut tc, t(30_004), &mut kinds);
    assert_eq!(kinds, ["breaker_half_open@30004", "go@30004"], "one probe at a time");
    assert_eq!(tc.complete(t(30_010), a, Outcome::status(200)), Completion::Done);
    kinds.clear();
    drain(&mut tc, t(30_010), &mut kinds);
    assert!(kinds.contains(&"go@30010".to_string()), "{kinds:?}");
    assert_eq!(tc.complete(t(30_020), b, Outcome::status(200)), Completion::Done);
    kinds.clear();
    drain(&mut tc, t(30_020), &mut kinds);
    assert!(kinds.contains(&"breaker_closed@30020".to_string()), "{kinds:?}");
}

/// An end the host did not report (a permit let go, a task with no response) is neither a
/// success nor a failure: ten of them leave the breaker closed, and a probe let go unreported
/// leaves it half-open for the next probe.
#[test]
fn unreported_ends_are_not_failures() {
    let config =
        Config::from_json(r#"{ "limits": { "key": { "kind": "breaker", "failures": 2 } }, "global": ["key"] }"#)
            .unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    for i in 0..10 {
        let id = tc.submit(t(i), Request::http("GET", "/x")).unwrap();
        assert_eq!(tc.complete(t(i), id, Outcome::unreported()), Completion::Done);
    }
    while let Some(e) = tc.poll(t(10)) {
        assert!(!e.status().starts_with("breaker"), "{}", e.status());
    }
    for i in 0..2 {
        let id = tc.submit(t(20 + i), Request::http("GET", "/x")).unwrap();
        let _ = tc.complete(t(20 + i), id, Outcome::failed());
    }
    let mut opened = false;
    while let Some(e) = tc.poll(t(21)) {
        opened |= e.status() == "breaker_opened";
    }
    assert!(opened, "two failures open it");
    let probe = tc.submit(t(40_000), Request::http("GET", "/x")).unwrap();
    let _ = tc.complete(t(40_000), probe, Outcome::unreported());
    let next = tc.submit(t(40_001), Request::http("GET", "/x")).unwrap();
    let mut went = false;
    while let Some(e) = tc.poll(t(40_001)) {
        went |= e.request == next && e.status() == "go";
        assert_ne!(e.status(), "breaker_opened", "an unreported probe does not reopen it");
    }
    assert!(went, "the next probe goes");
}

/// A blocked token that names its end (BaseLinker, status 200) opens the breaker until then
/// exactly; a 401 opens it for `open_for`, doubled when the probe is refused again.
#[test]
fn a_blocked_token_opens_it_until_its_end_and_401s_double() {
    let config =
        Config::from_json(r#"{ "limits": { "key": { "kind": "breaker", "open_for": "10s" } }, "global": ["key"] }"#)
            .unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let opened = |tc: &mut TrafficControl, now: Timestamp| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some(e) = tc.poll(now) {
            if let EventKind::BreakerOpened { reason, until, .. } = e.kind {
                out.push((reason.to_string(), ms(until)));
            }
        }
        out
    };
    let id = tc.submit(t(0), Request::http("POST", "/connector.php")).unwrap();
    let body = r#"{"status":"ERROR","error_code":"ERROR_BLOCKED_TOKEN","error_message":"Token blocked until 2026-12-07 10:10:00"}"#;
    // The host's clock says 10:00:00 UTC; BaseLinker's times are Polish (UTC+1 in December).
    let now_unix = 1_796_637_600.0 - 3_600.0;
    let outcome = Outcome::status(200).header("Content-Type", "application/json").body(body).unix_time(now_unix);
    let _ = tc.complete(t(0), id, outcome);
    let got = opened(&mut tc, t(0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "rate_limited");

    let config =
        Config::from_json(r#"{ "limits": { "key": { "kind": "breaker", "open_for": "10s" } }, "global": ["key"] }"#)
            .unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let id = tc.submit(t(0), Request::http("GET", "/x")).unwrap();
    let _ = tc.complete(t(0), id, Outcome::status(401));
    assert_eq!(opened(&mut tc, t(0)), [("auth".to_string(), 10_000)]);
    let probe = tc.submit(t(10_000), Request::http("GET", "/x")).unwrap();
    let _ = opened(&mut tc, t(10_000));
    let _ = tc.complete(t(10_005), probe, Outcome::status(401));
    assert_eq!(opened(&mut tc, t(10_005)), [("auth".to_string(), 30_005)]);
}

#[test]
fn breaker_configs_name_the_field() {
    let err = |limit: &str| {
        Config::from_json(&format!(r#"{{ "limits": {{ "key": {limit} }}, "global": ["key"] }}"#))
            .unwrap_err()
            .to_string()
    };
    assert!(err(r#"{ "kind": "breaker", "probes": 0 }"#).contains("limits.key.probes"));
    assert!(err(r#"{ "kind": "breaker", "failure_percent": 120 }"#).contains("limits.key.failure_percent"));
    assert!(err(r#"{ "kind": "breaker", "open_for": "1m", "max_open": "10s" }"#).contains("limits.key.max_open"));
    assert!(err(r#"{ "kind": "breaker", "max": 3 }"#).contains("limits.key.max: unknown field `max`"));
    // Written back with its defaults, and read again alike.
    let c = Config::from_json(r#"{ "limits": { "key": { "kind": "breaker" } }, "global": ["key"] }"#).unwrap();
    let json = c.to_json();
    assert!(json.contains(r#""open_for": "30s""#), "{json}");
    assert_eq!(Config::from_json(&json).unwrap(), c);
}

#[test]
fn the_shared_store_refuses_breakers_rather_than_ignoring_them() {
    let config = r#"{ "limits": { "key": { "kind": "breaker" } }, "global": ["key"] }"#;
    let e = traffic_control_core::SharedStore::new(
        Config::from_json(config).unwrap(),
        traffic_control_core::StoreOptions::new("acct"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("limits.key.kind") && e.contains("shared store"), "{e}");
}
