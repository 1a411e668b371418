//! The pause policy: how long an answer stops a limit. One pure computation, used by the in-memory
//! controller (which keeps the strikes in its [`Limit`](super::Limit)s) and by the shared store
//! (which sends the script the pauses worked out here, and keeps the strikes in Redis).
//!
//! - A rate-limited answer naming a time (`Retry-After`, a reset, a block's end) pauses for exactly
//!   that time: reason `retry_after`.
//! - A rate-limited answer naming none pauses for the limit's block (`feedback.blocks`, else
//!   `feedback.block`; the `cooldown` for a WAF block or a blocked token), doubled on every repeat
//!   (`strikes`), plus up to `jitter` of it, never past the cap (`max_block`, or the base when
//!   longer): reasons `block`, `backoff` (doubled), `cooldown`. CRITICAL waits only for the part the
//!   server imposed: one plain block.
//! - A repeat is a rate-limited answer to a request sent after the pause the server imposed had
//!   ended; the other answers of one burst do not double it. Any answer that is not rate limited
//!   clears the strikes.
//! - A counted answer saying the quota is used up (`remaining: 0` with a reset) pauses until the
//!   reset: reason `exhausted`, not a strike.

use std::time::Duration;

use crate::config::FeedbackConfig;
use crate::feedback::{BlockKind, Feedback};

use super::PauseReason;

/// What one answer asks of one limit's pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Told {
    /// Rate limited, for the time the server named.
    Server(Duration),
    /// Rate limited, no time named: `base` doubled per repeat, capped at `cap`.
    Block {
        /// The block (or the cooldown) of one strike.
        base: Duration,
        /// The longest pause, jitter included.
        cap: Duration,
        /// A WAF block or a blocked token (reason `cooldown`).
        cooldown: bool,
    },
    /// Not rate limited, but the quota is used up until the reset.
    Exhausted(Duration),
}

/// One limit's pause, from the instant of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    /// The part the server imposed: CRITICAL waits only this long.
    pub(crate) server: Duration,
    /// The whole pause.
    pub(crate) total: Duration,
    pub(crate) reason: PauseReason,
}

/// Doubling stops here: 2^16 blocks is past any cap.
const MAX_DOUBLINGS: u32 = 16;

impl Told {
    /// What `feedback` asks of the limit `limit` (one the answer points at, see `pause_targets`),
    /// or `None` when it pauses nothing.
    pub(crate) fn of(cfg: &FeedbackConfig, limit: &str, feedback: &Feedback) -> Option<Told> {
        if !feedback.rate_limited {
            return feedback.reset.filter(|d| feedback.remaining == Some(0) && !d.is_zero()).map(Told::Exhausted);
        }
        // A 429 that gives only the window's reset names the server's time too.
        if let Some(d) = feedback.retry_after.or(feedback.reset) {
            return Some(Told::Server(d));
        }
        let blocked =
            feedback.block.as_ref().is_some_and(|b| matches!(b.kind, BlockKind::WafBlocked | BlockKind::TokenBlocked));
        let base = if blocked { cfg.cooldown } else { cfg.blocks.get(limit).map_or(cfg.block, |b| b.0) };
        Some(Told::Block { base, cap: cfg.max_block.max(base), cooldown: blocked })
    }

    /// Whether the answer was rate limited: it counts toward the strikes.
    pub(crate) fn strikes(&self) -> bool {
        !matches!(self, Told::Exhausted(_))
    }

    /// The pause when `strikes` repeats count for it (at least 1; see [`strike`]), `jitter` being
    /// the fraction of the backoff added (`feedback.jitter` times a draw in [0, 1)). The jitter is
    /// cut to whole microseconds, the store's unit, so both reach the same instant.
    pub(crate) fn pause(&self, strikes: u32, jitter: f64) -> Pause {
        match *self {
            Told::Server(d) | Told::Exhausted(d) => Pause { server: d, total: d, reason: self.reason(strikes) },
            Told::Block { base, cap, .. } => {
                let strikes = strikes.max(1);
                let backoff = base.saturating_mul(1u32 << (strikes - 1).min(MAX_DOUBLINGS)).min(cap);
                let extra = Duration::from_micros(u64::try_from(backoff.mul_f64(jitter).as_micros()).unwrap_or(0));
                Pause { server: base, total: (backoff + extra).min(cap), reason: self.reason(strikes) }
            }
        }
    }

