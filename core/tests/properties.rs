//! Property tests: random workloads of mixed limits, costs, priorities, reservations, cancels and
//! completions, driven on a fake clock the way a host drives the core (poll until `poll_timeout`),
//! each checked by a model written here, independently of the core's data structures:
//!
//! 1. no interval `[s, s + per)` holds more than `max` cost *as the server counts it*, for every
//!    window limit: each request arrives at the server at some instant between its go and its
//!    completion (its lease's end when it never completes), a latency we do not control; the
//!    checker takes the worst case, every request arriving inside the window whenever it can;
//! 2. token buckets and concurrency limits are never exceeded;
//! 3. a follow-up spending a live reservation goes at once when no CRITICAL request intervened;
//! 4. a waiting request is never passed, on a limit it needs, by one behind it (lower priority, or
//!    later at the same priority) taking room it claims: the order is (priority, arrival), FIFO
//!    within a level. The request next in line of its class (same lane, same limits, same room
//!    rule) claims room; those behind it cannot go before it and claim nothing yet;
//! 5. liveness: driven by `poll_timeout`, every request that can go goes;
//! 6. work conservation: after every poll, no waiter fits (with the claims of those ahead of it);
//!
//! plus: nothing expires early (deadlines, reservations, leases) and rejections are justified.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use traffic_control_core::{
    Config, Decision, Event, EventKind, FollowUp, Outcome, Priority, Request, RequestError, RequestId, ReservationId,
    Timestamp, TrafficControl,
};

const MS: u64 = 1_000_000;

// ---- workload ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum LimitSpec {
    Window { max: u64, per_ms: u64 },
    Bucket { capacity: u64, refill: u64, per_ms: u64 },
    Concurrency { max: u64 },
    Budget { refill: u64, per_ms: u64, max: u64, floor: u64, initial: u64 },
}

#[derive(Debug, Clone)]
struct Ask {
    route: usize,
    cost: Option<u64>,
    priority: Priority,
    reserve: Option<(usize, Option<u64>, u64)>,
    deadline_ms: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Ask),
    Try(Ask),
    /// Spend the n-th reservation made so far (modulo), as the follow-up it was made for.
    Spend {
        which: usize,
        priority: Priority,
        direct: bool,
    },
    Complete {
        which: usize,
    },
    Cancel {
        which: usize,
    },
    Release {
        which: usize,
    },
    Poll,
}

#[derive(Debug, Clone)]
struct Workload {
    limits: Vec<LimitSpec>,
    global: Vec<usize>,
    routes: Vec<Vec<(usize, Option<u64>)>>,
    max_waiting: usize,
    reservation_ttl_ms: u64,
    lease_ttl_ms: u64,
    ops: Vec<(u64, Op)>,
}

fn limit_spec() -> impl Strategy<Value = LimitSpec> {
    prop_oneof![
        6 => (1u64..=5, 50u64..=1000).prop_map(|(max, per_ms)| LimitSpec::Window { max, per_ms }),
        2 => (1u64..=4, 1u64..=2, 100u64..=800)
            .prop_map(|(capacity, refill, per_ms)| LimitSpec::Bucket { capacity, refill, per_ms }),
        2 => (1u64..=3).prop_map(|max| LimitSpec::Concurrency { max }),
        2 => (1u64..=3, 100u64..=800, 2u64..=8, 0u64..=1, 0u64..=8).prop_map(|(refill, per_ms, max, floor, initial)| {
            LimitSpec::Budget { refill, per_ms, max, floor, initial: initial.min(max) }
        }),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        1 => Just(Priority::Critical),
        3 => Just(Priority::High),
        3 => Just(Priority::Normal),
        3 => Just(Priority::Low),
    ]
}

fn ask(routes: usize) -> impl Strategy<Value = Ask> {
    (
        0..routes,
        prop_oneof![3 => Just(None), 2 => (1u64..=3).prop_map(Some)],
        priority(),
        prop_oneof![
            7 => Just(None),
            3 => (0..routes, prop_oneof![Just(None), (1u64..=2).prop_map(Some)], 100u64..=3000)
                .prop_map(Some)
        ],
        prop_oneof![7 => Just(None), 3 => (0u64..=3000).prop_map(Some)],
    )
        .prop_map(|(route, cost, priority, reserve, deadline_ms)| Ask {
            route,
            cost,
            priority,
            reserve,
            deadline_ms,
        })
}

