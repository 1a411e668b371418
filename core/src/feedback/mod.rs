//! Server feedback: what one response said about rate limits, as data.
//!
//! [`Feedback::parse`] reads a response's status, headers and (optionally) body and returns a
//! [`Feedback`]: how long to wait before retrying, the server's view of the current window
//! (limit, remaining, reset, window length), a token-budget report (Keepa), and blocks
//! (BaseLinker blocked tokens, Cloudflare WAF and rate-limit pages).
//!
//! Feedback is advice: unknown, malformed or contradictory fields are ignored, never an error, and
//! parsing never panics. Numbers saturate instead of overflowing; negative counts read as 0;
//! negative, NaN or infinite durations are dropped (a positive infinity saturates to
//! [`Duration::MAX`]).
//!
//! # Times
//! The core reads no clock. Absolute times in a response (an HTTP-date `Retry-After`, an epoch
//! `X-RateLimit-Reset`, BaseLinker's "blocked until …") become durations relative to a
//! *reference time*: the response's own `Date` header when it has a valid one (the server's clock,
//! so client clock skew cannot distort the result), otherwise the `unix_time` the host passes
//! (its wall clock when the response arrived, in seconds since the Unix epoch). With neither, an
//! absolute time yields no duration.
//!
//! # Delta seconds or epoch?
//! Reset values (and numeric `Retry-After` values) are delta seconds by the specs, but many APIs
//! (GitHub, Twitter) send Unix timestamps. The rule: a value above 10^12 is epoch
//! **milliseconds**, a value above 10^9 (2001-09-09) is epoch **seconds**, anything else is
//! delta seconds. A delta of 10^9 s would be 31 years, so no real delta is misread.
//!
//! # Which source wins
//! - `retry_after`: the first valid `Retry-After` header; else a body-level block's duration
//!   (BaseLinker, Cloudflare JSON); else, when the response is rate-limited, Keepa's `refillIn`.
//! - `limit` / `remaining` / `reset` / `policy_window`: field by field, the IETF `RateLimit` +
//!   `RateLimit-Policy` fields first, then the older `RateLimit-Limit`/`-Remaining`/`-Reset`, then
//!   `X-RateLimit-Limit`/`-Remaining`/`-Reset`.
//! - `block`: a BaseLinker blocked token first, then Cloudflare detection.
//!
//! Header names are compared case-insensitively; repeated structured fields (`RateLimit`,
//! `RateLimit-Policy`) are joined with `", "` as RFC 9651 prescribes; for other headers the first
//! valid occurrence counts.
//!
//! # Crates
//! - [`sfv`] parses the IETF `RateLimit`/`RateLimit-Policy` structured fields (RFC 8941/9651):
//!   those grammars (strings, tokens, parameters, decimals) are easy to get subtly wrong by hand.
//!   Used through its visitor API with default features off, so `indexmap` stays out of the wasm
//!   package.
//! - [`httpdate`] parses HTTP-dates (`Retry-After`, `Date`) in all three formats RFC 9110 requires
//!   recipients to accept; tiny and dependency-free.
//! - `regex-lite` (already a dependency of the core) finds the date-time in BaseLinker's message
//!   and Cloudflare's error code in HTML pages.
//! - `serde_json` (already a dependency) reads the few body fields needed without building a tree
//!   of the whole body (Keepa product bodies can be megabytes).
//!
//! # Files
//! One file per source of signals: `standard` (`Retry-After`, `X-RateLimit-*`, the older
//! `RateLimit-*`), `ietf` (the `RateLimit`/`RateLimit-Policy` structured fields), `keepa` (token
//! fields in the body), `baselinker` (a blocked token), `cloudflare` (WAF and rate-limit blocks).
//! This file holds the types, [`Feedback::parse`] that combines them, and what they share: header
//! lookup, numbers and times, the counters of a policy, the body's fields.

mod baselinker;
mod cloudflare;
mod ietf;
mod keepa;
mod standard;

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::request::Outcome;
use baselinker::parse_baselinker_body;
use cloudflare::detect_cloudflare;
use ietf::parse_ratelimit_ietf;
use keepa::parse_keepa_body;
use standard::{parse_retry_after, parse_x_ratelimit};

