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

use crate::config::Config;
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

#[cfg(feature = "env")]
mod env;
#[cfg(feature = "env")]
pub use env::apply_env;

/// Without the `env` feature (the wasm package's browser build): no environment overrides. A
/// variable under the prefix is an error that says so, never silently ignored.
#[cfg(not(feature = "env"))]
pub fn apply_env<I, K, V>(config: Config, prefix: &str, env: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let head = format!("{}_", prefix.trim_end_matches('_'));
    for (k, v) in env {
        if k.as_ref().starts_with(&head) && !v.as_ref().trim().is_empty() {
            return Err(ConfigError::Invalid {
                field: format!("env {}", k.as_ref()),
                reason: "this build has no environment overrides (the browser build): pass a config object".into(),
            });
        }
    }
    Ok(config)
}

#[cfg(all(test, feature = "env"))]
mod tests;
