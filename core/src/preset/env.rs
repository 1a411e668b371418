//! Environment overrides (the `env` feature, on by default): see the [module docs](super).

use std::time::Duration;

use crate::config::{Config, LimitConfig, WindowHold};
use crate::error::ConfigError;

/// Applies the variables `<prefix>_…` of `env` to `config` and validates the result. Any other
/// variable is ignored, so a host may hand over its whole environment. See the [module
/// docs](super) for the variables and rules.
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
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(_) => &[],
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
        #[cfg(feature = "keys")]
        LimitConfig::Breaker(_) => "breaker",
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
