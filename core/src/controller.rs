//! [`TrafficControl`]: the calling contract, admissions, completions, expiries.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::error::{ConfigError, RequestError};
use crate::event::{Endpoint, Event, EventKind};
use crate::feedback::{BlockKind, Feedback};
use crate::limit::pause::{strike, Jitter, Told};
use crate::limit::{Ask, Limit, PauseReason};
use crate::queue::{lane_of, merge_needs, Admission, FollowUpNeeds, Reserve, WaitQueue, RESERVED_LANE};
use crate::request::{Completion, Decision, IdMap, Outcome, Permit, Priority, Request, RequestId, ReservationId};
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
}

/// Room for events kept by a drained log.
const EVENTS_KEPT: usize = 1024;

#[derive(Debug)]
struct InFlight {
    /// What it took (its concurrency slots are the needs on concurrency limits): a retry asks the same again.
    needs: Needs,
    /// Budgets its response may report on.
    budgets: crate::route::Budgets,
    deadline: Option<Timestamp>,
    attempt: u32,
    started: Timestamp,
    endpoint: EndpointRef,
    priority: Priority,
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
    heap: BinaryHeap<Reverse<(u8, u64, usize)>>,
}

impl TrafficControl {
    /// A controller for a validated config.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let limits: Vec<Limit> = config.limits.iter().map(|(name, c)| Limit::new(name, c)).collect();
        let router = Router::new(&config, &limits);
        let queue = WaitQueue::new(limits.len());
        let seed = config.feedback.seed;
        Ok(TrafficControl {
            config,
            router,
            queue,
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
            Err(error) => return self.reject(now, id, request, error),
        };
        let lane = admission.lane;
        let ahead = |limit| self.queue.claims_through(limit, lane);
        if self.fits(&admission, ahead) {
            return Decision::Go(self.admit(now, id, admission, None));
        }
        // The earliest instant it fits by time alone, or sooner if a timer (a reservation or lease
        // expiring, a waiter ahead going) may change the picture.
        let until = earliest(self.when_fits(now, &admission, ahead), self.next_timer()).filter(|&t| t > now);
        if let Err(error) = self.check_deadline(now, &admission) {
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
        let admission = match self.admission(now, request) {
            Ok(a) => a,
            Err(error) => {
                self.push_rejected(now, id, request, error.clone());
                return Err(error);
            }
        };
        let lane = admission.lane;
        let ahead = |limit| self.queue.claims_through(limit, lane);
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

    /// Advances to `now` and returns the next event, or `None` when there is nothing more to say
    /// now. Drain it after every call that changes state.
    pub fn poll(&mut self, now: Timestamp) -> Option<Event> {
        if self.events.is_empty() {
            self.advance(now);
            if self.events.is_empty() {
                // Drained: a burst's buffer (100k queued events are ~12 MB) is given back.
                if self.events.capacity() > EVENTS_KEPT {
                    self.events.shrink_to(EVENTS_KEPT);
                }
                return None;
            }
        }
        self.events.pop_front()
    }

    /// The next instant at which anything can change by time alone: a waiter may fit, a deadline,
    /// a reservation or a lease may expire. `None`: nothing will happen until the host calls in.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = self.next_timer();
        if !self.events.is_empty() || self.dirty {
            t = earliest(t, Some(self.now));
        }
        t
    }

    /// The next instant a timer fires: a waiter may fit, a deadline, reservation or lease expires.
    fn next_timer(&self) -> Option<Timestamp> {
        let mut t = self.next_wake;
        if let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            // A request may still go at its deadline; it expires just after.
            t = earliest(t, Some(Timestamp::from_nanos(deadline.as_nanos().saturating_add(1))));
        }
        if let Some(Reverse((at, _))) = self.reservation_expiry.peek() {
            t = earliest(t, Some(*at));
        }
        if let Some((at, _)) = self.leases.front() {
            t = earliest(t, Some(*at));
        }
        t
    }

