//! Configuration as data: the same JSON works from every runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The limits, by name.
    pub limits: BTreeMap<String, LimitConfig>,
    /// Limits every request takes, whatever its route.
    #[serde(default)]
    pub global: Vec<String>,
    /// Ordered rules mapping a request to the limits it takes; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The waiting queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// How long a reservation lives when its request does not say.
    #[serde(default = "default_reservation_ttl", with = "duration")]
    pub reservation_ttl: Duration,
    /// How long an admitted request may stay in flight before its slots are taken back (a lost
    /// completion leaks nothing).
    #[serde(default = "default_lease_ttl", with = "duration")]
    pub lease_ttl: Duration,
    /// What events may show of a request.
    #[serde(default)]
    pub events: EventsConfig,
    /// What to do when a server says a request was rate limited or blocked.
    #[serde(default)]
    pub feedback: FeedbackConfig,
}

/// How server feedback (429, `Retry-After`, blocks) pauses limits and retries requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One limit.
///
/// Read through [`RawLimit`] rather than serde's internally tagged enum: that one buffers the
/// fields before it knows the kind, so an error inside a field (`"per": "soon"`) could only name
/// the limit (`limits.api`), and its buffering code was a tenth of the wasm module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawLimit")]
#[non_exhaustive]
pub enum LimitConfig {
    /// At most `max` cost-units admitted in any interval of length `per` (exact sliding window).
    Window {
        /// Cost-units per interval.
        max: u64,
        /// The interval.
        #[serde(with = "duration")]
        per: Duration,
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
    },
}

/// The kinds of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LimitKind {
    Window,
    TokenBucket,
    Concurrency,
    Budget,
}

/// A limit as written: its kind and every field any kind has. [`LimitConfig`] is read from it, so
/// each field's errors carry the field's path (`limits.api.per`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    kind: LimitKind,
    max: Option<u64>,
    #[serde(default, with = "duration::option")]
    per: Option<Duration>,
    capacity: Option<u64>,
    refill: Option<u64>,
    floor: Option<u64>,
    initial: Option<u64>,
}

impl TryFrom<RawLimit> for LimitConfig {
    type Error = String;

    fn try_from(r: RawLimit) -> Result<LimitConfig, String> {
        let (name, allowed): (&str, &[&str]) = match r.kind {
            LimitKind::Window => ("window", &["max", "per"]),
            LimitKind::TokenBucket => ("token_bucket", &["capacity", "refill", "per"]),
            LimitKind::Concurrency => ("concurrency", &["max"]),
            LimitKind::Budget => ("budget", &["refill", "per", "max", "floor", "initial"]),
        };
        let present = [
            ("max", r.max.is_some()),
            ("per", r.per.is_some()),
            ("capacity", r.capacity.is_some()),
            ("refill", r.refill.is_some()),
            ("floor", r.floor.is_some()),
            ("initial", r.initial.is_some()),
        ];
        if let Some((field, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
            return Err(format!("`{field}` does not apply to a {name} limit (its fields: {})", allowed.join(", ")));
        }
        let need = |field: &str, v: Option<u64>| v.ok_or_else(|| format!("a {name} limit needs `{field}`"));
        let per = || r.per.ok_or_else(|| format!("a {name} limit needs `per`"));
        Ok(match r.kind {
            LimitKind::Window => LimitConfig::Window { max: need("max", r.max)?, per: per()? },
            LimitKind::TokenBucket => LimitConfig::TokenBucket {
                capacity: need("capacity", r.capacity)?,
                refill: need("refill", r.refill)?,
                per: per()?,
            },
            LimitKind::Concurrency => LimitConfig::Concurrency { max: need("max", r.max)? },
            LimitKind::Budget => LimitConfig::Budget {
                refill: need("refill", r.refill)?,
                per: per()?,
                max: need("max", r.max)?,
                floor: r.floor.unwrap_or(0),
                initial: r.initial,
            },
        })
    }
}

/// A rule mapping requests to limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The route's name, used in events and by requests that name their route directly.
    pub name: String,
    /// The HTTP method it applies to (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A regular expression matched against the request's path (query string excluded).
    pub path: String,
    /// The limits the route takes, in addition to the global ones.
    #[serde(default)]
    pub limits: Vec<RouteLimit>,
    /// The cost of a request on this route when the request does not say: a number, or a count
    /// of the items in a query parameter (Keepa's `asin=A,B,C` costs 1 per ASIN).
    #[serde(default)]
    pub cost: RouteCost,
}

