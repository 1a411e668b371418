//! Behaviour of the controller, one rule per test, on a fake clock.

use std::time::Duration;

use traffic_control_core::{
    Config, Decision, EventKind, FollowUp, Outcome, Priority, Request, RequestError, RequestId, Timestamp,
    TrafficControl,
};

fn ms(v: u64) -> Timestamp {
    Timestamp::from_millis(v)
}

fn tc(json: &str) -> TrafficControl {
    TrafficControl::new(Config::from_json(json).unwrap()).unwrap()
}

/// Drains events at `now`, returning the ids that got a Go.
fn gone(tc: &mut TrafficControl, now: Timestamp) -> Vec<RequestId> {
    let mut ids = Vec::new();
    while let Some(e) = tc.poll(now) {
        if let EventKind::Go { permit, .. } = e.kind {
            ids.push(permit.request);
        }
    }
    ids
}

const BM: &str = r#"{
  "limits": {
    "global": {"kind": "window", "max": 4, "per": "10s", "hold": "go"},
    "catalog": {"kind": "window", "max": 2, "per": "10s", "hold": "go"},
    "competitor": {"kind": "window", "max": 1, "per": "1s", "hold": "go"}
  },
  "global": ["global"],
  "routes": [
    {"name": "competitors", "path": "^/ws/backbox/v1/competitors", "limits": ["competitor"]},
    {"name": "listings", "method": "POST", "path": "^/ws/listings", "limits": ["catalog"]}
  ]
}"#;

#[test]
fn window_admits_max_then_waits_exactly_until_the_oldest_leaves() {
    let mut tc = tc(r#"{"limits":{"a":{"kind":"window","max":2,"per":"1s","hold":"go"}},"global":["a"]}"#);
    let ids: Vec<_> = (0..3).map(|i| tc.submit(ms(i * 100), Request::http("GET", "/x")).unwrap()).collect();
    assert_eq!(gone(&mut tc, ms(200)), vec![ids[0], ids[1]]);
    assert_eq!(tc.poll_timeout(), Some(ms(1000)));
    assert_eq!(gone(&mut tc, ms(999)), vec![]);
    assert_eq!(gone(&mut tc, ms(1000)), vec![ids[2]]);
}

#[test]
fn admission_is_all_or_nothing() {
    let mut tc = tc(BM);
    for _ in 0..2 {
        assert!(matches!(tc.try_acquire(ms(0), Request::http("POST", "/ws/listings/1")), Decision::Go(_)));
    }
    // Catalog is full: the listing request must not take global capacity either.
    assert!(
        matches!(tc.try_acquire(ms(0), Request::http("POST", "/ws/listings/1")), Decision::Wait { until: Some(t) } if t == ms(10_000))
    );
    let snap = tc.snapshot(ms(0));
    let global = snap.limits.iter().find(|l| l.name == "global").unwrap();
    assert_eq!(global.used, 2);
}

#[test]
fn a_request_for_a_free_limit_is_not_blocked_behind_one_waiting_on_a_full_limit() {
    let mut tc = tc(BM);
    for _ in 0..2 {
        tc.submit(ms(0), Request::http("POST", "/ws/listings/1")).unwrap();
    }
    let blocked = tc.submit(ms(0), Request::http("POST", "/ws/listings/2")).unwrap();
    let scan = tc.submit(ms(0), Request::http("GET", "/ws/backbox/v1/competitors/9").priority(Priority::Low)).unwrap();
    let gone = gone(&mut tc, ms(0));
    assert!(gone.contains(&scan), "LOW scan on a free limit went");
    assert!(!gone.contains(&blocked));
}

#[test]
fn a_lower_priority_request_never_takes_room_a_waiting_higher_one_needs() {
    let mut tc = tc(BM);
    // Fill catalog, and global up to 3 of 4.
    tc.submit(ms(0), Request::http("POST", "/ws/listings/1")).unwrap();
    tc.submit(ms(0), Request::http("POST", "/ws/listings/1")).unwrap();
    tc.submit(ms(0), Request::http("GET", "/other")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)).len(), 3);
    // HIGH waits on catalog, and claims the last unit of global.
    let high = tc.submit(ms(1), Request::http("POST", "/ws/listings/3").priority(Priority::High)).unwrap();
    let low = tc.submit(ms(1), Request::http("GET", "/other").priority(Priority::Low)).unwrap();
    assert_eq!(gone(&mut tc, ms(1)), vec![]);
    assert!(tc.is_waiting(low));
    // At 10 s everything leaves: HIGH first, then LOW.
    assert_eq!(gone(&mut tc, ms(10_000)), vec![high, low]);
}

