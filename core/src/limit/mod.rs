//! The limit kinds and the accounting they share: used, reserved, and room for a request.

#[cfg(feature = "keys")]
pub(crate) mod breaker;
mod bucket;
mod budget;
mod concurrency;
pub(crate) mod pause;
mod window;

use std::sync::Arc;

#[cfg(feature = "keys")]
pub(crate) use breaker::Breaker;
pub(crate) use bucket::TokenBucket;
pub(crate) use budget::Budget;
pub(crate) use concurrency::Concurrency;
pub(crate) use window::Window;

use crate::config::LimitConfig;
use crate::snapshot::LimitKind;
use crate::time::{duration_nanos, Timestamp};

/// One named limit: its kind's state plus the capacity held by live reservations.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub(crate) name: Arc<str>,
    /// For a key's copy of a pool's limit (`<limit>@<key>`), the index of the pool's limit whose
    /// config it follows; `NO_TEMPLATE` for the config's own limits (see [`Limit::config_name`]).
    pub(crate) template: u16,
    /// A tenant's copy of a limit, counting its share (`<limit>#<tenant>`, see `controller::shares`):
    /// server feedback is about the limit, never about it.
    #[cfg(feature = "tenants")]
    pub(crate) tenant_share: bool,
    pub(crate) state: LimitState,
    /// Cost held by live reservations: counted against everyone but their owner (and CRITICAL).
    pub(crate) reserved: u64,
    /// Stopped until then (429, block): the server's time, or our backoff past it; nothing but
    /// CRITICAL fits before it.
    pub(crate) paused_until: Timestamp,
    /// The part of the pause the server imposed (its time, or one plain `block`): CRITICAL waits
    /// only for this, never for our escalation.
    pub(crate) server_until: Timestamp,
    /// Why the current pause was set.
    pub(crate) pause_reason: Option<PauseReason>,
    /// Rate-limited responses to requests sent after the previous pause ended, without a success
    /// since: the backoff exponent. The other answers of one burst count once.
    pub(crate) strikes: u32,
    /// The instant of the last `advance`.
    at: Timestamp,
    /// Estimated cost of admitted requests not yet completed (budgets reconcile around it).
    pub(crate) in_flight_cost: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum LimitState {
    Window(Window),
    Bucket(TokenBucket),
    Concurrency(Concurrency),
    Budget(Budget),
    #[cfg(feature = "keys")]
    Breaker(Box<Breaker>),
}

/// Why a limit is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// The server named the time (`Retry-After`, a reset, a block's end).
    RetryAfter,
    /// A 429 naming no time: the configured block.
    Block,
    /// Repeated 429s: the block doubled per repeat.
    Backoff,
    /// A WAF block or a blocked token: the cooldown.
    Cooldown,
    /// A counted answer said the quota is used up (`remaining: 0`) until its reset.
    Exhausted,
}

impl PauseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PauseReason::RetryAfter => "retry_after",
            PauseReason::Block => "block",
            PauseReason::Backoff => "backoff",
            PauseReason::Cooldown => "cooldown",
            PauseReason::Exhausted => "exhausted",
        }
    }

    /// The reason a text names (the store's encoding); `None` for an unknown text.
    pub(crate) fn parse(text: &str) -> Option<PauseReason> {
        Some(match text {
            "retry_after" => PauseReason::RetryAfter,
            "block" => PauseReason::Block,
            "backoff" => PauseReason::Backoff,
            "cooldown" => PauseReason::Cooldown,
            "exhausted" => PauseReason::Exhausted,
            _ => return None,
        })
    }
}

/// How a request asks a limit for room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub(crate) cost: u64,
    /// The part of `reserved` that belongs to the asking request (spent by it).
    pub(crate) own_reserved: u64,
    /// Cost claimed by waiters ahead of the asking request.
    pub(crate) claims: u64,
    /// CRITICAL may use reserved capacity, never the hard limit.
    pub(crate) may_use_reserved: bool,
    /// CRITICAL waits only for the pause the server imposed.
    pub(crate) critical: bool,
}

/// [`Limit::template`] of the config's own limits.
pub(crate) const NO_TEMPLATE: u16 = u16::MAX;

/// The name limit `l` has in the config (a key's copy of a pool's limit: the pool's limit's).
pub(crate) fn config_name(limits: &[Limit], l: crate::route::LimitIdx) -> &str {
    let limit = &limits[usize::from(l)];
    match limit.template {
        NO_TEMPLATE => &limit.name,
        t => &limits[usize::from(t)].name,
    }
}

