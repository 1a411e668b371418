//! Events: one for every step of a request's life, carrying what a host stores in its
//! `rate_limit_logs` table. Secrets never appear: endpoints lose their query string (or its values).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use smol_str::SmolStr;

use crate::error::RequestError;
use crate::request::{Permit, Priority, RequestId, ReservationId};
use crate::time::Timestamp;

/// Something that happened, drained from [`poll`](crate::TrafficControl::poll).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// The request it is about (for reservation events: the request that made the reservation).
    pub request: RequestId,
    /// Whom the request was for.
    pub(crate) endpoint: EventEndpoint,
    /// The request's priority.
    pub priority: Priority,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The request waits in the queue.
    Queued,
    /// The request may go: for requests passed to [`submit`](crate::TrafficControl::submit), this
    /// is how the permit is delivered.
    Go {
        /// The permit.
        permit: Permit,
        /// How long it waited.
        waited: Duration,
    },
    /// The host reported the request's outcome.
    Completed {
        /// The HTTP status, `None` when no response came.
        status: Option<u16>,
        /// From go to completion.
        duration: Duration,
    },
    /// The request was refused without going.
    Rejected {
        /// Why.
        error: RequestError,
    },
    /// The request's deadline passed while it waited.
    Expired {
        /// The deadline error.
        error: RequestError,
    },
    /// The host cancelled a waiting or in-flight request.
    Cancelled,
    /// An admitted request was never completed within the lease; its slots were taken back.
    LeaseExpired {
        /// How long it was held.
        held: Duration,
    },
    /// A reservation reached its time to live unspent; its capacity is free again.
    ReservationExpired {
        /// The reservation.
        reservation: ReservationId,
    },
    /// The server said the request was rate limited or blocked: the limits it touched are paused.
    RateLimited {
        /// The HTTP status (429, 403, ...), `None` when no response came.
        status: Option<u16>,
        /// Until when its limits are paused.
        until: Timestamp,
    },
    /// The rate-limited request is queued again; its Go comes no earlier than `at`.
    Retried {
        /// 1 for the first retry.
        attempt: u32,
        /// The earliest instant it may go.
        at: Timestamp,
    },
    /// A reservation was released early by the host.
    ReservationReleased {
        /// The reservation.
        reservation: ReservationId,
    },
    /// The request's response reported a quota (`RateLimit-Policy`, `RateLimit-Limit`,
    /// `X-RateLimit-Limit`) smaller than a window's max: the window holds at most that from now on
    /// (never more than its config says).
    LimitLowered {
        /// The window's name.
        limit: String,
        /// The max it had.
        from: u64,
        /// The max the server reported, in force from now on.
        to: u64,
    },
    /// The budget guard warns before it refuses: this admission took more than half the balance
    /// it found (`cost_over_half`), or took it below the limit's `warn_below` (`below_warning`).
    BudgetLow {
        /// The budget's name.
        limit: String,
        /// The balance left after this request's estimated cost.
        balance: i64,
        /// The request's estimated cost on it.
        cost: u64,
        /// `cost_over_half` or `below_warning`.
        reason: &'static str,
    },
    #[cfg(feature = "keys")]
    /// A breaker opened (this request's answer opened it): nothing that takes it goes until
    /// `until`, when it half-opens.
    BreakerOpened {
        /// The breaker's name.
        limit: String,
        /// `failures` (over its window), `auth` (a 401, a WAF 403, a blocked token),
        /// `rate_limited` (a 429 or a block), `probe_failed` (while half-open).
        reason: &'static str,
        /// When it half-opens.
        until: Timestamp,
    },
    #[cfg(feature = "keys")]
    /// A breaker's opening ended: it lets its probes through (the event names the request that
    /// opened it).
    BreakerHalfOpen {
        /// The breaker's name.
        limit: String,
    },
    #[cfg(feature = "keys")]
    /// Enough probes succeeded (this request was the last): the breaker is closed.
    BreakerClosed {
        /// The breaker's name.
        limit: String,
    },
}

/// Whom an event's request was for. A route's name is copied into each event (inline up to 23
/// bytes), not shared by reference count: an `Arc` clone and its drop are two atomic operations, and
/// each waits for the processor's pending stores (~25 ns of the direct path with the event log on).
// `repr(u8)`: the tag in a byte of its own, the name whole at an aligned offset. Left to the
// compiler, the tag shares the name's length byte and the name is copied in unaligned pieces that
// stall the store buffer when read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum EventEndpoint {
    /// A request made by route name: the endpoint is the route's name.
    Route(SmolStr),
    /// A request with neither target nor extra limits.
    NoTarget,
    /// A URL (the matched route apart), or a list of extra limits: shared by every event of the
    /// request.
    Own(Arc<Endpoint>),
}

