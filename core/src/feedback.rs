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

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use regex_lite::Regex;
use serde_json::Value;
use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ListVisitor, ParameterVisitor,
};
use sfv::{BareItemFromInput, GenericBareItem, KeyRef, Parser};

use crate::request::Outcome;

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

/// A `Retry-After` value: delta seconds (integer or fractional, e.g. Shopify's `2.0`), or an
/// HTTP-date resolved against `reference` (Unix seconds). Epoch numbers follow the module's
/// epoch-vs-delta rule. A date in the past gives zero.
pub(crate) fn parse_retry_after(value: &str, reference: Option<f64>) -> Option<Duration> {
    let value = value.trim();
    if let Some(number) = parse_number(value) {
        return resolve_time_value(number, reference);
    }
    let at = parse_http_date_unix(value)?;
    seconds((at - reference?).max(0.0))
}

// ---------------------------------------------------------------------------------------------
// Rate-limit header fields
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

/// At most this many members of a structured field are read; the rest is validated but ignored.
const MAX_SF_MEMBERS: usize = 64;
/// At most this many parameters per member are kept.
const MAX_SF_PARAMS: usize = 16;

/// One member of a structured-field List or Dictionary, reduced to what rate-limit fields use.
#[derive(Debug, Default, Clone, PartialEq)]
struct SfMember {
    /// The dictionary key (Dictionary members only).
    key: Option<String>,
    /// The item's value when it is a String or Token (a policy name).
    name: Option<String>,
    /// The item's value when it is an Integer or Decimal.
    value: Option<f64>,
    /// Numeric parameters, in order.
    params: Vec<(String, f64)>,
}

impl SfMember {
    /// The last numeric parameter named `key` (RFC 9651: the last duplicate wins).
    fn param(&self, key: &str) -> Option<f64> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

fn bare_number(item: &BareItemFromInput<'_>) -> Option<f64> {
    match item {
        GenericBareItem::Integer(i) => Some(i64::from(*i) as f64),
        GenericBareItem::Decimal(d) => Some(f64::from(*d)),
        _ => None,
    }
}

fn bare_name(item: &BareItemFromInput<'_>) -> Option<String> {
    match item {
        GenericBareItem::String(s) => Some(s.as_str().to_owned()),
        GenericBareItem::Token(t) => Some(t.as_str().to_owned()),
        _ => None,
    }
}

/// Collects the items of a List or Dictionary (inner lists are skipped).
#[derive(Default)]
struct Collector(Vec<SfMember>);

struct EntryCollector<'c> {
    out: Option<&'c mut Vec<SfMember>>,
    key: Option<String>,
}

struct ParamCollector<'c> {
    out: Option<&'c mut Vec<SfMember>>,
    member: SfMember,
}

impl<'de> ListVisitor<'de> for Collector {
    type Out = Vec<SfMember>;
    type Error = Infallible;

    fn entry(&mut self) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let out = (self.0.len() < MAX_SF_MEMBERS).then_some(&mut self.0);
        Ok(EntryCollector { out, key: None })
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

impl<'de> DictionaryVisitor<'de> for Collector {
    type Out = Vec<SfMember>;
    type Error = Infallible;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        let key = key.as_str();
        // The last duplicate key wins (RFC 9651 §4.2.2), even when it is an inner list.
        self.0.retain(|m| m.key.as_deref() != Some(key));
        let out = (self.0.len() < MAX_SF_MEMBERS).then_some(&mut self.0);
        Ok(EntryCollector { out, key: Some(key.to_owned()) })
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.0)
    }
}

impl<'de, 'c> EntryVisitor<'de> for EntryCollector<'c> {
    type Error = Infallible;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(self)
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(Ignored)
    }
}

impl<'de, 'c> ItemVisitor<'de> for EntryCollector<'c> {
    type Out = ();
    type Error = Infallible;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = Self::Out>, Self::Error> {
        let member =
            SfMember { key: self.key, name: bare_name(&bare_item), value: bare_number(&bare_item), params: Vec::new() };
        Ok(ParamCollector { out: self.out, member })
    }
}

impl<'de, 'c> ParameterVisitor<'de> for ParamCollector<'c> {
    type Out = ();
    type Error = Infallible;