/// What the server said about limits in one response.
///
/// Every field is optional advice; [`Feedback::default`] means "the response said nothing".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Feedback {
    /// How long to wait before retrying: from `Retry-After` (delta seconds, fractional seconds
    /// such as Shopify's `2.0`, or an HTTP-date), else from a body-level block time, else (when
    /// rate-limited) from Keepa's `refillIn`. See the module docs for the order.
    pub retry_after: Option<Duration>,
    /// The quota of the current window (`RateLimit-Policy` `q`, `RateLimit` `limit`,
    /// `RateLimit-Limit`, `X-RateLimit-Limit`).
    pub limit: Option<u64>,
    /// What is left of the quota in the current window.
    pub remaining: Option<u64>,
    /// Time until the window resets (the quota is restored).
    pub reset: Option<Duration>,
    /// The length of the policy's window (`w` of `RateLimit-Policy`).
    pub policy_window: Option<Duration>,
    /// A token-budget report from the body (Keepa).
    pub budget: Option<BudgetReport>,
    /// The caller is blocked (BaseLinker blocked token, Cloudflare WAF or rate-limit page).
    pub block: Option<Block>,
    /// The server refused the request for rate reasons: status 429, a [`Block`], or Keepa's
    /// `NOT_ENOUGH_TOKEN`.
    pub rate_limited: bool,
}

/// A token budget reported in the response body (Keepa's token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetReport {
    /// Tokens left (`tokensLeft`). Can be negative: Keepa lets a request overdraw the bucket.
    pub tokens_left: i64,
    /// Time until the next refill (`refillIn`, milliseconds).
    pub refill_in: Option<Duration>,
    /// Tokens added per minute (`refillRate`).
    pub refill_rate: Option<u64>,
    /// Tokens this request consumed (`tokensConsumed`).
    pub tokens_consumed: Option<u64>,
    /// The server's clock when it answered (`timestamp`, milliseconds since the Unix epoch).
    pub server_time_ms: Option<i64>,
    /// The body carried `error.type = "NOT_ENOUGH_TOKEN"`: the request was refused for lack of
    /// tokens.
    pub not_enough_tokens: bool,
}

/// Why the caller is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockKind {
    /// Blocked for sending too fast (Cloudflare error 1015).
    RateLimited,
    /// Stopped by a web application firewall or bot protection (Cloudflare 403, error 1020,
    /// a `bot-need-challenge` body, `cf-mitigated: challenge`).
    WafBlocked,
    /// The API token itself is blocked (BaseLinker `ERROR_BLOCKED_TOKEN`).
    TokenBlocked,
}

/// A block reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Block {
    /// Why.
    pub kind: BlockKind,
    /// When the block ends, in seconds since the Unix epoch (UTC), if the server said.
    pub until_unix: Option<i64>,
    /// How long the block lasts from the reference time (see the module docs), if known.
    pub duration: Option<Duration>,
    /// The server's code for the block: `ERROR_BLOCKED_TOKEN`, a Cloudflare error code such as
    /// `1020`, `bot-need-challenge`, `cf-mitigated:challenge`; `None` for a bare Cloudflare 403.
    pub code: Option<String>,
    /// The server's message, cut to at most 256 bytes.
    pub message: Option<String>,
}

impl Feedback {
    /// Reads one response.
    ///
    /// - `status`: the HTTP status, `None` when no response came.
    /// - `headers`: response headers, names in any case.
    /// - `body`: the response body as text, if the host has it (only JSON objects and, for
    ///   Cloudflare, short HTML/text pages are looked at).
    /// - `unix_time`: the host's wall clock when the response arrived, in seconds since the Unix
    ///   epoch; the reference for absolute times when the response has no valid `Date` header.
    ///   Non-finite or negative values are ignored.
    ///
    /// Never panics; anything unreadable is left out.
    pub fn parse(
        status: Option<u16>,
        headers: &[(String, String)],
        body: Option<&str>,
        unix_time: Option<f64>,
    ) -> Feedback {
        let reference = reference_time(headers, unix_time);
        let retry_after = header_values(headers, "retry-after").find_map(|v| parse_retry_after(v, reference));

        let ietf = parse_ratelimit_ietf(
            joined(headers, "ratelimit").as_deref(),
            joined(headers, "ratelimit-policy").as_deref(),
            reference,
        );
        let legacy = parse_x_ratelimit(
            joined(headers, "ratelimit-limit").as_deref(),
            joined(headers, "ratelimit-remaining").as_deref(),
            joined(headers, "ratelimit-reset").as_deref(),
            reference,
        );
        let x = parse_x_ratelimit(
            joined(headers, "x-ratelimit-limit").as_deref(),
            joined(headers, "x-ratelimit-remaining").as_deref(),
            joined(headers, "x-ratelimit-reset").as_deref(),
            reference,
        );
        let counters = ietf.or(legacy).or(x);

        let fields = body.and_then(BodyFields::from_body);
        let budget = fields.as_ref().and_then(parse_keepa_body);
        let block = fields
            .as_ref()
            .and_then(|f| parse_baselinker_body(f, reference))
            .or_else(|| detect_cloudflare(status, headers, body, fields.as_ref()));

        let rate_limited = status == Some(429) || block.is_some() || budget.is_some_and(|b| b.not_enough_tokens);
        let retry_after = retry_after.or_else(|| block.as_ref().and_then(|b| b.duration)).or_else(|| {
            if rate_limited {
                budget.and_then(|b| b.refill_in)
            } else {
                None
            }
        });

        Feedback {
            retry_after,
            limit: counters.limit,
            remaining: counters.remaining,
            reset: counters.reset,
            policy_window: counters.window,
            budget,
            block,
            rate_limited,
        }
    }

