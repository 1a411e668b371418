//! A balance held by the server (Keepa tokens), mirrored: refilled in steps, capped, with a floor.

use crate::time::Timestamp;

/// The balance, refilled by `refill` at every period boundary, never above `max`; the guard keeps
/// `floor` unspent. Unknown until the host reports it (a request then fails at once, asking for a
/// sync, instead of guessing).
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    refill: u64,
    per: u64,
    max: u64,
    floor: u64,
    /// Warn when an admission takes the balance below this.
    warn_below: Option<u64>,
    /// Tokens left; negative when the server says so (a client that did not check went below zero).
    balance: Option<i64>,
    /// The next refill boundary, in nanoseconds.
    next_refill: u64,
    /// The server time of the newest report applied (responses can arrive out of order).
    newest_report: Option<i64>,
}

impl Budget {
    pub(crate) fn new(
        refill: u64,
        per: u64,
        max: u64,
        floor: u64,
        initial: Option<u64>,
        warn_below: Option<u64>,
    ) -> Self {
        Budget {
            refill,
            per,
            max,
            floor,
            warn_below,
            balance: initial.map(to_i64),
            next_refill: per,
            newest_report: None,
        }
    }

    /// The warning an admission of `cost` deserves, taken from the balance `before` it
    /// (the budget guard warns before it refuses): `cost_over_half` when the request takes more
    /// than half of what it found, `below_warning` when it takes the balance below `warn_below`.
    pub(crate) fn warning(&self, before: i64, cost: u64) -> Option<&'static str> {
        let cost = to_i64(cost);
        if cost > 0 && cost.saturating_mul(2) > before {
            return Some("cost_over_half");
        }
        let warn = to_i64(self.warn_below?);
        (before >= warn && before.saturating_sub(cost) < warn).then_some("below_warning")
    }

    /// What may be spent at most: the part above the floor.
    pub(crate) fn capacity(&self) -> u64 {
        self.max - self.floor
    }

    pub(crate) fn is_known(&self) -> bool {
        self.balance.is_some()
    }

    pub(crate) fn balance(&self) -> Option<i64> {
        self.balance
    }

    pub(crate) fn advance(&mut self, now: Timestamp) {
        let now = now.as_nanos();
        if self.next_refill > now {
            return;
        }
        let steps = (now - self.next_refill) / self.per + 1;
        self.next_refill = self.next_refill.saturating_add(steps.saturating_mul(self.per));
        if let Some(b) = self.balance.as_mut() {
            let gained = to_i64(steps.saturating_mul(self.refill));
            *b = b.saturating_add(gained).min(to_i64(self.max));
        }
    }

    /// Missing from a full balance, in the terms every limit shares (`used + cost <= capacity`).
    pub(crate) fn used(&self) -> u64 {
        match self.balance {
            Some(b) => u64::try_from(to_i64(self.max).saturating_sub(b)).unwrap_or(0),
            // Unknown: nothing fits until the host reports the balance.
            None => u64::MAX / 2,
        }
    }

    pub(crate) fn take(&mut self, cost: u64) {
        if let Some(b) = self.balance.as_mut() {
            *b = b.saturating_sub(to_i64(cost));
        }
    }

    pub(crate) fn when_used_at_most(&self, now: Timestamp, target: u64) -> Option<Timestamp> {
        let b = self.balance?;
        let need = to_i64(self.max.checked_sub(target)?);
        if b >= need {
            return Some(now);
        }
        let missing = u64::try_from(need - b).unwrap_or(u64::MAX);
        let steps = missing.div_ceil(self.refill);
        Some(Timestamp::from_nanos(self.next_refill.saturating_add((steps - 1).saturating_mul(self.per))))
    }

    pub(crate) fn next_free(&self) -> Option<Timestamp> {
        match self.balance {
            Some(b) if b < to_i64(self.max) => Some(Timestamp::from_nanos(self.next_refill)),
            _ => None,
        }
    }

    /// A balance reported in a response, stamped with the server's time if it said. A report older
    /// than one already applied (its response overtaken by a later one) may lower the balance,
    /// never raise it: the tokens spent since would otherwise come back.
    pub(crate) fn report(
        &mut self,
        now: Timestamp,
        tokens_left: i64,
        refill_in: Option<u64>,
        server_time: Option<i64>,
    ) {
        // Keepa's `timestamp` is in milliseconds: responses of one burst share it, and may arrive in
        // any order. A report no newer than the newest applied may be the older one: it may lower
        // the balance, never raise it.
        let stale = matches!((server_time, self.newest_report), (Some(t), Some(newest)) if t <= newest);
        if stale {
            if let Some(b) = self.balance.as_mut() {
                *b = (*b).min(tokens_left);
            }
            return;
        }
        if server_time.is_some() {
            self.newest_report = server_time;
        }
        self.sync(now, tokens_left, refill_in);
    }

    /// Takes the server's word: the balance it reports, and when it refills next if it says.
    pub(crate) fn sync(&mut self, now: Timestamp, tokens_left: i64, refill_in: Option<u64>) {
        self.balance = Some(tokens_left.min(to_i64(self.max)));
        if let Some(r) = refill_in {
            self.next_refill = now.as_nanos().saturating_add(r.max(1));
        }
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    #[test]
    fn refills_in_steps_up_to_max_and_keeps_the_floor() {
        // Keepa-like: 20 per minute, at most 1200, keep 10.
        let mut b = Budget::new(20, MIN, 1200, 10, Some(30), None);
        assert_eq!(b.capacity(), 1190);
        assert_eq!(b.used(), 1170, "30 left of 1200");
        b.take(20);
        b.advance(Timestamp::from_nanos(MIN - 1));
        assert_eq!(b.balance(), Some(10));
        b.advance(Timestamp::from_nanos(MIN));
        assert_eq!(b.balance(), Some(30));
        // 50 spendable above the floor needs a balance of 60: two more refills.
        let t = b.when_used_at_most(Timestamp::from_nanos(MIN), 1200 - 60).unwrap();
        assert_eq!(t.as_nanos(), 3 * MIN);
        b.advance(Timestamp::from_nanos(1000 * MIN));
        assert_eq!(b.balance(), Some(1200));
    }

    #[test]
    fn unknown_until_synced_and_negative_balances() {
        let mut b = Budget::new(20, MIN, 1200, 0, None, None);
        assert!(!b.is_known());
        assert_eq!(b.when_used_at_most(Timestamp::ZERO, 1200), None);
        b.sync(Timestamp::from_nanos(5), -31, Some(1_000));
        assert_eq!(b.balance(), Some(-31));
        assert_eq!(b.used(), 1231);
        // 31 + 1 needed before one token is spendable: 2 refills, the first in 1 us.
        assert_eq!(b.when_used_at_most(Timestamp::from_nanos(5), 1199), Some(Timestamp::from_nanos(1005 + MIN)));
    }
}
