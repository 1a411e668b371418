//! [`TrafficControl`]: the calling contract and admissions. What the server's answers teach
//! (completions, pauses, budgets, quotas) is in `learning`; time passing (expiries, the
//! scheduling pass's triggers, `poll`) in `timers`.

mod learning;
#[cfg(feature = "keys")]
mod pools;
mod shadowing;
#[cfg(feature = "tenants")]
mod shares;
mod timers;

pub(crate) use learning::{pause_targets, quota_target};

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::config::Config;
use crate::error::{ConfigError, RequestError};
use crate::event::{Endpoint, Event, EventKind};
use crate::limit::pause::Jitter;
use crate::limit::{Ask, Limit, PauseReason};
#[cfg(feature = "metrics")]
use crate::metrics::Metrics;
use crate::metrics::{Counted, Counters};
use crate::queue::{lane_of, merge_needs, Admission, FollowUpNeeds, Reserve, WaitQueue, RESERVED_LANE};
use crate::request::{Decision, IdMap, Permit, Priority, Request, RequestId, ReservationId};
use crate::route::{EndpointRef, Needs, Router};
use crate::snapshot::{LimitSnapshot, PauseSnapshot, Snapshot};
use crate::time::Timestamp;

/// The traffic controller: decides when each outgoing request may go. Sans-IO: it never reads a
/// clock, sleeps or performs IO; the host passes `now` into every call and does its own HTTP.
///
/// # The calling contract
///
/// - The caller MUST pass a `now` from one monotonic clock to every call. A `now` earlier than one
///   already seen is taken as the latest seen (time never runs backwards here).
/// - Queued path: [`submit`](Self::submit) a request, then drain [`poll`](Self::poll) until it
///   returns `None`. A [`EventKind::Go`] event carries the permit of a request that may go now.
///   Then sleep until [`poll_timeout`](Self::poll_timeout) (or until the next submit, complete or
///   cancel) and poll again. Polling early or twice is harmless.
/// - Direct path (no queue on the host): [`try_acquire`](Self::try_acquire) answers
///   [`Decision::Go`], [`Decision::Wait`] or [`Decision::Reject`] at once.
/// - After a permitted request finishes, the caller MUST call [`complete`](Self::complete) with its
///   outcome (or [`cancel`](Self::cancel) if it never went): concurrency slots are held until
///   then, or until the lease expires.
///
/// ```no_run
/// use traffic_control_core::{Config, EventKind, Outcome, Request, Timestamp, TrafficControl};
/// # fn clock() -> Timestamp { Timestamp::ZERO }
/// # fn send(_: RequestIdLike) {}
/// # type RequestIdLike = traffic_control_core::RequestId;
/// # fn sleep_until(_: Option<Timestamp>) {}
/// let config = Config::from_json(r#"{"limits":{"api":{"kind":"window","max":2,"per":"1s"}},
///                                   "global":["api"]}"#).unwrap();
/// let mut tc = TrafficControl::new(config).unwrap();
/// for i in 0..5 {
///     tc.submit(clock(), Request::http("GET", format!("/items/{i}"))).unwrap();
/// }
/// loop {
///     while let Some(event) = tc.poll(clock()) {
///         if let EventKind::Go { permit, .. } = event.kind {
///             send(permit.request); // the host performs the request, then:
///             let _ = tc.complete(clock(), permit.request, Outcome::status(200));
///         }
///     }
///     sleep_until(tc.poll_timeout());
/// }
/// ```
#[derive(Debug)]
pub struct TrafficControl {
    config: Config,
    limits: Vec<Limit>,
    router: Router,
    now: Timestamp,
    next_request: u64,
    next_reservation: u64,
    queue: WaitQueue,
    /// Named tenants in name order (the default class left out): tenant `i` of this list is the
    /// queue's tenant `i + 1`, 0 being the default class. A sorted list rather than a map: one
    /// binary search per request that names a tenant, and less code in the wasm module.
    tenants: Vec<String>,
    /// The tenants' shares of the limits (`TenantConfig::guaranteed`, `borrow`).
    #[cfg(feature = "tenants")]
    shares: shares::Shares,
    /// The breaker limits, each with the request whose answer last opened it (its half-open
    /// event names that request).
    #[cfg(feature = "keys")]
    breakers: Vec<(crate::route::LimitIdx, Option<Opener>)>,
    /// The key pools (`Config::pools`), and each limit's place in them.
    #[cfg(feature = "keys")]
    pools: Vec<pools::Pool>,
    #[cfg(feature = "keys")]
    pooled: Vec<Option<pools::Pooled>>,
    /// (deadline, request) of waiters with a deadline; stale entries are skipped.
    deadlines: BinaryHeap<Reverse<(Timestamp, RequestId)>>,
    in_flight: IdMap<InFlight>,
    /// (lease expiry, request) in admission order: one lease TTL makes it sorted by expiry.
    leases: VecDeque<(Timestamp, RequestId)>,
    reservations: FxHashMap<ReservationId, Reservation>,
    reservation_expiry: BinaryHeap<Reverse<(Timestamp, ReservationId)>>,
    /// Something may fit that did not at the last pass.
    dirty: bool,
    /// A timer entry may belong to something gone (completed, cancelled, spent, admitted).
    stale_timers: bool,
    /// The earliest instant a blocked waiter may fit by time alone.
    next_wake: Option<Timestamp>,
    events: VecDeque<Event>,
    /// Off: only the events that deliver a decision about a queued request (see
    /// [`set_event_log`](Self::set_event_log)).
    log: bool,
    scratch: Scratch,
    /// Jitter for backoff pauses: deterministic from the config's seed.
    rng: Jitter,
    /// What [`metrics`](Self::metrics) reports besides the state.
    counters: Counters,
    /// A config run beside this one on the same traffic ([`set_shadow`](Self::set_shadow)).
    #[cfg(feature = "shadow")]
    shadow: Option<Box<crate::shadow::Shadow>>,
}