    /// [`Feedback::parse`] on an [`Outcome`]'s status and headers.
    pub fn from_outcome(outcome: &Outcome, body: Option<&str>, unix_time: Option<f64>) -> Feedback {
        Feedback::parse(outcome.status, &outcome.headers, body, unix_time)
    }

    /// True when the response said nothing about limits.
    pub fn is_empty(&self) -> bool {
        *self == Feedback::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Headers, numbers and times
// ---------------------------------------------------------------------------------------------

/// The values of every header named `name` (ASCII case-insensitive), trimmed.
fn header_values<'a>(headers: &'a [(String, String)], name: &'static str) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter(move |(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// Every occurrence of a header joined with `", "` (RFC 9110 §5.3, RFC 9651 §4.2), or `None`.
fn joined<'a>(headers: &'a [(String, String)], name: &'static str) -> Option<Cow<'a, str>> {
    let mut values = header_values(headers, name);
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut all = format!("{first}, {second}");
            for v in values {
                all.push_str(", ");
                all.push_str(v);
            }
            Some(Cow::Owned(all))
        }
    }
}

/// The reference time in Unix seconds: the `Date` header, else the host's `unix_time`.
fn reference_time(headers: &[(String, String)], unix_time: Option<f64>) -> Option<f64> {
    header_values(headers, "date")
        .find_map(parse_http_date_unix)
        .or_else(|| unix_time.filter(|t| t.is_finite() && *t >= 0.0))
}

/// An HTTP-date (IMF-fixdate, RFC 850 or asctime) as Unix seconds.
fn parse_http_date_unix(text: &str) -> Option<f64> {
    let at = httpdate::parse_http_date(text.trim()).ok()?;
    at.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

/// A plain decimal number: digits with an optional sign, dot and exponent (`+1.5`, `.5`, `2.`,
/// `1e3`). Integers too long for `u64` saturate; `inf`, `NaN` and other words are refused; an
/// overflow such as `1e400` saturates to `f64::MAX` (or `f64::MIN`).
///
/// The number is rewritten in JSON's grammar and read by serde_json, not by `str::parse::<f64>`:
/// core's parser carries a 20 KB table of powers of five (14 KB of the wasm module gzipped), for
/// header values that rarely have more than a few digits. serde_json is already here for bodies
/// and gives the same value on every target.
fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Only overflow can fail here.
        return Some(text.parse::<u64>().unwrap_or(u64::MAX) as f64);
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    let exponent = match exponent {
        None => "0",
        Some(e) => {
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if unsigned.is_empty() || !digits(unsigned) {
                return None;
            }
            e
        }
    };
    let whole = whole.trim_start_matches('0');
    let json = format!(
        "{}{}{}{fraction}e{exponent}",
        if negative { "-" } else { "" },
        if whole.is_empty() { "0" } else { whole },
        if fraction.is_empty() { "" } else { "." },
    );
    // The grammar is checked above: the only error left is a value out of range.
    let value = serde_json::from_str::<Value>(&json).ok().and_then(|v| v.as_f64());
    Some(value.unwrap_or(if negative { f64::MIN } else { f64::MAX }))
}

