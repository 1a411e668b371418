//! Configuration as data: the same JSON works from every runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::read::{self, At, Read};

use crate::error::ConfigError;

/// The whole configuration of a [`TrafficControl`](crate::TrafficControl).
///
/// ```
/// use traffic_control_core::Config;
/// let config = Config::from_json(r#"{
///     "limits": {
///         "global":  { "kind": "window", "max": 150, "per": "10s" },
///         "catalog": { "kind": "window", "max": 15,  "per": "10s" }
///     },
///     "global": ["global"],
///     "routes": [ { "name": "listings", "path": "^/ws/listings", "limits": ["catalog"] } ]
/// }"#).unwrap();
/// assert_eq!(config.limits.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Config {
    /// The limits, by name.
    pub limits: BTreeMap<String, LimitConfig>,
    /// Limits every request takes, whatever its route.
    pub global: Vec<String>,
    /// Ordered rules mapping a request to the limits it takes; the first match wins.
    pub routes: Vec<RouteConfig>,
    /// The waiting queue.
    pub queue: QueueConfig,
    /// How long a reservation lives when its request does not say.
    #[serde(with = "duration")]
    pub reservation_ttl: Duration,
    /// How long an admitted request may stay in flight before its slots are taken back (a lost
    /// completion leaks nothing).
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// What events may show of a request.
    pub events: EventsConfig,
    /// What to do when a server says a request was rate limited or blocked.
    pub feedback: FeedbackConfig,
    /// Tenants sharing the account, by name: within a priority, waiting requests are served by
    /// tenant weight (start-time fair queuing), so one tenant's flood does not delay another's
    /// requests. Tenants not named here (and requests naming none) share the class `default`,
    /// whose weight is 1 unless it is named here too. Empty: requests are served in arrival order.
    /// A tenant may also have a guaranteed share of every window and concurrency limit, lend it
    /// when idle, and have its borrowing capped (see [`TenantConfig`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Named sets of tenant settings (`premium`, `standard`, `basic`): a tenant naming a tier takes
    /// the tier's weight, guaranteed share, lendable and borrow percentages, except those it sets
    /// itself. Each tenant of a tier has the tier's share for itself.
    #[cfg(feature = "tenants")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, TierConfig>,
    /// Pools of API keys, by name: each key of a pool has its own copy of the pool's limits (named
    /// `<limit>@<key>`), and a request taking those limits is admitted on the least-loaded key that
    /// can admit it now (or the key it names). Keys are ids, never secrets.
    #[cfg(feature = "keys")]
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolConfig>,
}

/// A pool of API keys (see [`Config::pools`]): `{"keys": ["shop-a", "shop-b"], "limits": ["requests", "breaker"]}`.
#[cfg(feature = "keys")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The keys' ids, as permits and events name them (never the secrets).
    pub keys: Vec<String>,
    /// The limits each key has its own copy of (a breaker among them is one per key).
    pub limits: Vec<String>,
}

/// A tenant's share of the account (see [`Config::tenants`]).
///
/// The percentages are of each window and concurrency limit outside key pools (a limit of 100 a
/// minute and `guaranteed: 30`: 30 of every minute's 100 are the tenant's whenever it waits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TenantConfig {
    /// Its weight against the other tenants waiting at the same priority (1 to 1000): a tenant of
    /// weight 3 is served three requests for every one of a tenant of weight 1 while both wait.
    pub weight: u32,
    /// The percentage of each limit's capacity kept for it while it has requests waiting (0 to
    /// 80; the shares of all tenants add up to 80 at most): others may not take that room from it.
    /// 0: no guaranteed share.
    #[cfg(feature = "tenants")]
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub guaranteed: u32,
    /// The percentage of its guaranteed share lent to others while it has nothing waiting (0 to
    /// 100, default 100): the rest stays free for it, used or not. A lent share comes back within
    /// one window of its return (the borrowers' requests leave the window).
    #[cfg(feature = "tenants")]
    #[serde(skip_serializing_if = "is_hundred")]
    pub lendable: u32,
    /// The percentage of each limit's capacity it may use beyond its guaranteed share (0 to 100):
    /// a cap on borrowing. Absent: no cap.
    #[cfg(feature = "tenants")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrow: Option<u32>,
    /// The tier (`tiers`) it took its settings from, if any.
    #[cfg(feature = "tenants")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// A key of a pool (`pools`) dedicated to it: its requests go on that key unless they name
    /// another. Absent: they share the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A tier of tenants (see [`Config::tiers`]): the settings of [`TenantConfig`] its tenants take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TierConfig {
    /// As [`TenantConfig::weight`].
    pub weight: u32,
    /// As [`TenantConfig::guaranteed`], for each tenant of the tier.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub guaranteed: u32,
    /// As [`TenantConfig::lendable`].
    #[serde(skip_serializing_if = "is_hundred")]
    pub lendable: u32,
    /// As [`TenantConfig::borrow`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrow: Option<u32>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_hundred(v: &u32) -> bool {
    *v == 100
}

impl TenantConfig {
    /// A tenant of this weight.
    pub fn weight(weight: u32) -> Self {
        TenantConfig {
            weight,
            #[cfg(feature = "tenants")]
            guaranteed: 0,
            #[cfg(feature = "tenants")]
            lendable: 100,
            #[cfg(feature = "tenants")]
            borrow: None,
            #[cfg(feature = "tenants")]
            tier: None,
            key: None,
        }
    }

    /// This tenant with a guaranteed share (percent of each limit's capacity).
    #[cfg(feature = "tenants")]
    pub fn guaranteed(mut self, percent: u32) -> Self {
        self.guaranteed = percent;
        self
    }

    /// This tenant lending this percentage of its guaranteed share when idle.
    #[cfg(feature = "tenants")]
    pub fn lendable(mut self, percent: u32) -> Self {
        self.lendable = percent;
        self
    }

    /// This tenant with its borrowing beyond its guaranteed share capped (percent of capacity).
    #[cfg(feature = "tenants")]
    pub fn borrow(mut self, percent: u32) -> Self {
        self.borrow = Some(percent);
        self
    }

    /// Whether it has a share of the limits' capacity of its own (guaranteed or capped).
    #[cfg(feature = "tenants")]
    pub(crate) fn has_share(&self) -> bool {
        self.guaranteed > 0 || self.borrow.is_some()
    }
}

/// The name of the class of requests whose tenant the config does not name.
pub const DEFAULT_TENANT: &str = "default";

/// How server feedback (429, `Retry-After`, blocks) pauses limits and retries requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FeedbackConfig {
    /// How long a 429 pauses the limits its request touched when the server names no time (Back
    /// Market blocks for 10 s). Repeats double it, up to `max_block`.
    #[serde(with = "duration")]
    pub block: Duration,
    /// A limit's own block, by limit name, where it differs from `block`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks: BTreeMap<String, BlockDuration>,
    /// The longest pause that backoff reaches.
    #[serde(with = "duration")]
    pub max_block: Duration,
    /// How long a WAF block or a blocked token stops the limits when the server names no end.
    #[serde(with = "duration")]
    pub cooldown: Duration,
    /// Retries of a rate-limited request before `complete` answers give-up.
    pub max_retries: u32,
    /// Up to this fraction of a backoff pause is added at random, so processes sharing an account do
    /// not retry in step. Never added to a time the server named, and never subtracted.
    pub jitter: f64,
    /// Seed of the jitter's generator (deterministic: give each process its own).
    pub seed: u64,
}

/// A duration in a map value (`"10s"` or milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BlockDuration(#[serde(with = "duration")] pub Duration);

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            block: Duration::from_secs(10),
            blocks: BTreeMap::new(),
            max_block: Duration::from_secs(300),
            cooldown: Duration::from_secs(60),
            max_retries: 3,
            jitter: 0.1,
            seed: 0x5EED,
        }
    }
}

