//! The shared store's host driver, sans-IO: a fake clock and the script's replies written by hand,
//! so every branch a host used to own (classes, waits, wake-ups, the unavailable policy, budget
//! learning, reports) is checked once, here, for every binding.

use std::time::Duration;

use traffic_control_core::driver::{CallId, DriverOptions, Handle, Output, SharedDriver, Unavailable};
use traffic_control_core::{
    Config, Outcome, Priority, ReplyValue, Request, RequestId, StoreCall, StoreOptions, Timestamp,
};

const CONFIG: &str = r#"{
  "limits": {
    "api": { "kind": "window", "max": 1, "per": "1s" },
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

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn driver(configure: impl FnOnce(&mut DriverOptions)) -> SharedDriver {
    let mut options = DriverOptions::new("p1");
    configure(&mut options);
    let mut store = StoreOptions::new("acct");
    store.waiter_ttl = Duration::from_secs(2);
    SharedDriver::new(Config::from_json(CONFIG).unwrap(), store, options).unwrap()
}

fn outputs(d: &mut SharedDriver) -> Vec<Output> {
    std::iter::from_fn(|| d.poll_output()).collect()
}

fn runs(out: &[Output]) -> Vec<(CallId, StoreCall)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Run { call, store_call } => Some((*call, store_call.clone())),
            _ => None,
        })
        .collect()
}

fn one_run(out: &[Output]) -> CallId {
    let r = runs(out);
    assert_eq!(r.len(), 1, "{out:?}");
    r[0].0
}

fn op(call: &StoreCall) -> &str {
    &call.args[0]
}

// The script's replies: status, server time (µs), epoch, then the answer.
fn go(request: i64) -> Vec<ReplyValue> {
    vec![ReplyValue::Int(1), ReplyValue::Int(0), ReplyValue::Text("e".into()), ReplyValue::Int(request)]
}

fn wait(server_ms: i64, until_ms: Option<i64>) -> Vec<ReplyValue> {
    vec![
        ReplyValue::Int(2),
        ReplyValue::Int(server_ms * 1000),
        ReplyValue::Text("e".into()),
        ReplyValue::Int(until_ms.map_or(-1, |u| u * 1000)),
        ReplyValue::Int(7),
    ]
}

fn budget_unknown() -> Vec<ReplyValue> {
    vec![
        ReplyValue::Int(3),
        ReplyValue::Int(0),
        ReplyValue::Text("e".into()),
        ReplyValue::Text("BUDGET_UNKNOWN".into()),
        ReplyValue::Text("tokens".into()),
    ]
}

fn observed(live: bool) -> Vec<ReplyValue> {
    vec![ReplyValue::Int(1), ReplyValue::Int(0), ReplyValue::Text("e".into()), ReplyValue::Int(i64::from(live))]
}

fn went(out: &[Output], handle: Handle) -> Option<RequestId> {
    out.iter().find_map(|o| match o {
        Output::Go { handle: h, request, .. } if *h == handle => Some(*request),
        _ => None,
    })
}

fn failed(out: &[Output], handle: Handle) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::Fail { handle: h, error } if *h == handle => Some(error.code().to_string()),
        _ => None,
    })
}

#[test]
fn only_the_head_of_a_class_asks_and_the_next_asks_when_it_goes() {
    let mut d = driver(|_| {});
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let b = d.acquire(t(0), Request::http("GET", "/y"), None).unwrap();
    let c = d.acquire(t(0), Request::http("GET", "/x").priority(Priority::High), None).unwrap();
    let out = outputs(&mut d);
    assert_eq!(runs(&out).len(), 2, "a (normal) and c (high) ask; b waits behind a");
    let call_a = runs(&out)[0].0;
    d.on_reply(t(1), call_a, &go(11));
    let out = outputs(&mut d);
    assert_eq!(went(&out, a), Some(RequestId(11)));
    assert_eq!(runs(&out).len(), 1, "b asks at once");
    assert_eq!(d.waiting(), 2);
    let _ = (b, c);
}

