//! Presets for the APIs this controller was built for, and environment overrides.
//!
//! The presets are JSON files embedded in the core (`core/src/presets/*.json`), so every runtime
//! reads the same data. The host hands its environment over as a map: the core never reads the
//! process environment.
//!
//! ```
//! use std::collections::BTreeMap;
//! use traffic_control_core::{Config, LimitConfig};
//!
//! let env = BTreeMap::from([("BM_RATE_LIMIT_CATALOG_MAX_REQUESTS".to_string(), "10".to_string())]);
//! let config = Config::preset("backmarket")?.with_env("BM_RATE_LIMIT", &env)?;
//! assert!(matches!(config.limits["catalog"], LimitConfig::Window { max: 10, .. }));
//! # Ok::<(), traffic_control_core::ConfigError>(())
//! ```
//!
//! # Environment overrides
//! A variable `<PREFIX>_<LIMIT>_<FIELD>` sets one field of one limit. `<LIMIT>` is the limit's name
//! upper-cased, every character other than a letter or digit written `_` (`catalog-write` →
//! `CATALOG_WRITE`). The fields, by the limit kinds that have them:
//!
//! | Variable suffix            | Sets            | Value                                   | Kinds                         |
//! |----------------------------|-----------------|-----------------------------------------|-------------------------------|
//! | `MAX`, `MAX_REQUESTS`      | `max`           | whole number                            | window, concurrency, budget   |
//! | `PER`                      | `per`           | duration (`10s`, `1m 30s`) or milliseconds | window, token_bucket, budget |
//! | `PER_MS`, `INTERVAL_MS`    | `per`           | whole number of milliseconds            | window, token_bucket, budget  |
//! | `CAPACITY`                 | `capacity`      | whole number                            | token_bucket                  |
//! | `REFILL`                   | `refill`        | whole number                            | token_bucket, budget          |
//! | `FLOOR`                    | `floor`         | whole number                            | budget                        |
//! | `INITIAL`                  | `initial`       | whole number                            | budget                        |
//! | `HOLD`                     | `hold`          | `completion` or `go`                    | window                        |
//!
//! and, for the whole config, `<PREFIX>_QUEUE_MAX_WAITING`, `<PREFIX>_RESERVATION_TTL` /
//! `<PREFIX>_RESERVATION_TTL_MS`, `<PREFIX>_LEASE_TTL` / `<PREFIX>_LEASE_TTL_MS`, and the server
//! feedback's `<PREFIX>_FEEDBACK_BLOCK` / `_BLOCK_MS`, `<PREFIX>_FEEDBACK_MAX_BLOCK` /
//! `_MAX_BLOCK_MS`, `<PREFIX>_FEEDBACK_COOLDOWN` / `_COOLDOWN_MS`, `<PREFIX>_FEEDBACK_MAX_RETRIES`
//! and `<PREFIX>_FEEDBACK_JITTER_PERCENT` (a whole percentage).
//!
//! So the Back Market seed's variables work as they are: `BM_RATE_LIMIT_CATALOG_INTERVAL_MS` sets
//! the catalog window's `per` in milliseconds, `BM_RATE_LIMIT_CATALOG_MAX_REQUESTS` its `max`.
//!
//! Rules:
//! - A variable with the prefix that names no limit or no field of its limit is an error naming it
//!   (a typo must not silently leave the preset's value in force). Give each API a prefix of its own.
//! - An empty value counts as unset (`FOO=` in a `.env` file or a compose file).
//! - Two spellings of one field (`…_MAX` and `…_MAX_REQUESTS`) must agree, or it is an error.
//! - The result is validated again; an error caused by an override names the variable.
//! - Variables are read in name order, so the error reported is the same for any map.

use std::time::Duration;

use crate::config::{Config, LimitConfig, WindowHold};
use crate::error::ConfigError;

/// A configuration that ships with the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preset {
    /// Its name, as [`preset`] takes it.
    pub name: &'static str,
    /// The prefix of its environment overrides (`BM_RATE_LIMIT`).
    pub env_prefix: &'static str,
    /// The config, as JSON: what [`Preset::config`] parses. Hosts may read it as data.
    pub json: &'static str,
}

