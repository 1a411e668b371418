//! Tenants served by weight within a priority (`Config::tenants`), checked on random multi-tenant
//! workloads on a fake clock by a model written here:
//!
//! 1. among tenants that are all still waiting, the admissions out of the queue split by weight:
//!    at every admission, `n_i / w_i` and `n_j / w_j` differ by at most `1 / w_i + 1 / w_j`
//!    (start-time fair queuing's bound, one request each);
//! 2. a tenant that arrives with one request while the others wait with floods goes after at most
//!    one request of each other tenant;
//! 3. priorities still come first, the window is never exceeded, and every request goes;
//! 4. without tenants the order is arrival order.

mod support;

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use traffic_control_core::{
    Config, Event, EventKind, Outcome, Priority, Request, RequestId, Timestamp, TrafficControl,
};

const MS: u64 = 1_000_000;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * MS)
}

#[derive(Debug, Clone)]
struct Workload {
    /// Weights of the named tenants (t0, t1, ...); the default class has weight 1.
    weights: Vec<u32>,
    /// Each tenant's flood at 0 ms (`None`: the default class, `Some(i)`: t<i>).
    floods: Vec<(Option<usize>, usize)>,
    /// A late tenant's single request: which tenant and when (ms), and its priority.
    late: Option<(usize, u64, u8)>,
    max: u64,
}

fn workload() -> impl Strategy<Value = Workload> {
    (proptest::collection::vec(1u32..6, 2..5), 1u64..4).prop_flat_map(|(weights, max)| {
        let n = weights.len();
        (
            Just(weights),
            proptest::collection::vec((proptest::option::weighted(0.85, 0..n), 5usize..60), 2..6),
            proptest::option::weighted(0.6, (0..n, 100u64..3_000, 0u8..4)),
            Just(max),
        )
            .prop_map(|(weights, floods, late, max)| Workload { weights, floods, late, max })
    })
}

