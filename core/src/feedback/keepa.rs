//! Keepa's token fields in the response body: a budget report.

use std::time::Duration;

use serde_json::Value;

use super::{json_i64, json_u64, BodyFields, BudgetReport};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::*;

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
}
