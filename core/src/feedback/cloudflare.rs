//! Cloudflare blocks: WAF and bot challenges, and its own rate limiting (error 1015).

use std::sync::OnceLock;
use std::time::Duration;

use regex_lite::Regex;
use serde_json::Value;

use super::{header_values, json_number, json_u64, seconds, truncate, Block, BlockKind, BodyFields};

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
    use crate::feedback::testing::h;
    use crate::feedback::*;

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
}