impl Limit {
    pub(crate) fn new(name: &str, config: &LimitConfig) -> Self {
        let state = match *config {
            LimitConfig::Window { max, per, hold } => LimitState::Window(Window::new(max, duration_nanos(per), hold)),
            LimitConfig::TokenBucket { capacity, refill, per } => {
                LimitState::Bucket(TokenBucket::new(capacity, refill, duration_nanos(per)))
            }
            LimitConfig::Concurrency { max } => LimitState::Concurrency(Concurrency::new(max)),
            LimitConfig::Budget { refill, per, max, floor, initial, warn_below } => {
                LimitState::Budget(Budget::new(refill, duration_nanos(per), max, floor, initial, warn_below))
            }
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(b) => LimitState::Breaker(Box::new(Breaker::new(b))),
        };
        let name: Arc<str> = Arc::from(name);
        Limit {
            template: NO_TEMPLATE,
            #[cfg(feature = "tenants")]
            tenant_share: false,
            name,
            state,
            reserved: 0,
            paused_until: Timestamp::ZERO,
            server_until: Timestamp::ZERO,
            pause_reason: None,
            strikes: 0,
            at: Timestamp::ZERO,
            in_flight_cost: 0,
        }
    }

    pub(crate) fn kind(&self) -> LimitKind {
        match self.state {
            LimitState::Window(_) => LimitKind::Window,
            LimitState::Bucket(_) => LimitKind::TokenBucket,
            LimitState::Concurrency(_) => LimitKind::Concurrency,
            LimitState::Budget(_) => LimitKind::Budget,
            #[cfg(feature = "keys")]
            LimitState::Breaker(_) => LimitKind::Breaker,
        }
    }

    /// Whether a request takes 1 of it whatever its cost (a concurrency limit, a breaker).
    pub(crate) fn counts_requests(&self) -> bool {
        match self.state {
            LimitState::Concurrency(_) => true,
            #[cfg(feature = "keys")]
            LimitState::Breaker(_) => true,
            _ => false,
        }
    }