    fn parameter(&mut self, key: &'de KeyRef, value: BareItemFromInput<'de>) -> Result<(), Self::Error> {
        if let Some(number) = bare_number(&value) {
            if self.member.params.len() < MAX_SF_PARAMS {
                self.member.params.push((key.as_str().to_owned(), number));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        if let Some(out) = self.out {
            out.push(self.member);
        }
        Ok(())
    }
}

fn sf_list(text: &str) -> Option<Vec<SfMember>> {
    Parser::new(text).parse_list_with_visitor(Collector::default()).ok()
}

fn sf_dictionary(text: &str) -> Option<Vec<SfMember>> {
    Parser::new(text).parse_dictionary_with_visitor(Collector::default()).ok()
}

/// The quota of a `RateLimit-Policy` member: its `q` parameter (draft 08+), else its integer value
/// (drafts up to 07: `100;w=60`).
fn policy_quota(policy: &SfMember) -> Option<f64> {
    policy.param("q").or(policy.value)
}

/// The IETF `RateLimit` and `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers).
///
/// Two forms are read:
/// - draft 07: `RateLimit: limit=100, remaining=50, reset=30` (a Dictionary) with
///   `RateLimit-Policy: 100;w=60, 1000;w=3600` (a List of quotas with window parameters); the
///   window is that of the policy whose quota equals `limit`, else of the first policy;
/// - draft 08 and later: `RateLimit: "default";r=50;t=30` with
///   `RateLimit-Policy: "default";q=100;w=60` (Lists of named policies). When several policies are
///   reported, the one with the least remaining (`r`) is the binding one and is returned, matched
///   by name to its policy (or to the only policy when there is one).
///
/// Without a usable `RateLimit`, the first policy of `RateLimit-Policy` gives limit and window.
/// `reset`/`t` follow the module's epoch-vs-delta rule.
pub(crate) fn parse_ratelimit_ietf(
    ratelimit: Option<&str>,
    policy: Option<&str>,
    reference: Option<f64>,
) -> RateLimitCounters {
    let policies = policy.and_then(sf_list).unwrap_or_default();
    let mut out = RateLimitCounters::default();

    if let Some(text) = ratelimit {
        let dictionary = sf_dictionary(text).filter(|members| {
            members.iter().any(|m| matches!(m.key.as_deref(), Some("limit" | "remaining" | "reset")))
        });
        if let Some(members) = dictionary {
            let field = |name: &str| members.iter().find(|m| m.key.as_deref() == Some(name)).and_then(|m| m.value);
            out.limit = field("limit").and_then(count);
            out.remaining = field("remaining").and_then(count);
            out.reset = field("reset").and_then(|v| resolve_time_value(v, reference));
            let matching =
                out.limit.and_then(|limit| policies.iter().find(|p| policy_quota(p).and_then(count) == Some(limit)));
            out.window = matching.or(policies.first()).and_then(|p| p.param("w")).and_then(seconds);
        } else if let Some(members) = sf_list(text) {
            let binding = members
                .iter()
                .filter_map(|m| Some((m, m.param("r")?)))
                .min_by(|(_, a), (_, b)| a.total_cmp(b))
                .map(|(m, _)| m);
            if let Some(current) = binding {
                out.remaining = current.param("r").and_then(count);
                out.reset = current.param("t").and_then(|v| resolve_time_value(v, reference));
                let named = policies.iter().find(|p| p.name.is_some() && p.name == current.name);
                let matched = named.or(if policies.len() == 1 { policies.first() } else { None });
                if let Some(p) = matched {
                    out.limit = policy_quota(p).and_then(count);
                    out.window = p.param("w").and_then(seconds);
                }
            }
        }
    }

    if out.limit.is_none() && out.window.is_none() {
        if let Some(p) = policies.first() {
            out.limit = policy_quota(p).and_then(count);
            out.window = p.param("w").and_then(seconds);
        }
    }
    out
}

/// One counter header: its first number and, if present, its `w` (window) parameter. Read as a
/// structured field first (`100, 100;w=60` in early IETF drafts), else leniently: the text up to
/// the first `,`, then `;`-separated `w=` parameters.
fn parse_counter_field(text: &str) -> Option<(f64, Option<f64>)> {
    if let Some(members) = sf_list(text) {
        if let Some(first) = members.first() {
            if let Some(value) = first.value {
                let window = first.param("w").or_else(|| {
                    // `10, 10;w=1, 50;w=60`: the window of the member repeating the limit.
                    members.iter().skip(1).find(|m| m.value == Some(value)).and_then(|m| m.param("w"))
                });
                return Some((value, window));
            }
        }
    }
    let first = text.split(',').next()?;
    let mut parts = first.split(';');
    let value = parse_number(parts.next()?)?;
    let window = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("w") {
            parse_number(v)
        } else {
            None
        }
    });
    Some((value, window))
}