/// One limit, written with its `kind`: `{"kind": "window", "max": 150, "per": "10s"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitConfig {
    /// At most `max` cost-units admitted in any interval of length `per` (exact sliding window).
    Window {
        /// Cost-units per interval.
        max: u64,
        /// The interval.
        #[serde(with = "duration")]
        per: Duration,
        /// How long a request counts: until its completion plus `per` (the default, safe whatever
        /// the latency), or from its go for `per` only.
        #[serde(skip_serializing_if = "WindowHold::is_completion")]
        hold: WindowHold,
    },
    /// A bucket of `capacity` tokens refilled continuously at `refill` tokens per `per`; starts full.
    TokenBucket {
        /// The most tokens the bucket holds.
        capacity: u64,
        /// Tokens added per `per`.
        refill: u64,
        /// The refill period.
        #[serde(with = "duration")]
        per: Duration,
    },
    /// At most `max` requests in flight at once.
    Concurrency {
        /// Requests in flight.
        max: u64,
    },
    /// A balance held by the server (Keepa tokens): `refill` added every `per`, at most `max`
    /// accumulated, never spent below `floor`. Checked before a request with its estimated cost.
    Budget {
        /// Added to the balance at every period boundary.
        refill: u64,
        /// The refill period.
        #[serde(with = "duration")]
        per: Duration,
        /// The most the balance accumulates (Keepa: unused tokens expire after an hour, so about
        /// 60 × the per-minute rate).
        max: u64,
        /// The guard never lets the balance go below this.
        floor: u64,
        /// The balance at start; absent: unknown until the host reports it (Keepa's `/token`
        /// costs nothing) with [`TrafficControl::sync_budget`](crate::TrafficControl::sync_budget).
        #[serde(skip_serializing_if = "Option::is_none")]
        initial: Option<u64>,
        /// Warn (a `budget_low` event, `traffic_control_budget_warnings_total`) when an admission
        /// takes the balance below this, before the guard refuses anything. A request costing more
        /// than half the balance it finds is warned about whatever this says.
        #[serde(skip_serializing_if = "Option::is_none")]
        warn_below: Option<u64>,
    },
    /// A circuit breaker: the requests that take it go while it is closed; it opens for a reason
    /// (failures over a window, an authentication failure, a 429 or a block), stops every request
    /// while open, lets `probes` requests through when half-open, and closes after `close_after`
    /// successes. Put it on a route (a breaker per route) or in `global` (one for the API key).
    #[cfg(feature = "keys")]
    Breaker(BreakerConfig),
}

/// A circuit breaker's settings (`{"kind": "breaker", ...}`). The defaults are the seed's: open
/// after 5 failures, for 30 s, closed again after 2 successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerConfig {
    /// Failures (a 5xx, or no response) within `per` that open it.
    pub failures: u64,
    /// The share of the calls within `per` that must have failed too, in percent (0: any share).
    pub failure_percent: u64,
    /// The fewest calls within `per` for the share to count.
    pub min_calls: u64,
    /// The window over which failures are counted.
    #[serde(with = "duration")]
    pub per: Duration,
    /// How long it stays open when the server named no time: doubled on every opening until it
    /// closes again, never past `max_open`.
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// The longest opening it computes itself (a server's own time is taken as it is).
    #[serde(with = "duration")]
    pub max_open: Duration,
    /// Requests let through at once while half-open.
    pub probes: u64,
    /// Successes of probes that close it.
    pub close_after: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            failure_percent: 0,
            min_calls: 5,
            per: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
            max_open: Duration::from_secs(600),
            probes: 1,
            close_after: 2,
        }
    }
}

/// How long a window limit counts a request (`"hold"` in a config).
///
/// The server counts a request when it arrives: somewhere between our go and its response. Holding
/// its cost from the go until the completion plus `per` keeps every window of the server's within
/// `max`, whatever the latency, with no time margin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowHold {
    /// From the go until the completion (or the lease's expiry) plus `per`: the default.
    #[default]
    Completion,
    /// From the go for `per` only: for a server that counts what leaves (no latency to cover).
    Go,
}

impl WindowHold {
    /// Whether this is the default, [`WindowHold::Completion`].
    pub fn is_completion(&self) -> bool {
        *self == WindowHold::Completion
    }
}

/// A rule mapping requests to limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The route's name, used in events and by requests that name their route directly.
    pub name: String,
    /// The HTTP method it applies to (any when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A regular expression matched against the request's path (query string excluded).
    pub path: String,
    /// The limits the route takes, in addition to the global ones.
    pub limits: Vec<RouteLimit>,
    /// The cost of a request on this route when the request does not say: a number, or a count
    /// of the items in a query parameter (Keepa's `asin=A,B,C` costs 1 per ASIN).
    pub cost: RouteCost,
    /// This route's request reports the balance of the budgets it takes, for free (Keepa's
    /// `/token`): a host that meets an unknown balance sends it first, by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRequest>,
}

/// How to make a route's status request from any request to the same API: a `GET` of `path` on
/// the same origin, carrying the named query parameters of that request (Keepa's `key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StatusRequest {
    /// The path to request (`/token`).
    pub path: String,
    /// Query parameters copied from the request that met the unknown balance (`["key"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<String>,
}

impl Config {
    /// The URL of the status request that reports a budget's balance, made from `url` (a request
    /// to the same API): its origin, the status route's path, and the query parameters the status
    /// request names, taken from `url`. `None` when no route makes a status request.
    ///
    /// ```
    /// let keepa = traffic_control_core::Config::preset("keepa").unwrap();
    /// let url = keepa.status_url("https://api.keepa.com/product?key=K&domain=1&asin=B0");
    /// assert_eq!(url.as_deref(), Some("https://api.keepa.com/token?key=K"));
    /// ```
    pub fn status_url(&self, url: &str) -> Option<String> {
        let status = self.routes.iter().find_map(|r| r.status.as_ref())?;
        let (head, query) = url.split_once('?').map_or((url, ""), |(h, q)| (h, q));
        let query = query.split('#').next().unwrap_or("");
        // The origin: scheme and authority when absolute, nothing for a path.
        let origin = match head.find("://") {
            Some(i) => head[i + 3..].find('/').map_or(head, |j| &head[..i + 3 + j]),
            None => "",
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                status.query.iter().any(|q| q == name)
            })
            .collect();
        let mut out = format!("{origin}{}", status.path);
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        Some(out)
    }
}

/// How a route estimates a request's cost. An explicit cost from the caller always wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum RouteCost {
    /// The same for every request.
    Fixed(u64),
    /// (`factor` + extras) × the comma-separated items in query parameter `count`, plus `plus`, at
    /// most `max`.
    Count {
        /// The query parameter whose comma-separated items are counted (`asin`).
        count: String,
        /// Cost per item.
        factor: u64,
        /// Per-item extras switched on by other query parameters (Keepa: `offers`, `buybox`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        extras: Vec<CostExtra>,
        /// Added once per request.
        plus: u64,
        /// The cost never goes above this.
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
}

/// A per-item extra cost, switched on by a query parameter with a positive number.
///
/// `{"param": "buybox", "cost": 2}`: `buybox=1` adds 2 per item. `{"param": "offers", "cost": 6,
/// "per": 10}`: `offers=20` adds 6 for every started 10, so 12 per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CostExtra {
    /// The query parameter.
    pub param: String,
    /// Cost per item (per started `per` of the parameter's value, if given).
    pub cost: u64,
    /// Charge `cost` for every started `per` of the parameter's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per: Option<u64>,
}

impl Default for RouteCost {
    fn default() -> Self {
        RouteCost::Fixed(1)
    }
}