    /// Why the limit pauses when `strikes` repeats count for it (at least 1).
    pub(crate) fn reason(&self, strikes: u32) -> PauseReason {
        match *self {
            Told::Server(_) => PauseReason::RetryAfter,
            Told::Exhausted(_) => PauseReason::Exhausted,
            Told::Block { cooldown: true, .. } => PauseReason::Cooldown,
            Told::Block { .. } if strikes <= 1 => PauseReason::Block,
            Told::Block { .. } => PauseReason::Backoff,
        }
    }

    /// The whole pause for 1, 2, ... strikes, up to the first that reaches the cap: every higher
    /// count pauses as long as the last. What the store's script picks from by the strikes it keeps.
    pub(crate) fn ladder(&self, jitter: f64) -> Vec<Duration> {
        let mut out = Vec::new();
        for strikes in 1..=MAX_DOUBLINGS + 1 {
            out.push(self.pause(strikes, jitter).total);
            match *self {
                Told::Block { base, cap, .. } if base.saturating_mul(1u32 << (strikes - 1)) < cap => {}
                _ => break,
            }
        }
        out
    }
}

/// Counts a rate-limited answer against a limit holding `strikes`: a repeat (the request was sent
/// after the pause the server imposed had ended) adds one. Returns the strikes to keep and those
/// that count for this answer's pause (the other answers of a burst count once).
pub(crate) fn strike(strikes: u32, repeat: bool) -> (u32, u32) {
    if repeat {
        let kept = strikes.saturating_add(1);
        (kept, kept)
    } else {
        (strikes, 1)
    }
}

/// xorshift64*: a few lines, deterministic across platforms and bindings (scenario files replay
/// the same pauses everywhere); no need for a crate. One draw per rate-limited answer, in the
/// controller and in the store alike.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// A generator seeded with `seed` (xorshift must not start at zero).
    pub(crate) fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }

    /// A number in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(base: u64, cap: u64) -> Told {
        Told::Block { base: Duration::from_secs(base), cap: Duration::from_secs(cap), cooldown: false }
    }

    #[test]
    fn a_block_doubles_per_strike_up_to_the_cap_jitter_included() {
        let t = block(2, 5);
        let totals: Vec<_> = (1..=4).map(|s| t.pause(s, 0.0).total.as_secs()).collect();
        assert_eq!(totals, [2, 4, 5, 5]);
        assert_eq!(t.pause(1, 0.0).reason, PauseReason::Block);
        assert_eq!(t.pause(2, 0.0).reason, PauseReason::Backoff);
        assert_eq!(t.pause(2, 0.5).server, Duration::from_secs(2), "the server's part is one block");
        assert_eq!(t.pause(1, 0.5).total, Duration::from_secs(3));
        assert_eq!(t.pause(2, 0.5).total, Duration::from_secs(5), "capped, jitter included");
        assert_eq!(t.pause(1, 0.1234567891).total, Duration::from_micros(2_246_913), "whole microseconds");
    }

    #[test]
    fn the_ladder_stops_at_the_first_capped_strike() {
        assert_eq!(block(2, 5).ladder(0.0), [2, 4, 5].map(Duration::from_secs));
        assert_eq!(block(10, 10).ladder(0.0), [Duration::from_secs(10)]);
        assert_eq!(Told::Server(Duration::from_secs(3)).ladder(0.3), [Duration::from_secs(3)]);
        let long = Told::Block { base: Duration::from_nanos(1), cap: Duration::MAX, cooldown: true };
        assert_eq!(long.ladder(0.0).len(), 17, "doubling stops after 16");
        assert_eq!(long.pause(40, 0.0).total, long.pause(17, 0.0).total);
    }

    #[test]
    fn only_repeats_count() {
        assert_eq!(strike(0, true), (1, 1));
        assert_eq!(strike(1, false), (1, 1));
        assert_eq!(strike(2, true), (3, 3));
    }
}