/// Seconds as a duration: negative or NaN is refused, overflow saturates.
fn seconds(value: f64) -> Option<Duration> {
    if value.is_nan() || value < 0.0 {
        return None;
    }
    if value == 0.0 {
        return Some(Duration::ZERO);
    }
    Some(Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
}

/// A count: negative reads as 0, fractions are cut, overflow saturates.
fn count(value: f64) -> Option<u64> {
    if value.is_nan() {
        None
    } else if value <= 0.0 {
        Some(0)
    } else {
        // `as` saturates for floats out of range.
        Some(value as u64)
    }
}

/// Epoch timestamps are told from delta seconds by size: see the module docs.
const EPOCH_SECONDS_ABOVE: f64 = 1e9;
/// Above this, a value is epoch milliseconds.
const EPOCH_MILLIS_ABOVE: f64 = 1e12;

/// A time value that is either delta seconds or an epoch timestamp (seconds or milliseconds),
/// as a duration from `reference` (Unix seconds). Epoch values need a reference; past ones give
/// zero.
fn resolve_time_value(value: f64, reference: Option<f64>) -> Option<Duration> {
    if value.is_nan() || value < 0.0 {
        return None;
    }
    let epoch_seconds = if value > EPOCH_MILLIS_ABOVE {
        value / 1000.0
    } else if value > EPOCH_SECONDS_ABOVE {
        value
    } else {
        return seconds(value);
    };
    seconds((epoch_seconds - reference?).max(0.0))
}

// ---------------------------------------------------------------------------------------------
// Rate-limit counters
// ---------------------------------------------------------------------------------------------

/// The counters of one rate-limit policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RateLimitCounters {
    pub(crate) limit: Option<u64>,
    pub(crate) remaining: Option<u64>,
    pub(crate) reset: Option<Duration>,
    pub(crate) window: Option<Duration>,
}

