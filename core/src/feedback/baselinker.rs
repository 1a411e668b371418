//! BaseLinker's blocked token (`ERROR_BLOCKED_TOKEN ... blocked until <Warsaw time>`).

use std::sync::OnceLock;

use regex_lite::Regex;
use serde_json::Value;

use super::{seconds, truncate, Block, BlockKind, BodyFields};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::testing::{h, http_date};
    use crate::feedback::*;
    use std::time::{Duration, SystemTime};

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
}