impl RouteCost {
    /// The cost of a request whose query string is `query`.
    pub(crate) fn estimate(&self, query: Option<&str>) -> u64 {
        match self {
            RouteCost::Fixed(c) => *c,
            RouteCost::Count { count, factor, extras, plus, max } => {
                let params = || query.into_iter().flat_map(|q| q.split('&')).filter_map(|pair| pair.split_once('='));
                let items = params()
                    .filter(|(name, _)| name == count)
                    .map(|(_, value)| {
                        // `%2C` is an encoded comma; empty items (`a,,b`) are not counted.
                        value.replace("%2C", ",").replace("%2c", ",").split(',').filter(|i| !i.is_empty()).count()
                            as u64
                    })
                    .sum::<u64>();
                let per_item = extras.iter().fold(*factor, |acc, extra| {
                    let value = params()
                        .filter(|(name, _)| *name == extra.param)
                        .filter_map(|(_, v)| v.parse::<u64>().ok())
                        .max()
                        .unwrap_or(0);
                    let units = match extra.per {
                        _ if value == 0 => 0,
                        Some(per) if per > 0 => value.div_ceil(per),
                        _ => 1,
                    };
                    acc.saturating_add(extra.cost.saturating_mul(units))
                });
                let cost = items.saturating_mul(per_item).saturating_add(*plus);
                max.map_or(cost, |m| cost.min(m))
            }
        }
    }
}

/// A limit taken by a route: its name, or its name with a fixed cost that overrides the request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RouteLimit {
    /// The limit takes the request's cost.
    Name(String),
    /// The limit takes this fixed cost whatever the request's.
    WithCost {
        /// The limit's name.
        limit: String,
        /// The cost on that limit.
        cost: u64,
    },
}

impl RouteLimit {
    /// The limit's name.
    pub fn name(&self) -> &str {
        match self {
            RouteLimit::Name(n) => n,
            RouteLimit::WithCost { limit, .. } => limit,
        }
    }
}

/// The waiting queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Requests waiting at once, all priorities together; past it `submit` fails with a queue-full
    /// error instead of growing without bound.
    pub max_waiting: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_waiting: 100_000 }
    }
}

/// What events show of a request's URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct EventsConfig {
    /// The query string: dropped (default), or kept with every value redacted.
    pub query: QueryPolicy,
}

/// How a URL's query string appears in events. API keys travel in query strings (Keepa's `?key=`),
/// so values never appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueryPolicy {
    /// `/product?key=abc&asin=B0` appears as `/product`.
    #[default]
    Drop,
    /// `/product?key=abc&asin=B0` appears as `/product?key=REDACTED&asin=REDACTED`.
    Redact,
}

fn default_reservation_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(60)
}

