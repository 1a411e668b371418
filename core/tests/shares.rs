//! Tenants' shares (`guaranteed`, `lendable`, `borrow`) on random multi-tenant workloads on a fake
//! clock with a latency model, checked from the trace of goes and completions by a model written
//! here (what the window holds is counted from the trace, never asked of the controller):
//!
//! 1. a tenant that waits gets its guaranteed share: once every guaranteed tenant's return is a
//!    window (and the longest latency) old, what the window holds of it is never below its share
//!    by more than one request;
//! 2. work conservation: after every instant, no tenant waits that the limit and the shares
//!    would let go (room beyond what is kept for the others' guaranteed shares, below its cap);
//! 3. no tenant ever holds more than its cap, and the window never holds more than its max;
//! 4. every request goes.

use std::collections::HashMap;

use proptest::prelude::*;
use traffic_control_core::{Config, Event, EventKind, Outcome, Request, RequestId, Timestamp, TrafficControl};

const MS: u64 = 1_000_000;
const PER: u64 = 100;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_nanos(ms * MS)
}

#[derive(Debug, Clone)]
struct Tenant {
    weight: u32,
    guaranteed: u32,
    lendable: u32,
    borrow: Option<u32>,
    /// Its flood: when (ms) and how many.
    at: u64,
    flood: usize,
}

#[derive(Debug, Clone)]
struct Workload {
    max: u64,
    tenants: Vec<Tenant>,
    /// The default class's flood at 0.
    default_flood: usize,
    /// Latency of the n-th go (ms), cycled.
    latency: Vec<u64>,
}

fn tenant() -> impl Strategy<Value = Tenant> {
    (
        1u32..4,
        prop_oneof![Just(0u32), Just(10), Just(20), Just(30), Just(40)],
        prop_oneof![Just(0u32), Just(50), Just(100)],
        proptest::option::weighted(0.4, prop_oneof![Just(0u32), Just(10), Just(30), Just(60)]),
        0u64..400,
        10usize..120,
    )
        .prop_map(|(weight, guaranteed, lendable, borrow, at, flood)| {
            // A cap of 0 beyond no guaranteed share could never send: the config refuses it.
            let borrow = borrow.filter(|&b| b > 0 || guaranteed > 0);
            Tenant { weight, guaranteed, lendable, borrow, at, flood }
        })
}

fn workload() -> impl Strategy<Value = Workload> {
    (10u64..31, proptest::collection::vec(tenant(), 2..5), 0usize..150, proptest::collection::vec(0u64..151, 1..40))
        .prop_map(|(max, mut tenants, default_flood, latency)| {
            // The guaranteed shares add up to 80% at most.
            let mut sum = 0;
            for t in &mut tenants {
                if sum + t.guaranteed > 80 {
                    t.guaranteed = 0;
                    t.borrow = t.borrow.filter(|&b| b > 0);
                }
                sum += t.guaranteed;
            }
            Workload { max, tenants, default_flood, latency }
        })
}

fn config(w: &Workload) -> Config {
    let tenants: Vec<String> = w
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let borrow = t.borrow.map_or(String::new(), |b| format!(r#", "borrow": {b}"#));
            format!(
                r#""t{i}": {{ "weight": {}, "guaranteed": {}, "lendable": {}{borrow} }}"#,
                t.weight, t.guaranteed, t.lendable
            )
        })
        .collect();
    Config::from_json(&format!(
        r#"{{ "limits": {{ "api": {{ "kind": "window", "max": {}, "per": "{PER}ms" }} }}, "global": ["api"],
             "tenants": {{ {} }} }}"#,
        w.max,
        tenants.join(", ")
    ))
    .unwrap()
}

/// What each tenant is promised, in requests of the window: (guaranteed, kept while idle, cap).
fn promise(w: &Workload, i: usize) -> (u64, u64, u64) {
    let tn = &w.tenants[i];
    let g = w.max * u64::from(tn.guaranteed) / 100;
    let kept = g - g * u64::from(tn.lendable) / 100;
    let cap = tn.borrow.map_or(w.max, |b| w.max.min(g + w.max * u64::from(b) / 100));
    (g, kept, cap)
}

