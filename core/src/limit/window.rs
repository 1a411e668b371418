//! Exact sliding window: at most `max` cost-units admitted in any interval `[s, s + per)`.

use std::collections::VecDeque;

use crate::time::Timestamp;

/// The log of admissions still inside the window, one entry per distinct admission instant.
///
/// Each entry keeps the running total of cost admitted up to and including it, so the cost still in
/// the window is `back.cum - expired_cum`, and the instant at which enough cost has left the window
/// is found by binary search: every query is O(log n) in the number of live entries, which is at
/// most `max` (entries of equal instants are merged).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    max: u64,
    per: u64,
    log: VecDeque<Entry>,
    /// Running total as of the last entry that left the window.
    expired_cum: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    cum: u64,
}

impl Window {
    pub(crate) fn new(max: u64, per: u64) -> Self {
        Window { max, per, log: VecDeque::new(), expired_cum: 0 }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.max
    }

    /// Drops every admission that no interval `[s, s + per)` containing `now` can hold.
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

    /// Cost admitted in `(now - per, now]`, as of the last `advance`.
    pub(crate) fn used(&self) -> u64 {
        self.log.back().map_or(0, |b| b.cum - self.expired_cum)
    }

    pub(crate) fn take(&mut self, now: Timestamp, cost: u64) {
        let now = now.as_nanos();
        let last_cum = self.log.back().map_or(self.expired_cum, |b| b.cum);
        match self.log.back_mut() {
            Some(back) if back.at == now => back.cum += cost,
            _ => self.log.push_back(Entry { at: now, cum: last_cum + cost }),
        }
    }

    /// The first instant at which the admitted cost still in the window is at most `target`, if
    /// nothing else is admitted meanwhile.
    pub(crate) fn when_used_at_most(&self, now: Timestamp, target: u64) -> Option<Timestamp> {
        let used = self.used();
        if used <= target {
            return Some(now);
        }
        let back_cum = self.log.back().map_or(self.expired_cum, |b| b.cum);
        // The entry whose expiry leaves at most `target` in the window.
        let must_expire_through = back_cum - target;
        let i = self.log.partition_point(|e| e.cum < must_expire_through);
        self.log.get(i).map(|e| Timestamp::from_nanos(e.at.saturating_add(self.per)))
    }

    /// When the oldest admission leaves the window.
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
        let mut w = Window::new(2, 1_000_000_000);
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
        let mut w = Window::new(10, 10_000_000);
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
}
