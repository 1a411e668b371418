//! The IETF `RateLimit` and `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers),
//! RFC 8941/9651 structured fields read with `sfv`'s visitor API.

use std::convert::Infallible;

use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ListVisitor, ParameterVisitor,
};
use sfv::{BareItemFromInput, GenericBareItem, KeyRef, Parser};

use super::{count, resolve_time_value, seconds, RateLimitCounters};

/// At most this many members of a structured field are read; the rest is validated but ignored.
const MAX_SF_MEMBERS: usize = 64;
/// At most this many parameters per member are kept.
const MAX_SF_PARAMS: usize = 16;

/// One member of a structured-field List or Dictionary, reduced to what rate-limit fields use.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct SfMember {
    /// The dictionary key (Dictionary members only).
    key: Option<String>,
    /// The item's value when it is a String or Token (a policy name).
    name: Option<String>,
    /// The item's value when it is an Integer or Decimal.
    pub(super) value: Option<f64>,
    /// Numeric parameters, in order.
    params: Vec<(String, f64)>,
}

impl SfMember {
    /// The last numeric parameter named `key` (RFC 9651: the last duplicate wins).
    pub(super) fn param(&self, key: &str) -> Option<f64> {
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

pub(super) fn sf_list(text: &str) -> Option<Vec<SfMember>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::testing::h;
    use crate::feedback::*;

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
}