    /// Reports the outcome of a permitted request: frees its concurrency slots, and learns from
    /// what the server said ([`Feedback`]):
    ///
    /// - token fields (Keepa) set the budget to the server's balance, less the estimated cost of the
    ///   requests still in flight (never above what the server said);
    /// - a 429 or a block pauses the limits it points at (see `pause_targets`) until the server's time
    ///   (`Retry-After`, or the reset when that is all it says), or for the configured block doubled
    ///   on every repeat (plus jitter) when it names none; a WAF block or a blocked token stops them
    ///   for the cooldown. Any other answer clears the strikes;
    /// - an answer that is not rate limited but says the quota is used up (`remaining: 0` with a
    ///   reset) pauses the same limits until the reset (reason `exhausted`; no strike, no retry);
    /// - a reported quota (`RateLimit-Policy`, `RateLimit-Limit`, `X-RateLimit-Limit`) smaller
    ///   than the max of the window it is about (see `quota_target`) lowers that max for good
    ///   ([`EventKind::LimitLowered`]); waiters it can no longer hold are refused;
    /// - a rate-limited request is queued again at its priority: [`Completion::Retry`], its Go
    ///   coming out of `poll` later under the same id; after `feedback.max_retries`, or when the
    ///   pause runs past its deadline, [`Completion::GiveUp`].
    pub fn complete(&mut self, now: Timestamp, request: RequestId, outcome: Outcome) -> Completion {
        let now = self.now.max(now);
        let Some(flight) = self.in_flight.remove(&request) else {
            return Completion::Unknown;
        };
        if self.leases.front().is_some_and(|&(_, id)| id == request) {
            // Completions come mostly in admission order: the oldest lease is this one's.
            self.leases.pop_front();
            self.stale_timers |= self.leases.front().is_some_and(|(_, id)| !self.in_flight.contains_key(id));
        } else {
            self.stale_timers = true;
        }
        self.give_back(now, &flight);
        if self.log {
            self.emit(
                now,
                request,
                &flight.endpoint,
                flight.priority,
                EventKind::Completed { status: outcome.status, duration: now - flight.started },
            );
        }
        let completion = if outcome.headers.is_empty() && outcome.body.is_none() && outcome.status != Some(429) {
            // Nothing to learn (the fast path): a success clears the limits' strikes.
            self.clear_strikes(&flight.needs);
            Completion::Done
        } else {
            let feedback = Feedback::from_outcome(&outcome, outcome.body.as_deref(), outcome.unix_time);
            self.learn(now, request, flight, outcome.status, &feedback)
        };
        self.advance(now);
        completion
    }

    fn clear_strikes(&mut self, needs: &Needs) {
        for n in needs {
            self.limits[usize::from(n.limit)].strikes = 0;
        }
    }

    /// Applies what a response said; see [`complete`](Self::complete).
    fn learn(
        &mut self,
        now: Timestamp,
        id: RequestId,
        flight: InFlight,
        status: Option<u16>,
        feedback: &Feedback,
    ) -> Completion {
        if let Some(report) = &feedback.budget {
            for &limit in flight.budgets.as_slice() {
                let l = &mut self.limits[usize::from(limit)];
                let in_flight = i64::try_from(l.in_flight_cost).unwrap_or(i64::MAX);
                if let Some(b) = l.budget_mut() {
                    let refill_in = report.refill_in.map(crate::time::duration_nanos);
                    b.report(now, report.tokens_left.saturating_sub(in_flight), refill_in, report.server_time_ms);
                    self.dirty = true;
                }
            }
        }
        if let Some(quota) = feedback.limit {
            self.lower_max(now, id, &flight, quota, feedback);
        }
        if !feedback.rate_limited {
            self.clear_strikes(&flight.needs);
            if feedback.remaining == Some(0) {
                // The server's count wins when it is stricter than ours: its quota is used up
                // until the reset (not a strike, not a retry).
                self.pause(now, flight.started, flight.priority, &flight.needs, feedback, 0.0);
            }
            return Completion::Done;
        }
        let jitter = self.config.feedback.jitter * self.rng.next_unit();
        let until = self.pause(now, flight.started, flight.priority, &flight.needs, feedback, jitter);
        self.emit(now, id, &flight.endpoint, flight.priority, EventKind::RateLimited { status, until });
        let attempt = flight.attempt + 1;
        if attempt > self.config.feedback.max_retries || flight.deadline.is_some_and(|d| until > d) {
            return Completion::GiveUp;
        }
        // Queued again like any request: its limits are paused until `until`, so it cannot go
        // sooner, and when they open it competes at its priority (a Peak stays HIGH).
        let admission = Admission {
            priority: flight.priority,
            lane: lane_of(flight.priority),
            needs: flight.needs,
            reserve: None,
            spend: None,
            deadline: flight.deadline,
            endpoint: flight.endpoint.clone(),
            attempt,
            budgets: flight.budgets,
        };
        if let Some(deadline) = admission.deadline {
            self.deadlines.push(Reverse((deadline, id)));
        }
        self.emit(now, id, &flight.endpoint, flight.priority, EventKind::Retried { attempt, at: until });
        self.queue.push(id, admission, now);
        self.dirty = true;
        Completion::Retry { at: until }
    }

