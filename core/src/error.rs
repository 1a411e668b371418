//! Errors, one enum per concern. Every variant has a stable `code` that the bindings carry across
//! (JS `error.code`, the Python exception class).

use serde::Serialize;
use thiserror::Error;

use crate::time::Timestamp;

/// An invalid configuration: names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not a config of the right shape.
    #[error("invalid config at {field}: {reason}")]
    Parse {
        /// Path of the offending field, such as `limits.catalog.per`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config has the right shape but a value that cannot work.
    #[error("invalid config at {field}: {reason}")]
    Invalid {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// The stable code of this error: always `CONFIG`.
    pub fn code(&self) -> &'static str {
        "CONFIG"
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Parse { field, .. } | ConfigError::Invalid { field, .. } => field,
        }
    }
}

/// Why a request was refused or ended without going. Waiting is never an error: see
/// [`Decision::Wait`](crate::Decision::Wait).
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
#[serde(tag = "code", rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum RequestError {
    /// The request names a route the config does not have.
    #[error("unknown route {route:?}")]
    UnknownRoute {
        /// The name given.
        route: String,
    },
    /// The request names a limit the config does not have.
    #[error("unknown limit {limit:?}")]
    UnknownLimit {
        /// The name given.
        limit: String,
    },
    /// The request (with what it reserves) costs more than the limit can ever hold: it could never go.
    #[error("cost {cost} on limit {limit:?} exceeds its capacity {capacity}: the request can never go")]
    CostExceedsCapacity {
        /// The limit.
        limit: String,
        /// The cost asked of it, reservations included.
        cost: u64,
        /// What the limit holds at most.
        capacity: u64,
    },
    /// The request's deadline passed before it could go.
    #[error("deadline passed at {deadline} before the request could go (now {now})")]
    DeadlineExceeded {
        /// The deadline.
        deadline: Timestamp,
        /// When this was decided.
        now: Timestamp,
    },
    /// The earliest the limits could let the request go is after its deadline.
    #[error("the request cannot go before {earliest}, after its deadline {deadline}")]
    DeadlineUnreachable {
        /// The earliest instant the request could go.
        earliest: Timestamp,
        /// The deadline.
        deadline: Timestamp,
    },
    /// The budget will not hold enough above its floor before the request's deadline.
    #[error(
        "insufficient budget on {limit:?}: needs {needed}, {available} available above the floor{}{}",
        if *ahead > 0 { format!(", {ahead} asked by requests ahead of it") } else { String::new() },
        enough_at.map_or(String::new(), |t| format!(", enough at {t}"))
    )]
    InsufficientBudget {
        /// The budget limit.
        limit: String,
        /// The cost asked.
        needed: u64,
        /// What may be spent now (balance above the floor; negative when the server's balance is).
        available: i64,
        /// What the requests waiting ahead of it on the same budget ask first.
        ahead: u64,
        /// When refills would make enough available.
        enough_at: Option<Timestamp>,
    },
    /// The budget's balance is not known yet: the host must report it first (Keepa's `/token`
    /// costs nothing).
    #[error("the balance of budget {limit:?} is unknown: sync it first (sync_budget)")]
    BudgetUnknown {
        /// The budget limit.
        limit: String,
    },
    /// The waiting queue holds its configured maximum.
    #[error("the queue is full ({max_waiting} requests waiting)")]
    QueueFull {
        /// The configured bound.
        max_waiting: usize,
    },
    /// The host cancelled the request.
    #[error("the request was cancelled")]
    Cancelled,
    /// The shared store could not answer for longer than the request could wait: how a shared
    /// controller's events name the refusal (its code is the store error's, `STORE_UNAVAILABLE` or
    /// `STORE_REPLY`).
    #[error("{error}")]
    #[serde(rename = "STORE_UNAVAILABLE")]
    Store {
        /// What failed.
        #[serde(skip)]
        error: StoreError,
    },
}

/// The shared store (Redis) could not answer: the host's client failed, or the reply was not the
/// script's. Never a reason to admit: a request fails with it only after its maximum wait.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store was unreachable (connection refused, timeout, restart) for longer than the
    /// request could wait.
    #[error("the shared store is unavailable: {reason}")]
    Unavailable {
        /// What the client said.
        reason: String,
    },
    /// The store answered something the script never sends (another script under the same name,
    /// a client that mangles replies).
    #[error("unexpected reply from the shared store: {reason}")]
    Reply {
        /// What was wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// The stable code: `STORE_UNAVAILABLE` or `STORE_REPLY`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "STORE_UNAVAILABLE",
            StoreError::Reply { .. } => "STORE_REPLY",
        }
    }
}

