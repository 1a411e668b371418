//! A circuit breaker: closed, every request that takes it goes (as far as it is concerned); open,
//! none goes until it half-opens; half-open, `probes` requests go at once, and `close_after`
//! successes among them close it while any failure opens it again, for twice as long.
//!
//! What opens it, from a closed state:
//! - failures (a 5xx, or no response at all) within the last `per`: at least `failures` of them,
//!   and at least `failure_percent` of at least `min_calls` calls. The window is kept as 16 slots of
//!   `per / 16` (constant memory whatever the traffic): a failure counts for between `per` and
//!   `per` plus one slot;
//! - an authentication failure (401, a WAF 403, a blocked token without an end): at once;
//! - a 429 or a block: at once, until the server's time exactly when it names one.
//!
//! It opens for the server's time when there is one, else for `open_for` doubled on every opening
//! since it was last closed, never past `max_open`. Only the probes' answers count while half-open,
//! and no answer counts while open but a server's time past its end (which extends it).

use std::time::Duration;

use smallvec::SmallVec;

use crate::config::BreakerConfig;
use crate::request::RequestId;
use crate::time::{duration_nanos, Timestamp};

/// The room a closed breaker shows to the shared accounting: more than any cost (a request takes
/// 1 of a breaker), so it never keeps anyone waiting.
const CLOSED_ROOM: u64 = u64::MAX / 4;

/// Slots of the failure window.
const SLOTS: u64 = 16;

/// Doubling stops here: 2^16 times `open_for` is past any `max_open`.
const MAX_DOUBLINGS: u32 = 16;

/// What a breaker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Closed,
    Open { until: Timestamp },
    HalfOpen,
}

/// Why a breaker opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenReason {
    /// Failures over the window.
    Failures,
    /// An authentication failure: a 401, a WAF 403, a blocked token.
    Auth,
    /// A 429 or a block.
    RateLimited,
    /// A probe failed while half-open.
    Probe,
}

impl OpenReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpenReason::Failures => "failures",
            OpenReason::Auth => "auth",
            OpenReason::RateLimited => "rate_limited",
            OpenReason::Probe => "probe_failed",
        }
    }
}

/// What one answer says, as a breaker judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    /// A 5xx, or no response.
    Failure,
    /// A 401, a WAF 403, a blocked token naming no end.
    Auth,
    /// A 429 or a block: the server's time if it named one.
    RateLimited(Option<Duration>),
}

impl Verdict {
    /// The verdict on an answer's status alone (nothing in its headers or body).
    pub(crate) fn of_status(status: Option<u16>) -> Verdict {
        match status {
            None => Verdict::Failure,
            Some(401 | 403) => Verdict::Auth,
            Some(429) => Verdict::RateLimited(None),
            Some(s) if s >= 500 => Verdict::Failure,
            Some(_) => Verdict::Success,
        }
    }
}

