//! A read-only picture of every limit and queue.

use serde::Serialize;

use crate::time::Timestamp;

/// The kind of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// Exact sliding window.
    Window,
    /// Token bucket.
    TokenBucket,
    /// Requests in flight.
    Concurrency,
    /// A server-held balance (tokens).
    Budget,
    /// A circuit breaker: capacity is its probes, used its probes out (all of them while open).
    #[cfg(feature = "keys")]
    Breaker,
}

/// The state of the controller at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken.
    pub at: Timestamp,
    /// Every limit, in name order.
    pub limits: Vec<LimitSnapshot>,
    /// Requests waiting per priority: critical, high, normal, low.
    pub waiting: [usize; 4],
    /// Requests admitted and not yet completed.
    pub in_flight: usize,
    /// Live reservations.
    pub reservations: usize,
}

/// One limit's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LimitSnapshot {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: LimitKind,
    /// The most it holds: for a window, the smaller of its config's max and the quota the server
    /// reported.
    pub capacity: u64,
    /// Cost counted against it now (in the window, missing from the bucket, in flight).
    pub used: u64,
    /// Cost held by live reservations.
    pub reserved: u64,
    /// What a NORMAL request could take now: capacity minus used and reserved.
    pub available: u64,
    /// The next instant room grows by time alone (`None`: it is full only of in-flight requests or
    /// it is empty).
    pub next_free: Option<Timestamp>,
    /// For a budget: the balance (tokens left, possibly negative), `None` while unknown.
    pub balance: Option<i64>,
    /// The pause in force after a 429 or a block, if any.
    pub pause: Option<PauseSnapshot>,
}

/// A limit's pause: until when, why, and how much of it the server imposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PauseSnapshot {
    /// Nothing but CRITICAL goes before this instant.
    pub until: Timestamp,
    /// The part the server imposed (its time, or one plain block): CRITICAL waits only this long.
    pub server_until: Timestamp,
    /// `retry_after` (the server's time), `block` (the configured block), `backoff` (repeats
    /// doubled it), `cooldown` (a WAF block or a blocked token) or `exhausted` (a response that was
    /// not rate limited said the quota is used up until its reset).
    pub reason: &'static str,
    /// Repeated 429s counted for the backoff (the answers of one burst count once).
    pub strikes: u32,
}