/// The request whose answer opened a breaker: its id, whom it was for, its priority.
#[cfg(feature = "keys")]
type Opener = (RequestId, EndpointRef, Priority);

/// Room for events kept by a drained log.
const EVENTS_KEPT: usize = 1024;

#[derive(Debug)]
struct InFlight {
    /// What it took (its concurrency slots are the needs on concurrency limits): a retry asks the same again.
    needs: Needs,
    /// Budgets its response may report on.
    budgets: crate::route::Budgets,
    deadline: Option<Timestamp>,
    attempt: u16,
    started: Timestamp,
    endpoint: EndpointRef,
    priority: Priority,
    tenant: u16,
    /// The key of a pool it went on: a retry goes on it again, or on another.
    key: crate::queue::KeySlot,
}

#[derive(Debug)]
struct Reservation {
    holds: Needs,
    expires_at: Timestamp,
    /// A waiting request is spending it: it does not expire while it waits.
    attached: bool,
    owner: RequestId,
    endpoint: EndpointRef,
    priority: Priority,
}

/// Buffers reused across scheduling passes.
#[derive(Debug, Default)]
struct Scratch {
    claims: Vec<u64>,
    /// Groups' heads by (lane, start tag, arrival, group).
    heap: BinaryHeap<Reverse<(u8, u64, u64, usize)>>,
}

