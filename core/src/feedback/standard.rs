//! The classic header fields: `Retry-After`, and the counters `X-RateLimit-Limit`/`-Remaining`/
//! `-Reset` (GitHub, Twitter and many others) with the older IETF `RateLimit-Limit`/`-Remaining`/
//! `-Reset` (drafts up to 06).

use std::time::Duration;

use super::ietf::sf_list;
use super::{count, parse_http_date_unix, parse_number, resolve_time_value, seconds, RateLimitCounters};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::testing::{h, http_date};
    use crate::feedback::*;

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
}