#[test]
fn a_wait_sleeps_until_the_instant_the_store_names_and_keeps_its_place() {
    let mut d = driver(|o| o.wake = false);
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    // Server time 5 000 ms, free at 5 300 ms: back in 300 ms of host time.
    d.on_reply(t(10), call, &wait(5_000, Some(5_300)));
    assert!(outputs(&mut d).is_empty());
    assert_eq!(d.poll_timeout(), Some(t(310)));
    d.handle_timeout(t(309));
    assert!(outputs(&mut d).is_empty());
    d.handle_timeout(t(310));
    let out = outputs(&mut d);
    let (call, store_call) = runs(&out)[0].clone();
    assert!(store_call.args.contains(&"7".to_string()), "asks again with its registration instant");
    // No instant: within half the waiter TTL.
    d.on_reply(t(320), call, &wait(5_310, None));
    assert_eq!(d.poll_timeout(), Some(t(1_320)));
    let _ = a;
}

#[test]
fn subscribed_waiters_poll_every_10s_at_most_and_wake_on_a_message() {
    let mut d = driver(|_| {});
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &wait(0, Some(60_000)));
    let out = outputs(&mut d);
    assert!(matches!(&out[..], [Output::Subscribe { channel }] if channel == "tc:{acct}:wake"), "{out:?}");
    assert_eq!(d.poll_timeout(), Some(t(1_000)), "not subscribed yet: half the TTL");
    d.subscribed(t(5), true);
    let call = one_run(&outputs(&mut d)); // asks again: room may have freed while subscribing
    d.on_reply(t(6), call, &wait(6, Some(60_000)));
    assert_eq!(d.poll_timeout(), Some(t(10_006)));
    d.woken(t(50));
    let call = one_run(&outputs(&mut d));
    assert_eq!(d.wakeups(), 1);
    d.on_reply(t(51), call, &go(3));
    assert_eq!(went(&outputs(&mut d), a), Some(RequestId(3)));
    // A second after the last waiter: unsubscribe.
    assert_eq!(d.poll_timeout(), Some(t(1_051)));
    d.handle_timeout(t(1_051));
    assert_eq!(outputs(&mut d), vec![Output::Unsubscribe]);
}

#[test]
fn a_wake_up_during_the_question_makes_the_waiter_ask_again_at_once() {
    let mut d = driver(|o| o.wake = false);
    let _a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.woken(t(1)); // room freed while the question was out
    d.on_reply(t(2), call, &wait(0, Some(900)));
    assert_eq!(runs(&outputs(&mut d)).len(), 1, "asks again instead of sleeping");
}

#[test]
fn an_unreachable_store_is_retried_with_backoff_then_fails_closed() {
    let mut d = driver(|o| o.unavailable_max_wait = Duration::from_millis(400));
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let mut call = one_run(&outputs(&mut d));
    let mut now = 0;
    let mut sleeps = Vec::new();
    loop {
        d.on_store_error(t(now), call, "connection refused");
        let out = outputs(&mut d);
        if let Some(code) = failed(&out, a) {
            assert_eq!(code, "STORE_UNAVAILABLE");
            break;
        }
        let next = d.poll_timeout().unwrap();
        sleeps.push(next.as_millis_f64() as u64 - now);
        now = next.as_millis_f64() as u64;
        d.handle_timeout(t(now));
        call = one_run(&outputs(&mut d));
    }
    assert_eq!(sleeps, vec![50, 100, 200], "then 400 more would pass the 400 ms allowed");
    // Back before the limit: the request goes.
    let mut d = driver(|_| {});
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_store_error(t(0), call, "connection refused");
    d.handle_timeout(t(50));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(51), call, &go(5));
    assert_eq!(went(&outputs(&mut d), a), Some(RequestId(5)));
}