/// The families of errors, the same in every binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// An invalid configuration.
    Config,
    /// The request can never succeed (unknown route or limit, cost above capacity).
    NeverSucceeds,
    /// A deadline passed or cannot be met.
    Deadline,
    /// The queue is full.
    QueueFull,
    /// Cancelled by the host.
    Cancelled,
    /// Not enough budget within the allowed wait, or its balance unknown.
    Budget,
    /// The shared store (Redis) could not answer.
    Store,
}

impl ErrorKind {
    /// The family of a stable code (`CONFIG`, `QUEUE_FULL`, ...), for hosts that receive only the
    /// code across a boundary (a JS error's `code`). `None` for a code the core does not have.
    pub fn of_code(code: &str) -> Option<ErrorKind> {
        Some(match code {
            "CONFIG" => ErrorKind::Config,
            "UNKNOWN_ROUTE" | "UNKNOWN_LIMIT" | "COST_EXCEEDS_CAPACITY" => ErrorKind::NeverSucceeds,
            "DEADLINE_EXCEEDED" | "DEADLINE_UNREACHABLE" => ErrorKind::Deadline,
            "QUEUE_FULL" => ErrorKind::QueueFull,
            "INSUFFICIENT_BUDGET" | "BUDGET_UNKNOWN" => ErrorKind::Budget,
            "CANCELLED" => ErrorKind::Cancelled,
            "STORE_UNAVAILABLE" | "STORE_REPLY" => ErrorKind::Store,
            _ => return None,
        })
    }

    /// The family's name in snake case: `config`, `never_succeeds`, `deadline`, `queue_full`,
    /// `cancelled`, `budget`, `store`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::NeverSucceeds => "never_succeeds",
            ErrorKind::Deadline => "deadline",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Budget => "budget",
            ErrorKind::Store => "store",
        }
    }
}

impl RequestError {
    /// The stable code of this error, such as `QUEUE_FULL`.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::UnknownRoute { .. } => "UNKNOWN_ROUTE",
            RequestError::UnknownLimit { .. } => "UNKNOWN_LIMIT",
            RequestError::CostExceedsCapacity { .. } => "COST_EXCEEDS_CAPACITY",
            RequestError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            RequestError::DeadlineUnreachable { .. } => "DEADLINE_UNREACHABLE",
            RequestError::QueueFull { .. } => "QUEUE_FULL",
            RequestError::InsufficientBudget { .. } => "INSUFFICIENT_BUDGET",
            RequestError::BudgetUnknown { .. } => "BUDGET_UNKNOWN",
            RequestError::Cancelled => "CANCELLED",
            RequestError::Store { error } => error.code(),
        }
    }

    /// The family of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::UnknownRoute { .. }
            | RequestError::UnknownLimit { .. }
            | RequestError::CostExceedsCapacity { .. } => ErrorKind::NeverSucceeds,
            RequestError::DeadlineExceeded { .. } | RequestError::DeadlineUnreachable { .. } => ErrorKind::Deadline,
            RequestError::QueueFull { .. } => ErrorKind::QueueFull,
            RequestError::InsufficientBudget { .. } | RequestError::BudgetUnknown { .. } => ErrorKind::Budget,
            RequestError::Cancelled => ErrorKind::Cancelled,
            RequestError::Store { .. } => ErrorKind::Store,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_to_its_kind() {
        let errors = [
            RequestError::UnknownRoute { route: "r".into() },
            RequestError::UnknownLimit { limit: "l".into() },
            RequestError::CostExceedsCapacity { limit: "l".into(), cost: 2, capacity: 1 },
            RequestError::DeadlineExceeded { deadline: Timestamp::ZERO, now: Timestamp::ZERO },
            RequestError::DeadlineUnreachable { earliest: Timestamp::ZERO, deadline: Timestamp::ZERO },
            RequestError::QueueFull { max_waiting: 1 },
            RequestError::InsufficientBudget { limit: "b".into(), needed: 2, available: 1, ahead: 0, enough_at: None },
            RequestError::BudgetUnknown { limit: "b".into() },
            RequestError::Cancelled,
        ];
        for e in errors {
            assert_eq!(ErrorKind::of_code(e.code()), Some(e.kind()), "{}", e.code());
        }
        let config = ConfigError::Invalid { field: "f".into(), reason: "r".into() };
        assert_eq!(ErrorKind::of_code(config.code()), Some(ErrorKind::Config));
        assert_eq!(ErrorKind::of_code("NOPE"), None);
        for e in [StoreError::Unavailable { reason: "r".into() }, StoreError::Reply { reason: "r".into() }] {
            assert_eq!(ErrorKind::of_code(e.code()), Some(ErrorKind::Store));
        }
    }
}