#[test]
fn fifo_within_a_level() {
    let mut tc = tc(r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s","hold":"go"}},"global":["a"]}"#);
    let ids: Vec<_> = (0..4).map(|_| tc.submit(ms(0), Request::http("GET", "/x")).unwrap()).collect();
    let mut order = Vec::new();
    let mut now = ms(0);
    while order.len() < 4 {
        order.extend(gone(&mut tc, now));
        now = tc.poll_timeout().unwrap();
    }
    assert_eq!(order, ids);
}

#[test]
fn reservation_holds_capacity_and_the_follow_up_goes_at_once() {
    let mut tc = tc(BM);
    let dip = Request::http("POST", "/ws/listings/1").reserve(FollowUp::http("POST", "/ws/listings/1"));
    let Decision::Go(permit) = tc.try_acquire(ms(0), dip) else { panic!("dip") };
    assert_eq!(permit.reservations.len(), 1);
    // Catalog: 1 used + 1 reserved = full for everyone else.
    assert!(matches!(tc.try_acquire(ms(1), Request::http("POST", "/ws/listings/2")), Decision::Wait { .. }));
    let other = tc.submit(ms(1), Request::http("POST", "/ws/listings/3").priority(Priority::High)).unwrap();
    assert!(!gone(&mut tc, ms(1)).contains(&other));
    let peak = Request::http("POST", "/ws/listings/1").priority(Priority::High).spend(permit.reservations[0]);
    assert!(matches!(tc.try_acquire(ms(2), peak), Decision::Go(_)));
    assert_eq!(tc.snapshot(ms(2)).limits.iter().map(|l| l.reserved).sum::<u64>(), 0);
}

#[test]
fn reservation_expires_and_can_be_released() {
    let mut tc = tc(BM);
    let dip = Request::http("POST", "/ws/listings/1")
        .reserve(FollowUp::http("POST", "/ws/listings/1").ttl(Duration::from_secs(2)));
    let Decision::Go(p1) = tc.try_acquire(ms(0), dip.clone()) else { panic!() };
    gone(&mut tc, ms(0));
    let waiting = tc.submit(ms(0), Request::http("POST", "/ws/listings/9")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![]);
    assert_eq!(tc.poll_timeout(), Some(ms(2000)));
    let gone_at_2s = gone(&mut tc, ms(2000));
    assert_eq!(gone_at_2s, vec![waiting], "the expired reservation's room went to the waiter");
    assert!(!tc.release(ms(2000), p1.reservations[0]), "already expired");
}

/// Reservations hold the whole of limit `w`: a follow-up reserved 2 of 2.
const FULLY_RESERVED: &str = r#"{
  "limits": {"w": {"kind": "window", "max": 2, "per": "10s", "hold": "go"}, "o": {"kind": "window", "max": 5, "per": "1s", "hold": "go"}}
}"#;

fn reserve_all_of_w(tc: &mut TrafficControl) -> traffic_control_core::ReservationId {
    let mut follow_up = FollowUp::default().cost(2);
    follow_up.limits = vec!["w".into()];
    let Decision::Go(p) = tc.try_acquire(ms(0), Request::limits(["o"]).reserve(follow_up)) else { panic!() };
    gone(tc, ms(0));
    p.reservations[0]
}

#[test]
fn critical_waits_ahead_of_everyone_instead_of_breaking_a_reservation() {
    let mut tc = tc(BM);
    let dip = Request::http("POST", "/ws/listings/1").reserve(FollowUp::http("POST", "/ws/listings/1"));
    let Decision::Go(p) = tc.try_acquire(ms(0), dip) else { panic!() };
    gone(&mut tc, ms(0));
    let high = tc.submit(ms(0), Request::http("POST", "/ws/listings/8").priority(Priority::High)).unwrap();
    let revert = tc.submit(ms(0), Request::http("POST", "/ws/listings/7").priority(Priority::Critical)).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![], "catalog: 1 used + 1 reserved of 2");
    // The Peak keeps its promise.
    let peak = Request::http("POST", "/ws/listings/1").priority(Priority::High).spend(p.reservations[0]);
    assert!(matches!(tc.try_acquire(ms(1), peak), Decision::Go(_)));
    gone(&mut tc, ms(1));
    // When room frees (the Dip leaves at 10 s, the Peak at 10.001 s), CRITICAL goes first.
    assert_eq!(gone(&mut tc, ms(10_000)), vec![revert]);
    assert_eq!(gone(&mut tc, ms(10_001)), vec![high]);
}

#[test]
fn critical_uses_reserved_room_only_when_reservations_hold_the_whole_limit_and_never_exceeds_it() {
    let mut tc = tc(FULLY_RESERVED);
    let rid = reserve_all_of_w(&mut tc);
    let revert = Request::limits(["w"]).priority(Priority::Critical);
    assert!(matches!(tc.try_acquire(ms(0), Request::limits(["w"]).priority(Priority::High)), Decision::Wait { .. }));
    assert!(matches!(tc.try_acquire(ms(0), revert.clone()), Decision::Go(_)), "uses the reserved room");
    assert!(matches!(tc.try_acquire(ms(0), revert.clone()), Decision::Go(_)));
    assert!(matches!(tc.try_acquire(ms(0), revert), Decision::Wait { .. }), "never the hard limit");
    gone(&mut tc, ms(0));
    // The follow-up (a CRITICAL intervened) now waits for room, ahead of everyone.
    let follow_up = tc.submit(ms(0), Request::limits(["w"]).cost(2).spend(rid)).unwrap();
    let crit = tc.submit(ms(0), Request::limits(["w"]).priority(Priority::Critical)).unwrap();
    assert_eq!(gone(&mut tc, ms(10_000)), vec![follow_up]);
    assert_eq!(gone(&mut tc, ms(20_000)), vec![crit]);
}