#[test]
fn with_the_fail_policy_an_unreachable_store_fails_at_once() {
    let mut d = driver(|o| o.on_unavailable = Unavailable::Fail);
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_store_error(t(1), call, "connection refused");
    let out = outputs(&mut d);
    assert_eq!(failed(&out, a).as_deref(), Some("STORE_UNAVAILABLE"));
    assert!(runs(&out).is_empty(), "no withdraw while the store is unreachable");
}

#[test]
fn a_call_not_answered_within_the_longest_wait_counts_as_failed_and_its_late_reply_is_ignored() {
    let mut d = driver(|_| {});
    let a = d.acquire(t(0), Request::http("GET", "/x"), Some(Duration::from_millis(200))).unwrap();
    let call = one_run(&outputs(&mut d));
    assert_eq!(d.poll_timeout(), Some(t(200)));
    d.handle_timeout(t(200));
    let out = outputs(&mut d);
    assert_eq!(failed(&out, a).as_deref(), Some("STORE_UNAVAILABLE"), "{out:?}");
    d.on_reply(t(210), call, &go(9));
    assert!(outputs(&mut d).is_empty(), "the late reply is ignored");
    // Unbounded: the call's bound is the store's allowance (30 s), then one retry after 50 ms.
    let a = d.acquire(t(1_000), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    assert_eq!(d.poll_timeout(), Some(t(31_000)));
    d.handle_timeout(t(31_000));
    assert_eq!(failed(&outputs(&mut d), a).as_deref(), Some("STORE_UNAVAILABLE"));
    let _ = call;
}

#[test]
fn a_cancel_fails_with_cancelled_and_withdraws_the_claim() {
    let mut d = driver(|o| o.wake = false);
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let b = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &wait(0, Some(500)));
    d.cancel(t(2), a);
    let out = outputs(&mut d);
    assert_eq!(failed(&out, a).as_deref(), Some("CANCELLED"));
    let ops: Vec<String> = runs(&out).iter().map(|(_, c)| op(c).to_string()).collect();
    assert_eq!(ops, vec!["withdraw", "admit"], "its claim withdrawn; b is head now and asks");
    // A queued request that never asked has nothing to withdraw.
    d.cancel(t(3), b);
    let out = outputs(&mut d);
    assert_eq!(failed(&out, b).as_deref(), Some("CANCELLED"));
    assert!(runs(&out).iter().all(|(_, c)| op(c) == "withdraw"));
}

#[test]
fn a_request_queued_behind_its_head_fails_at_its_longest_wait() {
    let mut d = driver(|o| o.wake = false);
    let _a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let b = d.acquire(t(0), Request::http("GET", "/x"), Some(Duration::from_millis(100))).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &wait(0, Some(5_000)));
    assert!(d.poll_timeout().unwrap() <= t(101));
    d.handle_timeout(t(101));
    let out = outputs(&mut d);
    assert_eq!(failed(&out, b).as_deref(), Some("DEADLINE_EXCEEDED"));
    assert!(runs(&out).is_empty(), "never asked: nothing to withdraw");
}