    /// A response reported the quota of one of the request's windows ([`quota_target`]): when it is
    /// smaller than the window's max, the window holds that much from now on, and waiters that
    /// can no longer fit in it are refused (`COST_EXCEEDS_CAPACITY`).
    fn lower_max(&mut self, now: Timestamp, id: RequestId, flight: &InFlight, quota: u64, feedback: &Feedback) {
        let Some(limit) = quota_target(&self.config, &self.limits, &flight.needs, feedback) else { return };
        let l = &mut self.limits[usize::from(limit)];
        let Some(from) = l.lower_max(quota) else { return };
        let name = l.name.to_string();
        self.emit(
            now,
            id,
            &flight.endpoint,
            flight.priority,
            EventKind::LimitLowered { limit: name.clone(), from, to: quota },
        );
        let too_big: Vec<(RequestId, u64)> = self
            .queue
            .groups
            .iter()
            .flat_map(|g| g.members.iter())
            .filter_map(|w| {
                let need = self.queue.waiters.get(w)?.admission.total().iter().find(|n| n.limit == limit)?.cost;
                (need > quota).then_some((*w, need))
            })
            .collect();
        for (w, cost) in too_big {
            if let Some(waiter) = self.queue.remove(w) {
                self.detach_spend(&waiter.admission);
                let a = waiter.admission;
                let error = RequestError::CostExceedsCapacity { limit: name.clone(), cost, capacity: quota };
                self.emit(now, w, &a.endpoint, a.priority, EventKind::Rejected { error });
            }
        }
        self.dirty = true;
    }