#[test]
fn never_wait_forever() {
    let mut tc = tc(BM);
    let err = tc.submit(ms(0), Request::http("POST", "/ws/listings/1").cost(3)).unwrap_err();
    assert_eq!(err, RequestError::CostExceedsCapacity { limit: "catalog".into(), cost: 3, capacity: 2 });
    assert!(err.to_string().contains("catalog"));
    let err = tc
        .submit(
            ms(0),
            Request::http("POST", "/ws/listings/1").reserve(FollowUp::http("POST", "/ws/listings/1").cost(2)),
        )
        .unwrap_err();
    assert_eq!(err.code(), "COST_EXCEEDS_CAPACITY", "the request and its reservation together exceed catalog");
    assert_eq!(tc.submit(ms(0), Request::route("nope")).unwrap_err().code(), "UNKNOWN_ROUTE");
    assert_eq!(tc.submit(ms(0), Request::limits(["nope"])).unwrap_err().code(), "UNKNOWN_LIMIT");
    assert_eq!(tc.submit(ms(5), Request::http("GET", "/").deadline(ms(4))).unwrap_err().code(), "DEADLINE_EXCEEDED");
    // Fill catalog; a request that could only go at 10 s with a deadline at 5 s fails at once.
    tc.submit(ms(5), Request::http("POST", "/ws/listings/1")).unwrap();
    tc.submit(ms(5), Request::http("POST", "/ws/listings/1")).unwrap();
    let err = tc.submit(ms(5), Request::http("POST", "/ws/listings/1").deadline(ms(5000))).unwrap_err();
    assert!(matches!(err, RequestError::DeadlineUnreachable { earliest, .. } if earliest == ms(10_005)), "{err}");
}