/// Every preset that ships with the core.
///
/// - `backmarket` (env `BM_RATE_LIMIT`): Back Market's seller API, on its documented windows. Its
///   real limits are 200 requests per 10 s overall and 20 per 10 s on the catalog; past them Back
///   Market (Cloudflare) blocks for 10 s. The preset keeps the seed's count margins: `global`
///   150/10 s, `catalog` 15/10 s (every method on `/ws/listings…`, as the seed's route map says),
///   `competitor` 2/1 s (`/ws/backbox/v1/competitors…`), `care` 300/60 s (`/ws/sav…`), and the
///   seed's data-ingestion limit `ingestion` 2,000 SKU lines per hour (`POST /ws/listings`, cost =
///   the request's lines; one unit of `global` and `catalog`). No time margin is needed: a window
///   holds each request until its completion plus `per` (see [`WindowHold`](crate::WindowHold)),
///   so whatever the latency the server never counts more than `max` in any of its windows.
/// - `keepa` (env `KEEPA_RATE_LIMIT`): a budget `tokens` refilled 20 per minute, at most 1,200
///   (Keepa's unused tokens expire after an hour), floor 0, balance unknown until synced from the
///   free `/token` endpoint. Costs per route: `/token` 0, `/deals` 5, `/bestsellers` 50 (fixed per
///   request); `/product` 1 per ASIN in its `asin=` list, plus Keepa's extras (`offers=N`: 6 more
///   per product for every started 10 offers; `buybox=1`: 2 more per product); `/category`, `/seller` 1.
///   A request's own cost replaces the estimate, and the server's `tokensLeft` corrects the balance.
///   Any other path (`/query`, `/search`, …) costs 1 unless the request says.
/// - `baselinker` (env `BASELINKER_RATE_LIMIT`): 100 requests per minute per API token, run at 90.
///   Past the limit BaseLinker blocks the token and answers `ERROR_BLOCKED_TOKEN … blocked until
///   <time>`. Every request (`/connector.php`, the one endpoint) takes the `requests` limit.
pub const PRESETS: &[Preset] = &[
    Preset { name: "backmarket", env_prefix: "BM_RATE_LIMIT", json: include_str!("presets/backmarket.json") },
    Preset { name: "keepa", env_prefix: "KEEPA_RATE_LIMIT", json: include_str!("presets/keepa.json") },
    Preset { name: "baselinker", env_prefix: "BASELINKER_RATE_LIMIT", json: include_str!("presets/baselinker.json") },
];

impl Preset {
    /// The preset of this name (any case); an unknown name is an error at `preset` listing the
    /// known ones.
    pub fn named(name: &str) -> Result<&'static Preset, ConfigError> {
        PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
            let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            ConfigError::Invalid {
                field: "preset".into(),
                reason: format!("unknown preset {name:?}: the presets are {}", known.join(", ")),
            }
        })
    }

    /// The preset's config, parsed and validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::from_json(self.json)
    }

    /// The preset's config with the environment's overrides under the preset's own prefix.
    pub fn config_with_env<I, K, V>(&self, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        apply_env(self.config()?, self.env_prefix, env)
    }
}

/// The config of a preset by name: `backmarket`, `keepa` or `baselinker`.
pub fn preset(name: &str) -> Result<Config, ConfigError> {
    Preset::named(name)?.config()
}

impl Config {
    /// The config of a preset by name: `backmarket`, `keepa` or `baselinker`. See [`PRESETS`].
    pub fn preset(name: &str) -> Result<Config, ConfigError> {
        preset(name)
    }

    /// This config with the environment's overrides applied, validated again. See [`apply_env`].
    pub fn with_env<I, K, V>(self, prefix: &str, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        apply_env(self, prefix, env)
    }
}

/// Applies the variables `<prefix>_…` of `env` to `config` and validates the result. Any other
/// variable is ignored, so a host may hand over its whole environment. See the [module
/// docs](self) for the variables and rules.
pub fn apply_env<I, K, V>(mut config: Config, prefix: &str, env: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let prefix = prefix.trim_end_matches('_');
    if prefix.is_empty() {
        return Err(ConfigError::Invalid {
            field: "env prefix".into(),
            reason: "must not be empty (every variable would be read as an override)".into(),
        });
    }
    let head = format!("{prefix}_");
    // In name order, so the error reported does not depend on the map's order. Vectors rather
    // than maps: a handful of variables, and each map type costs the wasm module its own B-tree.
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(&head))
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().trim().to_string()))
        .collect();
    vars.sort_unstable();
    vars.dedup_by(|a, b| a.0 == b.0);

    let mut set: Vec<(Setting, (String, Value))> = Vec::new();
    for (var, text) in &vars {
        if text.is_empty() {
            continue;
        }
        let invalid = |reason: String| ConfigError::Invalid { field: format!("env {var}"), reason };
        let (setting, unit) = resolve(&config, &var[head.len()..]).map_err(invalid)?;
        let value = unit.parse(text).map_err(invalid)?;
        match set.iter().find(|(s, _)| *s == setting).map(|(_, sv)| sv) {
            Some((other, v)) if *v != value => {
                return Err(invalid(format!("{text:?} disagrees with {other}, which sets the same field")));
            }
            Some(_) => {}
            None => {
                setting.apply(&mut config, value);
                set.push((setting, (var.clone(), value)));
            }
        }
    }

    config.validate().map_err(|e| blame(e, &set))?;
    Ok(config)
}