#[test]
fn an_unknown_budget_is_learnt_with_one_status_request_then_asked_again() {
    let mut d = driver(|o| o.wake = false);
    let a = d.acquire(t(0), Request::http("GET", "https://api.keepa.com/product?key=K&asin=1"), None).unwrap();
    let b = d.acquire(t(0), Request::http("GET", "https://api.keepa.com/product?key=K&asin=2"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &budget_unknown());
    let out = outputs(&mut d);
    // b (next of the class) and the status request (HIGH) ask.
    assert_eq!(runs(&out).len(), 2, "{out:?}");
    let (status_call, b_call) = (runs(&out)[0].0, runs(&out)[1].0);
    d.on_reply(t(2), b_call, &budget_unknown());
    assert!(runs(&outputs(&mut d)).is_empty(), "b parks behind the same status request");
    d.on_reply(t(3), status_call, &go(40));
    let out = outputs(&mut d);
    let status = out.iter().find_map(|o| match o {
        Output::Status { handle, url } => Some((*handle, url.clone())),
        _ => None,
    });
    let (sh, url) = status.expect("the host sends the status request");
    assert_eq!(url, "https://api.keepa.com/token?key=K");
    assert_eq!(d.waiting(), 2);
    let answer = Outcome::status(200).body(r#"{"tokensLeft": 80, "refillIn": 3000, "refillRate": 20}"#);
    d.status_done(t(4), sh, Some(&answer));
    let out = outputs(&mut d);
    let ops: Vec<String> = runs(&out).iter().map(|(_, c)| op(c).to_string()).collect();
    assert_eq!(ops, vec!["complete", "admit"], "the balance reported, a asks again (b behind it)");
    d.on_reply(t(5), runs(&out)[1].0, &go(41));
    let out = outputs(&mut d);
    assert_eq!(went(&out, a), Some(RequestId(41)));
    d.on_reply(t(6), one_run(&out), &budget_unknown());
    let out = outputs(&mut d);
    assert_eq!(failed(&out, b).as_deref(), Some("BUDGET_UNKNOWN"), "learning is tried once per request");
}

#[test]
fn a_status_request_that_fails_fails_the_requests_waiting_for_it() {
    let mut d = driver(|o| o.wake = false);
    let a = d.acquire(t(0), Request::http("GET", "https://api.keepa.com/product?key=K"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &budget_unknown());
    let status_call = one_run(&outputs(&mut d));
    d.on_reply(t(2), status_call, &go(1));
    let sh = outputs(&mut d)
        .iter()
        .find_map(|o| match o {
            Output::Status { handle, .. } => Some(*handle),
            _ => None,
        })
        .unwrap();
    d.status_done(t(3), sh, None);
    assert_eq!(failed(&outputs(&mut d), a).as_deref(), Some("BUDGET_UNKNOWN"));
}

#[test]
fn reports_retry_while_the_store_is_away_and_complete_wakes_local_waiters() {
    let mut d = driver(|o| {
        o.wake = false;
        o.unavailable_max_wait = Duration::from_millis(300);
    });
    let a = d.acquire(t(0), Request::http("GET", "/slow"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(1));
    assert!(went(&outputs(&mut d), a).is_some());
    let w = d.acquire(t(0), Request::http("GET", "/slow"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &wait(0, None));
    // The completion frees the lease: it needs the store.
    let done = d.complete(t(10), RequestId(1), &Outcome::status(200));
    let call = one_run(&outputs(&mut d));
    d.on_store_error(t(10), call, "READONLY");
    assert_eq!(d.poll_timeout(), Some(t(60)));
    d.handle_timeout(t(60));
    let out = outputs(&mut d);
    assert_eq!(one_run(&out), call, "the same call again");
    d.on_reply(t(61), call, &observed(false));
    let out = outputs(&mut d);
    assert!(out.contains(&Output::Done { handle: done, live: false }));
    assert_eq!(runs(&out).len(), 1, "the local waiter asks again at once");
    let _ = w;
    // A report that cannot land within the allowed wait fails.
    let done = d.release(t(100), traffic_control_core::ReservationId(4));
    let mut call = one_run(&outputs(&mut d));
    let mut now = 100;
    loop {
        d.on_store_error(t(now), call, "down");
        let out = outputs(&mut d);
        if let Some(code) = failed(&out, done) {
            assert_eq!(code, "STORE_UNAVAILABLE");
            break;
        }
        now = d.poll_timeout().unwrap().as_millis_f64() as u64;
        d.handle_timeout(t(now));
        call = one_run(&outputs(&mut d));
    }
    assert!(now <= 400);
}

#[test]
fn requests_that_can_never_go_are_refused_without_a_call() {
    let mut d = driver(|_| {});
    let e = d.acquire(t(0), Request::route("nope"), None).unwrap_err();
    assert_eq!(e.code(), "UNKNOWN_ROUTE");
    let e = d.acquire(t(0), Request::http("GET", "/x").cost(5), None).unwrap_err();
    assert_eq!(e.code(), "COST_EXCEEDS_CAPACITY");
    assert!(outputs(&mut d).is_empty());
}

#[test]
fn a_question_that_crossed_a_finished_status_request_asks_again_instead_of_learning_twice() {
    let mut d = driver(|o| o.wake = false);
    let a = d.acquire(t(0), Request::http("GET", "https://api.keepa.com/product?key=K"), None).unwrap();
    let b = d
        .acquire(t(0), Request::http("GET", "https://api.keepa.com/product?key=K").priority(Priority::Low), None)
        .unwrap();
    let out = outputs(&mut d);
    let (a_call, b_call) = (runs(&out)[0].0, runs(&out)[1].0);
    d.on_reply(t(1), a_call, &budget_unknown());
    let status_call = one_run(&outputs(&mut d));
    d.on_reply(t(2), status_call, &go(1));
    let sh = outputs(&mut d)
        .iter()
        .find_map(|o| match o {
            Output::Status { handle, .. } => Some(*handle),
            _ => None,
        })
        .unwrap();
    d.status_done(t(3), sh, Some(&Outcome::status(200).body(r#"{"tokensLeft": 80}"#)));
    let _ = outputs(&mut d);
    // b's question went out at 0, before the balance was reported at 3.
    d.on_reply(t(4), b_call, &budget_unknown());
    let out = outputs(&mut d);
    assert!(!out.iter().any(|o| matches!(o, Output::Status { .. })));
    let ops: Vec<String> = runs(&out).iter().map(|(_, c)| op(c).to_string()).collect();
    assert_eq!(ops, vec!["admit"], "b asks again: {out:?}");
    let _ = (a, b);
}

#[test]
fn a_lost_subscription_falls_back_to_polling_and_subscribes_again_later() {
    let mut d = driver(|_| {});
    let _a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &wait(0, Some(60_000)));
    assert!(matches!(&outputs(&mut d)[..], [Output::Subscribe { .. }]));
    d.subscribed(t(1), true);
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(2), call, &wait(2, Some(60_000)));
    assert_eq!(d.poll_timeout(), Some(t(10_002)), "subscribed: 10 s");
    d.subscribed(t(500), false); // its connection dropped
    d.handle_timeout(t(10_002));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(10_003), call, &wait(10_003, Some(60_000)));
    assert!(outputs(&mut d).is_empty(), "no new subscription within 10 s of the loss");
    assert_eq!(d.poll_timeout(), Some(t(11_003)), "polling: half the waiter TTL");
    d.handle_timeout(t(11_003));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(11_004), call, &wait(11_004, Some(60_000)));
    assert!(matches!(&outputs(&mut d)[..], [Output::Subscribe { .. }]), "subscribes again");
}

/// The reply to a snapshot call for the three limits of `CONFIG`: used `api` 1 of 1, the rest idle.
fn snapshot_reply() -> Vec<ReplyValue> {
    let mut r = vec![ReplyValue::Int(1), ReplyValue::Int(5_000_000), ReplyValue::Text("e".into()), ReplyValue::Int(0)];
    for (used, max) in [(1, 1), (0, 1), (-1, 100)] {
        // used, max, reserved, pause until, waiters, next free, reason, server until, strikes
        r.extend([used, max, 0, 0, 2, -1].map(ReplyValue::Int));
        r.push(ReplyValue::Text(String::new()));
        r.extend([0, 0].map(ReplyValue::Int));
    }
    r
}

#[test]
fn the_driver_counts_what_became_of_each_acquire_and_reads_the_gauges_from_the_store() {
    let mut d = driver(|o| {
        o.wake = false;
        o.on_unavailable = Unavailable::Fail;
    });
    // Went at once, on the route "slow".
    let a = d.acquire(t(0), Request::http("GET", "/slow"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(1));
    assert!(went(&outputs(&mut d), a).is_some());
    // Went after a 300 ms wait (no route), HIGH.
    let b = d.acquire(t(0), Request::http("GET", "/x").priority(Priority::High), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &wait(0, Some(300)));
    d.handle_timeout(t(300));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(300), call, &go(2));
    assert!(went(&outputs(&mut d), b).is_some());
    // Cancelled, expired, refused by the store being away.
    let c = d.acquire(t(300), Request::http("GET", "/x"), None).unwrap();
    d.cancel(t(301), c);
    let _ = outputs(&mut d);
    let e = d.acquire(t(400), Request::http("GET", "/x"), Some(Duration::from_millis(100))).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(400), call, &wait(0, Some(1_000)));
    let at = d.poll_timeout().unwrap();
    d.handle_timeout(at);
    let f = d.acquire(t(600), Request::http("GET", "/x"), None).unwrap();
    let out = outputs(&mut d);
    d.on_store_error(t(600), runs(&out).last().unwrap().0, "connection refused");
    let out = outputs(&mut d);
    assert_eq!(failed(&out, f).as_deref(), Some("STORE_UNAVAILABLE"));
    // A 429 on the route: counted as rate limited, and the pause it causes (on the route's own limit).
    let mut outcome = Outcome::status(429);
    outcome.headers.push(("retry-after".into(), "2".into()));
    let _ = d.complete(t(700), RequestId(1), &outcome);
    let _ = (c, e);
    // Still waiting: one NORMAL request of this process.
    let _w = d.acquire(t(800), Request::http("GET", "/x"), None).unwrap();
    let out = outputs(&mut d);
    d.on_reply(t(800), runs(&out).last().unwrap().0, &wait(0, None));
    let _ = outputs(&mut d);

    let h = d.metrics(t(900));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(900), call, &snapshot_reply());
    let m = match outputs(&mut d).pop() {
        Some(Output::Metrics { handle, metrics }) if handle == h => metrics,
        other => panic!("{other:?}"),
    };
    let text = m.to_prometheus();
    for line in [
        r#"traffic_control_requests_total{route="slow",priority="normal",result="went_at_once"} 1"#,
        r#"traffic_control_requests_total{route="slow",priority="normal",result="rate_limited"} 1"#,
        r#"traffic_control_requests_total{route="none",priority="high",result="went_after_wait"} 1"#,
        r#"traffic_control_requests_total{route="none",priority="normal",result="cancelled"} 1"#,
        r#"traffic_control_requests_total{route="none",priority="normal",result="expired"} 1"#,
        r#"traffic_control_requests_total{route="none",priority="normal",result="rejected"} 1"#,
        r#"traffic_control_rejected_total{route="none",priority="normal",code="STORE_UNAVAILABLE"} 1"#,
        r#"traffic_control_wait_seconds_bucket{priority="high",le="0.25"} 0"#,
        r#"traffic_control_wait_seconds_bucket{priority="high",le="0.5"} 1"#,
        r#"traffic_control_wait_seconds_sum{priority="high"} 0.3"#,
        r#"traffic_control_pauses_total{limit="slots",reason="retry_after"} 1"#,
        r#"traffic_control_limit_utilisation_ratio{limit="api"} 1"#,
        r#"traffic_control_queue_depth{priority="normal"} 1"#,
        r#"traffic_control_queue_depth{priority="high"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

#[test]
fn a_shadow_beside_the_shared_driver_decides_on_this_process_traffic_without_acting() {
    let mut d = driver(|o| o.wake = false);
    let looser = CONFIG.replace(r#""max": 1, "per": "1s""#, r#""max": 3, "per": "1s""#);
    let stricter = CONFIG.replace(
        r#""api": { "kind": "window", "max": 1, "per": "1s" }"#,
        r#""api": { "kind": "window", "max": 1, "per": "5s" }"#,
    );
    d.set_shadow(t(0), Some(Config::from_json(&looser).unwrap())).unwrap();
    // Enforced: a goes at once, b waits 1 s, c is cancelled while it waits.
    let a = d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(1));
    assert!(went(&outputs(&mut d), a).is_some());
    let b = d.acquire(t(10), Request::http("GET", "/y"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(10), call, &wait(10, Some(1_000)));
    let _ = outputs(&mut d);
    let c = d.acquire(t(20), Request::http("GET", "/z").priority(Priority::Low), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(20), call, &wait(20, Some(1_000)));
    d.cancel(t(500), c);
    let _ = outputs(&mut d);
    let at = d.poll_timeout().unwrap();
    d.handle_timeout(at);
    let call = one_run(&outputs(&mut d));
    d.on_reply(at, call, &go(2));
    assert!(went(&outputs(&mut d), b).is_some());
    let _ = d.complete(t(1_100), RequestId(1), &Outcome::status(200));
    let _ = d.complete(t(1_100), RequestId(2), &Outcome::status(200));
    let _ = outputs(&mut d);
    let r = d.shadow_report(t(1_200)).unwrap();
    assert_eq!((r.enforced.requests, r.enforced.went_at_once, r.enforced.went_after_wait), (3, 1, 1));
    assert_eq!(r.enforced.cancelled, 1);
    assert_eq!((r.shadow.went_at_once, r.shadow.went_after_wait), (3, 0), "3 per second: every request went at once");
    assert_eq!(r.tracked, 0, "every request ended on both sides");

    // A stricter shadow: the second request would have waited for the first's completion plus 5 s;
    // a permit never completed ends with its lease (60 s) as far as the shadow knows.
    d.set_shadow(t(2_000), Some(Config::from_json(&stricter).unwrap())).unwrap();
    for (i, at) in [(3, 2_000), (4, 2_100)] {
        let h = d.acquire(t(at), Request::http("GET", "/x"), None).unwrap();
        let call = one_run(&outputs(&mut d));
        d.on_reply(t(at), call, &go(i));
        assert!(went(&outputs(&mut d), h).is_some());
    }
    let _ = d.complete(t(2_150), RequestId(3), &Outcome::status(200));
    let r = d.shadow_report(t(2_200)).unwrap();
    assert_eq!((r.enforced.went_at_once, r.shadow.went_at_once, r.shadow.waiting), (2, 1, 1));
    let r = d.shadow_report(t(70_000)).unwrap();
    assert_eq!((r.shadow.went_after_wait, r.tracked), (1, 0), "{r:?}");
    assert_eq!(r.shadow.wait_max, Duration::from_millis(5_050), "went at 2.15 s + 5 s, arrived at 2.1 s");
    d.set_shadow(t(70_000), None).unwrap();
    assert!(d.shadow_report(t(70_000)).is_none());
}

/// The reply to a completion whose answer paused its limits until `until_ms` (server time 0).
fn paused(until_ms: i64) -> Vec<ReplyValue> {
    let mut r = observed(false);
    r.push(ReplyValue::Int(until_ms * 1000));
    r
}

fn gave_up(out: &[Output], handle: Handle) -> bool {
    out.contains(&Output::GiveUp { handle })
}

fn limited() -> Outcome {
    Outcome::status(429).header("Retry-After", "1")
}

#[test]
fn a_rate_limited_answer_queues_the_request_again_under_its_id_and_its_go_names_the_completion() {
    let mut d = driver(|o| o.wake = false);
    d.set_events(true);
    let a = d.acquire(t(0), Request::http("GET", "/x").priority(Priority::High), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &go(11));
    assert_eq!(went(&outputs(&mut d), a), Some(RequestId(11)));
    let done = d.complete(t(5), RequestId(11), &limited());
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(6), call, &paused(1_006));
    let out = outputs(&mut d);
    let (call, admit) = runs(&out)[0].clone();
    assert_eq!(op(&admit), "admit", "the retry asks the store at once: its claim holds its priority");
    assert!(admit.args.contains(&"11".to_string()), "under the same id: {:?}", admit.args);
    assert!(!out.iter().any(|o| matches!(o, Output::Done { .. } | Output::GiveUp { .. })));
    assert!(out.iter().any(|o| matches!(o, Output::Event(e) if e.status() == "retried")), "{out:?}");
    assert_eq!(d.waiting(), 1);
    // The store says wait (its limits are paused); then go: the completion's handle gets the permit.
    d.on_reply(t(7), call, &wait(7, Some(1_006)));
    assert_eq!(d.poll_timeout(), Some(t(1_006)));
    d.handle_timeout(t(1_006));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1_007), call, &go(11));
    assert_eq!(went(&outputs(&mut d), done), Some(RequestId(11)));
    // A success ends it (and clears the limit's strikes in the store).
    let ok = d.complete(t(1_010), RequestId(11), &Outcome::status(200));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1_011), call, &observed(false));
    assert!(outputs(&mut d).contains(&Output::Done { handle: ok, live: false }));
    assert_eq!(d.waiting(), 0);
}