#[derive(Debug, Clone, Copy)]
struct Life {
    /// `None`: the default class.
    tenant: Option<usize>,
    submitted: u64,
    went: Option<u64>,
    completed: Option<u64>,
}

impl Life {
    /// Whether the window holds it at `at` (from its go until its completion plus `per`).
    fn held(&self, at: u64) -> bool {
        self.went.is_some_and(|g| g <= at) && self.completed.is_none_or(|c| at < c + PER)
    }

    fn waits(&self, at: u64) -> bool {
        self.submitted <= at && self.went.is_none_or(|g| g > at)
    }
}

fn check(w: &Workload) -> Result<(), TestCaseError> {
    let mut tc = TrafficControl::new(config(w)).unwrap();
    let mut lives: HashMap<RequestId, Life> = HashMap::new();
    let mut completions: Vec<(u64, RequestId)> = Vec::new();
    let mut floods: Vec<(u64, Option<usize>, usize)> =
        w.tenants.iter().enumerate().map(|(i, t)| (t.at, Some(i), t.flood)).collect();
    floods.push((0, None, w.default_flood));
    floods.sort_by_key(|f| f.0);
    let max_latency = *w.latency.iter().max().unwrap();
    // Every guaranteed tenant's return: the shares are owed a window (and a latency) after the last.
    let settled_from =
        w.tenants.iter().filter(|t| t.guaranteed > 0).map(|t| t.at).max().unwrap_or(0) + PER + max_latency;
    let mut now = 0;
    let mut goes = 0usize;
    let mut instants = 0;
    loop {
        // What is due now: floods, then completions, then the controller's decisions.
        for &(_, tenant, n) in floods.iter().filter(|f| f.0 == now) {
            for _ in 0..n {
                let mut r = Request::http("GET", "/x");
                if let Some(i) = tenant {
                    r = r.tenant(format!("t{i}"));
                }
                let id = tc.submit(t(now), r).unwrap();
                lives.insert(id, Life { tenant, submitted: now, went: None, completed: None });
            }
        }
        completions.sort_unstable();
        while completions.first().is_some_and(|c| c.0 <= now) {
            let (_, id) = completions.remove(0);
            lives.get_mut(&id).unwrap().completed = Some(now);
            let _ = tc.complete(t(now), id, Outcome::status(200));
        }
        loop {
            while let Some(Event { request, kind, .. }) = tc.poll(t(now)) {
                if let EventKind::Go { .. } = kind {
                    let life = lives.get_mut(&request).unwrap();
                    prop_assert!(life.went.is_none());
                    life.went = Some(now);
                    completions.push((now + w.latency[goes % w.latency.len()], request));
                    goes += 1;
                }
            }
            if tc.poll_timeout().is_none_or(|x| x > t(now)) {
                break;
            }
        }
        judge(w, &lives, now, settled_from)?;
        instants += 1;
        prop_assert!(instants < 100_000, "the run does not end");
        let next = [
            tc.poll_timeout().map(|x| x.as_nanos().div_ceil(MS)),
            floods.iter().map(|f| f.0).find(|&a| a > now),
            completions.iter().map(|c| c.0).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(n) => now = n.max(now + 1),
            None => break,
        }
    }
    let total = w.tenants.iter().map(|t| t.flood).sum::<usize>() + w.default_flood;
    prop_assert_eq!(goes, total, "every request goes");
    Ok(())
}