/// A field the environment can set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setting {
    Limit(String, Field),
    Config(ConfigField),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigField {
    QueueMaxWaiting,
    ReservationTtl,
    LeaseTtl,
    FeedbackBlock,
    FeedbackMaxBlock,
    FeedbackCooldown,
    FeedbackMaxRetries,
    FeedbackJitterPercent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Max,
    Per,
    Capacity,
    Refill,
    Floor,
    Initial,
    Hold,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Max => "max",
            Field::Per => "per",
            Field::Capacity => "capacity",
            Field::Refill => "refill",
            Field::Floor => "floor",
            Field::Initial => "initial",
            Field::Hold => "hold",
        }
    }

    fn of(limit: &LimitConfig) -> &'static [Field] {
        match limit {
            LimitConfig::Window { .. } => &[Field::Max, Field::Per, Field::Hold],
            LimitConfig::TokenBucket { .. } => &[Field::Capacity, Field::Refill, Field::Per],
            LimitConfig::Concurrency { .. } => &[Field::Max],
            LimitConfig::Budget { .. } => &[Field::Refill, Field::Per, Field::Max, Field::Floor, Field::Initial],
        }
    }
}

/// How a variable's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Whole,
    Millis,
    Duration,
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Whole(u64),
    Duration(Duration),
    Hold(WindowHold),
}

impl Unit {
    fn parse(self, text: &str) -> Result<Value, String> {
        let whole = || text.parse::<u64>().map_err(|_| format!("{text:?} is not a whole number"));
        Ok(match self {
            Unit::Whole => Value::Whole(whole()?),
            Unit::Millis => Value::Duration(Duration::from_millis(
                text.parse::<u64>().map_err(|_| format!("{text:?} is not a whole number of milliseconds"))?,
            )),
            Unit::Hold => Value::Hold(match text {
                "completion" => WindowHold::Completion,
                "go" => WindowHold::Go,
                _ => return Err(format!("{text:?} is not a window hold: completion or go")),
            }),
            Unit::Duration => {
                match text.parse::<u64>() {
                    Ok(ms) => Value::Duration(Duration::from_millis(ms)),
                    Err(_) => Value::Duration(humantime::parse_duration(text).map_err(|_| {
                        format!("{text:?} is not a duration such as \"10s\" or a number of milliseconds")
                    })?),
                }
            }
        })
    }
}

/// Variable suffixes of a limit's fields, longest spellings first.
const LIMIT_SPELLINGS: &[(&str, Field, Unit)] = &[
    ("MAX_REQUESTS", Field::Max, Unit::Whole),
    ("INTERVAL_MS", Field::Per, Unit::Millis),
    ("CAPACITY", Field::Capacity, Unit::Whole),
    ("PER_MS", Field::Per, Unit::Millis),
    ("INITIAL", Field::Initial, Unit::Whole),
    ("REFILL", Field::Refill, Unit::Whole),
    ("FLOOR", Field::Floor, Unit::Whole),
    ("MAX", Field::Max, Unit::Whole),
    ("PER", Field::Per, Unit::Duration),
    ("HOLD", Field::Hold, Unit::Hold),
];