impl RateLimitCounters {
    /// Field by field: `self`'s value, else `other`'s.
    fn or(self, other: RateLimitCounters) -> RateLimitCounters {
        RateLimitCounters {
            limit: self.limit.or(other.limit),
            remaining: self.remaining.or(other.remaining),
            reset: self.reset.or(other.reset),
            window: self.window.or(other.window),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// The few top-level fields of a JSON body that carry feedback (`null` counts as absent).
#[derive(Debug, Default)]
pub(crate) struct BodyFields {
    tokens_left: Option<Value>,
    refill_in: Option<Value>,
    refill_rate: Option<Value>,
    tokens_consumed: Option<Value>,
    timestamp: Option<Value>,
    error: Option<Value>,
    error_code: Option<Value>,
    error_message: Option<Value>,
    cloudflare_error: Option<Value>,
    retry_after: Option<Value>,
}

impl BodyFields {
    /// The fields of a JSON object body; `None` when the body is not one.
    pub(crate) fn from_body(body: &str) -> Option<BodyFields> {
        if !body.trim_start().starts_with('{') {
            return None;
        }
        let Value::Object(map) = serde_json::from_str(body).ok()? else { return None };
        // Cloned rather than removed: removal would add the map's B-tree removal to the wasm module.
        let take = |key: &str| map.get(key).filter(|v| !v.is_null()).cloned();
        Some(BodyFields {
            tokens_left: take("tokensLeft"),
            refill_in: take("refillIn"),
            refill_rate: take("refillRate"),
            tokens_consumed: take("tokensConsumed"),
            timestamp: take("timestamp"),
            error: take("error"),
            error_code: take("error_code"),
            error_message: take("error_message"),
            cloudflare_error: take("cloudflare_error"),
            retry_after: take("retry_after"),
        })
    }
}

/// A JSON number (or numeric string) as `f64`.
fn json_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

/// A JSON integer as `i64`, saturating.
fn json_i64(value: &Value) -> Option<i64> {
    if let Some(i) = value.as_i64() {
        return Some(i);
    }
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // `as` saturates for floats out of range.
    json_number(value).map(|f| f as i64)
}

/// A JSON count as `u64`: negative is malformed here and refused.
fn json_u64(value: &Value) -> Option<u64> {
    if let Some(u) = value.as_u64() {
        return Some(u);
    }
    json_number(value).filter(|f| *f >= 0.0).map(|f| f as u64)
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Helpers shared by the tests of every source.
#[cfg(test)]
mod testing {
    use std::time::{Duration, UNIX_EPOCH};

    pub(super) fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    pub(super) fn http_date(unix: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::h;
    use super::*;
    use proptest::prelude::*;

    // --- Numbers -------------------------------------------------------------------------------

    #[test]
    fn numbers_in_every_spelling_a_header_uses() {
        for (text, value) in [
            ("60", 60.0),
            ("1.5", 1.5),
            ("+1.5", 1.5),
            ("-2", -2.0),
            (".5", 0.5),
            ("2.", 2.0),
            ("007.25", 7.25),
            ("1e3", 1000.0),
            ("1.5E-3", 0.0015),
            ("2e+2", 200.0),
            ("1e-400", 0.0),
            ("1e400", f64::MAX),
            ("-1e400", f64::MIN),
            ("99999999999999999999999", u64::MAX as f64),
        ] {
            assert_eq!(parse_number(text), Some(value), "{text}");
        }
        for text in ["", "-", "+", ".", "e5", "1e", "1e+", "1.2.3", "--1", "1-2", "inf", "NaN", "0x10", "1 2"] {
            assert_eq!(parse_number(text), None, "{text:?}");
        }
    }

    proptest! {
        /// The same value as `str::parse::<f64>` where serde_json's path is exact (up to 15
        /// significant digits times a power of ten within ±22), and within two units in the last
        /// place elsewhere.
        #[test]
        fn numbers_read_as_rust_reads_them(
            negative in any::<bool>(),
            whole in "[0-9]{0,20}",
            fraction in "[0-9]{0,20}",
            exponent in prop::option::of(-40i32..40),
        ) {
            prop_assume!(!(whole.is_empty() && fraction.is_empty()));
            let text = format!(
                "{}{whole}.{fraction}{}",
                if negative { "-" } else { "" },
                exponent.map(|e| format!("e{e}")).unwrap_or_default(),
            );
            let ours = parse_number(&text).unwrap();
            let rust: f64 = text.parse().unwrap();
            let significant = format!("{whole}{fraction}").trim_start_matches('0').len();
            if significant <= 15 && (exponent.unwrap_or(0) - fraction.len() as i32).abs() <= 22 {
                prop_assert_eq!(ours, rust, "{}", text);
            } else {
                prop_assert!((ours - rust).abs() <= rust.abs() * 2.0 * f64::EPSILON, "{} read as {} not {}", text, ours, rust);
            }
        }
    }

    // --- Robustness ----------------------------------------------------------------------------

    #[test]
    fn nothing_said_is_empty_and_bad_unix_time_is_ignored() {
        assert!(Feedback::parse(Some(200), &[], None, None).is_empty());
        for t in [f64::NAN, f64::INFINITY, -1.0, f64::MAX] {
            let fb = Feedback::parse(Some(429), &h(&[("X-RateLimit-Reset", "1372700873")]), None, Some(t));
            assert!(fb.rate_limited);
            if t == f64::MAX {
                assert_eq!(fb.reset, Some(Duration::ZERO));
            } else {
                assert_eq!(fb.reset, None);
            }
        }
        let deep = "[".repeat(10_000);
        assert!(Feedback::parse(Some(200), &[], Some(&format!("{{\"a\":{deep}")), None).is_empty());
        let long = format!("{{\"error_code\":\"ERROR_BLOCKED_TOKEN\",\"error_message\":\"{}é\"}}", "x".repeat(255));
        let block = Feedback::parse(Some(200), &[], Some(&long), None).block.unwrap();
        assert_eq!(block.message.unwrap().len(), 255);
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            Just("tokensLeft".to_owned()),
            Just("refillIn".to_owned()),
            Just("refillRate".to_owned()),
            Just("tokensConsumed".to_owned()),
            Just("timestamp".to_owned()),
            Just("error".to_owned()),
            Just("type".to_owned()),
            Just("status".to_owned()),
            Just("error_code".to_owned()),
            Just("error_message".to_owned()),
            Just("cloudflare_error".to_owned()),
            Just("retry_after".to_owned()),
            "[a-z_]{0,8}",
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("NOT_ENOUGH_TOKEN")),
            Just(serde_json::Value::from("ERROR_BLOCKED_TOKEN")),
            "[0-9 :T+-]{0,25}".prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "Retry-After",
                "date",
                "RateLimit",
                "RateLimit-Policy",
                "RateLimit-Limit",
                "ratelimit-remaining",
                "RateLimit-Reset",
                "X-RateLimit-Limit",
                "X-RATELIMIT-REMAINING",
                "x-ratelimit-reset",
                "server",
                "cf-ray",
                "cf-mitigated",
            ])
            .prop_map(str::to_owned),
            ".{0,12}",
        ]
    }

    fn header_value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[0-9.eE+-]{0,24}",
            "[a-z0-9\"=;, .:-]{0,40}",
            any::<f64>().prop_map(|f| f.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
            Just("cloudflare".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parse_never_panics(
            status in prop::option::of(any::<u16>()),
            headers in prop::collection::vec((header_name(), header_value()), 0..8),
            body in prop_oneof![
                Just(None),
                ".{0,200}".prop_map(Some),
                json_value().prop_map(|v| Some(v.to_string())),
            ],
            unix_time in prop::option::of(prop_oneof![any::<f64>(), 0.0..4e9f64]),
        ) {
            let fb = Feedback::parse(status, &headers, body.as_deref(), unix_time);
            if status == Some(429) {
                prop_assert!(fb.rate_limited);
            }
            if fb.block.is_some() {
                prop_assert!(fb.rate_limited);
            }
        }
    }
}