impl Config {
    /// Parses and validates a JSON config. Errors name the field (`routes[1].limits[0]`) and the
    /// reason.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Parse { field: "JSON".into(), reason: e.to_string() })?;
        Config::from_value(value)
    }

    /// Parses and validates a TOML config: the same shape as [`from_json`](Self::from_json), with
    /// `[limits.NAME]` tables and `[[routes]]` arrays. Errors name the field (`limits.catalog.max`)
    /// and its line and column, or the line and column of a syntax error, and the reason.
    ///
    /// ```
    /// use traffic_control_core::Config;
    /// let config = Config::from_toml(r#"
    ///     global = ["global"]
    ///     [limits.global]
    ///     kind = "window"
    ///     max = 150
    ///     per = "10s"
    /// "#).unwrap();
    /// assert_eq!(config.limits.len(), 1);
    /// ```
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        // Line and column (1-based) of a byte offset.
        let at = |offset: usize| {
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        };
        let value: Value = toml::from_str(text).map_err(|e| ConfigError::Parse {
            field: e.span().map_or_else(
                || "TOML".to_string(),
                |s| {
                    let (l, c) = at(s.start);
                    format!("line {l}, column {c}")
                },
            ),
            reason: e.message().to_string(),
        })?;
        let config = read::root(&value, read_config).map_err(|e| {
            let reason = match toml_offset(text, &e.field) {
                Some(offset) => {
                    let (l, c) = at(offset);
                    format!("{} (line {l}, column {c})", e.reason)
                }
                None => e.reason,
            };
            ConfigError::Parse { field: e.field, reason }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Builds and validates a config from a `serde_json::Value` (what the bindings hand over).
    pub fn from_value(value: Value) -> Result<Config, ConfigError> {
        let config =
            read::root(&value, read_config).map_err(|e| ConfigError::Parse { field: e.field, reason: e.reason })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as JSON, pretty-printed: defaults filled in, every duration as its text
    /// (`"per": "10s"`) and beside it as a number of milliseconds a program can read
    /// (`"per_ms": 10000`). The reader takes either or both (both must agree), so the text reads
    /// back as the same config.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&Written(self)).expect("a config always serializes")
    }

    /// [`to_json`](Self::to_json) on one line: what hosts show as `tc.config`.
    pub fn to_json_compact(&self) -> String {
        serde_json::to_string(&Written(self)).expect("a config always serializes")
    }

    /// Pools: keys named once each, limits that exist, each in one pool at most, and routes that
    /// take the limits of one pool at most (a request is admitted on one key).
    #[cfg(feature = "keys")]
    fn validate_pools(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.pools.len() > 255 {
            return invalid("pools".into(), "at most 255 pools".into());
        }
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, pool) in &self.pools {
            if pool.keys.is_empty() {
                return invalid(format!("pools.{name}.keys"), "a pool needs at least one key".into());
            }
            if pool.keys.len() > 1000 {
                return invalid(format!("pools.{name}.keys"), "at most 1000 keys".into());
            }
            for (i, key) in pool.keys.iter().enumerate() {
                if key.is_empty() || key.contains(['@', ';']) || key.chars().any(char::is_control) {
                    return invalid(
                        format!("pools.{name}.keys[{i}]"),
                        "a key id must not be empty or contain '@', ';' or control characters".into(),
                    );
                }
                if pool.keys[..i].contains(key) {
                    return invalid(format!("pools.{name}.keys[{i}]"), format!("{key:?} is named twice"));
                }
            }
            if pool.limits.is_empty() {
                return invalid(format!("pools.{name}.limits"), "a pool needs at least one limit per key".into());
            }
            for (i, limit) in pool.limits.iter().enumerate() {
                if !self.limits.contains_key(limit) {
                    return invalid(format!("pools.{name}.limits[{i}]"), format!("no limit is named {limit:?}"));
                }
                if let Some(other) = owner.insert(limit, name) {
                    return invalid(
                        format!("pools.{name}.limits[{i}]"),
                        format!("{limit:?} is already a limit of pool {other:?}"),
                    );
                }
            }
        }
        if self.pools.is_empty() {
            return Ok(());
        }
        let copies: usize = self.pools.values().map(|p| p.keys.len() * p.limits.len()).sum();
        if self.limits.len() + copies > usize::from(u16::MAX) {
            return invalid(
                "pools".into(),
                "too many keys times limits (each key has its own copy of its pool's limits)".into(),
            );
        }
        for (name, pool) in &self.pools {
            for limit in &pool.limits {
                for key in &pool.keys {
                    let copy = format!("{limit}@{key}");
                    if self.limits.contains_key(&copy) {
                        return invalid(
                            format!("limits.{copy}"),
                            format!("is the name of key {key:?}'s copy of {limit:?} in pool {name:?}"),
                        );
                    }
                }
            }
        }
        let pools_of = |limits: &mut dyn Iterator<Item = &str>| -> Vec<&str> {
            let mut found: Vec<&str> = limits.filter_map(|l| owner.get(l).copied()).collect();
            found.sort_unstable();
            found.dedup();
            found
        };
        for (i, route) in self.routes.iter().enumerate() {
            let found =
                pools_of(&mut self.global.iter().map(String::as_str).chain(route.limits.iter().map(|l| l.name())));
            if found.len() > 1 {
                return invalid(
                    format!("routes[{i}].limits"),
                    format!("takes the limits of pools {found:?}: a request is admitted on one key of one pool"),
                );
            }
        }
        let found = pools_of(&mut self.global.iter().map(String::as_str));
        if found.len() > 1 {
            return invalid(
                "global".into(),
                format!("takes the limits of pools {found:?}: a request is admitted on one key of one pool"),
            );
        }
        Ok(())
    }

    /// Checks what the types cannot: references, ranges, patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_string() });
        if self.limits.is_empty() {
            return invalid("limits".into(), "at least one limit is required");
        }
        if self.limits.len() > usize::from(u16::MAX) {
            return invalid("limits".into(), "too many limits");
        }
        #[cfg(feature = "tenants")]
        if self.tenants.len() >= usize::from(u16::MAX) {
            return invalid("tenants".into(), "too many tenants");
        }
        #[cfg(feature = "tenants")]
        for (name, tenant) in &self.tenants {
            if name.is_empty() || name.chars().any(char::is_control) {
                return invalid("tenants".into(), "a tenant name must not be empty or contain control characters");
            }
            if !(1..=1000).contains(&tenant.weight) {
                return invalid(format!("tenants.{name}.weight"), "must be from 1 to 1000");
            }
            check_share(&format!("tenants.{name}"), tenant.guaranteed, tenant.lendable, tenant.borrow)?;
            if let Some(tier) = tenant.tier.as_ref().filter(|t| !self.tiers.contains_key(*t)) {
                return invalid(format!("tenants.{name}.tier"), &format!("no tier {tier:?} in `tiers`"));
            }
            if let Some(key) = &tenant.key {
                #[cfg(feature = "keys")]
                let known = self.pools.values().any(|p| p.keys.contains(key));
                #[cfg(not(feature = "keys"))]
                let known = false;
                if !known {
                    return invalid(format!("tenants.{name}.key"), &format!("no pool has a key {key:?}"));
                }
            }
        }
        #[cfg(feature = "tenants")]
        self.validate_shares()?;
        for (name, limit) in &self.limits {
            if name.is_empty() {
                return invalid("limits".into(), "a limit name must not be empty");
            }
            // The shared store writes limit names into its records ("expiry;limit;cost", and
            // "<limit>\0<id>" in its index by limit): those two characters would split them.
            if name.contains(';') || name.chars().any(char::is_control) {
                return invalid(format!("limits.{name}"), "a limit name must not contain ';' or control characters");
            }
            let field = |f: &str| format!("limits.{name}.{f}");
            match *limit {
                LimitConfig::Window { max, per, .. } => {
                    if max == 0 {
                        return invalid(field("max"), "must be at least 1");
                    }
                    if per.is_zero() {
                        return invalid(field("per"), "must be longer than zero");
                    }
                }
                LimitConfig::TokenBucket { capacity, refill, per } => {
                    if capacity == 0 {
                        return invalid(field("capacity"), "must be at least 1");
                    }
                    if refill == 0 {
                        return invalid(
                            field("refill"),
                            "must be at least 1 (a bucket that never refills is a budget)",
                        );
                    }
                    if per.is_zero() {
                        return invalid(field("per"), "must be longer than zero");
                    }
                }
                LimitConfig::Concurrency { max } => {
                    if max == 0 {
                        return invalid(field("max"), "must be at least 1");
                    }
                }
                LimitConfig::Budget { refill, per, max, floor, initial, warn_below } => {
                    if refill == 0 {
                        return invalid(field("refill"), "must be at least 1");
                    }
                    if per.is_zero() {
                        return invalid(field("per"), "must be longer than zero");
                    }
                    if max <= floor {
                        return invalid(field("max"), "must be above the floor");
                    }
                    if initial.is_some_and(|i| i > max) {
                        return invalid(field("initial"), "must not be above max");
                    }
                    if warn_below.is_some_and(|w| w <= floor || w > max) {
                        return invalid(field("warn_below"), "must be above the floor and not above max");
                    }
                }
                #[cfg(feature = "keys")]
                LimitConfig::Breaker(b) => {
                    if b.failures == 0 {
                        return invalid(field("failures"), "must be at least 1");
                    }
                    if b.failure_percent > 100 {
                        return invalid(field("failure_percent"), "must be a percentage (0 to 100)");
                    }
                    if b.per.is_zero() {
                        return invalid(field("per"), "must be longer than zero");
                    }
                    if b.open_for.is_zero() {
                        return invalid(field("open_for"), "must be longer than zero");
                    }
                    if b.max_open < b.open_for {
                        return invalid(field("max_open"), "must not be shorter than open_for");
                    }
                    if b.probes == 0 {
                        return invalid(
                            field("probes"),
                            "must be at least 1 (a breaker that lets no probe through never closes)",
                        );
                    }
                    if b.close_after == 0 {
                        return invalid(field("close_after"), "must be at least 1");
                    }
                }
            }
        }
        for (i, name) in self.global.iter().enumerate() {
            if !self.limits.contains_key(name) {
                return invalid(format!("global[{i}]"), &format!("no limit is named {name:?}"));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if route.name.is_empty() {
                return invalid(format!("routes[{i}].name"), "must not be empty");
            }
            // Routes are few: a scan costs less code than a set (the wasm module's size budget).
            if self.routes[..i].iter().any(|r| r.name == route.name) {
                return invalid(format!("routes[{i}].name"), &format!("{:?} names two routes", route.name));
            }
            if let Some(method) = &route.method {
                if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return invalid(format!("routes[{i}].method"), "must be an HTTP method such as GET or POST");
                }
            }
            if let RouteCost::Count { count, .. } = &route.cost {
                if count.is_empty() {
                    return invalid(format!("routes[{i}].cost.count"), "must name a query parameter");
                }
            }
            if let Err(e) = regex_lite::Regex::new(&route.path) {
                return invalid(format!("routes[{i}].path"), &format!("not a valid regular expression: {e}"));
            }
            for (j, limit) in route.limits.iter().enumerate() {
                if !self.limits.contains_key(limit.name()) {
                    return invalid(
                        format!("routes[{i}].limits[{j}]"),
                        &format!("no limit is named {:?}", limit.name()),
                    );
                }
            }
        }
        #[cfg(feature = "keys")]
        self.validate_pools()?;
        if self.queue.max_waiting == 0 {
            return invalid("queue.max_waiting".into(), "must be at least 1");
        }
        if self.reservation_ttl.is_zero() {
            return invalid("reservation_ttl".into(), "must be longer than zero");
        }
        if self.lease_ttl.is_zero() {
            return invalid("lease_ttl".into(), "must be longer than zero");
        }
        if self.feedback.block.is_zero() {
            return invalid("feedback.block".into(), "must be longer than zero");
        }
        for (name, d) in &self.feedback.blocks {
            if !self.limits.contains_key(name) {
                return invalid(format!("feedback.blocks.{name}"), &format!("no limit is named {name:?}"));
            }
            if d.0.is_zero() {
                return invalid(format!("feedback.blocks.{name}"), "must be longer than zero");
            }
        }
        if self.feedback.max_block < self.feedback.block {
            return invalid("feedback.max_block".into(), "must not be shorter than feedback.block");
        }
        if !(0.0..=1.0).contains(&self.feedback.jitter) {
            return invalid("feedback.jitter".into(), "must be a fraction between 0 and 1");
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Config {
    /// Through [`Config::from_value`]'s reader (not validated, as serde types are not).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Config, D::Error> {
        read::root(&Value::deserialize(d)?, read_config).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading (see `read`): the JSON shape of each type, its defaults, and what each field accepts.
// ---------------------------------------------------------------------------------------------

fn read_config(at: &At<'_>, v: &Value) -> Read<Config> {
    let f = read::object(
        at,
        v,
        "struct Config",
        &[
            "limits",
            "global",
            "routes",
            "queue",
            "reservation_ttl",
            "reservation_ttl_ms",
            "lease_ttl",
            "lease_ttl_ms",
            "events",
            "feedback",
            "tenants",
            "tiers",
            "pools",
        ],
    )?;
    #[cfg(feature = "tenants")]
    let tiers = f.or("tiers", read_tiers, BTreeMap::new)?;
    #[cfg(not(feature = "tenants"))]
    f.or("tiers", read_tiers, || ())?;
    #[allow(unused_mut)]
    let mut tenants = f.or("tenants", read_tenants, BTreeMap::new)?;
    #[cfg(feature = "tenants")]
    if let Some(written) = v.get("tenants") {
        apply_tiers(&mut tenants, &tiers, written);
    }
    #[cfg(not(feature = "keys"))]
    f.or("pools", read_pools, || ())?;
    Ok(Config {
        limits: f.req("limits", |at, v| read::map_at(at, v, read_limit))?,
        global: f.or("global", read::strings_at, Vec::new)?,
        routes: f.or("routes", |at, v| read::list_at(at, v, read_route), Vec::new)?,
        queue: f.or("queue", read_queue, QueueConfig::default)?,
        reservation_ttl: f.duration("reservation_ttl", "reservation_ttl_ms")?.unwrap_or_else(default_reservation_ttl),
        lease_ttl: f.duration("lease_ttl", "lease_ttl_ms")?.unwrap_or_else(default_lease_ttl),
        events: f.or("events", read_events, EventsConfig::default)?,
        feedback: f.or("feedback", read_feedback, FeedbackConfig::default)?,
        tenants,
        #[cfg(feature = "tenants")]
        tiers,
        #[cfg(feature = "keys")]
        pools: f.or("pools", read_pools, BTreeMap::new)?,
    })
}

#[cfg(feature = "keys")]
fn read_pools(at: &At<'_>, v: &Value) -> Read<BTreeMap<String, PoolConfig>> {
    read::map_at(at, v, |at, v| {
        let f = read::object(at, v, "struct PoolConfig", &["keys", "limits"])?;
        Ok(PoolConfig { keys: f.req("keys", read::strings_at)?, limits: f.req("limits", read::strings_at)? })
    })
}

#[cfg(not(feature = "keys"))]
fn read_pools(at: &At<'_>, _: &Value) -> Read<()> {
    Err(at.error(NOT_IN_BROWSER))
}

/// The tenants as written (a tier's settings are applied by `apply_tiers`).
#[cfg(feature = "tenants")]
fn read_tenants(at: &At<'_>, v: &Value) -> Read<BTreeMap<String, TenantConfig>> {
    read::map_at(at, v, |at, v| {
        let f =
            read::object(at, v, "struct TenantConfig", &["weight", "guaranteed", "lendable", "borrow", "tier", "key"])?;
        Ok(TenantConfig {
            weight: f.or("weight", read::u32_at, || 1)?,
            guaranteed: f.or("guaranteed", read::u32_at, || 0)?,
            lendable: f.or("lendable", read::u32_at, || 100)?,
            borrow: f.opt("borrow", read::u32_at)?,
            tier: f.opt("tier", read::string_at)?,
            key: f.opt("key", read::string_at)?,
        })
    })
}

/// A tenant naming a tier takes the tier's settings it does not write itself (an unknown tier is
/// left to `validate`, which names the field).
#[cfg(feature = "tenants")]
fn apply_tiers(tenants: &mut BTreeMap<String, TenantConfig>, tiers: &BTreeMap<String, TierConfig>, written: &Value) {
    for (name, tenant) in tenants.iter_mut() {
        let Some(tier) = tenant.tier.as_ref().and_then(|t| tiers.get(t)) else { continue };
        let has = |field: &str| written.get(name).and_then(|t| t.get(field)).is_some();
        if !has("weight") {
            tenant.weight = tier.weight;
        }
        if !has("guaranteed") {
            tenant.guaranteed = tier.guaranteed;
        }
        if !has("lendable") {
            tenant.lendable = tier.lendable;
        }
        if !has("borrow") {
            tenant.borrow = tier.borrow;
        }
    }
}

/// What the browser build says of `tenants`, `tiers`, `pools` and breakers (one text: the build's
/// size is budgeted).
#[cfg(any(not(feature = "tenants"), not(feature = "keys")))]
const NOT_IN_BROWSER: &str =
    "not in this build (the wasm package's browser build leaves out tenants, key pools and circuit breakers)";

#[cfg(not(feature = "tenants"))]
fn read_tenants(at: &At<'_>, _: &Value) -> Read<BTreeMap<String, TenantConfig>> {
    Err(at.error(NOT_IN_BROWSER))
}

#[cfg(feature = "tenants")]
fn read_tiers(at: &At<'_>, v: &Value) -> Read<BTreeMap<String, TierConfig>> {
    read::map_at(at, v, |at, v| {
        let f = read::object(at, v, "struct TierConfig", &["weight", "guaranteed", "lendable", "borrow"])?;
        Ok(TierConfig {
            weight: f.or("weight", read::u32_at, || 1)?,
            guaranteed: f.or("guaranteed", read::u32_at, || 0)?,
            lendable: f.or("lendable", read::u32_at, || 100)?,
            borrow: f.opt("borrow", read::u32_at)?,
        })
    })
}

#[cfg(not(feature = "tenants"))]
fn read_tiers(at: &At<'_>, _: &Value) -> Read<()> {
    Err(at.error(NOT_IN_BROWSER))
}

/// A share's percentages, `at` naming the tenant or tier.
#[cfg(feature = "tenants")]
fn check_share(at: &str, guaranteed: u32, lendable: u32, borrow: Option<u32>) -> Result<(), ConfigError> {
    let invalid = |field: &str, reason: &str| {
        Err(ConfigError::Invalid { field: format!("{at}.{field}"), reason: reason.to_string() })
    };
    if guaranteed > 80 {
        return invalid("guaranteed", "must be at most 80 (percent of each limit's capacity)");
    }
    if lendable > 100 {
        return invalid("lendable", "must be from 0 to 100 (percent of the guaranteed share)");
    }
    if borrow.is_some_and(|b| b > 100) {
        return invalid("borrow", "must be from 0 to 100 (percent of each limit's capacity)");
    }
    if borrow == Some(0) && guaranteed == 0 {
        return invalid("borrow", "0 with no guaranteed share: the tenant could never send a request");
    }
    Ok(())
}

#[cfg(feature = "tenants")]
impl Config {
    /// Tiers' ranges, and the guaranteed shares' sum: at most 80% of capacity, so that room is
    /// always left to the tenants without one.
    fn validate_shares(&self) -> Result<(), ConfigError> {
        for (name, tier) in &self.tiers {
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(ConfigError::Invalid {
                    field: "tiers".into(),
                    reason: "a tier name must not be empty or contain control characters".into(),
                });
            }
            if !(1..=1000).contains(&tier.weight) {
                return Err(ConfigError::Invalid {
                    field: format!("tiers.{name}.weight"),
                    reason: "must be from 1 to 1000".into(),
                });
            }
            check_share(&format!("tiers.{name}"), tier.guaranteed, tier.lendable, tier.borrow)?;
        }
        let mut sum = 0;
        for (name, tenant) in &self.tenants {
            sum += tenant.guaranteed;
            if sum > 80 {
                return Err(ConfigError::Invalid {
                    field: format!("tenants.{name}.guaranteed"),
                    reason: format!(
                        "the guaranteed shares add up to {sum}% of each limit's capacity with this one: at most 80%"
                    ),
                });
            }
        }
        for name in self.tenants.iter().filter(|(_, t)| t.has_share()).map(|(n, _)| n) {
            for limit in self.limits.keys() {
                let copy = format!("{limit}#{name}");
                if self.limits.contains_key(&copy) {
                    return Err(ConfigError::Invalid {
                        field: format!("limits.{copy}"),
                        reason: format!("named like tenant {name:?}'s share of limit {limit:?}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Each kind of limit with the fields it takes, in `LimitConfig`'s order.
const LIMIT_KINDS: [(&str, &[&str]); 5] = [
    ("window", &["max", "per", "per_ms", "hold"]),
    ("token_bucket", &["capacity", "refill", "per", "per_ms"]),
    ("concurrency", &["max"]),
    ("budget", &["refill", "per", "per_ms", "max", "floor", "initial", "warn_below"]),
    // Read by `read_breaker`.
    ("breaker", &[]),
];

/// A limit: its kind decides which fields it needs and which it refuses; what a kind needs or
/// refuses is said of the limit (`limits.api`), a field's own error of the field.
fn read_limit(at: &At<'_>, v: &Value) -> Read<LimitConfig> {
    if v.get("kind").and_then(Value::as_str) == Some("breaker") {
        return read_breaker(at, v);
    }
    let f = read::object(
        at,
        v,
        "a limit",
        &["kind", "max", "per", "per_ms", "capacity", "refill", "floor", "initial", "warn_below", "hold"],
    )?;
    let kind = f.req("kind", |at, v| read::variant_at(at, v, &LIMIT_KINDS.map(|(name, _)| name), "a limit kind"))?;
    let max = f.opt("max", read::u64_at)?;
    let per = f.duration("per", "per_ms")?;
    let capacity = f.opt("capacity", read::u64_at)?;
    let refill = f.opt("refill", read::u64_at)?;
    let floor = f.opt("floor", read::u64_at)?;
    let initial = f.opt("initial", read::u64_at)?;
    let warn_below = f.opt("warn_below", read::u64_at)?;
    let hold = f.opt("hold", |at, v| read::variant_at(at, v, &["completion", "go"], "a window hold"))?;
    let (name, allowed) = LIMIT_KINDS[kind];
    let present = [
        ("max", max.is_some()),
        ("per", per.is_some()),
        ("capacity", capacity.is_some()),
        ("refill", refill.is_some()),
        ("floor", floor.is_some()),
        ("initial", initial.is_some()),
        ("warn_below", warn_below.is_some()),
        ("hold", hold.is_some()),
    ];
    if let Some((field, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
        return Err(
            at.error(format!("`{field}` does not apply to a {name} limit (its fields: {})", allowed.join(", ")))
        );
    }
    let need = |field: &str, v: Option<u64>| v.ok_or_else(|| at.error(format!("a {name} limit needs `{field}`")));
    let per = || per.ok_or_else(|| at.error(format!("a {name} limit needs `per`")));
    Ok(match kind {
        0 => LimitConfig::Window {
            max: need("max", max)?,
            per: per()?,
            hold: if hold == Some(1) { WindowHold::Go } else { WindowHold::Completion },
        },
        1 => LimitConfig::TokenBucket {
            capacity: need("capacity", capacity)?,
            refill: need("refill", refill)?,
            per: per()?,
        },
        2 => LimitConfig::Concurrency { max: need("max", max)? },
        _ => LimitConfig::Budget {
            refill: need("refill", refill)?,
            per: per()?,
            max: need("max", max)?,
            floor: floor.unwrap_or(0),
            initial,
            warn_below,
        },
    })
}

/// A circuit breaker: every field has the seed's default.
#[cfg(feature = "keys")]
fn read_breaker(at: &At<'_>, v: &Value) -> Read<LimitConfig> {
    let f = read::object(
        at,
        v,
        "a breaker limit",
        &[
            "kind",
            "failures",
            "failure_percent",
            "min_calls",
            "per",
            "per_ms",
            "open_for",
            "open_for_ms",
            "max_open",
            "max_open_ms",
            "probes",
            "close_after",
        ],
    )?;
    let d = BreakerConfig::default();
    let failures = f.or("failures", read::u64_at, || d.failures)?;
    Ok(LimitConfig::Breaker(BreakerConfig {
        failures,
        failure_percent: f.or("failure_percent", read::u64_at, || d.failure_percent)?,
        min_calls: f.or("min_calls", read::u64_at, || failures)?,
        per: f.duration("per", "per_ms")?.unwrap_or(d.per),
        open_for: f.duration("open_for", "open_for_ms")?.unwrap_or(d.open_for),
        max_open: f.duration("max_open", "max_open_ms")?.unwrap_or(d.max_open),
        probes: f.or("probes", read::u64_at, || d.probes)?,
        close_after: f.or("close_after", read::u64_at, || d.close_after)?,
    }))
}

#[cfg(not(feature = "keys"))]
fn read_breaker(at: &At<'_>, _: &Value) -> Read<LimitConfig> {
    Err(at.key("kind").error(NOT_IN_BROWSER.to_string()))
}

fn read_route(at: &At<'_>, v: &Value) -> Read<RouteConfig> {
    let f = read::object(at, v, "a route", &["name", "method", "path", "limits", "cost", "status"])?;
    Ok(RouteConfig {
        name: f.req("name", read::string_at)?,
        method: f.opt("method", read::string_at)?,
        path: f.req("path", read::string_at)?,
        limits: f.or("limits", |at, v| read::list_at(at, v, read_route_limit), Vec::new)?,
        cost: f.or("cost", read_route_cost, RouteCost::default)?,
        status: f.opt("status", read_status)?,
    })
}

fn read_status(at: &At<'_>, v: &Value) -> Read<StatusRequest> {
    let f = read::object(at, v, "a status request", &["path", "query"])?;
    let path = f.req("path", read::string_at)?;
    if !path.starts_with('/') {
        return Err(at.key("path").error("must start with '/' (a path on the API's origin)".to_string()));
    }
    Ok(StatusRequest { path, query: f.or("query", read::strings_at, Vec::new)? })
}

/// A limit's name, or `{"limit": name, "cost": n}`.
fn read_route_limit(at: &At<'_>, v: &Value) -> Read<RouteLimit> {
    if let Value::String(name) = v {
        return Ok(RouteLimit::Name(name.clone()));
    }
    let expected = r#"a limit's name or {"limit": name, "cost": n}"#;
    if !v.is_object() {
        return Err(at.invalid_type(v, expected));
    }
    let f = read::object(at, v, expected, &["limit", "cost"])?;
    Ok(RouteLimit::WithCost { limit: f.req("limit", read::string_at)?, cost: f.req("cost", read::u64_at)? })
}

/// A number, or `{"count": parameter, "factor", "extras", "plus", "max"}`.
fn read_route_cost(at: &At<'_>, v: &Value) -> Read<RouteCost> {
    if v.is_number() {
        return read::u64_at(at, v).map(RouteCost::Fixed);
    }
    let f = read::object(
        at,
        v,
        r#"a cost: a number, or {"count": parameter, ...}"#,
        &["count", "factor", "extras", "plus", "max"],
    )?;
    Ok(RouteCost::Count {
        count: f.req("count", read::string_at)?,
        factor: f.or("factor", read::u64_at, || 1)?,
        extras: f.or("extras", |at, v| read::list_at(at, v, read_cost_extra), Vec::new)?,
        plus: f.or("plus", read::u64_at, || 0)?,
        max: f.opt("max", read::u64_at)?,
    })
}

fn read_cost_extra(at: &At<'_>, v: &Value) -> Read<CostExtra> {
    let f = read::object(at, v, "struct CostExtra", &["param", "cost", "per"])?;
    Ok(CostExtra {
        param: f.req("param", read::string_at)?,
        cost: f.req("cost", read::u64_at)?,
        per: f.opt("per", read::u64_at)?,
    })
}

fn read_queue(at: &At<'_>, v: &Value) -> Read<QueueConfig> {
    let f = read::object(at, v, "struct QueueConfig", &["max_waiting"])?;
    Ok(QueueConfig { max_waiting: f.req("max_waiting", read::usize_at)? })
}

fn read_events(at: &At<'_>, v: &Value) -> Read<EventsConfig> {
    let f = read::object(at, v, "struct EventsConfig", &["query"])?;
    let query = f.or("query", |at, v| read::variant_at(at, v, &["drop", "redact"], "`drop` or `redact`"), || 0)?;
    Ok(EventsConfig { query: if query == 0 { QueryPolicy::Drop } else { QueryPolicy::Redact } })
}

fn read_feedback(at: &At<'_>, v: &Value) -> Read<FeedbackConfig> {
    let f = read::object(
        at,
        v,
        "struct FeedbackConfig",
        &[
            "block",
            "block_ms",
            "blocks",
            "blocks_ms",
            "max_block",
            "max_block_ms",
            "cooldown",
            "cooldown_ms",
            "max_retries",
            "jitter",
            "seed",
        ],
    )?;
    let d = FeedbackConfig::default();
    let mut blocks: BTreeMap<String, BlockDuration> = f.or(
        "blocks",
        |at, v| read::map_at(at, v, |at, v| read::duration_at(at, v).map(BlockDuration)),
        Default::default,
    )?;
    // Read as the same map type as `blocks` (one more map type weighed kilobytes of the wasm module).
    let blocks_ms: BTreeMap<String, BlockDuration> = f.or(
        "blocks_ms",
        |at, v| read::map_at(at, v, |at, v| read::millis_at(at, v).map(BlockDuration)),
        Default::default,
    )?;
    for (status, BlockDuration(ms)) in blocks_ms {
        match blocks.get(&status) {
            Some(t) if t.0.abs_diff(ms) > Duration::from_micros(1) => {
                let at = f.at("blocks_ms");
                return Err(at.key(&status).error(format!(
                    "{} disagrees with `blocks.{status}` ({}): give one of them, or both alike",
                    humantime::format_duration(ms),
                    humantime::format_duration(t.0)
                )));
            }
            Some(_) => {}
            None => {
                blocks.insert(status, BlockDuration(ms));
            }
        }
    }
    Ok(FeedbackConfig {
        block: f.duration("block", "block_ms")?.unwrap_or(d.block),
        blocks,
        max_block: f.duration("max_block", "max_block_ms")?.unwrap_or(d.max_block),
        cooldown: f.duration("cooldown", "cooldown_ms")?.unwrap_or(d.cooldown),
        max_retries: f.or("max_retries", read::u32_at, || d.max_retries)?,
        jitter: f.or("jitter", read::f64_at, || d.jitter)?,
        seed: f.or("seed", read::u64_at, || d.seed)?,
    })
}

/// The byte offset in a TOML document of the value at `field` (a path such as `routes[0].path`),
/// or of the nearest enclosing value that exists.
fn toml_offset(text: &str, field: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = Some(doc.get_ref());
    for segment in field.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        let Some(t) = table else { break };
        let Some((_, value)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == key) else { break };
        span = Some(value.span());
        let mut found = value.get_ref();
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let (DeValue::Array(items), Ok(i)) = (found, index.parse::<usize>()) else { break };
            let Some(item) = items.get(i) else { break };
            span = Some(item.span());
            found = item.get_ref();
        }
        table = match found {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span.map(|s| s.start)
}

// Writing (`to_json`): the config's own shape, with each duration also in milliseconds. Shadow
// types rather than edits of a `serde_json::Value`: serializing a `Value` weighed ~3.5 KB of the
// wasm module, these no more than the derived `Serialize` they stand in for.

/// A config as [`Config::to_json`] writes it.
struct Written<'a>(&'a Config);

impl Serialize for Written<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = self.0;
        let mut st = s.serialize_struct("Config", 13)?;
        st.serialize_field("limits", &WrittenLimits(&c.limits))?;
        st.serialize_field("global", &c.global)?;
        st.serialize_field("routes", &c.routes)?;
        st.serialize_field("queue", &c.queue)?;
        st.serialize_field("reservation_ttl", &Text(c.reservation_ttl))?;
        st.serialize_field("reservation_ttl_ms", &Millis(c.reservation_ttl))?;
        st.serialize_field("lease_ttl", &Text(c.lease_ttl))?;
        st.serialize_field("lease_ttl_ms", &Millis(c.lease_ttl))?;
        st.serialize_field("events", &c.events)?;
        st.serialize_field("feedback", &WrittenFeedback(&c.feedback))?;
        #[cfg(feature = "tenants")]
        if !c.tenants.is_empty() {
            st.serialize_field("tenants", &c.tenants)?;
        }
        #[cfg(feature = "tenants")]
        if !c.tiers.is_empty() {
            st.serialize_field("tiers", &c.tiers)?;
        }
        #[cfg(feature = "keys")]
        if !c.pools.is_empty() {
            st.serialize_field("pools", &c.pools)?;
        }
        st.end()
    }
}

struct WrittenLimits<'a>(&'a BTreeMap<String, LimitConfig>);

impl Serialize for WrittenLimits<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, l)| (name, WrittenLimit(*l))))
    }
}

struct WrittenLimit(LimitConfig);

impl Serialize for WrittenLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("LimitConfig", 12)?;
        match self.0 {
            LimitConfig::Window { max, per, hold } => {
                st.serialize_field("kind", "window")?;
                st.serialize_field("max", &max)?;
                st.serialize_field("per", &Text(per))?;
                st.serialize_field("per_ms", &Millis(per))?;
                if !hold.is_completion() {
                    st.serialize_field("hold", &hold)?;
                }
            }
            LimitConfig::TokenBucket { capacity, refill, per } => {
                st.serialize_field("kind", "token_bucket")?;
                st.serialize_field("capacity", &capacity)?;
                st.serialize_field("refill", &refill)?;
                st.serialize_field("per", &Text(per))?;
                st.serialize_field("per_ms", &Millis(per))?;
            }
            LimitConfig::Concurrency { max } => {
                st.serialize_field("kind", "concurrency")?;
                st.serialize_field("max", &max)?;
            }
            LimitConfig::Budget { refill, per, max, floor, initial, warn_below } => {
                st.serialize_field("kind", "budget")?;
                st.serialize_field("refill", &refill)?;
                st.serialize_field("per", &Text(per))?;
                st.serialize_field("per_ms", &Millis(per))?;
                st.serialize_field("max", &max)?;
                st.serialize_field("floor", &floor)?;
                if let Some(initial) = initial {
                    st.serialize_field("initial", &initial)?;
                }
                if let Some(warn_below) = warn_below {
                    st.serialize_field("warn_below", &warn_below)?;
                }
            }
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(b) => {
                st.serialize_field("kind", "breaker")?;
                st.serialize_field("failures", &b.failures)?;
                st.serialize_field("failure_percent", &b.failure_percent)?;
                st.serialize_field("min_calls", &b.min_calls)?;
                st.serialize_field("per", &Text(b.per))?;
                st.serialize_field("per_ms", &Millis(b.per))?;
                st.serialize_field("open_for", &Text(b.open_for))?;
                st.serialize_field("open_for_ms", &Millis(b.open_for))?;
                st.serialize_field("max_open", &Text(b.max_open))?;
                st.serialize_field("max_open_ms", &Millis(b.max_open))?;
                st.serialize_field("probes", &b.probes)?;
                st.serialize_field("close_after", &b.close_after)?;
            }
        }
        st.end()
    }
}