/// A change of phase an answer made, for the event that says so (half-opening comes with time:
/// [`Breaker::half_opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened { reason: OpenReason, until: Timestamp },
    Closed,
}

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    slot_ns: u64,
    pub(crate) phase: Phase,
    /// The failure window: per slot, its index (time / slot) and its calls and failures.
    slots: [(u64, u64, u64); SLOTS as usize],
    /// Requests let through while half-open and not yet answered.
    probing: SmallVec<[RequestId; 2]>,
    /// Successful probes since it half-opened.
    successes: u64,
    /// Openings since it was last closed: the doubling exponent.
    opens: u32,
    /// A half-open reached by time alone, not yet said.
    pub(crate) half_opened: Option<Timestamp>,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            slot_ns: (duration_nanos(cfg.per) / SLOTS).max(1),
            cfg,
            phase: Phase::Closed,
            slots: [(u64::MAX, 0, 0); SLOTS as usize],
            probing: SmallVec::new(),
            successes: 0,
            opens: 0,
            half_opened: None,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        match self.phase {
            Phase::Closed => CLOSED_ROOM,
            Phase::Open { .. } | Phase::HalfOpen => self.cfg.probes,
        }
    }

    /// Probes out (half-open), or the whole of the probes (open): nothing is free until it half-opens.
    pub(crate) fn used(&self) -> u64 {
        match self.phase {
            Phase::Closed => 0,
            Phase::Open { .. } => self.cfg.probes,
            Phase::HalfOpen => self.probing.len() as u64,
        }
    }

    /// When it half-opens, while open.
    pub(crate) fn opens_at(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    pub(crate) fn advance(&mut self, now: Timestamp) {
        if let Phase::Open { until } = self.phase {
            if until <= now {
                self.phase = Phase::HalfOpen;
                self.successes = 0;
                self.probing.clear();
                self.half_opened = Some(until);
            }
        }
    }

    /// A request that takes it went.
    pub(crate) fn went(&mut self, request: RequestId) {
        if self.phase == Phase::HalfOpen {
            self.probing.push(request);
        }
    }

    /// A request ended without an answer to judge (its lease lapsed): a probe's place is free.
    pub(crate) fn forget(&mut self, request: RequestId) -> bool {
        let before = self.probing.len();
        self.probing.retain(|r| *r != request);
        self.probing.len() != before
    }

    /// Judges an answer to `request` received at `now`.
    pub(crate) fn record(&mut self, now: Timestamp, request: RequestId, verdict: Verdict) -> Option<Transition> {
        match self.phase {
            Phase::Open { until } => match verdict {
                // The server's word stands: a later end than ours extends the opening.
                Verdict::RateLimited(Some(d)) if now + d > until => {
                    self.phase = Phase::Open { until: now + d };
                    Some(Transition::Opened { reason: OpenReason::RateLimited, until: now + d })
                }
                _ => None,
            },
            Phase::HalfOpen => {
                if !self.forget(request) {
                    // Sent before it opened: its answer says nothing of the server now.
                    return None;
                }
                match verdict {
                    Verdict::Success => {
                        self.successes += 1;
                        (self.successes >= self.cfg.close_after).then(|| self.close())
                    }
                    Verdict::Failure => Some(self.open(now, OpenReason::Probe, None)),
                    Verdict::Auth => Some(self.open(now, OpenReason::Auth, None)),
                    Verdict::RateLimited(d) => Some(self.open(now, OpenReason::RateLimited, d)),
                }
            }
            Phase::Closed => match verdict {
                Verdict::Success => {
                    self.count(now, false);
                    None
                }
                Verdict::Failure => {
                    let (calls, failures) = self.count(now, true);
                    let share_ok = self.cfg.failure_percent == 0
                        || (calls >= self.cfg.min_calls && failures * 100 >= self.cfg.failure_percent * calls);
                    (failures >= self.cfg.failures && share_ok).then(|| self.open(now, OpenReason::Failures, None))
                }
                Verdict::Auth => Some(self.open(now, OpenReason::Auth, None)),
                Verdict::RateLimited(d) => Some(self.open(now, OpenReason::RateLimited, d)),
            },
        }
    }

    /// Counts a call in the window; returns the calls and failures within it.
    fn count(&mut self, now: Timestamp, failed: bool) -> (u64, u64) {
        let index = now.as_nanos() / self.slot_ns;
        let slot = &mut self.slots[(index % SLOTS) as usize];
        if slot.0 != index {
            *slot = (index, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(failed);
        self.slots
            .iter()
            .filter(|(i, _, _)| *i != u64::MAX && *i + SLOTS > index)
            .fold((0, 0), |(c, f), (_, calls, failures)| (c + calls, f + failures))
    }

    fn open(&mut self, now: Timestamp, reason: OpenReason, server: Option<Duration>) -> Transition {
        self.opens = self.opens.saturating_add(1);
        let d = server.unwrap_or_else(|| {
            let doubled = self.cfg.open_for.saturating_mul(1 << (self.opens - 1).min(MAX_DOUBLINGS));
            doubled.min(self.cfg.max_open)
        });
        let until = now + d.max(Duration::from_nanos(1));
        self.phase = Phase::Open { until };
        self.probing.clear();
        self.half_opened = None;
        Transition::Opened { reason, until }
    }

    fn close(&mut self) -> Transition {
        self.phase = Phase::Closed;
        self.opens = 0;
        self.successes = 0;
        self.slots = [(u64::MAX, 0, 0); SLOTS as usize];
        Transition::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn five_failures_open_it_for_30_s_then_two_probe_successes_close_it() {
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..4 {
            assert_eq!(b.record(at(i), RequestId(i), Verdict::Failure), None);
        }
        assert_eq!(
            b.record(at(4), RequestId(4), Verdict::Failure),
            Some(Transition::Opened { reason: OpenReason::Failures, until: at(30_004) })
        );
        b.advance(at(30_004));
        assert_eq!((b.phase, b.half_opened), (Phase::HalfOpen, Some(at(30_004))));
        b.went(RequestId(9));
        assert_eq!(b.used(), 1);
        assert_eq!(b.record(at(30_010), RequestId(9), Verdict::Success), None);
        b.went(RequestId(10));
        assert_eq!(b.record(at(30_020), RequestId(10), Verdict::Success), Some(Transition::Closed));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut b = Breaker::new(BreakerConfig::default());
        for i in 0..4 {
            assert_eq!(b.record(at(i), RequestId(i), Verdict::Failure), None);
        }
        assert_eq!(b.record(at(65_000), RequestId(5), Verdict::Failure), None);
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long_and_the_server_time_is_exact() {
        let mut b = Breaker::new(BreakerConfig::default());
        assert!(matches!(b.record(at(0), RequestId(1), Verdict::Auth), Some(Transition::Opened { .. })));
        b.advance(at(30_000));
        b.went(RequestId(2));
        assert_eq!(
            b.record(at(30_100), RequestId(2), Verdict::Failure),
            Some(Transition::Opened { reason: OpenReason::Probe, until: at(90_100) })
        );
        // An answer to a request sent before: only a later server time counts.
        assert_eq!(b.record(at(30_200), RequestId(3), Verdict::Failure), None);
        assert_eq!(
            b.record(at(30_200), RequestId(3), Verdict::RateLimited(Some(Duration::from_secs(120)))),
            Some(Transition::Opened { reason: OpenReason::RateLimited, until: at(150_200) })
        );
    }

    #[test]
    fn a_share_of_failures_needs_enough_calls() {
        let cfg = BreakerConfig { failures: 2, failure_percent: 50, min_calls: 4, ..BreakerConfig::default() };
        let mut b = Breaker::new(cfg);
        assert_eq!(b.record(at(0), RequestId(1), Verdict::Failure), None);
        assert_eq!(b.record(at(1), RequestId(2), Verdict::Failure), None, "2 calls: fewer than min_calls");
        assert_eq!(b.record(at(2), RequestId(3), Verdict::Success), None);
        assert!(b.record(at(3), RequestId(4), Verdict::Failure).is_some(), "3 of 4 failed");
    }
}