fn op(routes: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => ask(routes).prop_map(Op::Submit),
        2 => ask(routes).prop_map(Op::Try),
        3 => (any::<usize>(), priority(), any::<bool>())
            .prop_map(|(which, priority, direct)| Op::Spend { which, priority, direct }),
        4 => any::<usize>().prop_map(|which| Op::Complete { which }),
        1 => any::<usize>().prop_map(|which| Op::Cancel { which }),
        1 => any::<usize>().prop_map(|which| Op::Release { which }),
        2 => Just(Op::Poll),
    ]
}

fn workload() -> impl Strategy<Value = Workload> {
    (prop::collection::vec(limit_spec(), 1..=4), 1usize..=4).prop_flat_map(|(limits, nroutes)| {
        let n = limits.len();
        let route = prop::collection::vec((0..n, prop_oneof![4 => Just(None), 1 => (0u64..=2).prop_map(Some)]), 0..=2);
        (
            Just(limits),
            prop::collection::vec(0..n, 0..=1),
            prop::collection::vec(route, nroutes),
            prop_oneof![Just(3usize), Just(1000)],
            200u64..=3000,
            500u64..=5000,
            prop::collection::vec((prop_oneof![3 => Just(0u64), 7 => 0u64..=400], op(nroutes)), 1..120),
        )
            .prop_map(|(limits, global, routes, max_waiting, reservation_ttl_ms, lease_ttl_ms, ops)| {
                Workload { limits, global, routes, max_waiting, reservation_ttl_ms, lease_ttl_ms, ops }
            })
    })
}

impl Workload {
    fn config(&self) -> Config {
        let limits: serde_json::Map<String, serde_json::Value> = self
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let v = match *l {
                    LimitSpec::Window { max, per_ms } => serde_json::json!({"kind":"window","max":max,"per":per_ms}),
                    LimitSpec::Bucket { capacity, refill, per_ms } => {
                        serde_json::json!({"kind":"token_bucket","capacity":capacity,"refill":refill,"per":per_ms})
                    }
                    LimitSpec::Concurrency { max } => serde_json::json!({"kind":"concurrency","max":max}),
                    LimitSpec::Budget { refill, per_ms, max, floor, initial } => serde_json::json!(
                        {"kind":"budget","refill":refill,"per":per_ms,"max":max,"floor":floor,"initial":initial}
                    ),
                };
                (name(i), v)
            })
            .collect();
        let routes: Vec<_> = self
            .routes
            .iter()
            .enumerate()
            .map(|(r, ls)| {
                let ls: Vec<_> = ls
                    .iter()
                    .map(|&(l, c)| match c {
                        None => serde_json::json!(name(l)),
                        Some(c) => serde_json::json!({"limit": name(l), "cost": c}),
                    })
                    .collect();
                serde_json::json!({"name": format!("r{r}"), "path": format!("^/r{r}$"), "limits": ls})
            })
            .collect();
        let global: Vec<_> = self.global.iter().map(|&l| name(l)).collect();
        Config::from_value(serde_json::json!({
            "limits": limits, "global": global, "routes": routes,
            "queue": {"max_waiting": self.max_waiting},
            "reservation_ttl": self.reservation_ttl_ms, "lease_ttl": self.lease_ttl_ms,
        }))
        .unwrap()
    }
}

fn name(i: usize) -> String {
    format!("l{i}")
}

// ---- the model --------------------------------------------------------------------------------

/// What a request asks, per limit, computed from the workload (not from the core).
#[derive(Debug, Clone)]
struct Spec {
    priority: Priority,
    needs: BTreeMap<usize, u64>,
    reserve: Vec<(BTreeMap<usize, u64>, u64)>,
    spend: Option<ReservationId>,
    deadline: Option<u64>,
    submitted_at: u64,
    /// The reservation it spends was live, unattached and never intervened on at submission.
    reservation_sound: bool,
    /// The follow-up it reserves for, as (route, cost), to spend later.
    follow_up: Option<(usize, Option<u64>)>,
}

impl Spec {
    fn total(&self) -> BTreeMap<usize, u64> {
        let mut t = self.needs.clone();
        for (r, _) in &self.reserve {
            for (l, c) in r {
                *t.entry(*l).or_default() += c;
            }
        }
        t
    }
}

#[derive(Debug)]
struct ModelReservation {
    holds: BTreeMap<usize, u64>,
    expires_at: u64,
    attached: Option<RequestId>,
    /// A CRITICAL request was admitted on one of its limits while it lived.
    intervened: bool,
}