/// The three counter headers `X-RateLimit-Limit`/`-Remaining`/`-Reset` (GitHub, Twitter and many
/// others), also used for the older IETF `RateLimit-Limit`/`-Remaining`/`-Reset` (drafts up to 06).
/// Values may be integers or decimals; reset follows the module's epoch-vs-delta rule (GitHub
/// sends epoch seconds).
pub(crate) fn parse_x_ratelimit(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    reference: Option<f64>,
) -> RateLimitCounters {
    let limit = limit.and_then(parse_counter_field);
    RateLimitCounters {
        limit: limit.and_then(|(v, _)| count(v)),
        window: limit.and_then(|(_, w)| w).and_then(seconds),
        remaining: remaining.and_then(parse_counter_field).and_then(|(v, _)| count(v)),
        reset: reset.and_then(parse_counter_field).and_then(|(v, _)| resolve_time_value(v, reference)),
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

/// Keepa's token status, present in every Keepa body (on 200 and on 429):
/// `tokensLeft`, `refillIn` (ms), `refillRate` (tokens per minute), `tokensConsumed`,
/// `timestamp` (ms since the epoch), and on refusal `error.type = "NOT_ENOUGH_TOKEN"`.
/// `None` when the body has no numeric `tokensLeft`.
pub(crate) fn parse_keepa_body(fields: &BodyFields) -> Option<BudgetReport> {
    let tokens_left = json_i64(fields.tokens_left.as_ref()?)?;
    let error_type = fields.error.as_ref().and_then(|e| e.get("type").and_then(Value::as_str).or_else(|| e.as_str()));
    Some(BudgetReport {
        tokens_left,
        refill_in: fields.refill_in.as_ref().and_then(json_u64).map(Duration::from_millis),
        refill_rate: fields.refill_rate.as_ref().and_then(json_u64),
        tokens_consumed: fields.tokens_consumed.as_ref().and_then(json_u64),
        server_time_ms: fields.timestamp.as_ref().and_then(json_i64),
        not_enough_tokens: error_type.is_some_and(|t| t.trim().eq_ignore_ascii_case("NOT_ENOUGH_TOKEN")),
    })
}

/// BaseLinker's blocked token:
/// `{"status":"ERROR","error_code":"ERROR_BLOCKED_TOKEN","error_message":"… blocked until 2026-11-23 20:15:00"}`.
///
/// The end of the block is the last `YYYY-MM-DD HH:MM[:SS]` in the message. BaseLinker writes
/// local Polish time without a zone, so a time without a zone is read as Europe/Warsaw: CET
/// (UTC+1), or CEST (UTC+2) from the last Sunday of March 01:00 UTC to the last Sunday of October
/// 01:00 UTC (the EU rule since 1996). In the October overlap the later instant (CET) is taken; a
/// time in the March gap is read as CET. An explicit `Z`, `UTC`, `GMT`, `CET`, `CEST` or `±HH:MM`
/// after the time wins over that assumption.
pub(crate) fn parse_baselinker_body(fields: &BodyFields, reference: Option<f64>) -> Option<Block> {
    let code = fields.error_code.as_ref()?.as_str()?.trim();
    if !code.eq_ignore_ascii_case("ERROR_BLOCKED_TOKEN") {
        return None;
    }
    let message = fields.error_message.as_ref().and_then(Value::as_str);
    let until_unix = message.and_then(find_block_until);
    Some(Block {
        kind: BlockKind::TokenBlocked,
        until_unix,
        duration: until_unix.zip(reference).and_then(|(until, now)| seconds((until as f64 - now).max(0.0))),
        code: Some("ERROR_BLOCKED_TOKEN".to_owned()),
        message: message.map(|m| truncate(m, 256).to_owned()),
    })
}

fn datetime_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(
            r"(?i)(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?(?:\s*(Z|UTC|GMT|CEST|CET|[+-]\d{2}:?\d{2}))?",
        )
        .expect("valid pattern")
    })
}

/// The last date-time in a BaseLinker message, as Unix seconds (see [`parse_baselinker_body`]).
fn find_block_until(message: &str) -> Option<i64> {
    let message = truncate(message, 1024);
    datetime_pattern()
        .captures_iter(message)
        .filter_map(|c| {
            let number = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<i64>().ok());
            let (year, month, day) = (number(1)?, number(2)?, number(3)?);
            let (hour, minute, second) = (number(4)?, number(5)?, number(6).unwrap_or(0));
            if !(1..=12).contains(&month)
                || !(1..=days_in_month(year, month)).contains(&day)
                || hour > 23
                || minute > 59
                || second > 60
            {
                return None;
            }
            let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59);
            let utc = match c.get(7).map(|m| m.as_str().to_ascii_uppercase()) {
                None => warsaw_to_utc(local, year),
                Some(zone) => local - zone_offset(&zone)?,
            };
            Some(utc)
        })
        .last()
}

/// The offset in seconds east of UTC of an explicit zone.
fn zone_offset(zone: &str) -> Option<i64> {
    match zone {
        "Z" | "UTC" | "GMT" => Some(0),
        "CET" => Some(3600),
        "CEST" => Some(7200),
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let digits: String = zone.chars().filter(char::is_ascii_digit).collect();
            let hours: i64 = digits.get(..2)?.parse().ok()?;
            let minutes: i64 = digits.get(2..4)?.parse().ok()?;
            (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The day of the month of the last Sunday of a 31-day month.
fn last_sunday(year: i64, month: i64) -> i64 {
    let days = days_from_civil(year, month, 31);
    // 1970-01-01 was a Thursday: weekday 0 = Sunday.
    let weekday = (days + 4).rem_euclid(7);
    31 - weekday
}

/// Whether a UTC instant falls in EU summer time (CEST in Warsaw).
fn eu_summer_time(utc: i64, year: i64) -> bool {
    let start = days_from_civil(year, 3, last_sunday(year, 3)) * 86_400 + 3600;
    let end = days_from_civil(year, 10, last_sunday(year, 10)) * 86_400 + 3600;
    (start..end).contains(&utc)
}

/// A Europe/Warsaw wall-clock time (as seconds on a UTC-like scale) to UTC.
fn warsaw_to_utc(local: i64, year: i64) -> i64 {
    let as_cet = local - 3600;
    if eu_summer_time(as_cet, year) {
        local - 7200
    } else {
        as_cet
    }
}

fn cloudflare_code_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r#"(?i)(?:\berror(?:\s+code)?\s*:?\s*|cf-error-code"?\s*>\s*)(1\d{3})\b"#).expect("valid pattern")
    })
}

fn cloudflare_block(code: u32, duration: Option<Duration>) -> Block {
    Block {
        kind: if code == 1015 { BlockKind::RateLimited } else { BlockKind::WafBlocked },
        until_unix: None,
        duration,
        code: Some(code.to_string()),
        message: None,
    }
}