    /// The breaker, if this limit is one.
    #[cfg(feature = "keys")]
    pub(crate) fn breaker(&self) -> Option<&Breaker> {
        match &self.state {
            LimitState::Breaker(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this limit is a tenant's copy of a limit (see `controller::shares`).
    #[inline]
    pub(crate) fn is_tenant_share(&self) -> bool {
        #[cfg(feature = "tenants")]
        return self.tenant_share;
        #[cfg(not(feature = "tenants"))]
        false
    }

    /// Whether this limit is a breaker.
    #[inline]
    pub(crate) fn is_breaker(&self) -> bool {
        #[cfg(feature = "keys")]
        return matches!(self.state, LimitState::Breaker(_));
        #[cfg(not(feature = "keys"))]
        false
    }

    /// Judges an answer on a breaker (`None` for other kinds): its opening stops every request,
    /// CRITICAL too, until it half-opens.
    #[cfg(feature = "keys")]
    pub(crate) fn judge(
        &mut self,
        now: Timestamp,
        request: crate::request::RequestId,
        verdict: breaker::Verdict,
    ) -> Option<breaker::Transition> {
        let LimitState::Breaker(b) = &mut self.state else { return None };
        let t = b.record(now, request, verdict)?;
        if let breaker::Transition::Opened { until, .. } = t {
            self.paused_until = self.paused_until.max(until);
            self.server_until = self.server_until.max(until);
        }
        Some(t)
    }

    pub(crate) fn capacity(&self) -> u64 {
        match &self.state {
            LimitState::Window(w) => w.capacity(),
            LimitState::Bucket(b) => b.capacity(),
            LimitState::Concurrency(c) => c.capacity(),
            LimitState::Budget(b) => b.capacity(),
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.capacity(),
        }
    }

    /// Lowers a window's max to what the server reported (`RateLimit-Policy`, `X-RateLimit-Limit`)
    /// when that is smaller: returns the max it had. Never raises it; other kinds are left alone.
    pub(crate) fn lower_max(&mut self, to: u64) -> Option<u64> {
        match &mut self.state {
            LimitState::Window(w) if to < w.capacity() => {
                let from = w.capacity();
                w.set_max(to);
                Some(from)
            }
            _ => None,
        }
    }

    /// Stops admissions until `until` (CRITICAL until `server_until`); a pause is only ever
    /// extended, never shortened.
    pub(crate) fn pause(&mut self, server_until: Timestamp, until: Timestamp, reason: PauseReason) {
        self.server_until = self.server_until.max(server_until);
        if until > self.paused_until || self.pause_reason.is_none() {
            self.pause_reason = Some(reason);
        }
        self.paused_until = self.paused_until.max(until).max(server_until);
    }

    /// The instant before which `ask` cannot go for a pause.
    fn paused_for(&self, ask: Ask) -> Timestamp {
        if ask.critical {
            self.server_until
        } else {
            self.paused_until
        }
    }

    pub(crate) fn advance(&mut self, now: Timestamp) {
        self.at = now;
        match &mut self.state {
            LimitState::Window(w) => w.advance(now),
            LimitState::Bucket(b) => b.advance(now),
            LimitState::Budget(b) => b.advance(now),
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.advance(now),
            LimitState::Concurrency(_) => {}
        }
    }

    /// Cost currently counted against the limit, as of the last `advance`.
    pub(crate) fn used(&self) -> u64 {
        match &self.state {
            LimitState::Window(w) => w.used(),
            LimitState::Bucket(b) => b.used(),
            LimitState::Concurrency(c) => c.used(),
            LimitState::Budget(b) => b.used(),
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.used(),
        }
    }

    /// Takes `cost`; a budget answers the warning the admission deserves, if any (see
    /// [`Budget::warning`]).
    pub(crate) fn take(
        &mut self,
        now: Timestamp,
        request: crate::request::RequestId,
        cost: u64,
    ) -> Option<&'static str> {
        let _ = request; // a breaker's probe (without breakers in the build: unused)
        match &mut self.state {
            LimitState::Window(w) => w.take(now, cost),
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.went(request),
            LimitState::Bucket(b) => b.take(cost),
            LimitState::Concurrency(c) => c.take(cost),
            LimitState::Budget(b) => {
                let warning = b.balance().and_then(|before| b.warning(before, cost));
                b.take(cost);
                return warning;
            }
        }
        None
    }

    /// A request holding `cost` finished at `at` (completed, cancelled, or its lease lapsed): a
    /// concurrency limit gets its slot back, a window starts counting it down (`per` from `at`).
    /// Returns whether waiters may fit sooner.
    pub(crate) fn give_back(&mut self, at: Timestamp, request: crate::request::RequestId, cost: u64) -> bool {
        let _ = request; // a breaker's probe (without breakers in the build: unused)
        match &mut self.state {
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.forget(request),
            LimitState::Concurrency(c) => {
                c.give_back(cost);
                true
            }
            LimitState::Window(w) => {
                w.release(at, cost);
                true
            }
            _ => false,
        }
    }

    /// The most `used` may be for `ask` to fit, or `None` if it cannot fit even on an empty limit.
    fn used_ceiling(&self, ask: Ask) -> Option<u64> {
        // Reservations held by others count against the ask. CRITICAL is the exception only when
        // reservations hold the whole limit (it would otherwise wait on them alone); while free room
        // can still come, it waits for it ahead of every other waiter, so a reserved follow-up keeps
        // its promise.
        let others = self.reserved.saturating_sub(ask.own_reserved);
        let others_reserved = if ask.may_use_reserved && others >= self.capacity() { 0 } else { others };
        let soft = self.capacity().checked_sub(others_reserved + ask.claims + ask.cost);
        // The hard limit holds for everyone, CRITICAL included.
        let hard = self.capacity().checked_sub(ask.cost);
        match (soft, hard) {
            (Some(s), Some(h)) => Some(s.min(h)),
            _ => None,
        }
    }

    // Inlined into the admission's loop over its needs (~6 ns of the direct path).
    #[cfg_attr(not(target_arch = "wasm32"), inline)]
    pub(crate) fn fits(&self, ask: Ask) -> bool {
        self.paused_for(ask) <= self.at && self.used_ceiling(ask).is_some_and(|ceiling| self.used() <= ceiling)
    }

    /// The first instant `ask` fits if nothing else happens, or `None` when only an event
    /// (a completion, a cancel, a waiter ahead leaving) can make room.
    pub(crate) fn when_fits(&self, now: Timestamp, ask: Ask) -> Option<Timestamp> {
        let ceiling = self.used_ceiling(ask)?;
        let t = match &self.state {
            LimitState::Window(w) => w.when_used_at_most(now, ceiling),
            LimitState::Bucket(b) => b.when_used_at_most(now, ceiling),
            LimitState::Concurrency(c) => (c.used() <= ceiling).then_some(now),
            LimitState::Budget(b) => b.when_used_at_most(now, ceiling),
            // Open: it half-opens then (a lower bound: the probes may be taken by then).
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.opens_at().or_else(|| (b.used() <= ceiling).then_some(now)),
        };
        // Room by then is still no good before the pause ends (the usage by then can only be lower).
        t.map(|t| t.max(self.paused_for(ask)))
    }

    /// The next instant at which room grows by time alone.
    pub(crate) fn next_free(&self, now: Timestamp) -> Option<Timestamp> {
        match &self.state {
            LimitState::Window(w) => w.next_free(),
            LimitState::Bucket(b) => b.next_free(now),
            LimitState::Budget(b) => b.next_free(),
            #[cfg(feature = "keys")]
            LimitState::Breaker(b) => b.opens_at(),
            LimitState::Concurrency(_) => None,
        }
    }

    /// The budget, if this limit is one.
    pub(crate) fn budget(&self) -> Option<&Budget> {
        match &self.state {
            LimitState::Budget(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn budget_mut(&mut self) -> Option<&mut Budget> {
        match &mut self.state {
            LimitState::Budget(b) => Some(b),
            _ => None,
        }
    }
}