struct WrittenFeedback<'a>(&'a FeedbackConfig);

impl Serialize for WrittenFeedback<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let f = self.0;
        let mut st = s.serialize_struct("FeedbackConfig", 11)?;
        st.serialize_field("block", &Text(f.block))?;
        st.serialize_field("block_ms", &Millis(f.block))?;
        if !f.blocks.is_empty() {
            st.serialize_field("blocks", &f.blocks)?;
            st.serialize_field("blocks_ms", &BlocksMillis(&f.blocks))?;
        }
        st.serialize_field("max_block", &Text(f.max_block))?;
        st.serialize_field("max_block_ms", &Millis(f.max_block))?;
        st.serialize_field("cooldown", &Text(f.cooldown))?;
        st.serialize_field("cooldown_ms", &Millis(f.cooldown))?;
        st.serialize_field("max_retries", &f.max_retries)?;
        st.serialize_field("jitter", &f.jitter)?;
        st.serialize_field("seed", &f.seed)?;
        st.end()
    }
}

struct BlocksMillis<'a>(&'a BTreeMap<String, BlockDuration>);

impl Serialize for BlocksMillis<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, d)| (name, Millis(d.0))))
    }
}

/// A duration as its text (`"1m 30s"`).
struct Text(Duration);

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        duration::serialize(&self.0, s)
    }
}