/// Variable suffixes of the config's own fields.
const CONFIG_SPELLINGS: &[(&str, ConfigField, Unit)] = &[
    ("QUEUE_MAX_WAITING", ConfigField::QueueMaxWaiting, Unit::Whole),
    ("RESERVATION_TTL", ConfigField::ReservationTtl, Unit::Duration),
    ("RESERVATION_TTL_MS", ConfigField::ReservationTtl, Unit::Millis),
    ("LEASE_TTL", ConfigField::LeaseTtl, Unit::Duration),
    ("LEASE_TTL_MS", ConfigField::LeaseTtl, Unit::Millis),
    ("FEEDBACK_BLOCK", ConfigField::FeedbackBlock, Unit::Duration),
    ("FEEDBACK_BLOCK_MS", ConfigField::FeedbackBlock, Unit::Millis),
    ("FEEDBACK_MAX_BLOCK", ConfigField::FeedbackMaxBlock, Unit::Duration),
    ("FEEDBACK_MAX_BLOCK_MS", ConfigField::FeedbackMaxBlock, Unit::Millis),
    ("FEEDBACK_COOLDOWN", ConfigField::FeedbackCooldown, Unit::Duration),
    ("FEEDBACK_COOLDOWN_MS", ConfigField::FeedbackCooldown, Unit::Millis),
    ("FEEDBACK_MAX_RETRIES", ConfigField::FeedbackMaxRetries, Unit::Whole),
    ("FEEDBACK_JITTER_PERCENT", ConfigField::FeedbackJitterPercent, Unit::Whole),
];