impl TrafficControl {
    /// A controller for a validated config.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        #[allow(unused_mut)]
        let mut limits: Vec<Limit> = config.limits.iter().map(|(name, c)| Limit::new(name, c)).collect();
        // Each key's copy of its pool's limits, after the config's.
        #[cfg(feature = "keys")]
        let (pools, pooled) = pools::expand(&config, &mut limits);
        // Tenants by index: 0 the default class, then the named ones in name order.
        let mut tenants = Vec::new();
        let mut weights = Vec::new();
        if cfg!(feature = "tenants") && !config.tenants.is_empty() {
            weights.push(config.tenants.get(crate::config::DEFAULT_TENANT).map_or(1, |t| t.weight));
            for (name, t) in config.tenants.iter().filter(|(n, _)| *n != crate::config::DEFAULT_TENANT) {
                tenants.push(name.clone());
                weights.push(t.weight);
            }
        }
        // Each tenant's copy of the limits it has a share of, after the keys'.
        #[cfg(feature = "tenants")]
        let shares = shares::expand(&config, &tenants, &mut limits);
        let router = Router::new(&config, &limits);
        let mut queue = WaitQueue::new(limits.len());
        if !weights.is_empty() {
            queue.set_tenants(&weights);
        }
        let seed = config.feedback.seed;
        let router_routes = config.routes.len();
        #[cfg(feature = "keys")]
        let breakers = (0..limits.len())
            .filter(|&i| limits[i].is_breaker())
            .map(|i| (i as crate::route::LimitIdx, None))
            .collect();
        Ok(TrafficControl {
            config,
            router,
            queue,
            tenants,
            #[cfg(feature = "tenants")]
            shares,
            #[cfg(feature = "keys")]
            breakers,
            #[cfg(feature = "keys")]
            pools,
            #[cfg(feature = "keys")]
            pooled,
            limits,
            now: Timestamp::ZERO,
            next_request: 1,
            next_reservation: 1,
            deadlines: BinaryHeap::new(),
            in_flight: IdMap::default(),
            leases: VecDeque::new(),
            reservations: FxHashMap::default(),
            reservation_expiry: BinaryHeap::new(),
            dirty: false,
            stale_timers: false,
            next_wake: None,
            events: VecDeque::new(),
            log: true,
            scratch: Scratch::default(),
            rng: Jitter::new(seed),
            counters: Counters::new(router_routes),
            #[cfg(feature = "shadow")]
            shadow: None,
        })
    }

    /// The config this controller runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decides at once: go now, wait until an instant, or never. Nothing is queued; the request
    /// takes its place behind every request already waiting at its priority or above, so the
    /// direct path cannot overtake the queue.
    pub fn try_acquire(&mut self, now: Timestamp, request: impl Borrow<Request>) -> Decision {
        let request = request.borrow();
        let now = self.advance(now);
        let id = self.new_request_id();
        let admission = match self.admission(now, request) {
            Ok(a) => a,
            Err(error) => {
                self.shadow_arrive(now, id, request);
                return self.reject(now, id, request, error);
            }
        };
        let lane = admission.lane;
        let counted = self.counted_claims(lane);
        let ahead = |limit| self.claim_ahead(counted.as_deref(), lane, limit);
        if self.fits(&admission, ahead) {
            // The direct path's shadow sees the final answers only (a wait comes back as a new call).
            self.shadow_arrive(now, id, request);
            return Decision::Go(self.admit(now, id, admission, None));
        }
        // The earliest instant it fits by time alone, or sooner if a timer (a reservation or lease
        // expiring, a waiter ahead going) may change the picture.
        let until = earliest(self.when_fits(now, &admission, ahead), self.next_timer()).filter(|&t| t > now);
        if let Err(error) = self.check_deadline(now, &admission) {
            self.shadow_arrive(now, id, request);
            self.reject_admission(now, id, admission, error.clone());
            return Decision::Reject(error);
        }
        Decision::Wait { until }
    }

    /// Queues a request. It goes as soon as every limit it needs has room and no request ahead of it
    /// needs that room: its [`EventKind::Go`] comes out of [`poll`](Self::poll), possibly at once.
    /// Requests that can never go fail here, at once.
    pub fn submit(&mut self, now: Timestamp, request: impl Borrow<Request>) -> Result<RequestId, RequestError> {
        let request = request.borrow();
        let now = self.advance(now);
        let id = self.new_request_id();
        self.shadow_arrive(now, id, request);
        let admission = match self.admission(now, request) {
            Ok(a) => a,
            Err(error) => {
                self.push_rejected(now, id, request, error.clone());
                return Err(error);
            }
        };
        let lane = admission.lane;
        let counted = self.counted_claims(lane);
        let ahead = |limit| self.claim_ahead(counted.as_deref(), lane, limit);
        if self.fits(&admission, ahead) {
            self.admit(now, id, admission, None);
            return Ok(id);
        }
        let wake = self.when_fits(now, &admission, ahead);
        if let Err(error) = self.check_deadline(now, &admission) {
            self.reject_admission(now, id, admission, error.clone());
            return Err(error);
        }
        if self.queue.len() >= self.config.queue.max_waiting {
            let error = RequestError::QueueFull { max_waiting: self.config.queue.max_waiting };
            self.reject_admission(now, id, admission, error.clone());
            return Err(error);
        }
        if let Some(deadline) = admission.deadline {
            self.deadlines.push(Reverse((deadline, id)));
        }
        if let Some((rid, _)) = admission.spend.as_deref() {
            if let Some(r) = self.reservations.get_mut(rid) {
                r.attached = true;
            }
        }
        self.emit(now, id, &admission.endpoint, admission.priority, EventKind::Queued);
        self.queue.push(id, admission, now);
        self.next_wake = earliest(self.next_wake, wake);
        Ok(id)
    }

    /// Removes a waiting request from the queue, or gives back the slots of an admitted one that
    /// will not be sent. Returns whether the request was known.
    pub fn cancel(&mut self, now: Timestamp, request: RequestId) -> bool {
        let now = self.now.max(now);
        self.stale_timers = true;
        let (endpoint, priority) = if let Some(waiter) = self.queue.remove(request) {
            self.detach_spend(&waiter.admission);
            self.dirty = true;
            let a = waiter.admission;
            (a.endpoint, a.priority)
        } else if let Some(flight) = self.in_flight.remove(&request) {
            self.give_back(now, request, &flight);
            (flight.endpoint, flight.priority)
        } else {
            return false;
        };
        self.emit(now, request, &endpoint, priority, EventKind::Cancelled);
        self.advance(now);
        true
    }

    /// Releases a reservation early (the follow-up will not be sent). Returns whether it was live
    /// and not being spent by a waiting request.
    pub fn release(&mut self, now: Timestamp, reservation: ReservationId) -> bool {
        let now = self.advance(now);
        match self.reservations.get(&reservation) {
            Some(r) if !r.attached => {}
            _ => return false,
        }
        let r = self.reservations.remove(&reservation).expect("checked");
        self.stale_timers = true;
        self.drop_reservation(now, reservation, r, false);
        self.shadow_release(now, reservation);
        self.advance(now);
        true
    }

    /// Every limit's state and the queue depths, as of `now`.
    pub fn snapshot(&mut self, now: Timestamp) -> Snapshot {
        let now = self.advance(now);
        let limits = self
            .limits
            .iter()
            .map(|l| LimitSnapshot {
                name: l.name.to_string(),
                kind: l.kind(),
                capacity: l.capacity(),
                // An unknown balance shows as full rather than as a made-up number.
                used: if l.budget().is_some_and(|b| !b.is_known()) { l.capacity() } else { l.used() },
                reserved: l.reserved,
                available: l.capacity().saturating_sub(l.used().saturating_add(l.reserved)),
                next_free: l.next_free(now),
                balance: l.budget().and_then(|b| b.balance()),
                pause: (l.paused_until > now).then(|| PauseSnapshot {
                    until: l.paused_until,
                    server_until: l.server_until,
                    reason: l.pause_reason.map_or("block", PauseReason::as_str),
                    strikes: l.strikes,
                }),
            })
            .collect();
        let waiting = Priority::ALL.map(|p| self.queue.depth(p));
        Snapshot { at: now, limits, waiting, in_flight: self.in_flight.len(), reservations: self.reservations.len() }
    }

    /// The metrics as of `now`: what the controller counted since it started (requests by
    /// route, priority and result; refusals by code; waits; pauses by reason) and the gauges of
    /// [`snapshot`](Self::snapshot). [`Metrics::to_prometheus`] writes them for a scrape.
    #[cfg(feature = "metrics")]
    pub fn metrics(&mut self, now: Timestamp) -> Metrics {
        let snapshot = self.snapshot(now);
        let limits: Vec<&str> = self.limits.iter().map(|l| &*l.name).collect();
        self.counters.report(&self.router.route_names(), &limits, snapshot)
    }

    /// The URL of the free status request that reports the budgets' balance (Keepa's `/token`),
    /// made from a request to the same API; see [`Config::status_url`]. A host that meets
    /// `BUDGET_UNKNOWN` sends it first (through the controller) and asks again.
    pub fn status_url(&self, url: &str) -> Option<String> {
        self.config.status_url(url)
    }

    /// Requests waiting, all priorities.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Whether a request is waiting in the queue.
    pub fn is_waiting(&self, request: RequestId) -> bool {
        self.queue.waiters.contains_key(&request)
    }

    /// Whether the response of this in-flight request may carry limit fields in its body (its
    /// route takes a budget, such as Keepa's token fields): the host reads the body only then, or
    /// when the status is an error.
    pub fn reads_body(&self, request: RequestId) -> bool {
        self.in_flight.get(&request).is_some_and(|f| !f.budgets.is_empty())
    }

    /// The id of the pool key an in-flight request went on (the config's `pools`; also its
    /// permit's `key`): `None` outside pools or when it is not in flight.
    pub fn key_of(&self, request: RequestId) -> Option<&str> {
        #[cfg(feature = "keys")]
        {
            let flight = self.in_flight.get(&request)?;
            let pool = self.pool_of(&flight.needs)?;
            Some(&self.pools[usize::from(pool)].keys[usize::from(flight.key.key()?)])
        }
        #[cfg(not(feature = "keys"))]
        {
            let _ = request;
            None
        }
    }

    /// Turns the event log on (the default) or off. Off, [`poll`](Self::poll) yields only the
    /// events that deliver a decision: the Go of a request that waited or made reservations, and
    /// Rejected and Expired. A host that hands out permits and errors from events but keeps no log
    /// (the JavaScript scheduler while nobody listens) then pays for no other event. Events that
    /// happened while it was off are not replayed when it is turned on.
    pub fn set_event_log(&mut self, on: bool) {
        self.log = on;
    }

    // ---- internals -------------------------------------------------------------------------

    fn new_request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Resolves a request into what it asks of every limit; refuses what can never go.
    // Inlined into try_acquire and submit (natively; the wasm module keeps one copy for size): the
    // admission returned through the stack was read back wider than it was written, a
    // store-forwarding stall (~10 ns of the direct path).
    #[cfg_attr(not(target_arch = "wasm32"), inline(always))]
    fn admission(&self, now: Timestamp, request: &Request) -> Result<Admission, RequestError> {
        #[allow(unused_mut)]
        let mut resolved = self.router.resolve(&request.target, &request.limits, request.cost, &self.limits)?;
        let tenant = match &request.tenant {
            Some(name) if !self.tenants.is_empty() => {
                self.tenants.binary_search(name).map_or(0, |i| u16::try_from(i + 1).unwrap_or(0))
            }
            _ => 0,
        };
        #[cfg(feature = "tenants")]
        if !self.shares.is_empty() {
            self.with_shares(tenant, &mut resolved.needs);
        }
        let mut reserve = Vec::new();
        for f in &request.reserve {
            let r = self.router.resolve(&f.target, &f.limits, f.cost, &self.limits)?;
            // A reservation holds no breaker: its follow-up waits for an open one like anyone.
            #[cfg(feature = "keys")]
            let needs = if self.breakers.is_empty() {
                r.needs
            } else {
                r.needs.into_iter().filter(|n| !self.limits[usize::from(n.limit)].is_breaker()).collect()
            };
            #[cfg(not(feature = "keys"))]
            let needs = r.needs;
            #[cfg(feature = "tenants")]
            let needs = {
                let mut needs = needs;
                if !self.shares.is_empty() {
                    self.with_shares(tenant, &mut needs);
                }
                needs
            };
            reserve.push(FollowUpNeeds { needs, ttl: f.ttl.unwrap_or(self.config.reservation_ttl) });
        }
        let merged = if reserve.is_empty() {
            Vec::new()
        } else {
            merge_needs(std::iter::once(&resolved.needs).chain(reserve.iter().map(|f: &FollowUpNeeds| &f.needs)))
        };
        let total: &[crate::route::Need] = if reserve.is_empty() { &resolved.needs } else { &merged };
        for n in total {
            let limit = &self.limits[usize::from(n.limit)];
            if limit.budget().is_some_and(|b| !b.is_known()) {
                return Err(RequestError::BudgetUnknown { limit: limit.name.to_string() });
            }
            if n.cost > limit.capacity() {
                return Err(RequestError::CostExceedsCapacity {
                    limit: limit.name.to_string(),
                    cost: n.cost,
                    capacity: limit.capacity(),
                });
            }
        }
        if let Some(deadline) = request.deadline {
            if deadline < now {
                return Err(RequestError::DeadlineExceeded { deadline, now });
            }
        }
        // A live reservation not already being spent; an expired or unknown one is no error: the
        // follow-up then competes like any request rather than being refused.
        let spend = request.spend.and_then(|rid| {
            self.reservations.get(&rid).filter(|r| !r.attached).map(|r| Box::new((rid, r.holds.clone())))
        });
        let covered = reserve.is_empty() && self.covered(&resolved.needs, spend.as_deref());
        let lane = if covered { RESERVED_LANE } else { lane_of(request.priority) };
        let admission = Admission {
            priority: request.priority,
            lane,
            needs: resolved.needs,
            reserve: (!reserve.is_empty()).then(|| Box::new(Reserve { follow_ups: reserve, merged })),
            spend,
            deadline: request.deadline,
            endpoint: resolved.endpoint,
            attempt: 0,
            budgets: resolved.budgets,
            tenant,
            key: crate::queue::KeySlot::NONE,
        };
        #[cfg(feature = "keys")]
        if !self.pools.is_empty() {
            return self.place_on_key(now, admission, request.key.as_deref());
        }
        Ok(admission)
    }

    /// Whether the reservation a request spends holds all it needs (a breaker is never held):
    /// it then goes in the reserved lane, ahead of every priority.
    fn covered(&self, needs: &[crate::route::Need], spend: Option<&(ReservationId, Needs)>) -> bool {
        spend.is_some_and(|(_, holds)| {
            needs.iter().all(|n| {
                holds.iter().any(|h| h.limit == n.limit && h.cost >= n.cost)
                    || self.limits[usize::from(n.limit)].is_breaker()
            })
        })
    }

    /// The claims a newcomer of `lane` counts, when the queue's running sums will not do: with
    /// tenants' shares a waiter held by its own tenant's cap claims nothing (`None`: the sums).
    #[inline]
    fn counted_claims(&self, lane: u8) -> Option<Vec<u64>> {
        #[cfg(feature = "tenants")]
        if !self.shares.is_empty() {
            return Some(self.claims_ahead_with_shares(lane));
        }
        let _ = lane;
        None
    }

    /// The claim a newcomer of `lane` counts on `limit` (see [`counted_claims`](Self::counted_claims)).
    #[inline]
    fn claim_ahead(&self, counted: Option<&[u64]>, lane: u8, limit: crate::route::LimitIdx) -> u64 {
        match counted {
            Some(claims) => claims[usize::from(limit)],
            None => self.queue.claims_through(limit, lane),
        }
    }

    fn ask(&self, admission: &Admission, limit: crate::route::LimitIdx, cost: u64, claims: u64) -> Ask {
        let own_reserved = admission.own_reserved(limit);
        // Tenants' guaranteed shares: what others do not use of theirs is kept from this request
        // (what its own reservation holds was kept already).
        #[cfg(feature = "tenants")]
        let claims = if self.shares.is_empty() || own_reserved >= cost {
            claims
        } else {
            self.claims_with_shares(admission, limit, cost, claims)
        };
        Ask {
            cost,
            own_reserved,
            claims,
            may_use_reserved: admission.may_use_reserved(),
            critical: admission.priority == Priority::Critical,
        }
    }

    fn fits(&self, admission: &Admission, claims: impl Fn(crate::route::LimitIdx) -> u64) -> bool {
        admission
            .total()
            .iter()
            .all(|n| self.limits[usize::from(n.limit)].fits(self.ask(admission, n.limit, n.cost, claims(n.limit))))
    }

    fn when_fits(
        &self,
        now: Timestamp,
        admission: &Admission,
        claims: impl Fn(crate::route::LimitIdx) -> u64,
    ) -> Option<Timestamp> {
        let mut at = now;
        for n in admission.total() {
            let ask = self.ask(admission, n.limit, n.cost, claims(n.limit));
            at = at.max(self.limits[usize::from(n.limit)].when_fits(now, ask)?);
        }
        Some(at)
    }

    /// Refuses at once a request whose deadline cannot be met even if nobody else asked and every
    /// reservation expired: the bound must be a true lower bound, never refuse what could go. When
    /// a budget is what keeps it past its deadline, the error says how much is needed and when
    /// enough would be there.
    fn check_deadline(&self, now: Timestamp, admission: &Admission) -> Result<(), RequestError> {
        let verdict = self.check_deadline_on(now, admission);
        // A request of a key pool that its key cannot serve in time may still go on another.
        #[cfg(feature = "keys")]
        if verdict.is_err() && self.deadline_on_any_key(now, admission) {
            return Ok(());
        }
        verdict
    }

    /// [`check_deadline`](Self::check_deadline) on the limits the admission names.
    fn check_deadline_on(&self, now: Timestamp, admission: &Admission) -> Result<(), RequestError> {
        let Some(deadline) = admission.deadline else { return Ok(()) };
        let mut earliest_possible = now;
        let mut budget_late = None;
        for n in admission.total() {
            let limit = &self.limits[usize::from(n.limit)];
            // A budget's spending never comes back: every request waiting ahead of this one on it
            // (a lane ahead, or its own lane, all queued earlier) is served from it first.
            let ahead = if limit.budget().is_some() { self.queue.ahead_of(n.limit, admission.lane) } else { 0 };
            // As if every reservation were its own: reservations may expire before the deadline.
            let ask = Ask {
                cost: n.cost,
                own_reserved: u64::MAX,
                claims: ahead,
                may_use_reserved: false,
                critical: admission.priority == Priority::Critical,
            };
            match limit.when_fits(now, ask) {
                Some(t) => {
                    earliest_possible = earliest_possible.max(t);
                    if let Some(b) = limit.budget().filter(|_| t > deadline) {
                        let available = b.balance().unwrap_or(0).saturating_sub(b.floor() as i64);
                        budget_late = Some(RequestError::InsufficientBudget {
                            limit: limit.name.to_string(),
                            needed: n.cost,
                            available,
                            ahead,
                            enough_at: Some(t),
                        });
                    }
                }
                // Only an event (a completion) can make room: no bound to judge by.
                None => return Ok(()),
            }
        }
        if earliest_possible <= deadline {
            return Ok(());
        }
        Err(budget_late.unwrap_or(RequestError::DeadlineUnreachable { earliest: earliest_possible, deadline }))
    }

    /// Takes every limit's cost at once, makes the reservations, starts the lease. `queued_at`:
    /// when the request was queued, if it waited (its permit then goes out in the Go event).
    fn admit(&mut self, now: Timestamp, id: RequestId, admission: Admission, queued_at: Option<Timestamp>) -> Permit {
        // A waiter's deadline entry and a spent reservation's expiry entry are left behind.
        self.stale_timers |= admission.deadline.is_some() || admission.spend.is_some();
        if let Some((rid, holds)) = admission.spend.as_deref() {
            if self.reservations.remove(rid).is_some() {
                for h in holds {
                    let l = &mut self.limits[usize::from(h.limit)];
                    l.reserved -= h.cost;
                }
                // Reserved room turns into admissions that leave the window on their own schedule:
                // the waiters' wake instants must be computed again.
                self.dirty = true;
            }
        }
        let mut warnings: SmallVec<[(u16, &'static str, u64); 1]> = SmallVec::new();
        for n in &admission.needs {
            let l = &mut self.limits[usize::from(n.limit)];
            if let Some(reason) = l.take(now, id, n.cost) {
                warnings.push((n.limit, reason, n.cost));
            }
            l.in_flight_cost += n.cost;
        }
        // Warned after the Go (rare: only budgets warn, and the endpoint is cloned only then).
        let warned = (!warnings.is_empty()).then(|| (warnings, admission.endpoint.clone()));
        let follow_ups = admission.reserve.map_or_else(Vec::new, |r| r.follow_ups);
        let mut reservations = Vec::with_capacity(follow_ups.len());
        for f in follow_ups {
            let rid = ReservationId(self.next_reservation);
            self.next_reservation += 1;
            for n in &f.needs {
                self.limits[usize::from(n.limit)].reserved += n.cost;
            }
            let expires_at = now + f.ttl.max(std::time::Duration::from_nanos(1));
            self.reservation_expiry.push(Reverse((expires_at, rid)));
            self.reservations.insert(
                rid,
                Reservation {
                    holds: f.needs,
                    expires_at,
                    attached: false,
                    owner: id,
                    endpoint: admission.endpoint.clone(),
                    priority: admission.priority,
                },
            );
            reservations.push(rid);
        }
        self.leases.push_back((now + self.config.lease_ttl, id));
        // Without the log, the caller of an admission made at once has its permit already (a
        // submit's Go still carries the reservations it made).
        let announce = self.log || queued_at.is_some() || !reservations.is_empty();
        // The endpoint moves into the in-flight entry; the Go event takes a second reference only
        // when there is one (reference counts are atomic: a clone and its drop cost ~15 ns).
        let go_endpoint = announce.then(|| admission.endpoint.clone());
        let slot = Router::slot_of(&admission.endpoint);
        #[cfg(feature = "keys")]
        let key = self.key_id(&admission.needs, admission.key);
        #[cfg(not(feature = "keys"))]
        let key = None;
        self.in_flight.insert(
            id,
            InFlight {
                // Moved, not cloned: the admission is spent here.
                needs: admission.needs,
                budgets: admission.budgets,
                deadline: admission.deadline,
                attempt: admission.attempt,
                started: now,
                endpoint: admission.endpoint,
                priority: admission.priority,
                tenant: admission.tenant,
                key: admission.key,
            },
        );
        let permit = Permit { request: id, reservations, at: now, key };
        self.counters.went(slot, admission.priority, queued_at.map(|q| now - q));
        self.shadow_went(now, id, &permit.reservations);
        if let Some(endpoint) = go_endpoint {
            let waited = now - queued_at.unwrap_or(now);
            // Built field by field: most permits reserve nothing, and an empty Vec is made, not cloned.
            let reservations = if permit.reservations.is_empty() { Vec::new() } else { permit.reservations.clone() };
            let go = Permit { request: id, reservations, at: now, key: permit.key.clone() };
            self.emit(now, id, &endpoint, admission.priority, EventKind::Go { permit: go, waited });
        }
        if let Some((warnings, endpoint)) = warned {
            for (limit, reason, cost) in warnings {
                let l = &self.limits[usize::from(limit)];
                let kind = EventKind::BudgetLow {
                    limit: l.name.to_string(),
                    balance: l.budget().and_then(|b| b.balance()).unwrap_or(0),
                    cost,
                    reason,
                };
                self.counters.budget_warned(limit, reason);
                self.emit(now, id, &endpoint, admission.priority, kind);
            }
        }
        permit
    }

    fn emit(&mut self, at: Timestamp, request: RequestId, endpoint: &EndpointRef, priority: Priority, kind: EventKind) {
        match &kind {
            EventKind::Rejected { error } => self.counters.rejected(Router::slot_of(endpoint), priority, error.code()),
            EventKind::Expired { .. } => self.counters.count(Router::slot_of(endpoint), priority, Counted::Expired),
            EventKind::Cancelled => self.counters.count(Router::slot_of(endpoint), priority, Counted::Cancelled),
            EventKind::RateLimited { .. } => {
                self.counters.count(Router::slot_of(endpoint), priority, Counted::RateLimited)
            }
            _ => {}
        }
        self.shadow_event(at, request, &kind);
        if self.log || matches!(kind, EventKind::Go { .. } | EventKind::Rejected { .. } | EventKind::Expired { .. }) {
            let endpoint = self.router.endpoint_of(endpoint);
            self.events.push_back(Event { at, request, endpoint, priority, kind });
        }
    }

    /// The request ended at `at`: its slots come back, its window holds start counting down.
    fn give_back(&mut self, at: Timestamp, id: RequestId, flight: &InFlight) {
        for n in &flight.needs {
            let l = &mut self.limits[usize::from(n.limit)];
            l.in_flight_cost = l.in_flight_cost.saturating_sub(n.cost);
            // A concurrency limit's need is its slot (cost 1); a breaker's, a probe's place.
            if l.give_back(at, id, n.cost) {
                self.dirty = true;
            }
        }
    }

    fn detach_spend(&mut self, admission: &Admission) {
        self.stale_timers = true;
        if let Some((rid, _)) = admission.spend.as_deref() {
            if let Some(r) = self.reservations.get_mut(rid) {
                r.attached = false;
                // Its TTL runs again; one already past expires at the next advance.
                self.reservation_expiry.push(Reverse((r.expires_at, *rid)));
            }
        }
    }

    fn drop_reservation(&mut self, now: Timestamp, rid: ReservationId, r: Reservation, expired: bool) {
        for h in &r.holds {
            self.limits[usize::from(h.limit)].reserved -= h.cost;
        }
        self.dirty = true;
        let kind = if expired {
            EventKind::ReservationExpired { reservation: rid }
        } else {
            EventKind::ReservationReleased { reservation: rid }
        };
        self.emit(now, r.owner, &r.endpoint, r.priority, kind);
    }

    fn push_rejected(&mut self, now: Timestamp, id: RequestId, request: &Request, error: RequestError) {
        let endpoint = match self.router.resolve(&request.target, &[], None, &self.limits) {
            Ok(r) => r.endpoint,
            Err(_) => EndpointRef::Own(Arc::new(Endpoint {
                name: describe_target(request).into(),
                route: None,
                route_slot: 0,
            })),
        };
        self.emit(now, id, &endpoint, request.priority, EventKind::Rejected { error });
    }

    fn reject(&mut self, now: Timestamp, id: RequestId, request: &Request, error: RequestError) -> Decision {
        self.push_rejected(now, id, request, error.clone());
        Decision::Reject(error)
    }

    fn reject_admission(&mut self, now: Timestamp, id: RequestId, a: Admission, error: RequestError) {
        self.emit(now, id, &a.endpoint, a.priority, EventKind::Rejected { error });
    }

    /// The scheduling pass: admits, in (lane, arrival) order, every waiter that fits once the
    /// claims of the waiters ahead of it are counted.
    ///
    /// Only a group's head can go (see `queue`). Heads are taken in (lane, arrival) order from a
    /// heap of groups: a head that fits goes and the next member takes its place in the heap; a head
    /// that does not fit claims its cost on every limit it asks of (nobody behind it may take that
    /// room) and its group is done for this pass. The work is O((groups + admissions) log groups),
    /// whatever the number waiting.
    fn schedule(&mut self, now: Timestamp) {
        self.dirty = false;
        let mut wake: Option<Timestamp> = None;
        #[cfg(feature = "tenants")]
        let mut lent = false;
        let mut s = std::mem::take(&mut self.scratch);
        s.claims.clear();
        s.claims.resize(self.limits.len(), 0);
        s.heap.clear();
        for (g, group) in self.queue.groups.iter().enumerate() {
            if let Some(id) = group.members.front() {
                let w = &self.queue.waiters[id];
                s.heap.push(Reverse((group.lane, w.tag, w.seq, g)));
            }
        }
        while let Some(Reverse((lane, tag, _, g))) = s.heap.pop() {
            let Some(&id) = self.queue.groups[g].members.front() else { continue };
            let waiter = &self.queue.waiters[&id];
            let claims = &s.claims;
            if self.fits(&waiter.admission, |l| claims[usize::from(l)]) {
                let waiter = self.queue.remove(id).expect("waiting");
                self.queue.served(lane, tag);
                // A tenant with a guaranteed share that stops waiting lends it: the waiters this
                // pass has passed over may fit then.
                #[cfg(feature = "tenants")]
                {
                    lent |= self.lends(waiter.admission.tenant);
                }
                self.admit(now, id, waiter.admission, Some(waiter.enqueued_at));
                if let Some(next) = self.queue.groups[g].members.front() {
                    let w = &self.queue.waiters[next];
                    s.heap.push(Reverse((lane, w.tag, w.seq, g)));
                }
                continue;
            }
            // A waiter of a key pool goes on any other key that can admit it now.
            #[cfg(feature = "keys")]
            if let Some(placed) = self.other_key(&waiter.admission, claims) {
                let waiter = self.queue.remove(id).expect("waiting");
                self.queue.served(lane, tag);
                #[cfg(feature = "tenants")]
                {
                    lent |= self.lends(waiter.admission.tenant);
                }
                self.admit(now, id, placed, Some(waiter.enqueued_at));
                if let Some(next) = self.queue.groups[g].members.front() {
                    let w = &self.queue.waiters[next];
                    s.heap.push(Reverse((lane, w.tag, w.seq, g)));
                }
                continue;
            }
            #[cfg(feature = "keys")]
            if let Some(at) = self.soonest_on_other_keys(now, &waiter.admission, claims) {
                wake = earliest(wake, Some(at));
            }
            wake = earliest(wake, self.when_fits(now, &waiter.admission, |l| claims[usize::from(l)]));
            // A waiter held by its own tenant's cap claims nothing from the others.
            #[cfg(feature = "tenants")]
            if !self.shares.is_empty() && self.capped(&waiter.admission) {
                continue;
            }
            for n in waiter.admission.total() {
                s.claims[usize::from(n.limit)] += waiter.admission.claim(n);
            }
        }
        self.scratch = s;
        self.next_wake = wake;
        #[cfg(feature = "tenants")]
        if lent {
            self.dirty = true;
        }
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn describe_target(request: &Request) -> String {
    match &request.target {
        crate::request::Target::Route(name) => name.clone(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_event_log_gives_a_bursts_buffer_back() {
        let config = Config::from_json(
            r#"{ "limits": { "api": { "kind": "window", "max": 1, "per": "1h" } }, "global": ["api"] }"#,
        );
        let mut tc = TrafficControl::new(config.unwrap()).unwrap();
        let now = Timestamp::from_millis(0);
        for _ in 0..10_000 {
            tc.submit(now, Request::http("GET", "/x")).expect("queued");
        }
        assert!(tc.events.capacity() >= 10_000);
        let mut drained = 0;
        while tc.poll(now).is_some() {
            drained += 1;
        }
        assert_eq!(drained, 10_000, "one go, 9 999 queued");
        assert!(tc.events.capacity() <= EVENTS_KEPT, "{}", tc.events.capacity());
    }
}