struct Model {
    w: Workload,
    specs: HashMap<RequestId, Spec>,
    /// Admissions per limit: (instant, cost, request).
    log: Vec<Vec<(u64, u64, RequestId)>>,
    /// When each admitted request ended (completed, cancelled, or its lease's end): the server may
    /// count it on arrival at any instant from its go until then.
    ends: HashMap<RequestId, u64>,
    in_flight: HashMap<RequestId, (u64, Vec<usize>)>,
    reservations: HashMap<ReservationId, ModelReservation>,
    /// (lane, arrival) -> request
    waiting: BTreeMap<(u8, u64), RequestId>,
    waiting_key: HashMap<RequestId, (u8, u64)>,
    arrivals: u64,
    went: HashMap<RequestId, u64>,
    ended: HashMap<RequestId, &'static str>,
}

impl Model {
    fn new(w: Workload) -> Self {
        let n = w.limits.len();
        Model {
            w,
            specs: HashMap::new(),
            log: vec![Vec::new(); n],
            ends: HashMap::new(),
            in_flight: HashMap::new(),
            reservations: HashMap::new(),
            waiting: BTreeMap::new(),
            waiting_key: HashMap::new(),
            arrivals: 0,
            went: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    fn capacity(&self, l: usize) -> u64 {
        match self.w.limits[l] {
            LimitSpec::Window { max, .. } => max,
            LimitSpec::Bucket { capacity, .. } => capacity,
            LimitSpec::Concurrency { max } => max,
            LimitSpec::Budget { max, floor, .. } => max - floor,
        }
    }

    fn is_concurrency(&self, l: usize) -> bool {
        matches!(self.w.limits[l], LimitSpec::Concurrency { .. })
    }

    /// Needs of a route with a cost, per limit: global limits, then the route's (fixed costs win).
    fn needs(&self, route: usize, cost: Option<u64>) -> BTreeMap<usize, u64> {
        let cost = cost.unwrap_or(1);
        let mut m = BTreeMap::new();
        for &g in &self.w.global {
            m.insert(g, cost);
        }
        for &(l, fixed) in &self.w.routes[route] {
            m.insert(l, fixed.unwrap_or(cost));
        }
        for (l, c) in m.iter_mut() {
            if self.is_concurrency(*l) {
                *c = 1;
            }
        }
        m.retain(|_, c| *c > 0);
        m
    }

    /// Cost counted against limit `l` at instant `t`, from the admission log alone.
    fn used(&self, l: usize, t: u64) -> u64 {
        match self.w.limits[l] {
            LimitSpec::Window { per_ms, .. } => {
                // Held from the go until the end plus `per` (the core's rule, checked by (1)).
                let per = per_ms * MS;
                self.log[l]
                    .iter()
                    .filter(|&&(at, _, id)| at <= t && self.ends.get(&id).is_none_or(|&end| end + per > t))
                    .map(|&(_, c, _)| c)
                    .sum()
            }
            LimitSpec::Bucket { capacity, refill, per_ms } => {
                // Replay the bucket from full: level in units of 1/per tokens.
                let per = u128::from(per_ms * MS);
                let full = u128::from(capacity) * per;
                let (mut level, mut last) = (full, 0u64);
                for &(at, c, _) in self.log[l].iter().filter(|&&(at, _, _)| at <= t) {
                    level = (level + u128::from(at - last) * u128::from(refill)).min(full);
                    last = at;
                    level = level.checked_sub(u128::from(c) * per).expect("bucket overdrawn");
                }
                level = (level + u128::from(t - last) * u128::from(refill)).min(full);
                capacity - (level / per) as u64
            }
            LimitSpec::Concurrency { .. } => {
                self.in_flight.values().filter(|(_, slots)| slots.contains(&l)).count() as u64
            }
            LimitSpec::Budget { refill, per_ms, max, floor, initial } => {
                // Replay the balance: `refill` at every multiple of `per`, capped at `max`; never
                // spent below the floor (that is invariant 2 for budgets).
                let per = per_ms * MS;
                let (max, refill) = (max as i64, refill as i64);
                let (mut level, mut last) = (initial as i64, 0u64);
                for &(at, c, _) in self.log[l].iter().filter(|&&(at, _, _)| at <= t) {
                    level = (level + refill * (at / per - last / per) as i64).min(max);
                    last = at;
                    level -= c as i64;
                    assert!(level >= floor as i64, "(2) budget l{l} spent below its floor at {at}");
                }
                level = (level + refill * (t / per - last / per) as i64).min(max);
                (max - level) as u64
            }
        }
    }

    fn reserved(&self, l: usize) -> u64 {
        self.reservations.values().filter_map(|r| r.holds.get(&l)).sum()
    }

    /// Which reservation a request really spends is settled when it arrives: one that is live and
    /// not being spent by a waiting request; otherwise it competes like any request.
    fn settle_spend(&mut self, id: RequestId) {
        let spec = self.specs.get_mut(&id).unwrap();
        spec.spend = spec.spend.filter(|rid| self.reservations.get(rid).is_some_and(|r| r.attached.is_none()));
    }

    fn own(&self, spec: &Spec, l: usize) -> u64 {
        spec.spend.and_then(|rid| self.reservations.get(&rid)).and_then(|r| r.holds.get(&l).copied()).unwrap_or(0)
    }

    fn lane(&self, spec: &Spec) -> u8 {
        let covered = spec.reserve.is_empty()
            && spec
                .spend
                .and_then(|rid| self.reservations.get(&rid))
                .is_some_and(|r| spec.needs.iter().all(|(l, c)| r.holds.get(l).is_some_and(|h| h >= c)));
        if covered {
            0
        } else {
            spec.priority as u8 + 1
        }
    }

    /// Whether `id` fits at `t` when `ahead` (cost per limit) is claimed by waiters ahead of it.
    fn fits(&self, spec: &Spec, t: u64, ahead: &BTreeMap<usize, u64>) -> Result<(), String> {
        let critical = spec.priority == Priority::Critical && spec.reserve.is_empty();
        for (&l, &c) in &spec.total() {
            let used = self.used(l, t);
            let claims = ahead.get(&l).copied().unwrap_or(0);
            let others = self.reserved(l) - self.own(spec, l);
            // CRITICAL may use reserved room only when reservations hold the whole limit.
            let others = if critical && others >= self.capacity(l) { 0 } else { others };
            if used + others + claims + c > self.capacity(l) {
                return Err(format!(
                    "limit l{l}: used {used} + others' reservations {others} + claims ahead {claims} + cost {c} > {}",
                    self.capacity(l)
                ));
            }
        }
        Ok(())
    }

    /// Requests of one class see the same room, so none can go before the one ahead of it:
    /// (lane, limits asked, CRITICAL room rule). A spender of a reservation is a class of its own.
    fn class(&self, id: RequestId, key: (u8, u64)) -> (u8, bool, Vec<usize>, Option<RequestId>) {
        let spec = &self.specs[&id];
        let critical = spec.priority == Priority::Critical && spec.reserve.is_empty();
        (key.0, critical, spec.total().into_keys().collect(), spec.spend.map(|_| id))
    }

    /// What the waiters ahead of `key` claim: each waiter next in line in its class (no waiter of
    /// the same class ahead of it) claims what it asks beyond its own reservation.
    fn claims_ahead(&self, key: (u8, u64)) -> BTreeMap<usize, u64> {
        let mut ahead = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (k, id) in self.waiting.range(..key) {
            if !seen.insert(self.class(*id, *k)) {
                continue;
            }
            let spec = &self.specs[id];
            for (l, c) in spec.total() {
                *ahead.entry(l).or_default() += c - c.min(self.own(spec, l));
            }
        }
        ahead
    }

    fn queued(&mut self, id: RequestId) {
        self.settle_spend(id);
        let spec = self.specs[&id].clone();
        let key = (self.lane(&spec), self.arrivals);
        self.arrivals += 1;
        if let Some(rid) = spec.spend {
            self.reservations.get_mut(&rid).unwrap().attached = Some(id);
        }
        self.waiting.insert(key, id);
        self.waiting_key.insert(id, key);
    }

    fn leave_queue(&mut self, id: RequestId) -> bool {
        let Some(key) = self.waiting_key.remove(&id) else { return false };
        self.waiting.remove(&key);
        for r in self.reservations.values_mut() {
            if r.attached == Some(id) {
                r.attached = None;
            }
        }
        true
    }

    fn go(&mut self, id: RequestId, t: u64, reservations: &[ReservationId]) {
        if !self.waiting_key.contains_key(&id) {
            self.settle_spend(id);
        }
        let spec = self.specs[&id].clone();
        // (4): nobody ahead of it loses room it claims; computed before it leaves the queue.
        let key = match self.waiting_key.get(&id) {
            Some(&key) => key,
            None => (self.lane(&spec), u64::MAX),
        };
        let ahead = self.claims_ahead(key);
        if let Err(why) = self.fits(&spec, t, &ahead) {
            panic!("(4) request {id:?} at {t} went though it does not fit behind the waiters ahead of it: {why}");
        }
        // (3): a sound reservation's follow-up goes at once.
        if spec.reservation_sound {
            let intervened = self.reservations.get(&spec.spend.unwrap()).is_none_or(|r| r.intervened);
            assert!(
                intervened || t == spec.submitted_at,
                "(3) follow-up {id:?} spending a live reservation waited from {} to {t}",
                spec.submitted_at
            );
        }
        self.leave_queue(id);
        if let Some(rid) = spec.spend {
            self.reservations.remove(&rid);
        }
        if spec.priority == Priority::Critical {
            for r in self.reservations.values_mut() {
                if spec.needs.keys().any(|l| r.holds.contains_key(l)) {
                    r.intervened = true;
                }
            }
        }
        let mut slots = Vec::new();
        for (&l, &c) in &spec.needs {
            if self.is_concurrency(l) {
                slots.push(l);
            } else {
                self.log[l].push((t, c, id));
            }
        }
        self.in_flight.insert(id, (t, slots));
        assert_eq!(reservations.len(), spec.reserve.len());
        for (rid, (holds, ttl)) in reservations.iter().zip(&spec.reserve) {
            self.reservations.insert(
                *rid,
                ModelReservation { holds: holds.clone(), expires_at: t + ttl, attached: None, intervened: false },
            );
        }
        self.went.insert(id, t);
        // (2) concurrency: never more in flight than max.
        for l in 0..self.w.limits.len() {
            if self.is_concurrency(l) {
                assert!(self.used(l, t) <= self.capacity(l), "(2) concurrency l{l} exceeded at {t}");
            }
        }
    }

    fn event(&mut self, e: &Event) {
        let t = e.at.as_nanos();
        match &e.kind {
            EventKind::Queued => self.queued(e.request),
            EventKind::Go { permit, .. } => self.go(e.request, t, &permit.reservations),
            EventKind::Completed { .. } => {
                assert!(self.in_flight.remove(&e.request).is_some());
                self.ends.insert(e.request, t);
                self.ended.insert(e.request, "completed");
            }
            EventKind::Cancelled => {
                if !self.leave_queue(e.request) {
                    assert!(self.in_flight.remove(&e.request).is_some());
                    self.ends.insert(e.request, t);
                }
                self.ended.insert(e.request, "cancelled");
            }
            EventKind::LeaseExpired { .. } => {
                let (since, _) = self.in_flight.remove(&e.request).expect("in flight");
                assert!(t >= since + self.w.lease_ttl_ms * MS, "lease expired early");
                self.ends.insert(e.request, since + self.w.lease_ttl_ms * MS);
            }
            EventKind::Expired { .. } => {
                let deadline = self.specs[&e.request].deadline.expect("has a deadline");
                assert!(t > deadline, "expired at {t}, before its deadline {deadline}");
                assert!(self.leave_queue(e.request));
                self.ended.insert(e.request, "expired");
            }
            EventKind::ReservationExpired { reservation } => {
                let r = self.reservations.remove(reservation).expect("live reservation");
                assert!(t >= r.expires_at && r.attached.is_none(), "reservation expired early or while being spent");
            }
            EventKind::ReservationReleased { reservation } => {
                assert!(self.reservations.remove(reservation).is_some());
            }
            EventKind::Rejected { .. } => {}
            // The budget guard's warnings change nothing (core/tests/budget_alerts.rs checks them).
            EventKind::BudgetLow { cost, .. } => assert!(*cost > 0),
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// (6) after a poll: every waiter is blocked by a limit or by the claims of those ahead.
    fn check_settled(&self, t: u64) {
        for (key, id) in &self.waiting {
            let ahead = self.claims_ahead(*key);
            assert!(
                self.fits(&self.specs[id], t, &ahead).is_err(),
                "(6) {id:?} waits at {t} though every limit it needs has room for it behind those ahead"
            );
        }
    }

    /// (1) and (2): the admission logs never exceed a limit.
    fn check_logs(&self) {
        for (l, spec) in self.w.limits.iter().enumerate() {
            let log = &self.log[l];
            match *spec {
                LimitSpec::Window { max, per_ms } => {
                    // A request can arrive in `[s, s + per)` when its go is before `s + per` and
                    // its end is at or after `s`. The count is largest at some `s` equal to an end
                    // or just after a go minus `per`.
                    let per = per_ms * MS;
                    let span =
                        |&(at, _, id): &(u64, u64, RequestId)| (at, self.ends.get(&id).copied().unwrap_or(u64::MAX));
                    let starts = log.iter().map(span).flat_map(|(go, end)| [end, (go + 1).saturating_sub(per)]);
                    for s in starts.filter(|&s| s != u64::MAX) {
                        let in_window: u64 = log
                            .iter()
                            .filter(|e| {
                                let (go, end) = span(e);
                                go < s + per && end >= s
                            })
                            .map(|&(_, c, _)| c)
                            .sum();
                        assert!(
                            in_window <= max,
                            "(1) window l{l}: the server may count {in_window} > {max} in [{s}, +{per_ms}ms)"
                        );
                    }
                }
                LimitSpec::Bucket { capacity, refill, per_ms } => {
                    for &(a, _, _) in log {
                        for &(b, _, _) in log.iter().filter(|&&(b, _, _)| b >= a) {
                            let admitted: u64 =
                                log.iter().filter(|&&(t, _, _)| t >= a && t <= b).map(|&(_, c, _)| c).sum();
                            let allowed =
                                u128::from(capacity) + u128::from(b - a) * u128::from(refill) / u128::from(per_ms * MS);
                            assert!(
                                u128::from(admitted) <= allowed,
                                "(2) bucket l{l}: {admitted} in [{a}, {b}] > {allowed}"
                            );
                        }
                    }
                }
                LimitSpec::Concurrency { .. } => {}
                LimitSpec::Budget { .. } => {
                    // Replaying to the last admission asserts the floor held all along.
                    let _ = log.last().map(|&(at, _, _)| self.used(l, at));
                }
            }
        }
    }
}

// ---- the host ---------------------------------------------------------------------------------

struct Host {
    tc: TrafficControl,
    model: Model,
    now: u64,
    submitted: Vec<RequestId>,
    /// Reservations made so far: (id, follow-up route, follow-up cost).
    made: Vec<(ReservationId, usize, Option<u64>)>,
    next_id: u64,
}

impl Host {
    fn drain(&mut self) {
        let now = Timestamp::from_nanos(self.now);
        while let Some(e) = self.tc.poll(now) {
            if let EventKind::Go { permit, .. } = &e.kind {
                if let (Some(&rid), Some((route, cost))) =
                    (permit.reservations.first(), self.model.specs[&e.request].follow_up)
                {
                    self.made.push((rid, route, cost));
                }
            }
            STATS.with(|st| *st.borrow_mut().entry(e.status()).or_insert(0) += 1);
            trace(format!("{:>8} {:?} {:?} {:?}", e.at.as_nanos() / MS, e.request, e.priority, e.kind));
            self.model.event(&e);
        }
        self.model.check_settled(self.now);
    }

    /// Polls at every instant the core asks for, up to `until`.
    fn drive_to(&mut self, until: u64) {
        while let Some(t) = self.tc.poll_timeout() {
            let t = t.as_nanos().max(self.now);
            if t > until {
                break;
            }
            self.now = t;
            self.drain();
        }
        self.now = until;
        self.drain();
    }

    fn request(&self, a: &Ask) -> (Request, Spec) {
        let mut r = Request::route(format!("r{}", a.route)).priority(a.priority);
        if let Some(c) = a.cost {
            r = r.cost(c);
        }
        let mut reserve = Vec::new();
        if let Some((route, cost, ttl)) = a.reserve {
            let mut f = FollowUp::route(format!("r{route}")).ttl(std::time::Duration::from_millis(ttl));
            if let Some(c) = cost {
                f = f.cost(c);
            }
            r = r.reserve(f);
            reserve.push((self.model.needs(route, cost), ttl * MS));
        }
        let deadline = a.deadline_ms.map(|d| self.now + d * MS);
        if let Some(d) = deadline {
            r = r.deadline(Timestamp::from_nanos(d));
        }
        let spec = Spec {
            priority: a.priority,
            needs: self.model.needs(a.route, a.cost),
            reserve,
            spend: None,
            deadline,
            submitted_at: self.now,
            reservation_sound: false,
            follow_up: a.reserve.map(|(route, cost, _)| (route, cost)),
        };
        (r, spec)
    }

    /// Registers the request with the model under the id the core will use.
    fn register(&mut self, spec: Spec) -> RequestId {
        // The core hands out ids in call order, rejected calls included.
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.model.specs.insert(id, spec);
        id
    }

    fn check_rejection(&self, spec: &Spec, error: &RequestError) {
        match error {
            RequestError::CostExceedsCapacity { .. } => {
                assert!(spec.total().iter().any(|(&l, &c)| c > self.model.capacity(l)), "unjustified {error}")
            }
            RequestError::QueueFull { .. } => assert!(self.model.waiting.len() >= self.model.w.max_waiting),
            RequestError::DeadlineExceeded { .. } => assert!(spec.deadline.unwrap() < self.now),
            RequestError::DeadlineUnreachable { earliest, deadline } => {
                assert!(earliest > deadline && deadline.as_nanos() == spec.deadline.unwrap())
            }
            RequestError::InsufficientBudget { limit, needed, ahead, enough_at, .. } => {
                // Even with refills, the requests already waiting ahead of it on the budget (a lane
                // ahead, or its own) spend first: the deadline comes before enough is left for it.
                let l: usize = limit[1..].parse().unwrap();
                let deadline = spec.deadline.expect("refused for its deadline");
                assert!(matches!(self.model.w.limits[l], LimitSpec::Budget { .. }));
                let lane = self.model.lane(spec);
                let model_ahead: u64 = self
                    .model
                    .waiting
                    .iter()
                    .filter(|((waiter_lane, _), _)| *waiter_lane <= lane)
                    .map(|(_, id)| {
                        let s = &self.model.specs[id];
                        s.total().get(&l).map_or(0, |&c| c - c.min(self.model.own(s, l)))
                    })
                    .sum();
                assert_eq!(*ahead, model_ahead, "{error}: the requests ahead of it ask {model_ahead}");
                assert!(
                    self.model.used(l, deadline) + ahead + needed > self.model.capacity(l),
                    "unjustified {error}: it would fit at its deadline {deadline}"
                );
                assert!(enough_at.is_some_and(|t| t.as_nanos() > deadline));
            }
            other => panic!("unexpected rejection {other}"),
        }
    }

    fn run(&mut self, ops: &[(u64, Op)]) {
        for (dt, op) in ops {
            let until = self.now + dt * MS;
            self.drive_to(until);
            trace(format!("{:>8} op {op:?}", self.now / MS));
            let now = Timestamp::from_nanos(self.now);
            match op {
                Op::Submit(a) => {
                    let (r, spec) = self.request(a);
                    self.submit(r, spec, false);
                }
                Op::Try(a) => {
                    let (r, spec) = self.request(a);
                    self.submit(r, spec, true);
                }
                Op::Spend { which, priority, direct } => {
                    if self.made.is_empty() {
                        continue;
                    }
                    let (rid, route, cost) = self.made[which % self.made.len()];
                    let mut r = Request::route(format!("r{route}")).priority(*priority).spend(rid);
                    if let Some(c) = cost {
                        r = r.cost(c);
                    }
                    let sound = self
                        .model
                        .reservations
                        .get(&rid)
                        .is_some_and(|m| m.attached.is_none() && !m.intervened && m.expires_at > self.now);
                    let spec = Spec {
                        priority: *priority,
                        needs: self.model.needs(route, cost),
                        reserve: Vec::new(),
                        spend: Some(rid),
                        deadline: None,
                        submitted_at: self.now,
                        reservation_sound: sound,
                        follow_up: None,
                    };
                    self.submit(r, spec, *direct);
                }
                Op::Complete { which } => {
                    let mut flying: Vec<_> = self.model.in_flight.keys().copied().collect();
                    flying.sort();
                    if let Some(&id) = flying.get(which % flying.len().max(1)) {
                        let _ = self.tc.complete(now, id, Outcome::status(200));
                    }
                }
                Op::Cancel { which } => {
                    if let Some(&id) = self.submitted.get(which % self.submitted.len().max(1)) {
                        let known = self.model.waiting_key.contains_key(&id) || self.model.in_flight.contains_key(&id);
                        assert_eq!(self.tc.cancel(now, id), known);
                    }
                }
                Op::Release { which } => {
                    if let Some(&(rid, _, _)) = self.made.get(which % self.made.len().max(1)) {
                        let releasable = self
                            .model
                            .reservations
                            .get(&rid)
                            .is_some_and(|r| r.attached.is_none() && r.expires_at > self.now);
                        assert_eq!(self.tc.release(now, rid), releasable);
                    }
                }
                Op::Poll => {}
            }
            self.drain();
        }
        // (5) liveness: complete everything as it goes, follow poll_timeout until nobody waits.
        for _ in 0..100_000 {
            let flying: Vec<_> = self.model.in_flight.keys().copied().collect();
            for id in flying {
                let _ = self.tc.complete(Timestamp::from_nanos(self.now), id, Outcome::status(200));
            }
            self.drain();
            if self.model.waiting.is_empty() && self.model.in_flight.is_empty() {
                break;
            }
            let Some(t) = self.tc.poll_timeout() else {
                panic!("(5) {} requests wait and the core names no instant to poll", self.model.waiting.len())
            };
            self.now = self.now.max(t.as_nanos());
            self.drain();
        }
        assert!(self.model.waiting.is_empty(), "(5) requests still waiting");
        assert_eq!(self.tc.waiting(), 0);
        for id in &self.submitted {
            assert!(
                self.model.went.contains_key(id) || self.model.ended.contains_key(id),
                "(5) {id:?} neither went nor ended"
            );
        }
        self.model.check_logs();
    }

    fn submit(&mut self, r: Request, spec: Spec, direct: bool) {
        let id = self.register(spec.clone());
        if spec.reservation_sound {
            STATS.with(|st| *st.borrow_mut().entry("sound_follow_up").or_insert(0) += 1);
        }
        let now = Timestamp::from_nanos(self.now);
        if direct {
            match self.tc.try_acquire(now, r) {
                Decision::Go(p) => {
                    assert_eq!(p.request, id);
                    self.submitted.push(id);
                }
                Decision::Wait { until } => {
                    if spec.reservation_sound {
                        panic!("(3) a sound follow-up was told to wait until {until:?}");
                    }
                    assert!(until.is_none_or(|u| u.as_nanos() > self.now));
                }
                Decision::Reject(e) => self.check_rejection(&spec, &e),
                _ => unreachable!(),
            }
        } else {
            match self.tc.submit(now, r) {
                Ok(got) => {
                    assert_eq!(got, id);
                    self.submitted.push(id);
                }
                Err(e) => self.check_rejection(&spec, &e),
            }
        }
    }
}

thread_local! {
    static TRACE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn trace(line: String) {
    TRACE.with(|t| t.borrow_mut().push(line));
}

/// Runs one workload; with `TRACE=1` in the environment, a failing run prints its config, its
/// operations and the events it saw (the last one printed is the shrunk case).
fn run_workload(w: Workload) {
    TRACE.with(|t| t.borrow_mut().clear());
    trace(format!("config {}", serde_json::to_string(&w.config()).unwrap()));
    let tc = TrafficControl::new(w.config()).unwrap();
    let ops = w.ops.clone();
    let mut host = Host { tc, model: Model::new(w), now: 0, submitted: Vec::new(), made: Vec::new(), next_id: 1 };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.run(&ops)));
    if let Err(panic) = result {
        if std::env::var_os("TRACE").is_some() {
            TRACE.with(|t| eprintln!("=== failing run\n{}\n=== end", t.borrow().join("\n")));
        }
        std::panic::resume_unwind(panic);
    }
}

thread_local! {
    /// Events seen per kind, to show the workloads reach every path.
    static STATS: std::cell::RefCell<BTreeMap<&'static str, usize>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_shrink_iters: 4000,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workloads_keep_every_invariant(w in workload()) {
        run_workload(w);
    }
}

#[test]
fn workloads_reach_every_path() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..200 {
        run_workload(workload().new_tree(&mut runner).unwrap().current());
    }
    let stats = STATS.with(|s| s.borrow().clone());
    eprintln!("events over 200 workloads: {stats:?}");
    for kind in [
        "sound_follow_up",
        "queued",
        "go",
        "completed",
        "rejected",
        "expired",
        "cancelled",
        "lease_expired",
        "reservation_expired",
        "reservation_released",
    ] {
        assert!(stats.get(kind).copied().unwrap_or(0) >= 5, "too few {kind} events: {stats:?}");
    }
}