#[test]
fn retries_stop_after_max_retries_or_when_the_pause_ends_past_the_longest_wait() {
    let config = CONFIG.replacen("\"global\"", "\"feedback\": { \"max_retries\": 1 }, \"global\"", 1);
    let mut d = SharedDriver::new(Config::from_json(&config).unwrap(), StoreOptions::new("acct"), {
        let mut o = DriverOptions::new("p1");
        o.wake = false;
        o
    })
    .unwrap();
    d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(3));
    outputs(&mut d);
    let first = d.complete(t(1), RequestId(3), &limited());
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &paused(1_001));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(2), call, &go(3));
    assert_eq!(went(&outputs(&mut d), first), Some(RequestId(3)));
    let second = d.complete(t(3), RequestId(3), &limited());
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(3), call, &paused(1_003));
    assert!(gave_up(&outputs(&mut d), second), "one retry allowed");
    assert_eq!(d.waiting(), 0);

    // The longest wait: the pause ends after it.
    let mut d = driver(|o| o.wake = false);
    d.acquire(t(0), Request::http("GET", "/x"), Some(Duration::from_millis(500))).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(4));
    outputs(&mut d);
    let done = d.complete(t(10), RequestId(4), &limited());
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(10), call, &paused(1_010));
    assert!(gave_up(&outputs(&mut d), done));

    // An answer that is not rate limited (a 5xx) is done, not retried.
    let mut d = driver(|o| o.wake = false);
    d.acquire(t(0), Request::http("GET", "/slow"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(5));
    outputs(&mut d);
    let done = d.complete(t(1), RequestId(5), &Outcome::status(503));
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &observed(false));
    assert!(outputs(&mut d).contains(&Output::Done { handle: done, live: false }));
}

#[test]
fn a_retry_keeps_no_reservation_and_fails_with_the_store() {
    let mut d = driver(|o| {
        o.wake = false;
        o.on_unavailable = Unavailable::Fail;
    });
    d.acquire(t(0), Request::http("GET", "/x"), None).unwrap();
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(0), call, &go(6));
    outputs(&mut d);
    let done = d.complete(t(1), RequestId(6), &limited());
    let call = one_run(&outputs(&mut d));
    d.on_reply(t(1), call, &paused(1_001));
    let call = one_run(&outputs(&mut d));
    d.on_store_error(t(2), call, "connection refused");
    assert_eq!(failed(&outputs(&mut d), done).as_deref(), Some("STORE_UNAVAILABLE"));
}