/// A limit's name as it appears in variables.
fn env_key(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// What the part of a variable after the prefix sets, or why it sets nothing.
fn resolve(config: &Config, rest: &str) -> Result<(Setting, Unit), String> {
    let mut found: Vec<(Setting, Unit)> = Vec::new();
    // A limit that has no such field, for the error when nothing else matches.
    let mut misfit = None;
    for &(suffix, field, unit) in CONFIG_SPELLINGS {
        if rest == suffix {
            found.push((Setting::Config(field), unit));
        }
    }
    for &(suffix, field, unit) in LIMIT_SPELLINGS {
        let Some(key) = rest.strip_suffix(suffix).and_then(|r| r.strip_suffix('_')) else { continue };
        for (name, limit) in &config.limits {
            if env_key(name) == key {
                if Field::of(limit).contains(&field) {
                    found.push((Setting::Limit(name.clone(), field), unit));
                } else {
                    misfit = Some(format!(
                        "limit {name:?} is a {} limit, which has no {}; its fields are {}",
                        kind_name(limit),
                        field.name(),
                        spellings(limit)
                    ));
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(misfit.unwrap_or_else(|| unknown(config, rest))),
        _ => {
            let names: Vec<String> = found.iter().map(|(s, _)| s.path()).collect();
            Err(format!("is ambiguous: it could set {}; rename a limit", names.join(" or ")))
        }
    }
}

/// Why a variable matches nothing, as helpfully as the names allow.
fn unknown(config: &Config, rest: &str) -> String {
    // The longest limit key the variable starts with: the field is what is wrong.
    let limit = config
        .limits
        .iter()
        .filter(|(name, _)| rest.strip_prefix(&env_key(name)).is_some_and(|r| r.starts_with('_')))
        .max_by_key(|(name, _)| name.len());
    if let Some((name, limit)) = limit {
        let field = &rest[env_key(name).len() + 1..];
        return format!("{field:?} is not a field of limit {name:?}; its fields are {}", spellings(limit));
    }
    let limits: Vec<String> = config.limits.keys().map(|n| env_key(n)).collect();
    format!(
        "names no limit: expected <PREFIX>_<LIMIT>_<FIELD> with <LIMIT> one of {}, or one of {}",
        limits.join(", "),
        CONFIG_SPELLINGS.iter().map(|(s, _, _)| *s).collect::<Vec<_>>().join(", ")
    )
}

fn kind_name(limit: &LimitConfig) -> &'static str {
    match limit {
        LimitConfig::Window { .. } => "window",
        LimitConfig::TokenBucket { .. } => "token_bucket",
        LimitConfig::Concurrency { .. } => "concurrency",
        LimitConfig::Budget { .. } => "budget",
    }
}

/// The variable suffixes a limit accepts, for error messages.
fn spellings(limit: &LimitConfig) -> String {
    let fields = Field::of(limit);
    let mut out: Vec<&str> = Vec::new();
    // In the order of the docs' table, not the matching order.
    for suffix in
        ["MAX", "MAX_REQUESTS", "PER", "PER_MS", "INTERVAL_MS", "HOLD", "CAPACITY", "REFILL", "FLOOR", "INITIAL"]
    {
        if LIMIT_SPELLINGS.iter().any(|&(s, f, _)| s == suffix && fields.contains(&f)) {
            out.push(suffix);
        }
    }
    out.join(", ")
}

impl Setting {
    fn apply(&self, config: &mut Config, value: Value) {
        let (whole, duration, hold) = match value {
            Value::Whole(n) => (n, Duration::ZERO, WindowHold::Completion),
            Value::Duration(d) => (0, d, WindowHold::Completion),
            Value::Hold(h) => (0, Duration::ZERO, h),
        };
        match self {
            Setting::Config(ConfigField::QueueMaxWaiting) => {
                config.queue.max_waiting = usize::try_from(whole).unwrap_or(usize::MAX);
            }
            Setting::Config(ConfigField::ReservationTtl) => config.reservation_ttl = duration,
            Setting::Config(ConfigField::LeaseTtl) => config.lease_ttl = duration,
            Setting::Config(ConfigField::FeedbackBlock) => config.feedback.block = duration,
            Setting::Config(ConfigField::FeedbackMaxBlock) => config.feedback.max_block = duration,
            Setting::Config(ConfigField::FeedbackCooldown) => config.feedback.cooldown = duration,
            Setting::Config(ConfigField::FeedbackMaxRetries) => {
                config.feedback.max_retries = u32::try_from(whole).unwrap_or(u32::MAX);
            }
            Setting::Config(ConfigField::FeedbackJitterPercent) => config.feedback.jitter = whole as f64 / 100.0,
            Setting::Limit(name, field) => {
                let Some(limit) = config.limits.get_mut(name) else { return };
                match (limit, field) {
                    (
                        LimitConfig::Window { per, .. }
                        | LimitConfig::TokenBucket { per, .. }
                        | LimitConfig::Budget { per, .. },
                        Field::Per,
                    ) => *per = duration,
                    (
                        LimitConfig::Window { max, .. }
                        | LimitConfig::Concurrency { max }
                        | LimitConfig::Budget { max, .. },
                        Field::Max,
                    ) => *max = whole,
                    (LimitConfig::TokenBucket { capacity, .. }, Field::Capacity) => *capacity = whole,
                    (LimitConfig::TokenBucket { refill, .. } | LimitConfig::Budget { refill, .. }, Field::Refill) => {
                        *refill = whole;
                    }
                    (LimitConfig::Budget { floor, .. }, Field::Floor) => *floor = whole,
                    (LimitConfig::Budget { initial, .. }, Field::Initial) => *initial = Some(whole),
                    (LimitConfig::Window { hold: h, .. }, Field::Hold) => *h = hold,
                    // `resolve` admits only the fields a limit has.
                    _ => {}
                }
            }
        }
    }

    /// The config field it sets, as validation errors name it.
    fn path(&self) -> String {
        match self {
            Setting::Limit(name, field) => format!("limits.{name}.{}", field.name()),
            Setting::Config(ConfigField::QueueMaxWaiting) => "queue.max_waiting".into(),
            Setting::Config(ConfigField::ReservationTtl) => "reservation_ttl".into(),
            Setting::Config(ConfigField::LeaseTtl) => "lease_ttl".into(),
            Setting::Config(ConfigField::FeedbackBlock) => "feedback.block".into(),
            Setting::Config(ConfigField::FeedbackMaxBlock) => "feedback.max_block".into(),
            Setting::Config(ConfigField::FeedbackCooldown) => "feedback.cooldown".into(),
            Setting::Config(ConfigField::FeedbackMaxRetries) => "feedback.max_retries".into(),
            Setting::Config(ConfigField::FeedbackJitterPercent) => "feedback.jitter".into(),
        }
    }
}

/// Points a validation error at the variable that caused it, when one did.
fn blame(error: ConfigError, set: &[(Setting, (String, Value))]) -> ConfigError {
    let ConfigError::Invalid { field, reason } = error else { return error };
    if let Some((_, (var, _))) = set.iter().find(|(s, _)| s.path() == field) {
        return ConfigError::Invalid { field: format!("env {var}"), reason: format!("sets {field}, which {reason}") };
    }
    // Another field of the same limit was overridden (a floor raised above the max).
    let related: Vec<&str> = set
        .iter()
        .filter(|(s, _)| matches!(s, Setting::Limit(name, _) if field.starts_with(&format!("limits.{name}."))))
        .map(|(_, (var, _))| var.as_str())
        .collect();
    if related.is_empty() {
        ConfigError::Invalid { field, reason }
    } else {
        ConfigError::Invalid { field, reason: format!("{reason} (after env {})", related.join(", ")) }
    }
}

#[cfg(test)]
mod tests;