    /// Pauses the limits the feedback points at; returns when the request may be sent again (a
    /// CRITICAL one: when the server's own pause ends). The policy is [`Told`]'s, shared with the
    /// store: the server's time exactly, else the block doubled on every repeat (a 429 for a
    /// request sent after the previous pause the server imposed had ended: the other answers of one
    /// burst count once), jitter included, never past `max_block` (`cooldown` for blocks, when
    /// longer). `jitter` is the fraction drawn for this answer. Reservations held on a paused limit
    /// live as much longer as the pause grew, so a follow-up waiting behind it keeps its room.
    #[allow(clippy::too_many_arguments)]
    fn pause(
        &mut self,
        now: Timestamp,
        sent: Timestamp,
        priority: Priority,
        needs: &Needs,
        feedback: &Feedback,
        jitter: f64,
    ) -> Timestamp {
        let targets = pause_targets(&self.config, &self.limits, needs, feedback);
        let mut until = now;
        let mut grown: Vec<(crate::route::LimitIdx, Duration)> = Vec::new();
        for limit in targets {
            let l = &mut self.limits[usize::from(limit)];
            let Some(told) = Told::of(&self.config.feedback, &l.name, feedback) else { continue };
            let before = l.paused_until.max(now);
            let mut strikes = 1;
            if told.strikes() {
                let (kept, counted) = strike(l.strikes, sent >= l.server_until);
                l.strikes = kept;
                strikes = counted;
            }
            let p = told.pause(strikes, jitter);
            l.pause(now + p.server, now + p.total, p.reason);
            let after = if priority == Priority::Critical { l.server_until } else { l.paused_until };
            until = until.max(after);
            if l.paused_until > before {
                grown.push((limit, l.paused_until - before));
            }
        }
        if !grown.is_empty() {
            for (rid, r) in &mut self.reservations {
                let ext = grown.iter().filter(|(l, _)| r.holds.iter().any(|h| h.limit == *l)).map(|(_, d)| *d).max();
                if let Some(ext) = ext {
                    r.expires_at = r.expires_at + ext;
                    self.reservation_expiry.push(Reverse((r.expires_at, *rid)));
                }
            }
            self.stale_timers = true;
        }
        self.dirty = true;
        until
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
            self.give_back(now, &flight);
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
        let resolved = self.router.resolve(&request.target, &request.limits, request.cost, &self.limits)?;
        let mut reserve = Vec::new();
        for f in &request.reserve {
            let r = self.router.resolve(&f.target, &f.limits, f.cost, &self.limits)?;
            reserve.push(FollowUpNeeds { needs: r.needs, ttl: f.ttl.unwrap_or(self.config.reservation_ttl) });
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
        let covered = spend.as_deref().is_some_and(|(_, holds)| {
            reserve.is_empty()
                && resolved.needs.iter().all(|n| holds.iter().any(|h| h.limit == n.limit && h.cost >= n.cost))
        });
        let lane = if covered { RESERVED_LANE } else { lane_of(request.priority) };
        Ok(Admission {
            priority: request.priority,
            lane,
            needs: resolved.needs,
            reserve: (!reserve.is_empty()).then(|| Box::new(Reserve { follow_ups: reserve, merged })),
            spend,
            deadline: request.deadline,
            endpoint: resolved.endpoint,
            attempt: 0,
            budgets: resolved.budgets,
        })
    }

    fn ask(&self, admission: &Admission, limit: crate::route::LimitIdx, cost: u64, claims: u64) -> Ask {
        Ask {
            cost,
            own_reserved: admission.own_reserved(limit),
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

    /// Takes the server's word for a budget's balance (Keepa's `tokensLeft`, and `refillIn` for the
    /// phase of its refills). The balance is set to what the server said, never above it.
    pub fn sync_budget(
        &mut self,
        now: Timestamp,
        limit: &str,
        tokens_left: i64,
        refill_in: Option<std::time::Duration>,
    ) -> Result<(), RequestError> {
        let now = self.advance(now);
        let idx = self.router.limit_index(limit).ok_or_else(|| RequestError::UnknownLimit { limit: limit.into() })?;
        let budget = self.limits[usize::from(idx)]
            .budget_mut()
            .ok_or_else(|| RequestError::UnknownLimit { limit: format!("{limit} (not a budget)") })?;
        budget.sync(now, tokens_left, refill_in.map(crate::time::duration_nanos));
        self.dirty = true;
        self.advance(now);
        Ok(())
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
        for n in &admission.needs {
            let l = &mut self.limits[usize::from(n.limit)];
            l.take(now, n.cost);
            l.in_flight_cost += n.cost;
        }
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
            },
        );
        let permit = Permit { request: id, reservations, at: now };
        if let Some(endpoint) = go_endpoint {
            let waited = now - queued_at.unwrap_or(now);
            // Built field by field: most permits reserve nothing, and an empty Vec is made, not cloned.
            let reservations = if permit.reservations.is_empty() { Vec::new() } else { permit.reservations.clone() };
            let go = Permit { request: id, reservations, at: now };
            self.emit(now, id, &endpoint, admission.priority, EventKind::Go { permit: go, waited });
        }
        permit
    }

    fn emit(&mut self, at: Timestamp, request: RequestId, endpoint: &EndpointRef, priority: Priority, kind: EventKind) {
        if self.log || matches!(kind, EventKind::Go { .. } | EventKind::Rejected { .. } | EventKind::Expired { .. }) {
            let endpoint = self.router.endpoint_of(endpoint);
            self.events.push_back(Event { at, request, endpoint, priority, kind });
        }
    }

    /// The request ended at `at`: its slots come back, its window holds start counting down.
    fn give_back(&mut self, at: Timestamp, flight: &InFlight) {
        for n in &flight.needs {
            let l = &mut self.limits[usize::from(n.limit)];
            l.in_flight_cost = l.in_flight_cost.saturating_sub(n.cost);
            // A concurrency limit's need is its slot (cost 1).
            if l.give_back(at, n.cost) {
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
            Err(_) => EndpointRef::Own(Arc::new(Endpoint { name: describe_target(request).into(), route: None })),
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

    /// Moves the controller to `now`: expiries, then a scheduling pass if anything may fit.
    fn advance(&mut self, now: Timestamp) -> Timestamp {
        if now <= self.now {
            // Same instant: every timer up to it has fired already; only a change since (a
            // completion, a cancel, a spent reservation) can call for a pass.
            if self.dirty {
                self.settle(self.now);
            }
            self.drop_stale_timers();
            return self.now;
        }
        self.now = now;
        // Lapsed leases first: a window counts their cost from the lease's end, not from now.
        self.expire_leases(now);
        for l in &mut self.limits {
            l.advance(now);
        }
        self.expire_reservations(now);
        if self.dirty || self.next_wake.is_some_and(|t| t <= now) {
            self.settle(now);
        }
        if self.expire_deadlines(now) {
            self.settle(now);
        }
        self.drop_stale_timers();
        now
    }

    /// Runs a scheduling pass, unless nobody waits.
    fn settle(&mut self, now: Timestamp) {
        if self.queue.len() == 0 {
            // Nothing to admit, no instant to wake for.
            self.dirty = false;
            self.next_wake = None;
        } else {
            self.schedule(now);
        }
    }

    /// Pops timer entries of things already gone (completed, cancelled, spent), so that
    /// `poll_timeout` names only instants where something can happen.
    #[inline]
    fn drop_stale_timers(&mut self) {
        if std::mem::take(&mut self.stale_timers) {
            self.pop_stale_timers();
        }
    }

    fn pop_stale_timers(&mut self) {
        while self.leases.front().is_some_and(|(_, id)| !self.in_flight.contains_key(id)) {
            self.leases.pop_front();
        }
        while self.deadlines.peek().is_some_and(|Reverse((_, id))| !self.queue.waiters.contains_key(id)) {
            self.deadlines.pop();
        }
        while self.reservation_expiry.peek().is_some_and(|Reverse((at, rid))| {
            self.reservations.get(rid).is_none_or(|r| r.attached || r.expires_at != *at)
        }) {
            self.reservation_expiry.pop();
        }
    }

    fn expire_reservations(&mut self, now: Timestamp) {
        while let Some(&Reverse((at, rid))) = self.reservation_expiry.peek() {
            if at > now {
                break;
            }
            self.reservation_expiry.pop();
            let live = self.reservations.get(&rid).is_some_and(|r| !r.attached && r.expires_at <= now);
            if live {
                let r = self.reservations.remove(&rid).expect("checked");
                self.drop_reservation(now, rid, r, true);
            }
        }
    }

    fn expire_leases(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.leases.front() {
            if at > now {
                break;
            }
            self.leases.pop_front();
            if let Some(flight) = self.in_flight.remove(&id) {
                self.give_back(at, &flight);
                self.emit(
                    now,
                    id,
                    &flight.endpoint,
                    flight.priority,
                    EventKind::LeaseExpired { held: now - flight.started },
                );
            }
        }
        // Completed requests leave their lease entry behind; compact when those dominate.
        if self.leases.len() > 64 && self.leases.len() > 2 * self.in_flight.len() {
            let in_flight = &self.in_flight;
            self.leases.retain(|(_, id)| in_flight.contains_key(id));
        }
    }

    /// Expires waiters whose deadline is before `now`; returns whether any was.
    fn expire_deadlines(&mut self, now: Timestamp) -> bool {
        let mut any = false;
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline >= now {
                break;
            }
            self.deadlines.pop();
            if let Some(waiter) = self.queue.remove(id) {
                self.detach_spend(&waiter.admission);
                let a = waiter.admission;
                self.emit(
                    now,
                    id,
                    &a.endpoint,
                    a.priority,
                    EventKind::Expired { error: RequestError::DeadlineExceeded { deadline, now } },
                );
                any = true;
            }
        }
        if self.deadlines.len() > 64 && self.deadlines.len() > 2 * self.queue.len() {
            let waiters = &self.queue.waiters;
            self.deadlines.retain(|Reverse((_, id))| waiters.contains_key(id));
        }
        any
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
        let mut s = std::mem::take(&mut self.scratch);
        s.claims.clear();
        s.claims.resize(self.limits.len(), 0);
        s.heap.clear();
        for (g, group) in self.queue.groups.iter().enumerate() {
            if let Some(id) = group.members.front() {
                s.heap.push(Reverse((group.lane, self.queue.waiters[id].seq, g)));
            }
        }
        while let Some(Reverse((lane, _, g))) = s.heap.pop() {
            let Some(&id) = self.queue.groups[g].members.front() else { continue };
            let waiter = &self.queue.waiters[&id];
            let claims = &s.claims;
            if self.fits(&waiter.admission, |l| claims[usize::from(l)]) {
                let waiter = self.queue.remove(id).expect("waiting");
                self.admit(now, id, waiter.admission, Some(waiter.enqueued_at));
                if let Some(next) = self.queue.groups[g].members.front() {
                    s.heap.push(Reverse((lane, self.queue.waiters[next].seq, g)));
                }
                continue;
            }
            wake = earliest(wake, self.when_fits(now, &waiter.admission, |l| claims[usize::from(l)]));
            for n in waiter.admission.total() {
                s.claims[usize::from(n.limit)] += waiter.admission.claim(n);
            }
        }
        self.scratch = s;
        self.next_wake = wake;
    }
}

/// The limits a rate-limited answer points at: every limit of the request for a WAF block or a
/// blocked token (the whole caller is stopped); else the windows whose length the answer's
/// `RateLimit-Policy` names; else the route's own limits; else (a route with no narrower limit)
/// the global ones.
pub(crate) fn pause_targets(
    config: &Config,
    limits: &[Limit],
    needs: &Needs,
    feedback: &Feedback,
) -> Vec<crate::route::LimitIdx> {
    let all: Vec<_> = needs.iter().map(|n| n.limit).collect();
    let blocked =
        feedback.block.as_ref().is_some_and(|b| matches!(b.kind, BlockKind::WafBlocked | BlockKind::TokenBlocked));
    if blocked {
        return all;
    }
    let config_of = |l: crate::route::LimitIdx| &config.limits[&*limits[usize::from(l)].name];
    if let Some(w) = feedback.policy_window {
        let named: Vec<_> = all
            .iter()
            .copied()
            .filter(|&l| matches!(config_of(l), crate::config::LimitConfig::Window { per, .. } if *per == w))
            .collect();
        if !named.is_empty() {
            return named;
        }
    }
    let own: Vec<_> =
        all.iter().copied().filter(|&l| !config.global.iter().any(|g| **g == *limits[usize::from(l)].name)).collect();
    if own.is_empty() {
        all
    } else {
        own
    }
}

/// The window a reported quota (`RateLimit-Policy`'s `q`, `RateLimit-Limit`, `X-RateLimit-Limit`)
/// is about, if it is clear: among the request's windows, those whose `per` is the policy's window
/// when the answer names one, else all of them; of those the route's own (the global ones when it
/// has none); and only when that leaves exactly one. A quota reported for one of several windows
/// is ambiguous (Back Market's listing ingestion takes `catalog`, 15 per 10 s, and `ingestion`, 2000
/// an hour: a bare `X-RateLimit-Limit: 15` must not lower the hourly one), and a quota of 0 says
/// nothing usable: neither lowers anything.
pub(crate) fn quota_target(
    config: &Config,
    limits: &[Limit],
    needs: &Needs,
    feedback: &Feedback,
) -> Option<crate::route::LimitIdx> {
    feedback.limit.filter(|&q| q > 0)?;
    let name = |l: crate::route::LimitIdx| &*limits[usize::from(l)].name;
    let windows: Vec<_> = needs
        .iter()
        .map(|n| n.limit)
        .filter(|&l| {
            matches!(config.limits[name(l)], crate::config::LimitConfig::Window { per, .. }
                if feedback.policy_window.is_none_or(|w| w == per))
        })
        .collect();
    let own: Vec<_> = windows.iter().copied().filter(|&l| !config.global.iter().any(|g| **g == *name(l))).collect();
    match (own.as_slice(), windows.as_slice()) {
        ([one], _) | ([], [one]) => Some(*one),
        _ => None,
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