/// Cloudflare blocks. Signals, strongest first (all need an error status, 400 or above):
/// - a `cf-mitigated` header (Cloudflare challenge): [`BlockKind::WafBlocked`];
/// - a JSON body with a numeric `error_code` 1000–1999 and either `"cloudflare_error": true` or
///   the response coming through Cloudflare (`cf-ray` header or `server: cloudflare`): 1015 is
///   [`BlockKind::RateLimited`], others [`BlockKind::WafBlocked`]; a `retry_after` field gives
///   the duration;
/// - through Cloudflare, an HTML/text body with "error code: 10xx" / "Error 1020" in its first
///   32 KiB: as above;
/// - a body containing `bot-need-challenge`: [`BlockKind::WafBlocked`];
/// - status 403 through Cloudflare: [`BlockKind::WafBlocked`] without a code. Caution: an origin's
///   own 403 behind Cloudflare looks the same from headers alone.
///
/// A plain 429 through Cloudflare is not a block: it is rate limiting, and `Retry-After` says when.
pub(crate) fn detect_cloudflare(
    status: Option<u16>,
    headers: &[(String, String)],
    body: Option<&str>,
    fields: Option<&BodyFields>,
) -> Option<Block> {
    if status.is_none_or(|s| s < 400) {
        return None;
    }
    let via_cloudflare = header_values(headers, "cf-ray").next().is_some()
        || header_values(headers, "server").any(|v| v.eq_ignore_ascii_case("cloudflare"));

    if let Some(mitigated) = header_values(headers, "cf-mitigated").next() {
        return Some(Block {
            kind: BlockKind::WafBlocked,
            until_unix: None,
            duration: None,
            code: Some(format!("cf-mitigated:{}", truncate(mitigated, 64))),
            message: None,
        });
    }

    if let Some(fields) = fields {
        let flagged = fields.cloudflare_error.as_ref().and_then(Value::as_bool) == Some(true);
        let code = fields.error_code.as_ref().and_then(json_u64).filter(|c| (1000..2000).contains(c));
        if let Some(code) = code.filter(|_| flagged || via_cloudflare) {
            let duration = fields.retry_after.as_ref().and_then(json_number).and_then(seconds);
            return Some(cloudflare_block(code as u32, duration));
        }
    } else if via_cloudflare {
        let text = truncate(body.unwrap_or(""), 32 * 1024);
        let code = cloudflare_code_pattern().captures(text).and_then(|c| c.get(1)?.as_str().parse::<u32>().ok());
        if let Some(code) = code {
            return Some(cloudflare_block(code, None));
        }
    }

    if body.is_some_and(|b| b.contains("bot-need-challenge")) {
        return Some(Block {
            kind: BlockKind::WafBlocked,
            until_unix: None,
            duration: None,
            code: Some("bot-need-challenge".to_owned()),
            message: None,
        });
    }

    (status == Some(403) && via_cloudflare).then_some(Block {
        kind: BlockKind::WafBlocked,
        until_unix: None,
        duration: None,
        code: None,
        message: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    fn http_date(unix: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
    }

    /// Unix seconds of a UTC civil time.
    fn utc(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(utc(2026, 11, 23, 19, 15, 0) as u64);
        assert_eq!(httpdate::fmt_http_date(t), "Mon, 23 Nov 2026 19:15:00 GMT");
        assert_eq!(last_sunday(2026, 3), 29);
        assert_eq!(last_sunday(2026, 10), 25);
        assert_eq!(last_sunday(2024, 3), 31);
        assert_eq!(last_sunday(2024, 10), 27);
    }

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

    // --- Retry-After ---------------------------------------------------------------------------

    #[test]
    fn back_market_429_via_cloudflare_with_retry_after() {
        let headers = h(&[
            ("Server", "cloudflare"),
            ("CF-RAY", "8f1e2d3c4b5a6978-CDG"),
            ("Content-Type", "application/json"),
            ("Retry-After", "10"),
        ]);
        let fb = Feedback::parse(Some(429), &headers, Some(r#"{"detail":"Too many requests"}"#), None);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(10)));
        assert!(fb.rate_limited);
        assert_eq!(fb.block, None, "a 429 through Cloudflare is rate limiting, not a block");
    }

    #[test]
    fn shopify_float_retry_after() {
        let headers = h(&[("Retry-After", "2.0"), ("X-Shopify-Shop-Api-Call-Limit", "40/40")]);
        let fb = Feedback::parse(Some(429), &headers, None, None);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(2)));
        assert!(fb.rate_limited);
        assert_eq!(parse_retry_after("0.25", None), Some(Duration::from_millis(250)));
    }

    #[test]
    fn retry_after_http_date_relative_to_date_header() {
        let headers = h(&[("date", "Wed, 21 Oct 2015 07:27:00 GMT"), ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        // The Date header wins over the host clock, which is an hour off here.
        let fb = Feedback::parse(Some(503), &headers, None, Some(1_445_412_420.0 + 3600.0));
        assert_eq!(fb.retry_after, Some(Duration::from_secs(60)));
        assert!(!fb.rate_limited);
    }

    #[test]
    fn retry_after_http_date_relative_to_unix_time_and_other_formats() {
        let now = 1_445_412_420.0; // Wed, 21 Oct 2015 07:27:00 GMT
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", Some(now)), Some(Duration::from_secs(60)));
        // RFC 850 and asctime forms.
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", Some(now)), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_after("Wed Oct 21 07:29:00 2015", Some(now)), Some(Duration::from_secs(120)));
        // A date in the past: retry now.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", Some(now)), Some(Duration::ZERO));
        // No reference time: an absolute date cannot become a duration.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", None), None);
        let fb = Feedback::parse(Some(429), &h(&[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]), None, Some(now));
        assert_eq!(fb.retry_after, Some(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_malformed_and_extreme_values() {
        for bad in ["", "abc", "-5", "NaN", "nan", "inf", "-inf", "Infinity", "1.2.3", "10s", "e", "+-1"] {
            assert_eq!(parse_retry_after(bad, Some(1e9)), None, "{bad:?}");
        }
        // Overflow saturates.
        assert_eq!(parse_retry_after("1e400", None), None, "beyond 1e12: epoch millis, needs a reference");
        assert_eq!(parse_retry_after("1e400", Some(0.0)), Some(Duration::MAX));
        // Too many digits for u64: saturates to u64::MAX, which the epoch rule reads as epoch
        // milliseconds: a wait of about 585 million years, not a panic.
        let huge = parse_retry_after("99999999999999999999999999", Some(0.0)).unwrap();
        assert!(huge > Duration::from_secs(10u64.pow(16)));
        assert_eq!(parse_retry_after("  120 ", None), Some(Duration::from_secs(120)));
        // Repeated headers: the first valid one counts.
        let fb = Feedback::parse(Some(429), &h(&[("Retry-After", "soon"), ("Retry-After", "7")]), None, None);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let headers = h(&[("RETRY-AFTER", "3"), ("x-RateLimit-REMAINING", "4"), (" X-RATELIMIT-LIMIT ", "10")]);
        let fb = Feedback::parse(Some(429), &headers, None, None);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(fb.remaining, Some(4));
        assert_eq!(fb.limit, Some(10));
    }

    // --- X-RateLimit ---------------------------------------------------------------------------

    #[test]
    fn github_epoch_reset_against_date_header() {
        let headers = h(&[
            ("Date", &http_date(1_372_697_273)),
            ("X-RateLimit-Limit", "5000"),
            ("X-RateLimit-Remaining", "4999"),
            ("X-RateLimit-Used", "1"),
            ("X-RateLimit-Reset", "1372700873"),
            ("X-RateLimit-Resource", "core"),
        ]);
        let fb = Feedback::parse(Some(200), &headers, None, None);
        assert_eq!(fb.limit, Some(5000));
        assert_eq!(fb.remaining, Some(4999));
        assert_eq!(fb.reset, Some(Duration::from_secs(3600)));
        assert!(!fb.rate_limited);
        assert_eq!(fb.retry_after, None);
    }

    #[test]
    fn x_ratelimit_reset_epoch_needs_a_reference_and_delta_does_not() {
        let c = parse_x_ratelimit(Some("60"), Some("0"), Some("1372700873"), None);
        assert_eq!(c.reset, None);
        let c = parse_x_ratelimit(Some("60"), Some("0"), Some("1372700873"), Some(1_372_700_000.0));
        assert_eq!(c.reset, Some(Duration::from_secs(873)));
        // Epoch milliseconds.
        let c = parse_x_ratelimit(None, None, Some("1700000030000"), Some(1_700_000_000.0));
        assert_eq!(c.reset, Some(Duration::from_secs(30)));
        // Delta seconds, with decimals (Discord style).
        let c = parse_x_ratelimit(None, None, Some("64.57"), None);
        assert_eq!(c.reset, Some(Duration::from_secs_f64(64.57)));
        // Already past: zero.
        let c = parse_x_ratelimit(None, None, Some("1372700873"), Some(1_372_800_000.0));
        assert_eq!(c.reset, Some(Duration::ZERO));
    }

    #[test]
    fn x_ratelimit_malformed_and_extreme_counts() {
        let c = parse_x_ratelimit(Some("abc"), Some("-3"), Some("soon"), None);
        assert_eq!(c, RateLimitCounters { remaining: Some(0), ..Default::default() });
        let c = parse_x_ratelimit(Some("184467440737095516150000"), Some("12.7"), Some("-1"), None);
        assert_eq!(c.limit, Some(u64::MAX));
        assert_eq!(c.remaining, Some(12));
        assert_eq!(c.reset, None);
        // Policy-style limits with a window.
        let c = parse_x_ratelimit(Some("100, 100;w=60"), None, None, None);
        assert_eq!((c.limit, c.window), (Some(100), Some(Duration::from_secs(60))));
    }

    // --- IETF RateLimit ------------------------------------------------------------------------

    #[test]
    fn ietf_draft_07_dictionary_form() {
        let headers = h(&[("RateLimit", "limit=100, remaining=50, reset=30"), ("RateLimit-Policy", "100;w=60")]);
        let fb = Feedback::parse(Some(200), &headers, None, None);
        assert_eq!(fb.limit, Some(100));
        assert_eq!(fb.remaining, Some(50));
        assert_eq!(fb.reset, Some(Duration::from_secs(30)));
        assert_eq!(fb.policy_window, Some(Duration::from_secs(60)));

        // Several policies: the window of the one whose quota equals `limit`.
        let c = parse_ratelimit_ietf(
            Some("limit=1000, remaining=999, reset=3000"),
            Some("100;w=60, 1000;w=3600;comment=\"hourly\""),
            None,
        );
        assert_eq!(c.window, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn ietf_draft_08_list_form() {
        let headers = h(&[("RateLimit", "\"default\";r=50;t=30"), ("RateLimit-Policy", "\"default\";q=100;w=60")]);
        let fb = Feedback::parse(Some(200), &headers, None, None);
        assert_eq!(fb.limit, Some(100));
        assert_eq!(fb.remaining, Some(50));
        assert_eq!(fb.reset, Some(Duration::from_secs(30)));
        assert_eq!(fb.policy_window, Some(Duration::from_secs(60)));
    }

    #[test]
    fn ietf_list_form_picks_the_binding_policy() {
        let c = parse_ratelimit_ietf(
            Some("\"burst\";r=10;t=20, \"daily\";r=5;t=3600"),
            Some("\"burst\";q=100;w=60, \"daily\";q=1000;w=86400;qu=\"requests\""),
            None,
        );
        assert_eq!(c.remaining, Some(5));
        assert_eq!(c.reset, Some(Duration::from_secs(3600)));
        assert_eq!(c.limit, Some(1000));
        assert_eq!(c.window, Some(Duration::from_secs(86400)));

        // Repeated header lines are one field.
        let headers = h(&[
            ("RateLimit-Policy", "\"burst\";q=100;w=60"),
            ("ratelimit-policy", "\"daily\";q=1000;w=86400"),
            ("RateLimit", "\"burst\";r=0;t=12"),
            ("RateLimit", "\"daily\";r=700;t=40000"),
        ]);
        let fb = Feedback::parse(Some(429), &headers, None, None);
        assert_eq!((fb.limit, fb.remaining), (Some(100), Some(0)));
        assert_eq!(fb.reset, Some(Duration::from_secs(12)));
        assert_eq!(fb.policy_window, Some(Duration::from_secs(60)));
    }

    #[test]
    fn ietf_token_names_decimals_and_policy_alone() {
        let c = parse_ratelimit_ietf(Some("default;r=3;t=1.5"), Some("default;q=10;w=1"), None);
        assert_eq!((c.limit, c.remaining), (Some(10), Some(3)));
        assert_eq!(c.reset, Some(Duration::from_millis(1500)));
        assert_eq!(c.window, Some(Duration::from_secs(1)));

        let c = parse_ratelimit_ietf(None, Some("\"permin\";q=15;w=10"), None);
        assert_eq!((c.limit, c.window), (Some(15), Some(Duration::from_secs(10))));
        assert_eq!(c.remaining, None);

        // Malformed structured fields are ignored as a whole.
        let c = parse_ratelimit_ietf(Some("limit=, remaining"), Some("\"unterminated;q=1"), None);
        assert_eq!(c, RateLimitCounters::default());
    }

    #[test]
    fn ietf_legacy_separate_fields() {
        let headers = h(&[("RateLimit-Limit", "10"), ("RateLimit-Remaining", "1"), ("RateLimit-Reset", "7")]);
        let fb = Feedback::parse(Some(200), &headers, None, None);
        assert_eq!((fb.limit, fb.remaining), (Some(10), Some(1)));
        assert_eq!(fb.reset, Some(Duration::from_secs(7)));

        // Draft 03: the limit followed by its policies.
        let c = parse_x_ratelimit(Some("10, 10;w=1, 50;w=60"), None, None, None);
        assert_eq!((c.limit, c.window), (Some(10), Some(Duration::from_secs(1))));
    }

    #[test]
    fn ietf_fields_win_over_x_ratelimit_field_by_field() {
        let headers = h(&[
            ("X-RateLimit-Limit", "999"),
            ("X-RateLimit-Remaining", "998"),
            ("X-RateLimit-Reset", "5"),
            ("RateLimit-Remaining", "40"),
            ("RateLimit", "\"default\";r=50"),
            ("RateLimit-Policy", "\"default\";q=100;w=60"),
        ]);
        let fb = Feedback::parse(Some(200), &headers, None, None);
        assert_eq!(fb.limit, Some(100));
        assert_eq!(fb.remaining, Some(50));
        assert_eq!(fb.reset, Some(Duration::from_secs(5)), "only X-RateLimit-Reset had a reset");
        assert_eq!(fb.policy_window, Some(Duration::from_secs(60)));
    }

    // --- Keepa ---------------------------------------------------------------------------------

    #[test]
    fn keepa_budget_on_200() {
        let body = r#"{"timestamp":1594177158252,"tokensLeft":1180,"refillIn":38205,"refillRate":20,
            "tokenFlowReduction":0.0,"tokensConsumed":2,"processingTimeInMs":87,
            "products":[{"asin":"B07XV8VSZT","csv":[[1,2,3]]}]}"#;
        let fb = Feedback::parse(Some(200), &[], Some(body), None);
        let budget = fb.budget.expect("keepa budget");
        assert_eq!(budget.tokens_left, 1180);
        assert_eq!(budget.refill_in, Some(Duration::from_millis(38_205)));
        assert_eq!(budget.refill_rate, Some(20));
        assert_eq!(budget.tokens_consumed, Some(2));
        assert_eq!(budget.server_time_ms, Some(1_594_177_158_252));
        assert!(!budget.not_enough_tokens);
        assert!(!fb.rate_limited);
        assert_eq!(fb.retry_after, None, "refillIn is no retry advice on success");
    }

    #[test]
    fn keepa_not_enough_token_on_429() {
        let body = r#"{"timestamp":1594176918934,"tokensLeft":-3,"refillIn":5123,"refillRate":20,
            "tokenFlowReduction":0.0,"tokensConsumed":0,"processingTimeInMs":0,
            "error":{"type":"NOT_ENOUGH_TOKEN","message":"You do not have enough tokens.","details":null}}"#;
        let fb = Feedback::parse(Some(429), &[], Some(body), Some(1_594_176_918.9));
        let budget = fb.budget.expect("keepa budget");
        assert_eq!(budget.tokens_left, -3);
        assert!(budget.not_enough_tokens);
        assert!(fb.rate_limited);
        assert_eq!(fb.retry_after, Some(Duration::from_millis(5123)));
        assert_eq!(fb.block, None);

        // The error alone (whatever the status) makes it rate-limited.
        let fb = Feedback::parse(Some(200), &[], Some(body), None);
        assert!(fb.rate_limited);
    }

    #[test]
    fn keepa_malformed_fields() {
        let body = r#"{"tokensLeft":1e300,"refillIn":-5,"refillRate":"20","tokensConsumed":-1,"timestamp":"x"}"#;
        let budget = Feedback::parse(Some(200), &[], Some(body), None).budget.unwrap();
        assert_eq!(budget.tokens_left, i64::MAX);
        assert_eq!(budget.refill_in, None);
        assert_eq!(budget.refill_rate, Some(20));
        assert_eq!(budget.tokens_consumed, None);
        assert_eq!(budget.server_time_ms, None);

        let budget = Feedback::parse(Some(200), &[], Some(r#"{"tokensLeft":18446744073709551615}"#), None).budget;
        assert_eq!(budget.map(|b| b.tokens_left), Some(i64::MAX));
        assert_eq!(Feedback::parse(Some(200), &[], Some(r#"{"tokensLeft":"many"}"#), None).budget, None);
        assert_eq!(Feedback::parse(Some(200), &[], Some(r#"[{"tokensLeft":1}]"#), None).budget, None);
        assert_eq!(Feedback::parse(Some(200), &[], Some(r#"{"tokensLeft":1"#), None).budget, None);
    }

    // --- BaseLinker ----------------------------------------------------------------------------

    fn baselinker(message: &str) -> String {
        serde_json::json!({"status": "ERROR", "error_code": "ERROR_BLOCKED_TOKEN", "error_message": message})
            .to_string()
    }

    #[test]
    fn baselinker_blocked_token_in_winter_is_cet() {
        let body = baselinker("Token blocked until 2026-11-23 20:15:00");
        let now = utc(2026, 11, 23, 19, 0, 0) as f64;
        let fb = Feedback::parse(Some(200), &[], Some(&body), Some(now));
        let block = fb.block.expect("block");
        assert_eq!(block.kind, BlockKind::TokenBlocked);
        assert_eq!(block.until_unix, Some(utc(2026, 11, 23, 19, 15, 0)));
        assert_eq!(block.duration, Some(Duration::from_secs(15 * 60)));
        assert_eq!(block.code.as_deref(), Some("ERROR_BLOCKED_TOKEN"));
        assert_eq!(block.message.as_deref(), Some("Token blocked until 2026-11-23 20:15:00"));
        assert!(fb.rate_limited);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(15 * 60)));
    }

    #[test]
    fn baselinker_summer_time_and_transitions() {
        let until = |m: &str| find_block_until(m);
        assert_eq!(until("blocked until 2026-07-10 12:00:00"), Some(utc(2026, 7, 10, 10, 0, 0)));
        // Spring forward on 2026-03-29 at 02:00 CET.
        assert_eq!(until("2026-03-29 01:59:00"), Some(utc(2026, 3, 29, 0, 59, 0)));
        assert_eq!(until("2026-03-29 03:00:00"), Some(utc(2026, 3, 29, 1, 0, 0)));
        // Fall back on 2026-10-25 at 03:00 CEST: the repeated hour is read as CET (the later).
        assert_eq!(until("2026-10-25 01:59:00"), Some(utc(2026, 10, 24, 23, 59, 0)));
        assert_eq!(until("2026-10-25 02:30:00"), Some(utc(2026, 10, 25, 1, 30, 0)));
        assert_eq!(until("2026-10-25 03:00:00"), Some(utc(2026, 10, 25, 2, 0, 0)));
        // Explicit zones win; seconds are optional; Polish text works too.
        assert_eq!(until("blocked until 2026-07-10 12:00:00 UTC"), Some(utc(2026, 7, 10, 12, 0, 0)));
        assert_eq!(until("blocked until 2026-07-10T12:00:00Z"), Some(utc(2026, 7, 10, 12, 0, 0)));
        assert_eq!(until("blocked until 2026-07-10 12:00:00+02:00"), Some(utc(2026, 7, 10, 10, 0, 0)));
        assert_eq!(until("blocked until 2026-01-10 12:00 CET"), Some(utc(2026, 1, 10, 11, 0, 0)));
        assert_eq!(until("Token zablokowany do 2026-01-10 12:00"), Some(utc(2026, 1, 10, 11, 0, 0)));
        // Invalid dates are skipped.
        assert_eq!(until("blocked until 2026-02-30 12:00:00"), None);
        assert_eq!(until("blocked until 2026-13-01 25:00:00"), None);
        assert_eq!(until("blocked for a while"), None);
    }

    #[test]
    fn baselinker_without_time_or_reference() {
        let fb = Feedback::parse(Some(200), &[], Some(&baselinker("Token blocked")), None);
        let block = fb.block.expect("block");
        assert_eq!((block.until_unix, block.duration), (None, None));
        assert!(fb.rate_limited);
        assert_eq!(fb.retry_after, None);

        let fb = Feedback::parse(Some(200), &[], Some(&baselinker("blocked until 2026-11-23 20:15:00")), None);
        assert_eq!(fb.block.and_then(|b| b.duration), None, "no reference time");

        // The Date header is a reference too, and the past gives zero.
        let headers = h(&[("Date", &http_date(utc(2026, 11, 23, 20, 0, 0) as u64))]);
        let fb = Feedback::parse(Some(200), &headers, Some(&baselinker("blocked until 2026-11-23 20:15:00")), None);
        assert_eq!(fb.block.and_then(|b| b.duration), Some(Duration::ZERO));

        // Other BaseLinker errors are not blocks.
        let body = r#"{"status":"ERROR","error_code":"ERROR_UNKNOWN_METHOD","error_message":"x"}"#;
        assert!(Feedback::parse(Some(200), &[], Some(body), None).is_empty());
        assert!(Feedback::parse(Some(200), &[], Some(r#"{"status":"SUCCESS","orders":[]}"#), None).is_empty());
    }

    // --- Cloudflare ----------------------------------------------------------------------------

    #[test]
    fn cloudflare_403_with_cf_ray_and_error_page() {
        let headers = h(&[("Server", "cloudflare"), ("CF-Ray", "8f1e2d3c4b5a6978-CDG"), ("Content-Type", "text/html")]);
        let page = "<!DOCTYPE html><title>Attention Required! | Cloudflare</title>\
                    <span class=\"cf-error-code\">1020</span> Access denied";
        let fb = Feedback::parse(Some(403), &headers, Some(page), None);
        let block = fb.block.expect("block");
        assert_eq!(block.kind, BlockKind::WafBlocked);
        assert_eq!(block.code.as_deref(), Some("1020"));
        assert!(fb.rate_limited);

        let fb = Feedback::parse(Some(403), &headers, Some("error code: 1020"), None);
        assert_eq!(fb.block.and_then(|b| b.code).as_deref(), Some("1020"));

        // Just headers.
        let fb = Feedback::parse(Some(403), &h(&[("cf-ray", "abc")]), None, None);
        let block = fb.block.expect("block");
        assert_eq!((block.kind, block.code), (BlockKind::WafBlocked, None));
    }

    #[test]
    fn cloudflare_1015_is_rate_limiting() {
        let headers = h(&[("server", "cloudflare"), ("retry-after", "30")]);
        let fb =
            Feedback::parse(Some(429), &headers, Some("<title>Error 1015</title> You are being rate limited"), None);
        let block = fb.block.expect("block");
        assert_eq!(block.kind, BlockKind::RateLimited);
        assert_eq!(fb.retry_after, Some(Duration::from_secs(30)));

        let body = r#"{"cloudflare_error":true,"error_code":1015,"error_name":"rate_limited","retry_after":45}"#;
        let fb = Feedback::parse(Some(429), &[], Some(body), None);
        let block = fb.block.expect("block");
        assert_eq!((block.kind, block.duration), (BlockKind::RateLimited, Some(Duration::from_secs(45))));
        assert_eq!(fb.retry_after, Some(Duration::from_secs(45)));
    }

    #[test]
    fn cloudflare_bot_need_challenge_json() {
        let headers = h(&[("server", "cloudflare"), ("cf-ray", "8f1e2d3c4b5a6978-AMS")]);
        let body = r#"{"type":"bot-need-challenge","title":"Forbidden","status":403}"#;
        let fb = Feedback::parse(Some(403), &headers, Some(body), None);
        let block = fb.block.expect("block");
        assert_eq!(block.kind, BlockKind::WafBlocked);
        assert_eq!(block.code.as_deref(), Some("bot-need-challenge"));

        let fb = Feedback::parse(Some(403), &h(&[("cf-mitigated", "challenge")]), Some("<html>"), None);
        assert_eq!(fb.block.and_then(|b| b.code).as_deref(), Some("cf-mitigated:challenge"));
    }

    #[test]
    fn cloudflare_success_and_other_servers_are_not_blocks() {
        let headers = h(&[("server", "cloudflare"), ("cf-ray", "x")]);
        assert!(Feedback::parse(Some(200), &headers, Some("error code: 1020 in a product text"), None).is_empty());
        assert!(Feedback::parse(Some(200), &headers, Some(r#"{"note":"bot-need-challenge"}"#), None).is_empty());
        assert!(Feedback::parse(Some(403), &h(&[("server", "nginx")]), Some("Forbidden"), None).is_empty());
        assert!(Feedback::parse(None, &headers, None, None).is_empty());
        // An error code outside Cloudflare's range or without Cloudflare is not theirs.
        assert!(Feedback::parse(Some(400), &[], Some(r#"{"error_code":1020}"#), None).is_empty());
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