/// A duration as a number of milliseconds: whole when it is whole.
struct Millis(Duration);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.subsec_nanos() % 1_000_000 == 0 {
            s.serialize_u64(d.as_millis() as u64)
        } else {
            s.serialize_f64(d.as_secs_f64() * 1000.0)
        }
    }
}

/// Durations are written as humantime strings (`"10s"`, `"1m 30s"`, `"250ms"`) or as a number of
/// milliseconds.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Config::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn durations_come_back_as_text_and_milliseconds_and_read_back_either_way() {
        let c = Config::from_json(
            r#"{"limits": {"w": {"kind": "window", "max": 5, "per": "1m 30s"}, "t": {"kind": "token_bucket", "capacity": 2, "refill": 1, "per": 1.5}, "c": {"kind": "concurrency", "max": 2}},
                "feedback": {"blocks": {"w": "2s"}}, "lease_ttl": "90s"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["limits"]["w"]["per"], "1m 30s");
        assert_eq!(v["limits"]["w"]["per_ms"], 90_000);
        assert_eq!(v["limits"]["t"]["per_ms"], 1.5);
        assert!(v["limits"]["c"].get("per_ms").is_none());
        assert_eq!(v["lease_ttl_ms"], 90_000);
        assert_eq!(v["reservation_ttl_ms"], 30_000);
        assert_eq!(v["feedback"]["block_ms"], 10_000);
        assert_eq!(v["feedback"]["blocks_ms"]["w"], 2_000);
        // Both, as given back; or only the milliseconds.
        assert_eq!(Config::from_value(v.clone()).unwrap(), c);
        let mut only_ms = v;
        for l in ["w", "t"] {
            only_ms["limits"][l].as_object_mut().unwrap().remove("per");
        }
        only_ms.as_object_mut().unwrap().remove("lease_ttl");
        only_ms["feedback"].as_object_mut().unwrap().remove("blocks");
        assert_eq!(Config::from_value(only_ms).unwrap(), c);
    }

    #[test]
    fn a_duration_and_its_milliseconds_that_disagree_name_the_field() {
        let e = err(r#"{"limits": {"w": {"kind": "window", "max": 5, "per": "10s", "per_ms": 5000}}}"#);
        assert!(e.contains("limits.w.per_ms") && e.contains("disagrees with `per`"), "{e}");
        let e = err(r#"{"limits": {}, "feedback": {"blocks": {"w": "2s"}, "blocks_ms": {"w": 3000}}}"#);
        assert!(e.contains("feedback.blocks_ms.w") && e.contains("disagrees"), "{e}");
        let e = err(r#"{"limits": {"w": {"kind": "window", "max": 5, "per_ms": "10s"}}}"#);
        assert!(e.contains("limits.w.per_ms") && e.contains("milliseconds"), "{e}");
    }

    #[test]
    fn durations_as_strings_or_millis() {
        let c = Config::from_json(
            r#"{"limits":{"a":{"kind":"window","max":1,"per":"1m 30s"},"b":{"kind":"token_bucket","capacity":5,"refill":1,"per":250}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.limits["a"],
            LimitConfig::Window { max: 1, per: Duration::from_secs(90), hold: WindowHold::Completion }
        );
        assert_eq!(c.limits["b"], LimitConfig::TokenBucket { capacity: 5, refill: 1, per: Duration::from_millis(250) });
        assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let e = err(r#"{"limits":{"a":{"kind":"window","max":0,"per":"1s"}}}"#);
        assert!(e.contains("limits.a.max") && e.contains("at least 1"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","max":1,"per":"soon"}}}"#);
        assert!(e.contains("limits.a.per") && e.contains("not a duration"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","per":"1s"}}}"#);
        assert!(e.contains("limits.a") && e.contains("a window limit needs `max`"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"concurrency","max":2,"per":"1s"}}}"#);
        assert!(e.contains("`per` does not apply to a concurrency limit"), "{e}");
        let e = err(
            r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s"}},"routes":[{"name":"r","path":"^/x","limits":["b"]}]}"#,
        );
        assert!(e.contains("routes[0].limits[0]") && e.contains("\"b\""), "{e}");
        let e = err(
            r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s"}},"routes":[{"name":"r","path":"(","limits":[]}]}"#,
        );
        assert!(e.contains("routes[0].path"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s","burst":3}}}"#);
        assert!(e.contains("burst"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","max":1,"per":6666666666666666666666666666666}}}"#);
        assert!(e.contains("limits.a.per") && e.contains("non-negative number"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"windw","max":1}}}"#);
        assert!(e.contains("windw"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s"}},"global":["nope"]}"#);
        assert!(e.contains("global[0]"), "{e}");
        let e = err(r#"{"limits":{"a;b":{"kind":"window","max":1,"per":"1s"}}}"#);
        assert!(e.contains("limits.a;b") && e.contains("must not contain ';'"), "{e}");
        let e = err("{\"limits\":{\"a\\u0000b\":{\"kind\":\"window\",\"max\":1,\"per\":\"1s\"}}}");
        assert!(e.contains("control characters"), "{e}");
    }

    #[test]
    fn shapes_with_two_spellings_say_which_part_is_wrong() {
        let w = r#""limits":{"a":{"kind":"window","max":1,"per":"1s"}}"#;
        let e = err(&format!(r#"{{{w},"routes":[{{"name":"r","path":"x","limits":[{{"limit":"a"}}]}}]}}"#));
        assert!(e.contains("routes[0].limits[0]") && e.contains("missing field `cost`"), "{e}");
        let e = err(&format!(r#"{{{w},"routes":[{{"name":"r","path":"x","limits":[3]}}]}}"#));
        assert!(e.contains("routes[0].limits[0]") && e.contains("a limit's name"), "{e}");
        let e = err(&format!(r#"{{{w},"routes":[{{"name":"r","path":"x","cost":{{"count":"asin","bogus":1}}}}]}}"#));
        assert!(e.contains("routes[0].cost.bogus") && e.contains("unknown field"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":3,"max":1}}}"#);
        assert!(e.contains("limits.a.kind") && e.contains("integer `3`"), "{e}");
        let e = err(r#"{"limits":{"a":{"kind":"window","max":1,"per":"1s"}}"#);
        assert!(e.contains("JSON") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn serde_reads_a_config_through_the_same_reader() {
        let json = r#"{"limits":{"a":{"kind":"budget","refill":5,"per":"1m","max":300,"initial":null}},
            "routes":[{"name":"r","path":"^/x","limits":["a",{"limit":"a","cost":2}],"cost":{"count":"asin","extras":[{"param":"offers","cost":6,"per":10}]}}],
            "feedback":{"blocks":{"a":"30s"},"jitter":0.25}}"#;
        let via_serde: Config = serde_json::from_str(json).unwrap();
        assert_eq!(via_serde, Config::from_json(json).unwrap());
        assert_eq!(Config::from_json(&via_serde.to_json()).unwrap(), via_serde);
        let e = serde_json::from_str::<Config>(r#"{"limits":{"a":{"kind":"window"}}}"#).unwrap_err();
        assert!(e.to_string().starts_with("limits.a: a window limit needs `max`"), "{e}");
    }
}
