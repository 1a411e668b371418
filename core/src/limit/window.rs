//! Exact sliding window: at most `max` cost-units counted in any interval `[s, s + per)`.
//!
//! The server counts a request when it arrives, somewhere between our send and its response. By
//! default ([`WindowHold::Completion`]) a window therefore holds a request's cost from its go until
//! its completion plus `per` (its lease's expiry plus `per` when no completion comes): whatever the
//! latency, every window of the server's holds at most `max`. [`WindowHold::Go`] counts at the go
//! only, for a server that counts when the request leaves (no latency).

use std::collections::VecDeque;

use crate::config::WindowHold;
use crate::time::Timestamp;

/// The log of released holds still inside the window, one entry per distinct release instant, and
/// the cost held by requests in flight.
///
/// Each entry keeps the running total of cost released up to and including it, so the cost still in
/// the window is `back.cum - expired_cum`, and the instant at which enough cost has left the window
/// is found by binary search: every query is O(log n) in the number of live entries, which is at
/// most `max` (entries of equal instants are merged).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    max: u64,
    per: u64,
    hold: WindowHold,
    log: VecDeque<Entry>,
    /// Running total as of the last entry that left the window.
    expired_cum: u64,
    /// Cost of admitted requests not completed yet (with `WindowHold::Completion`).
    in_flight: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    cum: u64,
}

impl Window {
    pub(crate) fn new(max: u64, per: u64, hold: WindowHold) -> Self {
        Window { max, per, hold, log: VecDeque::new(), expired_cum: 0, in_flight: 0 }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.max
    }

    /// The server reported a smaller quota: what is counted already stays counted.
    pub(crate) fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// Drops every entry that no interval `[s, s + per)` containing `now` can hold.
    pub(crate) fn advance(&mut self, now: Timestamp) {
        let now = now.as_nanos();
        while let Some(front) = self.log.front() {
            if front.at.saturating_add(self.per) <= now {
                self.expired_cum = front.cum;
                self.log.pop_front();
            } else {
                break;
            }
        }
    }

    fn logged(&self) -> u64 {
        self.log.back().map_or(0, |b| b.cum - self.expired_cum)
    }

    /// Cost counted now: in flight, or released less than `per` ago (as of the last `advance`).
    pub(crate) fn used(&self) -> u64 {
        self.logged() + self.in_flight
    }

    fn log_at(&mut self, at: u64, cost: u64) {
        let last_cum = self.log.back().map_or(self.expired_cum, |b| b.cum);
        match self.log.back_mut() {
            Some(back) if back.at == at => back.cum += cost,
            Some(back) if back.at > at => {
                // A release older than the newest (a lease that lapsed before a completion seen
                // first): inserted in order, the running totals after it raised (rare, O(n)).
                let i = self.log.partition_point(|e| e.at <= at);
                let before = if i == 0 { self.expired_cum } else { self.log[i - 1].cum };
                if i > 0 && self.log[i - 1].at == at {
                    self.log[i - 1].cum += cost;
                } else {
                    self.log.insert(i, Entry { at, cum: before + cost });
                }
                let from = if i > 0 && self.log[i - 1].at == at { i } else { i + 1 };
                for e in self.log.range_mut(from..) {
                    e.cum += cost;
                }
            }
            _ => self.log.push_back(Entry { at, cum: last_cum + cost }),
        }
    }

    pub(crate) fn take(&mut self, now: Timestamp, cost: u64) {
        match self.hold {
            WindowHold::Completion => self.in_flight += cost,
            WindowHold::Go => self.log_at(now.as_nanos(), cost),
        }
    }

    /// The request holding `cost` completed (or its lease lapsed) at `at`: it counts until `at + per`.
    pub(crate) fn release(&mut self, at: Timestamp, cost: u64) {
        if self.hold == WindowHold::Completion {
            let cost = cost.min(self.in_flight);
            self.in_flight -= cost;
            self.log_at(at.as_nanos(), cost);
        }
    }

    /// The first instant at which the cost counted is at most `target`, if nothing else is
    /// admitted meanwhile; `None` when only a completion can bring it there.
    pub(crate) fn when_used_at_most(&self, now: Timestamp, target: u64) -> Option<Timestamp> {
        if self.used() <= target {
            return Some(now);
        }
        let target = target.checked_sub(self.in_flight)?;
        let back_cum = self.log.back().map_or(self.expired_cum, |b| b.cum);
        // The entry whose expiry leaves at most `target` in the window.
        let must_expire_through = back_cum - target;
        let i = self.log.partition_point(|e| e.cum < must_expire_through);
        self.log.get(i).map(|e| Timestamp::from_nanos(e.at.saturating_add(self.per)))
    }

    /// When the oldest released entry leaves the window.
    pub(crate) fn next_free(&self) -> Option<Timestamp> {
        self.log.front().map(|e| Timestamp::from_nanos(e.at.saturating_add(self.per)))
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[test]
    fn counts_half_open_interval() {
        let mut w = Window::new(2, 1_000_000_000, WindowHold::Go);
        w.take(ms(0), 1);
        w.take(ms(500), 1);
        w.advance(ms(999));
        assert_eq!(w.used(), 2);
        w.advance(ms(1000));
        assert_eq!(w.used(), 1, "the admission at 0 leaves at exactly 0 + per");
        assert_eq!(w.when_used_at_most(ms(1000), 0), Some(ms(1500)));
    }

    #[test]
    fn merges_equal_instants_and_finds_expiry_by_cost() {
        let mut w = Window::new(10, 10_000_000, WindowHold::Go);
        w.take(ms(1), 3);
        w.take(ms(1), 2);
        w.take(ms(4), 4);
        assert_eq!(w.entries(), 2);
        w.advance(ms(5));
        assert_eq!(w.used(), 9);
        assert_eq!(w.when_used_at_most(ms(5), 9), Some(ms(5)));
        assert_eq!(w.when_used_at_most(ms(5), 4), Some(ms(11)));
        assert_eq!(w.when_used_at_most(ms(5), 3), Some(ms(14)));
        assert_eq!(w.when_used_at_most(ms(5), 0), Some(ms(14)));
    }

    #[test]
    fn holds_a_request_until_its_completion_plus_per() {
        let mut w = Window::new(2, 1_000_000_000, WindowHold::Completion);
        w.take(ms(0), 1);
        w.take(ms(100), 1);
        w.advance(ms(5_000));
        assert_eq!(w.used(), 2, "in flight: counted however long it takes");
        assert_eq!(w.when_used_at_most(ms(5_000), 1), None, "only a completion frees it");
        w.release(ms(5_000), 1);
        assert_eq!(w.when_used_at_most(ms(5_000), 1), Some(ms(6_000)));
        w.advance(ms(6_000));
        assert_eq!(w.used(), 1);
        // A lapsed lease reported late is logged at its own instant, in order.
        w.take(ms(6_000), 2);
        w.release(ms(6_200), 1);
        w.release(ms(5_500), 1);
        assert_eq!(w.used(), 3);
        assert_eq!(w.next_free(), Some(ms(6_500)));
        assert_eq!(w.when_used_at_most(ms(6_200), 2), Some(ms(6_500)));
        assert_eq!(w.when_used_at_most(ms(6_200), 1), Some(ms(7_200)));
    }
}