/// How a route estimates a request's cost. An explicit cost from the caller always wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        #[serde(default = "one")]
        factor: u64,
        /// Per-item extras switched on by other query parameters (Keepa: `offers`, `buybox`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extras: Vec<CostExtra>,
        /// Added once per request.
        #[serde(default)]
        plus: u64,
        /// The cost never goes above this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
}

/// A per-item extra cost, switched on by a query parameter with a positive number.
///
/// `{"param": "buybox", "cost": 2}`: `buybox=1` adds 2 per item. `{"param": "offers", "cost": 6,
/// "per": 10}`: `offers=20` adds 6 for every started 10, so 12 per item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CostExtra {
    /// The query parameter.
    pub param: String,
    /// Cost per item (per started `per` of the parameter's value, if given).
    pub cost: u64,
    /// Charge `cost` for every started `per` of the parameter's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EventsConfig {
    /// The query string: dropped (default), or kept with every value redacted.
    #[serde(default)]
    pub query: QueryPolicy,
}

/// How a URL's query string appears in events. API keys travel in query strings (Keepa's `?key=`),
/// so values never appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueryPolicy {
    /// `/product?key=abc&asin=B0` appears as `/product`.
    #[default]
    Drop,
    /// `/product?key=abc&asin=B0` appears as `/product?key=REDACTED&asin=REDACTED`.
    Redact,
}

fn one() -> u64 {
    1
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
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| ConfigError::Parse { field: e.path().to_string(), reason: e.inner().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a TOML config: the same shape as [`from_json`](Self::from_json), with
    /// `[limits.NAME]` tables and `[[routes]]` arrays. Errors name the field (`limits.catalog.max`),
    /// or the line and column of a syntax error, and the reason.
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
        // Line and column (1-based) of a byte offset, for errors that carry a span.
        let at = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, column)
            })
        };
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            field: at(e.span()).map_or_else(|| "TOML".to_string(), |(l, c)| format!("line {l}, column {c}")),
            reason: e.message().to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let reason = match at(e.inner().span()) {
                Some((l, c)) => format!("{} (line {l}, column {c})", e.inner().message()),
                None => e.inner().message().to_string(),
            };
            ConfigError::Parse { field: e.path().to_string(), reason }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Builds and validates a config from a `serde_json::Value` (what the bindings hand over).
    pub fn from_value(value: serde_json::Value) -> Result<Config, ConfigError> {
        let config: Config = serde_path_to_error::deserialize(value)
            .map_err(|e| ConfigError::Parse { field: e.path().to_string(), reason: e.inner().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
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
        for (name, limit) in &self.limits {
            if name.is_empty() {
                return invalid("limits".into(), "a limit name must not be empty");
            }
            let field = |f: &str| format!("limits.{name}.{f}");
            match *limit {
                LimitConfig::Window { max, per } => {
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
                LimitConfig::Budget { refill, per, max, floor, initial } => {
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

/// Durations are written as humantime strings (`"10s"`, `"1m 30s"`, `"250ms"`) or as a number of
/// milliseconds.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"10s\" or a number of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_millis).map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            // try_from: a number too large for a Duration is an error, not a panic (found by fuzzing).
            Duration::try_from_secs_f64(v / 1000.0)
                .map_err(|_| E::custom("a duration must be a finite, non-negative number of milliseconds"))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| E::custom(format!("{v:?} is not a duration: {e}")))
        }
    }

    /// An optional duration (absent or `null`: none).
    pub(crate) mod option {
        use std::time::Duration;

        use serde::Deserializer;

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            d.deserialize_option(OptionVisitor)
        }

        struct OptionVisitor;

        impl<'de> serde::de::Visitor<'de> for OptionVisitor {
            type Value = Option<Duration>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"10s\" or a number of milliseconds")
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                super::deserialize(d).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Config::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn durations_as_strings_or_millis() {
        let c = Config::from_json(
            r#"{"limits":{"a":{"kind":"window","max":1,"per":"1m 30s"},"b":{"kind":"token_bucket","capacity":5,"refill":1,"per":250}}}"#,
        )
        .unwrap();
        assert_eq!(c.limits["a"], LimitConfig::Window { max: 1, per: Duration::from_secs(90) });
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
    }
}
