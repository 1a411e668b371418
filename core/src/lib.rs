//! # traffic-control-core
//!
//! A deterministic, sans-IO traffic controller for calling rate-limited third-party APIs. It
//! decides *when* each outgoing request may go; the host performs the HTTP, owns the clock and the
//! one timer. See [`TrafficControl`] for the calling contract.
//!
//! ```
//! use traffic_control_core::{Config, Decision, FollowUp, Outcome, Priority, Request, Timestamp, TrafficControl};
//!
//! let config = Config::from_json(r#"{
//!     "limits": {
//!         "global":  { "kind": "window", "max": 150, "per": "10s" },
//!         "catalog": { "kind": "window", "max": 15,  "per": "10s" }
//!     },
//!     "global": ["global"],
//!     "routes": [ { "name": "listings", "path": "^/ws/listings", "limits": ["catalog"] } ]
//! }"#).unwrap();
//! let mut tc = TrafficControl::new(config).unwrap();
//! let t0 = Timestamp::from_millis(0);
//!
//! // The Dip goes only with the Peak's capacity reserved in the same admission.
//! let dip = Request::http("POST", "/ws/listings/42")
//!     .reserve(FollowUp::http("POST", "/ws/listings/42"));
//! let Decision::Go(permit) = tc.try_acquire(t0, dip) else { panic!() };
//! let _ = tc.complete(t0, permit.request, Outcome::status(200));
//!
//! // The Peak spends the reservation: it goes without competing.
//! let peak = Request::http("POST", "/ws/listings/42").priority(Priority::High).spend(permit.reservations[0]);
//! assert!(matches!(tc.try_acquire(t0, peak), Decision::Go(_)));
//! ```
//!
//! ## Limits
//! - [`LimitConfig::Window`]: at most `max` cost in any interval `[s, s + per)` (exact: a log of
//!   admissions with running totals, O(log n) queries).
//! - [`LimitConfig::TokenBucket`]: continuous refill, exact integer arithmetic.
//! - [`LimitConfig::Concurrency`]: requests in flight, released at completion or lease expiry.
//! - [`LimitConfig::Breaker`]: a circuit breaker, opened by failures, authentication failures, 429s
//!   and blocks, half-open for a few probes, closed by their successes.
//!
//! ## Shared state
//! [`SharedStore`] keeps the limits of one account in Redis for every process that calls with it:
//! still sans-IO, it produces the script calls and reads their replies (see its module docs).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod config;
mod controller;
pub mod driver;
mod error;
mod event;
mod feedback;
pub mod host;
mod limit;
mod metrics;
mod preset;
mod queue;
mod read;
mod request;
mod route;
#[cfg(feature = "shadow")]
mod shadow;
mod shared;
mod snapshot;
mod time;

#[cfg(feature = "keys")]
pub use config::PoolConfig;
pub use config::{
    BlockDuration, BreakerConfig, Config, CostExtra, EventsConfig, FeedbackConfig, LimitConfig, QueryPolicy,
    QueueConfig, RouteConfig, RouteCost, RouteLimit, StatusRequest, TenantConfig, TierConfig, WindowHold,
    DEFAULT_TENANT,
};
pub use controller::TrafficControl;
pub use error::{ConfigError, ErrorKind, RequestError, StoreError};
pub use event::{Event, EventKind, LogRecord};
pub use feedback::{Block, BlockKind, BudgetReport, Feedback};
#[cfg(feature = "metrics")]
pub use metrics::{
    Family, Metrics, PauseCount, RejectedCount, RequestCount, Sample, WaitHistogram, NO_ROUTE, WAIT_BUCKETS,
};
pub use preset::{apply_env, preset, Preset, PRESETS};
pub use request::{
    Completion, Decision, FollowUp, Outcome, Permit, Priority, Request, RequestId, ReservationId, Target,
};
#[cfg(feature = "shadow")]
pub use shadow::{ShadowReport, SideReport};
pub use shared::{script_sha1, AdmitOptions, Admitted, ReplyValue, SharedStore, StoreCall, StoreOptions, SCRIPT};
pub use snapshot::{LimitKind, LimitSnapshot, PauseSnapshot, Snapshot};
pub use time::Timestamp;