/// The invariants at `now`, from the trace.
fn judge(w: &Workload, lives: &HashMap<RequestId, Life>, now: u64, settled_from: u64) -> Result<(), TestCaseError> {
    let max_latency = *w.latency.iter().max().unwrap();
    let n = w.tenants.len();
    let mut held = vec![0u64; n + 1]; // the default class last
    let mut waiting = vec![0usize; n + 1];
    for life in lives.values() {
        let i = life.tenant.unwrap_or(n);
        held[i] += u64::from(life.held(now));
        waiting[i] += usize::from(life.waits(now));
    }
    let used: u64 = held.iter().sum();
    prop_assert!(used <= w.max, "the window holds {} of {} at {} ms", used, w.max, now);
    for i in 0..n {
        let (g, kept, cap) = promise(w, i);
        prop_assert!(held[i] <= cap, "t{} holds {} over its cap {} at {} ms", i, held[i], cap, now);
        // (1) The guaranteed share, once the returns have settled.
        if waiting[i] > 0 && now >= settled_from && now >= w.tenants[i].at + PER + max_latency {
            prop_assert!(
                held[i] + 1 >= g,
                "t{} waits with {} held, below its guaranteed {} at {} ms (held {:?}, waiting {:?})",
                i,
                held[i],
                g,
                now,
                held,
                waiting
            );
        }
        let _ = kept;
    }
    // (2) Work conservation: room beyond the others' kept shares, below its cap, and it waits.
    let unused_kept = |j: usize| {
        let (g, kept, _) = promise(w, j);
        let keep = if waiting[j] > 0 { g } else { kept };
        keep.saturating_sub(held[j])
    };
    for x in 0..=n {
        if waiting[x] == 0 {
            continue;
        }
        let cap = if x < n { promise(w, x).2 } else { w.max };
        if held[x] >= cap {
            continue;
        }
        let kept_for_others: u64 = (0..n).filter(|&j| j != x).map(unused_kept).sum();
        let free = w.max.saturating_sub(used + kept_for_others);
        prop_assert!(
            free == 0,
            "{} waits while {} could go at {} ms (held {:?}, waiting {:?})",
            if x < n { format!("t{x}") } else { "default".to_string() },
            free,
            now,
            held,
            waiting
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TC_SHARE_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(150),
        ..ProptestConfig::default()
    })]

    #[test]
    fn guaranteed_shares_hold_and_no_room_is_left_idle(w in workload()) {
        check(&w)?;
    }
}

#[test]
fn a_returning_tenant_gets_its_share_back_within_one_window() {
    // t0 is guaranteed 40% of the window; the default class, of weight 9 (by weight alone t0 would
    // have 1 of 10), floods from 0; t0 comes back at 500 ms.
    let config = Config::from_json(
        r#"{ "limits": { "api": { "kind": "window", "max": 10, "per": "100ms", "hold": "go" } }, "global": ["api"],
             "tenants": { "t0": { "guaranteed": 40 }, "default": { "weight": 9 } } }"#,
    )
    .unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let mut who = HashMap::new();
    for _ in 0..200 {
        let id = tc.submit(t(0), Request::http("GET", "/x")).unwrap();
        who.insert(id, "default");
    }
    let mut goes: Vec<(u64, &str)> = Vec::new();
    let mut now = 0;
    while now <= 1_000 {
        if now == 500 {
            for _ in 0..100 {
                let id = tc.submit(t(now), Request::http("GET", "/x").tenant("t0")).unwrap();
                who.insert(id, "t0");
            }
        }
        while let Some(Event { request, kind, .. }) = tc.poll(t(now)) {
            if let EventKind::Go { .. } = kind {
                goes.push((now, who[&request]));
                let _ = tc.complete(t(now), request, Outcome::status(200));
            }
        }
        now += 1;
    }
    // Before its return the default class had the whole window (t0 lends all of its share).
    assert_eq!(goes.iter().filter(|g| g.0 < 100).count(), 10);
    // From one window after its return, t0 has at least its 4 of every 100 ms.
    for start in (600..900).step_by(10) {
        let t0 = goes.iter().filter(|g| g.1 == "t0" && (start..start + 100).contains(&g.0)).count();
        assert!(t0 >= 4, "t0 had {t0} in [{start}, {}) ms", start + 100);
    }
}

