//! Token bucket with continuous refill, in exact integer arithmetic.

use crate::time::Timestamp;

/// `capacity` tokens, refilled continuously at `refill` tokens per `per` nanoseconds.
///
/// The level is kept scaled by `per` (one token = `per` units), so a nanosecond of refill adds
/// exactly `refill` units and nothing is ever rounded. The bucket starts full.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: u64,
    refill: u64,
    per: u64,
    scaled: u128,
    at: u64,
}

impl TokenBucket {
    pub(crate) fn new(capacity: u64, refill: u64, per: u64) -> Self {
        TokenBucket { capacity, refill, per, scaled: u128::from(capacity) * u128::from(per), at: 0 }
    }

    fn full(&self) -> u128 {
        u128::from(self.capacity) * u128::from(self.per)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn advance(&mut self, now: Timestamp) {
        let now = now.as_nanos();
        if now > self.at {
            let gained = u128::from(now - self.at) * u128::from(self.refill);
            self.scaled = (self.scaled + gained).min(self.full());
            self.at = now;
        }
    }

    /// Whole tokens missing from a full bucket.
    pub(crate) fn used(&self) -> u64 {
        let tokens = (self.scaled / u128::from(self.per)) as u64;
        self.capacity - tokens
    }

    pub(crate) fn take(&mut self, cost: u64) {
        self.scaled = self.scaled.saturating_sub(u128::from(cost) * u128::from(self.per));
    }

    pub(crate) fn when_used_at_most(&self, now: Timestamp, target: u64) -> Option<Timestamp> {
        let need_tokens = self.capacity.saturating_sub(target);
        let need = u128::from(need_tokens) * u128::from(self.per);
        if self.scaled >= need {
            return Some(now);
        }
        let missing = need - self.scaled;
        let refill = u128::from(self.refill);
        let wait = missing.div_ceil(refill);
        let wait = u64::try_from(wait).unwrap_or(u64::MAX);
        Some(Timestamp::from_nanos(self.at.saturating_add(wait)))
    }

    pub(crate) fn next_free(&self, now: Timestamp) -> Option<Timestamp> {
        if self.used() == 0 {
            None
        } else {
            self.when_used_at_most(now, self.used() - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_continuously_without_rounding() {
        // 10 tokens per 3 s: one token every 300 ms exactly.
        let mut b = TokenBucket::new(10, 10, 3_000_000_000);
        b.take(10);
        b.advance(Timestamp::from_millis(299));
        assert_eq!(b.used(), 10);
        b.advance(Timestamp::from_millis(300));
        assert_eq!(b.used(), 9);
        assert_eq!(b.when_used_at_most(Timestamp::from_millis(300), 5), Some(Timestamp::from_millis(1500)));
        b.advance(Timestamp::from_millis(100_000));
        assert_eq!(b.used(), 0, "never above capacity");
    }
}