fn config(w: &Workload, with_tenants: bool) -> Config {
    let tenants: Vec<String> =
        w.weights.iter().enumerate().map(|(i, w)| format!(r#""t{i}": {{ "weight": {w} }}"#)).collect();
    let tenants = if with_tenants { format!(r#", "tenants": {{ {} }}"#, tenants.join(", ")) } else { String::new() };
    Config::from_json(&format!(
        r#"{{ "limits": {{ "api": {{ "kind": "window", "max": {}, "per": "100ms", "hold": "go" }} }}, "global": ["api"]{tenants} }}"#,
        w.max
    ))
    .unwrap()
}

type Who = HashMap<RequestId, (Option<usize>, Priority)>;

/// The goes in order (instant ms, request), whom each request is for, and the late request with
/// the number of goes before its submission and its instant.
type Run = (Vec<(u64, RequestId)>, Who, Option<(RequestId, usize, u64)>);

/// Runs the workload; returns the goes in order (instant ms, request), whom each request is for,
/// and the late request with the number of goes before it was submitted.
fn run(w: &Workload, with_tenants: bool) -> Run {
    let mut tc = TrafficControl::new(config(w, with_tenants)).unwrap();
    let mut who = HashMap::new();
    let mut goes = Vec::new();
    for &(tenant, n) in &w.floods {
        for _ in 0..n {
            let mut r = Request::http("GET", "/x").priority(Priority::Normal);
            if let Some(i) = tenant {
                r = r.tenant(format!("t{i}"));
            }
            let id = tc.submit(t(0), r).unwrap();
            who.insert(id, (tenant, Priority::Normal));
        }
    }
    let mut now = 0;
    let mut late = w.late;
    let mut late_id = None;
    let drain = |tc: &mut TrafficControl, now: u64, goes: &mut Vec<(u64, RequestId)>| {
        while let Some(Event { request, kind, .. }) = tc.poll(t(now)) {
            if let EventKind::Go { .. } = kind {
                goes.push((now, request));
                let _ = tc.complete(t(now), request, Outcome::status(200));
            }
        }
    };
    drain(&mut tc, 0, &mut goes);
    loop {
        let next = tc.poll_timeout().map(|x| x.as_nanos().div_ceil(MS));
        let due = late.map(|(_, at, _)| at);
        now = match (next, due) {
            (Some(n), Some(d)) => n.min(d),
            (Some(n), None) => n,
            (None, Some(d)) => d,
            (None, None) => break,
        }
        .max(now);
        if let Some((tenant, _, priority)) = late.filter(|l| l.1 <= now) {
            let priority = Priority::ALL[usize::from(priority)];
            let id =
                tc.submit(t(now), Request::http("GET", "/x").priority(priority).tenant(format!("t{tenant}"))).unwrap();
            who.insert(id, (Some(tenant), priority));
            late = None;
            late_id = Some((id, goes.len(), now));
        }
        drain(&mut tc, now, &mut goes);
        if goes.len() > 10_000 {
            break;
        }
    }
    (goes, who, late_id)
}

fn weight(w: &Workload, tenant: Option<usize>) -> f64 {
    tenant.map_or(1.0, |i| f64::from(w.weights[i]))
}

fn check(w: &Workload) -> Result<(), TestCaseError> {
    let (goes, who, late) = run(w, true);
    let total: usize = w.floods.iter().map(|f| f.1).sum::<usize>() + usize::from(w.late.is_some());
    prop_assert_eq!(goes.len(), total, "every request goes");
    // The window: at most `max` goes in any 100 ms.
    for (i, &(at, _)) in goes.iter().enumerate() {
        let within = goes[i..].iter().take_while(|(b, _)| *b < at + 100).count() as u64;
        prop_assert!(within <= w.max, "{} goes within 100 ms of {} ms", within, at);
    }
    // (1) While every flooding class still waits, admissions split by weight (the late request
    // left out).
    let counted = goes.iter().filter(|g| late.is_none_or(|(l, _, _)| l != g.1)).map(|&(at, id)| (at, who[&id].0, true));
    let split = support::split_by_weight(counted, w.floods.iter().copied(), |c| weight(w, c), 1.0);
    prop_assert!(split.is_ok(), "{}", split.unwrap_err());
    let classes: HashSet<Option<usize>> = w.floods.iter().map(|f| f.0).collect();
    // (2) A newcomer (a tenant with no flood) waits behind at most one request of each other class
    // at its priority; above it, behind none; (3) below it, it waits for them all.
    if let (Some((id, submitted, at)), Some((tenant, _, _))) = (late, w.late) {
        let pos = goes.iter().position(|g| g.1 == id).expect("the late request went");
        // Goes due at the instant it arrived were the room's before it came.
        let before = goes[submitted..pos].iter().filter(|g| g.0 > at).count();
        let priority = who[&id].1;
        let newcomer = !w.floods.iter().any(|f| f.0 == Some(tenant));
        let still_waiting = goes.len() - submitted - 1;
        match priority {
            Priority::Critical | Priority::High => prop_assert!(before == 0, "{:?} waited behind {}", priority, before),
            Priority::Normal if newcomer && still_waiting > 0 => {
                let others = classes.len();
                prop_assert!(before <= others, "the newcomer waited behind {} admissions ({} classes)", before, others);
            }
            Priority::Low => {
                prop_assert!(pos == goes.len() - 1, "LOW went before a NORMAL that waited ({} of {})", pos, goes.len())
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn tenants_are_served_by_weight_and_a_newcomer_is_not_held_behind_a_flood(w in workload()) {
        check(&w)?;
    }

    #[test]
    fn without_tenants_the_order_is_arrival_order(w in workload()) {
        let (goes, who, _) = run(&w, false);
        // (The late request, at its own priority, is left out: only NORMAL requests are compared.)
        // Every NORMAL request goes in the order it was submitted (ids are drawn in order).
        let normal: Vec<RequestId> = goes.iter().map(|g| g.1).filter(|id| who[id].1 == Priority::Normal).collect();
        let mut sorted = normal.clone();
        sorted.sort();
        prop_assert_eq!(normal, sorted);
    }
}

#[test]
fn a_tenants_config_names_the_field_and_the_reason() {
    let bad =
        r#"{ "limits": { "api": { "kind": "window", "max": 1, "per": "1s" } }, "tenants": { "a": { "weight": 0 } } }"#;
    let e = Config::from_json(bad).and_then(TrafficControl::new).unwrap_err().to_string();
    assert!(e.contains("tenants.a.weight") && e.contains("1 to 1000"), "{e}");
    let typo =
        r#"{ "limits": { "api": { "kind": "window", "max": 1, "per": "1s" } }, "tenants": { "a": { "weigth": 2 } } }"#;
    let e = Config::from_json(typo).unwrap_err().to_string();
    assert!(e.contains("tenants.a") && e.contains("weigth"), "{e}");
}

#[test]
fn a_heavy_tenant_is_served_three_for_one_and_the_default_class_shares_weight_one() {
    let config = r#"{ "limits": { "api": { "kind": "window", "max": 1, "per": "10ms", "hold": "go" } }, "global": ["api"],
                      "tenants": { "big": { "weight": 3 }, "small": { "weight": 1 } } }"#;
    let mut tc = TrafficControl::new(Config::from_json(config).unwrap()).unwrap();
    let mut who = HashMap::new();
    for _ in 0..30 {
        for tenant in ["big", "small", "nobody"] {
            let id = tc.submit(t(0), Request::http("GET", "/x").tenant(tenant)).unwrap();
            who.insert(id, tenant);
        }
    }
    let mut order = Vec::new();
    let mut now = 0;
    while order.len() < 25 {
        while let Some(e) = tc.poll(t(now)) {
            if let EventKind::Go { .. } = e.kind {
                order.push(who[&e.request]);
            }
        }
        now += 10;
    }
    let count = |name: &str| order.iter().filter(|n| **n == name).count();
    // 25 admissions at weights 3 : 1 : 1 (the unnamed tenant is the default class).
    assert!((14..=16).contains(&count("big")), "{order:?}");
    assert!((4..=6).contains(&count("small")) && (4..=6).contains(&count("nobody")), "{order:?}");
}

#[test]
fn the_shared_store_serves_weights_and_refuses_shares_rather_than_ignoring_them() {
    let store = |tenants: &str| {
        let config = format!(
            r#"{{ "limits": {{ "api": {{ "kind": "window", "max": 4, "per": "1s" }} }}, "tenants": {tenants} }}"#
        );
        traffic_control_core::SharedStore::new(
            Config::from_json(&config).unwrap(),
            traffic_control_core::StoreOptions::new("acct"),
        )
    };
    assert!(store(r#"{ "a": { "weight": 2 } }"#).is_ok());
    let e = store(r#"{ "a": { "weight": 2, "guaranteed": 50 } }"#).unwrap_err().to_string();
    assert!(e.contains("tenants.a.guaranteed") && e.contains("shared store"), "{e}");
    let e = store(r#"{ "a": { "weight": 2, "borrow": 50 } }"#).unwrap_err().to_string();
    assert!(e.contains("tenants.a.borrow") && e.contains("shared store"), "{e}");
}