#[test]
fn shares_name_the_field_and_the_reason() {
    let bad = |json: &str| match Config::from_json(json).and_then(TrafficControl::new) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {json}"),
    };
    let base = r#""limits": { "api": { "kind": "window", "max": 10, "per": "1s" } }, "global": ["api"]"#;
    let e = bad(&format!(r#"{{ {base}, "tenants": {{ "a": {{ "guaranteed": 50 }}, "b": {{ "guaranteed": 40 }} }} }}"#));
    assert!(e.contains("tenants.b.guaranteed") && e.contains("90%") && e.contains("80%"), "{e}");
    let e = bad(&format!(r#"{{ {base}, "tenants": {{ "a": {{ "guaranteed": 90 }} }} }}"#));
    assert!(e.contains("tenants.a.guaranteed"), "{e}");
    let e = bad(&format!(r#"{{ {base}, "tenants": {{ "a": {{ "lendable": 101 }} }} }}"#));
    assert!(e.contains("tenants.a.lendable"), "{e}");
    let e = bad(&format!(r#"{{ {base}, "tenants": {{ "a": {{ "borrow": 0 }} }} }}"#));
    assert!(e.contains("tenants.a.borrow") && e.contains("never"), "{e}");
    let e = bad(&format!(r#"{{ {base}, "tenants": {{ "a": {{ "tier": "gold" }} }} }}"#));
    assert!(e.contains("tenants.a.tier") && e.contains("gold"), "{e}");
    let e = bad(&format!(r#"{{ {base}, "tiers": {{ "premium": {{ "guaranteed": 81 }} }} }}"#));
    assert!(e.contains("tiers.premium.guaranteed"), "{e}");
    // Three tenants of a 30% tier: 90% in all.
    let e = bad(&format!(
        r#"{{ {base}, "tiers": {{ "premium": {{ "guaranteed": 30 }} }},
             "tenants": {{ "a": {{ "tier": "premium" }}, "b": {{ "tier": "premium" }}, "c": {{ "tier": "premium" }} }} }}"#
    ));
    assert!(e.contains("tenants.c.guaranteed"), "{e}");
}

#[test]
fn a_tier_gives_its_settings_and_a_tenant_overrides_them() {
    let config = Config::from_json(
        r#"{ "limits": { "api": { "kind": "window", "max": 100, "per": "1m" } }, "global": ["api"],
             "tiers": { "premium": { "weight": 3, "guaranteed": 20, "borrow": 30 }, "basic": { "weight": 1, "borrow": 10 } },
             "tenants": { "shop-a": { "tier": "premium" }, "shop-b": { "tier": "premium", "weight": 5 },
                          "shop-c": { "tier": "basic" } } }"#,
    )
    .unwrap();
    let a = &config.tenants["shop-a"];
    assert_eq!((a.weight, a.guaranteed, a.borrow), (3, 20, Some(30)));
    let b = &config.tenants["shop-b"];
    assert_eq!((b.weight, b.guaranteed), (5, 20));
    // Written back and read again: the same config.
    let again = Config::from_json(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
    // shop-c (basic) may use 10 of the 100 at most: its 11th waits while the others' go.
    let mut tc = TrafficControl::new(config).unwrap();
    for i in 0..10 {
        assert!(
            matches!(
                tc.try_acquire(t(0), Request::http("GET", "/x").tenant("shop-c")),
                traffic_control_core::Decision::Go(_)
            ),
            "{i}"
        );
    }
    assert!(matches!(
        tc.try_acquire(t(0), Request::http("GET", "/x").tenant("shop-c")),
        traffic_control_core::Decision::Wait { .. }
    ));
    assert!(matches!(
        tc.try_acquire(t(0), Request::http("GET", "/x").tenant("shop-a")),
        traffic_control_core::Decision::Go(_)
    ));
    // A cost beyond the cap can never go: refused at once, naming the tenant's share.
    let e = tc.submit(t(0), Request::http("GET", "/x").tenant("shop-c").cost(11)).unwrap_err();
    assert!(e.to_string().contains("api#shop-c"), "{e}");
    // The snapshot shows each tenant's share as a limit of its own.
    let snap = tc.snapshot(t(0));
    assert!(snap.limits.iter().any(|l| l.name == "api#shop-c" && l.used == 10), "{:?}", snap.limits);
}