#[test]
fn deadline_expires_while_waiting_and_the_queue_is_bounded() {
    let mut tc = tc(r#"{"limits":{"c":{"kind":"concurrency","max":1}},"global":["c"],"queue":{"max_waiting":2}}"#);
    let first = tc.submit(ms(0), Request::http("GET", "/")).unwrap();
    let late = tc.submit(ms(0), Request::http("GET", "/").deadline(ms(50))).unwrap();
    tc.submit(ms(0), Request::http("GET", "/")).unwrap();
    assert_eq!(tc.submit(ms(0), Request::http("GET", "/")).unwrap_err().code(), "QUEUE_FULL");
    assert_eq!(gone(&mut tc, ms(0)), vec![first]);
    assert_eq!(tc.poll_timeout(), Some(Timestamp::from_nanos(ms(50).as_nanos() + 1)));
    let mut expired = vec![];
    while let Some(e) = tc.poll(ms(51)) {
        if let EventKind::Expired { .. } = e.kind {
            expired.push(e.request);
        }
    }
    assert_eq!(expired, vec![late]);
}

#[test]
fn concurrency_slot_is_held_until_completion_or_lease_expiry() {
    let mut tc = tc(r#"{"limits":{"c":{"kind":"concurrency","max":1}},"global":["c"],"lease_ttl":"5s"}"#);
    let a = tc.submit(ms(0), Request::http("GET", "/")).unwrap();
    let b = tc.submit(ms(0), Request::http("GET", "/")).unwrap();
    let c = tc.submit(ms(0), Request::http("GET", "/")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![a]);
    let _ = tc.complete(ms(10), a, Outcome::status(200));
    assert_eq!(gone(&mut tc, ms(10)), vec![b]);
    // b is never completed: its lease expires at 5.01 s and c goes.
    assert_eq!(tc.poll_timeout(), Some(ms(5010)));
    assert_eq!(gone(&mut tc, ms(5010)), vec![c]);
    assert!(tc.cancel(ms(5011), c));
    assert!(!tc.cancel(ms(5011), c));
}

#[test]
fn token_bucket_refills_continuously() {
    let mut tc = tc(r#"{"limits":{"b":{"kind":"token_bucket","capacity":2,"refill":1,"per":"500ms"}},"global":["b"]}"#);
    let ids: Vec<_> = (0..4).map(|_| tc.submit(ms(0), Request::http("GET", "/")).unwrap()).collect();
    assert_eq!(gone(&mut tc, ms(0)), ids[..2].to_vec());
    assert_eq!(tc.poll_timeout(), Some(ms(500)));
    assert_eq!(gone(&mut tc, ms(500)), vec![ids[2]]);
    assert_eq!(gone(&mut tc, ms(1000)), vec![ids[3]]);
}

#[test]
fn events_never_show_query_values() {
    let mut drop = tc(r#"{"limits":{"a":{"kind":"window","max":5,"per":"1s","hold":"go"}},"global":["a"]}"#);
    drop.submit(ms(0), Request::http("get", "https://api.keepa.com/product?key=SECRET&asin=B0")).unwrap();
    let e = drop.poll(ms(0)).unwrap();
    assert_eq!(e.endpoint(), "GET /product");
    let mut redact = tc(
        r#"{"limits":{"a":{"kind":"window","max":5,"per":"1s","hold":"go"}},"global":["a"],"events":{"query":"redact"}}"#,
    );
    redact.submit(ms(0), Request::http("GET", "https://api.keepa.com/product?key=SECRET&asin=B0")).unwrap();
    let e = redact.poll(ms(0)).unwrap();
    assert_eq!(e.endpoint(), "GET /product?key=REDACTED&asin=REDACTED");
    let row = serde_json::to_string(&e.log()).unwrap();
    assert!(!row.contains("SECRET"), "{row}");
    assert!(row.contains(r#""status":"go""#), "{row}");
}

#[test]
fn completed_event_carries_status_and_duration() {
    let mut tc = tc(BM);
    let Decision::Go(p) = tc.try_acquire(ms(0), Request::http("POST", "/ws/listings/1")) else { panic!() };
    let _ = tc.complete(ms(120), p.request, Outcome::status(201));
    let events: Vec<_> = std::iter::from_fn(|| tc.poll(ms(120))).collect();
    let done = events.iter().find(|e| e.status() == "completed").unwrap();
    let row = done.log();
    assert_eq!(row.response_status, Some(201));
    assert_eq!(row.duration_ms, Some(120.0));
    assert_eq!(row.route, Some("listings"));
}

#[test]
fn wait_never_names_now_and_counts_reservation_expiry() {
    let mut tc = tc(r#"{"limits":{"cat":{"kind":"window","max":2,"per":"10s","hold":"go"}},"global":["cat"]}"#);
    let dip = Request::limits(Vec::<String>::new()).reserve(FollowUp::default().ttl(Duration::from_secs(2)));
    assert!(matches!(tc.try_acquire(ms(0), dip), Decision::Go(_)));
    // Events are pending (not drained): the answer must still be a real instant, not `now`.
    let d = tc.try_acquire(ms(0), Request::default());
    assert_eq!(d, Decision::Wait { until: Some(ms(2000)) }, "the reservation expires at 2 s");
    gone(&mut tc, ms(0));
    // A deadline reachable once the reservation expires is not refused.
    let id = tc.submit(ms(0), Request::default().deadline(ms(5000))).unwrap();
    assert_eq!(gone(&mut tc, ms(2000)), vec![id]);
}

#[test]
fn snapshot_counts_a_waiting_follow_up_under_its_own_priority() {
    let mut tc = tc(FULLY_RESERVED);
    let rid = reserve_all_of_w(&mut tc);
    assert!(matches!(tc.try_acquire(ms(0), Request::limits(["w"]).priority(Priority::Critical)), Decision::Go(_)));
    tc.submit(ms(0), Request::limits(["w"]).cost(2).priority(Priority::High).spend(rid)).unwrap();
    assert_eq!(tc.snapshot(ms(0)).waiting, [0, 1, 0, 0]);
}

const KEEPA: &str = r#"{
  "limits": {"tokens": {"kind": "budget", "refill": 20, "per": "1m", "max": 1200, "floor": 10}},
  "routes": [
    {"name": "token", "path": "^/token", "limits": [{"limit": "tokens", "cost": 0}]},
    {"name": "bestsellers", "path": "^/bestsellers", "limits": [{"limit": "tokens", "cost": 50}]},
    {"name": "product", "path": "^/product", "limits": ["tokens"]}
  ]
}"#;

#[test]
fn a_budget_is_unknown_until_synced_and_status_requests_are_free() {
    let mut tc = tc(KEEPA);
    assert_eq!(tc.submit(ms(0), Request::http("GET", "/product?asin=B0")).unwrap_err().code(), "BUDGET_UNKNOWN");
    // The status endpoint costs nothing: it goes without a known balance.
    assert!(matches!(tc.try_acquire(ms(0), Request::http("GET", "/token?key=k")), Decision::Go(_)));
    tc.sync_budget(ms(0), "tokens", 70, Some(Duration::from_secs(30))).unwrap();
    let snap = tc.snapshot(ms(0));
    assert_eq!(snap.limits[0].balance, Some(70));
    assert_eq!(snap.limits[0].available, 60, "70 left, floor 10");
    assert_eq!(tc.sync_budget(ms(0), "nope", 1, None).unwrap_err().code(), "UNKNOWN_LIMIT");
}

#[test]
fn a_budget_waits_for_refill_within_the_allowed_wait_and_refuses_beyond() {
    let mut tc = tc(KEEPA);
    tc.sync_budget(ms(0), "tokens", 40, Some(Duration::from_secs(30))).unwrap();
    // 50 needed, 30 spendable: the refill at 30 s brings 50 spendable.
    let ok = tc.submit(ms(0), Request::http("GET", "/bestsellers").deadline(ms(31_000))).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![]);
    assert_eq!(gone(&mut tc, ms(30_000)), vec![ok]);
    // Now 10 left (the floor): 50 more needs three refills (at 90 s, 150 s, 210 s).
    let err = tc.submit(ms(30_000), Request::http("GET", "/bestsellers").deadline(ms(60_000))).unwrap_err();
    assert_eq!(
        err,
        RequestError::InsufficientBudget {
            limit: "tokens".into(),
            needed: 50,
            available: 0,
            ahead: 0,
            enough_at: Some(ms(210_000))
        }
    );
    assert!(err.to_string().contains("needs 50, 0 available"), "{err}");
    // Never below the floor: a product request waits for the next refill.
    assert!(
        matches!(tc.try_acquire(ms(30_000), Request::http("GET", "/product")), Decision::Wait { until: Some(t) } if t == ms(90_000))
    );
}

#[test]
fn the_server_balance_wins_even_when_negative() {
    let mut tc = tc(KEEPA);
    tc.sync_budget(ms(0), "tokens", -31, Some(Duration::from_secs(60))).unwrap();
    // 31 below zero plus the floor 10 plus 1: three refills of 20.
    assert!(
        matches!(tc.try_acquire(ms(0), Request::http("GET", "/product")), Decision::Wait { until: Some(t) } if t == ms(180_000))
    );
}

#[test]
fn route_cost_counts_the_items_of_a_query_parameter() {
    let mut tc = TrafficControl::new(Config::preset("keepa").unwrap()).unwrap();
    tc.sync_budget(ms(0), "tokens", 1200, None).unwrap();
    let used = |tc: &mut TrafficControl| tc.snapshot(ms(0)).limits[0].used;
    let _ = tc.try_acquire(ms(0), Request::http("GET", "/product?key=SECRET&domain=1&asin=B01,B02,B03"));
    assert_eq!(used(&mut tc), 3, "1 per ASIN");
    let many: Vec<String> = (0..150).map(|i| format!("A{i}")).collect();
    let _ = tc.try_acquire(ms(0), Request::http("GET", format!("/product?asin={}", many.join("%2C"))));
    assert_eq!(used(&mut tc), 153, "encoded commas counted");
    let _ = tc.try_acquire(ms(0), Request::http("GET", "/product?asin=B01,B02").cost(7));
    assert_eq!(used(&mut tc), 160, "an explicit cost wins");
}

const BM_FEEDBACK: &str = r#"{
  "limits": {"global": {"kind": "window", "max": 100, "per": "10s", "hold": "go"}},
  "global": ["global"],
  "feedback": {"block": "10s", "max_retries": 2, "jitter": 0}
}"#;

#[test]
fn a_429_pauses_the_limits_as_long_as_the_server_says_and_retries_at_the_same_priority() {
    let mut tc = tc(BM_FEEDBACK);
    let id = tc.submit(ms(0), Request::http("GET", "/ws/orders").priority(Priority::High)).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![id]);
    let c = tc.complete(ms(100), id, Outcome::status(429).header("Retry-After", "3"));
    assert_eq!(c, traffic_control_core::Completion::Retry { at: ms(3100) });
    let other = tc.submit(ms(200), Request::http("GET", "/ws/other")).unwrap();
    // Nothing goes before the pause ends, never shorter; the retry (HIGH) goes first.
    assert_eq!(gone(&mut tc, ms(3099)), vec![]);
    assert_eq!(gone(&mut tc, ms(3100)), vec![id, other]);
    let kinds: Vec<_> = {
        let _ = tc.complete(ms(3200), id, Outcome::status(200));
        std::iter::from_fn(|| tc.poll(ms(3200))).map(|e| e.status()).collect()
    };
    assert_eq!(kinds, vec!["completed"]);
}

#[test]
fn repeated_429s_back_off_then_give_up() {
    let mut tc = tc(BM_FEEDBACK);
    let id = tc.submit(ms(0), Request::http("GET", "/x")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![id]);
    // No Retry-After: the configured block, doubled on each repeat.
    assert_eq!(
        tc.complete(ms(0), id, Outcome::status(429)),
        traffic_control_core::Completion::Retry { at: ms(10_000) }
    );
    assert_eq!(gone(&mut tc, ms(10_000)), vec![id]);
    assert_eq!(
        tc.complete(ms(10_000), id, Outcome::status(429)),
        traffic_control_core::Completion::Retry { at: ms(30_000) }
    );
    assert_eq!(gone(&mut tc, ms(30_000)), vec![id]);
    assert_eq!(tc.complete(ms(30_000), id, Outcome::status(429)), traffic_control_core::Completion::GiveUp);
    // A later success clears the backoff.
    let next = tc.submit(ms(70_000), Request::http("GET", "/x")).unwrap();
    assert_eq!(gone(&mut tc, ms(70_000)), vec![next]);
    assert_eq!(tc.complete(ms(70_000), next, Outcome::status(200)), traffic_control_core::Completion::Done);
}

#[test]
fn keepa_fields_reconcile_the_budget_counting_requests_still_in_flight() {
    let mut tc = TrafficControl::new(Config::preset("keepa").unwrap()).unwrap();
    tc.sync_budget(ms(0), "tokens", 100, None).unwrap();
    let Decision::Go(a) = tc.try_acquire(ms(0), Request::http("GET", "/product?asin=A,B")) else { panic!() };
    let Decision::Go(_b) = tc.try_acquire(ms(0), Request::http("GET", "/bestsellers?category=1")) else { panic!() };
    // The server processed only `a` (true cost 3, not the estimated 2): 97 left. `b` (50) is still
    // in flight, so the guard counts 47, never more than the server said.
    let body = r#"{"tokensLeft":97,"refillIn":20000,"refillRate":20,"tokensConsumed":3,"timestamp":1}"#;
    assert_eq!(tc.complete(ms(10), a.request, Outcome::status(200).body(body)), traffic_control_core::Completion::Done);
    assert_eq!(tc.snapshot(ms(10)).limits[0].balance, Some(47));
    // NOT_ENOUGH_TOKEN pauses the budget until the refill the server names.
    let Decision::Go(c) = tc.try_acquire(ms(10), Request::http("GET", "/product?asin=A")) else { panic!() };
    let body = r#"{"error":{"type":"NOT_ENOUGH_TOKEN"},"tokensLeft":-2,"refillIn":5000,"refillRate":20}"#;
    let done = tc.complete(ms(20), c.request, Outcome::status(429).body(body));
    assert_eq!(done, traffic_control_core::Completion::Retry { at: ms(5020) });
}

#[test]
fn keepa_extras_add_per_asin_costs() {
    let mut tc = TrafficControl::new(Config::preset("keepa").unwrap()).unwrap();
    tc.sync_budget(ms(0), "tokens", 1200, None).unwrap();
    let used = |tc: &mut TrafficControl| tc.snapshot(ms(0)).limits[0].used;
    // 2 ASINs with buybox (+2 each) and 20 offers (+6 per started 10, so +12 each): 2 x 15.
    let _ = tc.try_acquire(ms(0), Request::http("GET", "/product?asin=A,B&buybox=1&offers=20"));
    assert_eq!(used(&mut tc), 30);
    // buybox=0 and no offers: 1 per ASIN.
    let _ = tc.try_acquire(ms(0), Request::http("GET", "/product?asin=C&buybox=0"));
    assert_eq!(used(&mut tc), 31);
}

#[test]
fn a_limit_may_have_its_own_block() {
    let mut tc = tc(r#"{
      "limits": {"global": {"kind": "window", "max": 100, "per": "10s", "hold": "go"}, "competitor": {"kind": "window", "max": 2, "per": "1s", "hold": "go"}},
      "global": ["global"],
      "routes": [{"name": "competitor", "path": "^/competitors", "limits": ["competitor"]}],
      "feedback": {"block": "2s", "blocks": {"competitor": "10s"}, "jitter": 0}
    }"#);
    let id = tc.submit(ms(0), Request::http("GET", "/competitors/1")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![id]);
    assert_eq!(
        tc.complete(ms(0), id, Outcome::status(429)),
        traffic_control_core::Completion::Retry { at: ms(10_000) }
    );
    // The 429 points at the route's own limit: global is not paused, other routes go on.
    let other = tc.submit(ms(0), Request::http("GET", "/orders")).unwrap();
    assert_eq!(gone(&mut tc, ms(0)), vec![other]);
    // A 429 on a route with no narrower limit pauses global, for its own block.
    assert_eq!(
        tc.complete(ms(0), other, Outcome::status(429)),
        traffic_control_core::Completion::Retry { at: ms(2_000) }
    );
    assert_eq!(gone(&mut tc, ms(1_999)), vec![]);
    assert_eq!(gone(&mut tc, ms(2_000)), vec![other], "global's own block is 2 s");
    assert_eq!(gone(&mut tc, ms(10_000)), vec![id]);
    let bad = Config::from_json(
        r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s","hold":"go"}},"feedback":{"blocks":{"b":"1s"}}}"#,
    );
    assert!(bad.unwrap_err().to_string().contains("feedback.blocks.b"));
}

/// With the event log off, every decision still reaches the host: admissions made at once by their
/// return value, the permits of requests that waited (and of submits that reserved) by their Go,
/// failures by Rejected and Expired; nothing else is queued up.
#[test]
fn without_the_event_log_the_decisions_are_the_same() {
    let config = r#"{"limits":{"api":{"kind":"window","max":2,"per":"1s","hold":"go"},"slots":{"kind":"concurrency","max":8}},
                     "global":["api","slots"]}"#;
    let run = |log: bool| {
        let mut tc = tc(config);
        tc.set_event_log(log);
        let (mut decisions, mut at_once, mut reservations, mut others) = (Vec::new(), Vec::new(), Vec::new(), 0);
        let mut drain =
            |tc: &mut TrafficControl, now: Timestamp, decisions: &mut Vec<String>, at_once: &[RequestId]| {
                while let Some(e) = tc.poll(now) {
                    match e.kind {
                        EventKind::Go { permit, .. } if !permit.reservations.is_empty() => {
                            reservations.push(permit.reservations)
                        }
                        EventKind::Go { permit, .. } if !at_once.contains(&permit.request) => {
                            decisions.push(format!("{}: {} go", now.as_millis_f64(), permit.request.0))
                        }
                        EventKind::Expired { .. } => {
                            decisions.push(format!("{}: {} expired", now.as_millis_f64(), e.request.0))
                        }
                        EventKind::Go { .. } | EventKind::Rejected { .. } => {}
                        _ => others += 1,
                    }
                }
            };
        for (i, t) in [0u64, 0, 0, 0, 10, 500, 1000, 1000, 1500, 2100].into_iter().enumerate() {
            let now = ms(t);
            let mut request = Request::default().priority(if i % 3 == 0 { Priority::High } else { Priority::Low });
            match i {
                4 => request = request.deadline(ms(1000)),
                6 => request = request.reserve(FollowUp::http("POST", "/peak")),
                8 => request = request.cost(5),
                _ => {}
            }
            match tc.submit(now, &request) {
                Ok(id) if !tc.is_waiting(id) => {
                    at_once.push(id);
                    decisions.push(format!("{t}: {} at once", id.0));
                }
                Ok(_) => {}
                Err(e) => decisions.push(format!("{t}: refused {}", e.code())),
            }
            if i % 2 == 1 {
                let _ = tc.complete(now, RequestId(i as u64), Outcome::status(200));
            }
            drain(&mut tc, now, &mut decisions, &at_once);
        }
        while let Some(t) = tc.poll_timeout().filter(|_| tc.waiting() > 0) {
            drain(&mut tc, t, &mut decisions, &at_once);
        }
        (decisions, reservations, others)
    };
    let (logged, reserved_logged, others_logged) = run(true);
    let (silent, reserved_silent, others_silent) = run(false);
    assert_eq!(silent, logged);
    assert_eq!(reserved_silent, reserved_logged, "a submit that reserved still gets its Go");
    assert_eq!(reserved_silent.len(), 1);
    assert!(others_logged > 0);
    assert_eq!(others_silent, 0, "only decisions come out without the log");
    assert!(logged.iter().any(|d| d.contains("go")) && logged.iter().any(|d| d.contains("expired")));
    assert!(logged.iter().any(|d| d.contains("refused COST_EXCEEDS_CAPACITY")));
}

// ---- every parsed signal decides -------------------------------------------------------------

/// Routes with their own windows under a global one, feedback without jitter.
const SIGNALS: &str = r#"{
  "limits": {
    "global":  {"kind": "window", "max": 100, "per": "60s", "hold": "go"},
    "catalog": {"kind": "window", "max": 10,  "per": "10s", "hold": "go"},
    "hourly":  {"kind": "window", "max": 500, "per": "1h",  "hold": "go"}
  },
  "global": ["global"],
  "routes": [
    {"name": "listings", "path": "^/ws/listings", "limits": ["catalog"]},
    {"name": "ingestion", "path": "^/ws/ingest", "limits": ["catalog", "hourly"]}
  ],
  "feedback": {"block": "2s", "max_retries": 3, "jitter": 0}
}"#;

fn signals() -> TrafficControl {
    tc(SIGNALS)
}

/// The pause a snapshot shows on `limit` at `now`: (until, server_until, reason, strikes).
fn pause_of(tc: &mut TrafficControl, now: Timestamp, limit: &str) -> Option<(Timestamp, Timestamp, &'static str, u32)> {
    let snap = tc.snapshot(now);
    let l = snap.limits.iter().find(|l| l.name == limit).unwrap();
    l.pause.as_ref().map(|p| (p.until, p.server_until, p.reason, p.strikes))
}

fn capacity_of(tc: &mut TrafficControl, now: Timestamp, limit: &str) -> u64 {
    tc.snapshot(now).limits.iter().find(|l| l.name == limit).unwrap().capacity
}

fn go_now(tc: &mut TrafficControl, now: Timestamp, req: Request) -> RequestId {
    match tc.try_acquire(now, req) {
        Decision::Go(p) => p.request,
        other => panic!("expected go, got {other:?}"),
    }
}

#[test]
fn a_429_with_only_a_reset_pauses_until_the_reset_in_each_header_form() {
    let forms: [&[(&str, &str)]; 4] = [
        &[("X-RateLimit-Reset", "30")],
        &[("RateLimit-Reset", "30")],
        &[("RateLimit", "\"default\";r=0;t=30"), ("RateLimit-Policy", "\"default\";q=10;w=10")],
        &[("RateLimit", "limit=10, remaining=0, reset=30")],
    ];
    for headers in forms {
        let mut tc = signals();
        let id = go_now(&mut tc, ms(0), Request::http("POST", "/ws/listings/1"));
        let mut outcome = Outcome::status(429);
        for (k, v) in headers {
            outcome = outcome.header(*k, *v);
        }
        let c = tc.complete(ms(100), id, outcome);
        assert_eq!(c, traffic_control_core::Completion::Retry { at: ms(30_100) }, "{headers:?}");
        assert_eq!(
            pause_of(&mut tc, ms(100), "catalog"),
            Some((ms(30_100), ms(30_100), "retry_after", 1)),
            "{headers:?}"
        );
        assert_eq!(pause_of(&mut tc, ms(100), "global"), None, "{headers:?}");
    }
}

#[test]
fn a_success_saying_the_quota_is_used_up_pauses_until_the_reset() {
    let mut tc = signals();
    let id = go_now(&mut tc, ms(0), Request::http("POST", "/ws/listings/1"));
    let outcome = Outcome::status(200).header("X-RateLimit-Remaining", "0").header("X-RateLimit-Reset", "5");
    assert_eq!(tc.complete(ms(100), id, outcome), traffic_control_core::Completion::Done, "not a retry");
    let kinds: Vec<_> = std::iter::from_fn(|| tc.poll(ms(100))).map(|e| e.status()).collect();
    assert_eq!(kinds, ["go", "completed"], "not rate limited");
    // The route's own window is paused until the reset, not a strike; global is not.
    assert_eq!(pause_of(&mut tc, ms(100), "catalog"), Some((ms(5_100), ms(5_100), "exhausted", 0)));
    assert_eq!(pause_of(&mut tc, ms(100), "global"), None);
    let req = Request::http("POST", "/ws/listings/2");
    assert_eq!(tc.try_acquire(ms(100), &req), Decision::Wait { until: Some(ms(5_100)) });
    assert!(matches!(tc.try_acquire(ms(100), Request::http("GET", "/ws/orders")), Decision::Go(_)));
    // The pause is the server's: CRITICAL waits for it too.
    let critical = req.clone().priority(Priority::Critical);
    assert_eq!(tc.try_acquire(ms(100), &critical), Decision::Wait { until: Some(ms(5_100)) });
    // A 429 after it is a first strike: the exhausted answer counted none.
    let id = go_now(&mut tc, ms(5_100), req.clone());
    let _ = tc.complete(ms(5_200), id, Outcome::status(429));
    assert_eq!(pause_of(&mut tc, ms(5_200), "catalog"), Some((ms(7_200), ms(7_200), "block", 1)));
    // With some quota left, or no reset, a success pauses nothing.
    let mut tc = signals();
    let id = go_now(&mut tc, ms(0), req.clone());
    let _ = tc.complete(
        ms(0),
        id,
        Outcome::status(200).header("X-RateLimit-Remaining", "1").header("X-RateLimit-Reset", "5"),
    );
    let id2 = go_now(&mut tc, ms(0), req.clone());
    let _ = tc.complete(ms(0), id2, Outcome::status(200).header("X-RateLimit-Remaining", "0"));
    assert_eq!(pause_of(&mut tc, ms(0), "catalog"), None);
}

#[test]
fn a_smaller_quota_lowers_the_window_it_names_and_never_raises_it() {
    let mut tc = signals();
    let listing = Request::http("POST", "/ws/listings/1");
    let id = go_now(&mut tc, ms(0), listing.clone());
    let _ = tc.poll(ms(0));
    // `RateLimit-Policy` q=4;w=10: the 10 s window of the route (catalog, not global).
    let outcome = Outcome::status(200).header("RateLimit-Policy", "\"burst\";q=4;w=10");
    assert_eq!(tc.complete(ms(10), id, outcome), traffic_control_core::Completion::Done);
    let events: Vec<_> = std::iter::from_fn(|| tc.poll(ms(10))).map(|e| e.kind).collect();
    assert_eq!(events[1], EventKind::LimitLowered { limit: "catalog".into(), from: 10, to: 4 }, "{events:?}");
    assert_eq!(capacity_of(&mut tc, ms(10), "catalog"), 4);
    assert_eq!(capacity_of(&mut tc, ms(10), "global"), 100);
    // It holds 4 in any 10 s now: 3 more go, the fifth waits.
    for _ in 0..3 {
        go_now(&mut tc, ms(10), listing.clone());
    }
    assert_eq!(tc.try_acquire(ms(10), &listing), Decision::Wait { until: Some(ms(10_000)) });
    // A larger report never raises it; `X-RateLimit-Limit` (no window) lowers the route's own window.
    let id = go_now(&mut tc, ms(10_000), listing.clone());
    let _ = tc.complete(ms(10_000), id, Outcome::status(200).header("X-RateLimit-Limit", "8"));
    assert_eq!(capacity_of(&mut tc, ms(10_000), "catalog"), 4);
    let id = go_now(&mut tc, ms(10_010), listing.clone());
    let _ = tc.complete(ms(10_010), id, Outcome::status(200).header("RateLimit-Limit", "3"));
    assert_eq!(capacity_of(&mut tc, ms(10_010), "catalog"), 3);
    // A request costing more than the lowered max can never go.
    let e = tc.submit(ms(10_010), listing.clone().cost(4)).unwrap_err();
    assert_eq!(e.code(), "COST_EXCEEDS_CAPACITY");
}

#[test]
fn a_quota_for_one_of_several_windows_or_a_window_no_limit_has_lowers_nothing() {
    let mut tc = signals();
    // The ingestion route has two own windows (10 s and 1 h): a bare limit is ambiguous.
    let id = go_now(&mut tc, ms(0), Request::http("POST", "/ws/ingest"));
    let _ = tc.complete(ms(0), id, Outcome::status(200).header("X-RateLimit-Limit", "5"));
    assert_eq!((capacity_of(&mut tc, ms(0), "catalog"), capacity_of(&mut tc, ms(0), "hourly")), (10, 500));
    // With its window named, the quota is the hourly one's.
    let id = go_now(&mut tc, ms(0), Request::http("POST", "/ws/ingest"));
    let _ = tc.complete(ms(0), id, Outcome::status(200).header("RateLimit-Policy", "300;w=3600"));
    assert_eq!((capacity_of(&mut tc, ms(0), "catalog"), capacity_of(&mut tc, ms(0), "hourly")), (10, 300));
    // A window length no limit has lowers nothing.
    let id = go_now(&mut tc, ms(0), Request::http("POST", "/ws/listings/1"));
    let _ = tc.complete(ms(0), id, Outcome::status(200).header("RateLimit-Policy", "1;w=30"));
    assert_eq!(capacity_of(&mut tc, ms(0), "catalog"), 10);
    // A route with no window of its own: the global one.
    let id = go_now(&mut tc, ms(0), Request::http("GET", "/ws/orders"));
    let _ = tc.complete(ms(0), id, Outcome::status(200).header("X-RateLimit-Limit", "50"));
    assert_eq!(capacity_of(&mut tc, ms(0), "global"), 50);
}

#[test]
fn waiters_that_a_lowered_window_can_no_longer_hold_are_refused() {
    let mut tc = signals();
    let listing = Request::http("POST", "/ws/listings/1");
    let first = go_now(&mut tc, ms(0), listing.clone().cost(5));
    let big = tc.submit(ms(0), listing.clone().cost(6)).unwrap();
    let small = tc.submit(ms(0), listing.clone().cost(2)).unwrap();
    let _ = std::iter::from_fn(|| tc.poll(ms(0))).count();
    let _ = tc.complete(ms(10), first, Outcome::status(200).header("X-RateLimit-Limit", "5"));
    let events: Vec<_> = std::iter::from_fn(|| tc.poll(ms(10))).collect();
    let rejected: Vec<_> = events.iter().filter(|e| e.status() == "rejected").map(|e| e.request).collect();
    assert_eq!(rejected, vec![big]);
    assert!(tc.is_waiting(small));
    let Some(EventKind::Rejected { error }) = events.iter().find(|e| e.request == big).map(|e| e.kind.clone()) else {
        panic!()
    };
    assert_eq!(error, RequestError::CostExceedsCapacity { limit: "catalog".into(), cost: 6, capacity: 5 });
}

#[test]
fn a_host_back_late_expires_a_waiter_whose_deadline_passed_before_room_freed() {
    // One slot; a permit never completed gives it back when its lease lapses, at 1 s.
    let json = r#"{"limits":{"slots":{"kind":"concurrency","max":1}},"global":["slots"],"lease_ttl":"1s"}"#;
    let mut c = tc(json);
    let a = c.submit(ms(0), Request::http("GET", "/a")).unwrap();
    assert_eq!(gone(&mut c, ms(0)), vec![a]);
    // b may wait until 500 ms, d until 2 s.
    let b = c.submit(ms(0), Request::http("GET", "/b").deadline(ms(500))).unwrap();
    let d = c.submit(ms(0), Request::http("GET", "/d").deadline(ms(2_000))).unwrap();
    let _ = gone(&mut c, ms(0));
    // The host sleeps through b's deadline and the lease's end, and polls at 1.5 s.
    let mut went = Vec::new();
    let mut expired = Vec::new();
    while let Some(e) = c.poll(ms(1_500)) {
        match e.kind {
            EventKind::Go { permit, .. } => went.push(permit.request),
            EventKind::Expired { .. } => expired.push(e.request),
            _ => {}
        }
    }
    assert_eq!(expired, vec![b], "b could never go before its deadline: the slot freed only at 1 s");
    assert_eq!(went, vec![d], "d could go at 1 s, within its deadline: it goes now, late but as on time");
}