/// What a request targets, as events show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `METHOD /path` without the query string's values, or the route name for requests made by
    /// route.
    pub(crate) name: Box<str>,
    /// The route matched, if any.
    pub(crate) route: Option<SmolStr>,
    /// The metrics' route slot: 0 for no route, `i + 1` for route `i`.
    pub(crate) route_slot: u16,
}

impl Event {
    /// `METHOD /path` without the query string's values (API keys travel there), or the route name
    /// for requests made by route.
    pub fn endpoint(&self) -> &str {
        match &self.endpoint {
            EventEndpoint::Route(name) => name,
            EventEndpoint::NoTarget => "-",
            EventEndpoint::Own(e) => &e.name,
        }
    }

    /// The route matched, if any.
    pub fn route(&self) -> Option<&str> {
        match &self.endpoint {
            EventEndpoint::Route(name) => Some(name),
            EventEndpoint::NoTarget => None,
            EventEndpoint::Own(e) => e.route.as_deref(),
        }
    }

    /// The `status` column of a log row: `queued`, `go`, `completed`, `rate_limited`, `retried`,
    /// `rejected`, `expired`, `cancelled`, `lease_expired`, `reservation_expired`,
    /// `reservation_released`, `limit_lowered`, `budget_low`, `breaker_opened`, `breaker_half_open`,
    /// `breaker_closed`.
    pub fn status(&self) -> &'static str {
        match self.kind {
            EventKind::Queued => "queued",
            EventKind::Go { .. } => "go",
            EventKind::Completed { .. } => "completed",
            EventKind::Rejected { .. } => "rejected",
            EventKind::Expired { .. } => "expired",
            EventKind::Cancelled => "cancelled",
            EventKind::LeaseExpired { .. } => "lease_expired",
            EventKind::ReservationExpired { .. } => "reservation_expired",
            EventKind::ReservationReleased { .. } => "reservation_released",
            EventKind::RateLimited { .. } => "rate_limited",
            EventKind::Retried { .. } => "retried",
            EventKind::LimitLowered { .. } => "limit_lowered",
            #[cfg(feature = "keys")]
            EventKind::BreakerOpened { .. } => "breaker_opened",
            #[cfg(feature = "keys")]
            EventKind::BreakerHalfOpen { .. } => "breaker_half_open",
            #[cfg(feature = "keys")]
            EventKind::BreakerClosed { .. } => "breaker_closed",
            EventKind::BudgetLow { .. } => "budget_low",
        }
    }

    /// The event as a flat log row, ready to insert as-is.
    pub fn log(&self) -> LogRecord<'_> {
        let (response_status, duration, error) = match &self.kind {
            EventKind::Completed { status, duration } => (*status, Some(*duration), None),
            EventKind::RateLimited { status, until } => (*status, Some(until.saturating_since(self.at)), None),
            EventKind::Go { waited, .. } => (None, Some(*waited), None),
            EventKind::LeaseExpired { held } => (None, Some(*held), None),
            EventKind::Rejected { error } | EventKind::Expired { error } => (None, None, Some(error.code())),
            _ => (None, None, None),
        };
        LogRecord {
            timestamp_ms: self.at.as_millis_f64(),
            request_id: self.request.0,
            endpoint: self.endpoint(),
            route: self.route(),
            priority: self.priority.as_str(),
            status: self.status(),
            response_status,
            duration_ms: duration.map(|d| d.as_secs_f64() * 1e3),
            error,
        }
    }
}

/// One row of the `rate_limit_logs` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LogRecord<'a> {
    /// When, in the host's milliseconds.
    pub timestamp_ms: f64,
    /// The request.
    pub request_id: u64,
    /// `METHOD /path`, secrets removed.
    pub endpoint: &'a str,
    /// The route matched.
    pub route: Option<&'a str>,
    /// `critical`, `high`, `normal` or `low`.
    pub priority: &'static str,
    /// See [`Event::status`].
    pub status: &'static str,
    /// The HTTP status of a completed request.
    pub response_status: Option<u16>,
    /// Completed: request duration; go: time waited; lease expired: time held.
    pub duration_ms: Option<f64>,
    /// The error code of a rejected or expired request.
    pub error: Option<&'static str>,
}
