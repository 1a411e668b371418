//! What a host asks for, and what it gets back.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::RequestError;
use crate::read::{self, At, Read};
use crate::time::Timestamp;

/// Priority of a request: FIFO within a level, higher levels first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Emergency work (reverting a price): may use reserved capacity, never the hard limit.
    Critical = 0,
    /// Follow-ups and reads that must not lag (Peak, Peek).
    High = 1,
    /// Ordinary work (Dip).
    #[default]
    Normal = 2,
    /// Background work (watchdog scans).
    Low = 3,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Priority; 4] = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];

    /// The level's name as events and logs show it (`"critical"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Parses `"critical"`, `"HIGH"`, ... (any case).
    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a request from admission to completion; a [`Permit`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// A map keyed by request id. Ids are handed out in sequence, and requests mostly leave in about
/// the order they came: with FxHash, each lookup of the next one was a cache miss somewhere in the
/// table (with 100k waiting, the index is megabytes). [`SequentialIds`] keeps runs of 8 neighbouring
/// ids in neighbouring buckets.
pub(crate) type IdMap<V> = std::collections::HashMap<RequestId, V, std::hash::BuildHasherDefault<SequentialIds>>;

/// The hash of a request id for [`IdMap`]: the id's low 3 bits kept as they are (8 neighbouring ids,
/// 8 neighbouring buckets: the table picks the bucket from the low bits), the rest mixed, so blocks
/// spread over the table (all ids side by side filled whole probe groups, and a FIFO's deletions
/// left tombstones that forced rehashing); the low bits also go into the top 7 bits, the tag the
/// table compares before the keys, so the 8 of a block differ there. Any hash is correct; this one
/// is fast for sequential keys. Written here: the integer hashers published as crates either mix
/// everything (no locality) or are the identity (one tag for every key).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SequentialIds(u64);

impl std::hash::Hasher for SequentialIds {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }

    fn finish(&self) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let block = (self.0 >> 3).wrapping_mul(K);
        ((block & !7) | (self.0 & 7)) ^ ((self.0 & 7) << 57)
    }
}

/// Identifies a reservation made for a follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reservation {}", self.0)
    }
}

/// Which limits a request takes: matched from its method and URL, or a route named directly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Target {
    /// Matched against the routes; the first matching rule wins, no match takes only the global
    /// limits. Full URLs are accepted: the path is matched, the query string never leaves the core.
    Http {
        /// HTTP method, any case.
        method: String,
        /// A full URL or a path, with or without query string.
        url: String,
    },
    /// A route named directly (unknown names are an error).
    Route(String),
    /// No route: only the global limits and those the request names.
    #[default]
    None,
}

/// A request for admission.
///
/// ```
/// use traffic_control_core::{Priority, Request, FollowUp};
/// let dip = Request::http("POST", "https://api.example/ws/listings/42?key=secret")
///     .priority(Priority::Normal)
///     .reserve(FollowUp::http("POST", "/ws/listings/42"));
/// # let _ = dip;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Request {
    /// What the request targets.
    pub target: Target,
    /// Limits taken in addition to the route's and the global ones.
    pub limits: Vec<String>,
    /// The cost; the route's default when absent.
    pub cost: Option<u64>,
    /// The priority.
    pub priority: Priority,
    /// The instant after which the request must not go; it fails instead.
    pub deadline: Option<Timestamp>,
    /// Follow-ups whose capacity is reserved in the same admission.
    pub reserve: Vec<FollowUp>,
    /// A reservation this request spends.
    pub spend: Option<ReservationId>,
    /// Whom the request is for, when the config divides capacity among tenants (`tenants`):
    /// within a priority, tenants are served by weight. A tenant the config does not name is in
    /// the default class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The key of a pool (`pools`) the request must go on (a dedicated key); absent: the pool
    /// chooses the least-loaded key that can admit it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Request {
    /// A request for `method url`, matched against the routes.
    pub fn http(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request { target: Target::Http { method: method.into(), url: url.into() }, ..Request::default() }
    }

    /// A request on the route named `name`.
    pub fn route(name: impl Into<String>) -> Self {
        Request { target: Target::Route(name.into()), ..Request::default() }
    }

    /// A request on the named limits only (plus the global ones): for work that is not HTTP.
    pub fn limits<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Request { limits: names.into_iter().map(Into::into).collect(), ..Request::default() }
    }

    /// Sets the priority.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets an explicit cost, which wins over the route's.
    #[must_use]
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Sets the deadline.
    #[must_use]
    pub fn deadline(mut self, deadline: Timestamp) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Adds a follow-up to reserve capacity for.
    #[must_use]
    pub fn reserve(mut self, follow_up: FollowUp) -> Self {
        self.reserve.push(follow_up);
        self
    }

    /// Spends a reservation made by an earlier request.
    #[must_use]
    pub fn spend(mut self, reservation: ReservationId) -> Self {
        self.spend = Some(reservation);
        self
    }

    /// Sets the tenant the request is for.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The key of a pool the request must go on (see [`Request::key`]).
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a named limit.
    #[must_use]
    pub fn limit(mut self, name: impl Into<String>) -> Self {
        self.limits.push(name.into());
        self
    }
}

/// A follow-up whose capacity is reserved when the request that names it is admitted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct FollowUp {
    /// What the follow-up targets (its route decides the limits reserved).
    pub target: Target,
    /// Limits reserved in addition to the route's and the global ones.
    pub limits: Vec<String>,
    /// The cost reserved; the route's default when absent.
    pub cost: Option<u64>,
    /// How long the reservation lives unless spent or released; the config's default when absent.
    #[serde(with = "opt_duration")]
    pub ttl: Option<Duration>,
}

impl FollowUp {
    /// A follow-up `method url`.
    pub fn http(method: impl Into<String>, url: impl Into<String>) -> Self {
        FollowUp { target: Target::Http { method: method.into(), url: url.into() }, ..FollowUp::default() }
    }

    /// A follow-up on a named route.
    pub fn route(name: impl Into<String>) -> Self {
        FollowUp { target: Target::Route(name.into()), ..FollowUp::default() }
    }

    /// Sets the reserved cost.
    #[must_use]
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = Some(cost);
        self
    }

    /// Sets the reservation's time to live.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Serialize, Serializer};

    #[derive(Serialize)]
    struct Wrapped(#[serde(with = "crate::config::duration")] Duration);

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(Wrapped).serialize(s)
    }
}

impl Request {
    /// Reads a request from JSON text in its serde shape: `{"target": {"http": {"method", "url"}}
    /// | {"route": name} | "none", "limits", "cost", "priority", "deadline", "reserve", "spend",
    /// "tenant", "key"}`.
    /// Errors name the field (`reserve[0].ttl`) and the reason.
    pub fn from_json(text: &str) -> Result<Request, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        read::root(&value, read_request).map_err(|e| e.to_string())
    }
}

impl<'de> Deserialize<'de> for Request {
    /// Through [`Request::from_json`]'s reader.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        read::root(&Value::deserialize(d)?, read_request).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for FollowUp {
    /// Through the same reader as a [`Request`]'s `reserve` items.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FollowUp, D::Error> {
        read::root(&Value::deserialize(d)?, read_follow_up).map_err(serde::de::Error::custom)
    }
}

fn read_request(at: &At<'_>, v: &Value) -> Read<Request> {
    let f = read::object(
        at,
        v,
        "struct Request",
        // Without key pools in the build (the wasm package's browser build), `key` is unknown.
        if cfg!(feature = "keys") {
            &["target", "limits", "cost", "priority", "deadline", "reserve", "spend", "tenant", "key"]
        } else {
            &["target", "limits", "cost", "priority", "deadline", "reserve", "spend", "tenant"]
        },
    )?;
    Ok(Request {
        target: f.or("target", read_target, Target::default)?,
        limits: f.or("limits", read::strings_at, Vec::new)?,
        cost: f.opt("cost", read::u64_at)?,
        priority: f.or("priority", read_priority, Priority::default)?,
        deadline: f.opt("deadline", |at, v| read::u64_at(at, v).map(Timestamp::from_nanos))?,
        reserve: f.or("reserve", |at, v| read::list_at(at, v, read_follow_up), Vec::new)?,
        spend: f.opt("spend", |at, v| read::u64_at(at, v).map(ReservationId))?,
        tenant: f.opt("tenant", read::string_at)?,
        #[cfg(feature = "keys")]
        key: f.opt("key", read::string_at)?,
        #[cfg(not(feature = "keys"))]
        key: None,
    })
}

fn read_follow_up(at: &At<'_>, v: &Value) -> Read<FollowUp> {
    let f = read::object(at, v, "struct FollowUp", &["target", "limits", "cost", "ttl"])?;
    Ok(FollowUp {
        target: f.or("target", read_target, Target::default)?,
        limits: f.or("limits", read::strings_at, Vec::new)?,
        cost: f.opt("cost", read::u64_at)?,
        ttl: f.opt("ttl", read::duration_at)?,
    })
}

fn read_priority(at: &At<'_>, v: &Value) -> Read<Priority> {
    let names = Priority::ALL.map(Priority::as_str);
    read::variant_at(at, v, &names, "a priority").map(|i| Priority::ALL[i])
}

/// `"none"`, `{"http": {"method", "url"}}` or `{"route": name}`.
fn read_target(at: &At<'_>, v: &Value) -> Read<Target> {
    const KINDS: [&str; 3] = ["http", "route", "none"];
    let expected = r#"{"http": {"method", "url"}}, {"route": name} or "none""#;
    let (kind, inner) = match v {
        Value::String(_) => (read::variant_at(at, v, &KINDS, expected)?, None),
        Value::Object(map) if map.len() == 1 => {
            let (k, inner) = map.iter().next().expect("one entry");
            (read::variant_of(&at.key(k), k, &KINDS)?, Some((k, inner)))
        }
        _ => return Err(at.invalid_type(v, expected)),
    };
    match (kind, inner) {
        (2, None | Some((_, Value::Null))) => Ok(Target::None),
        (0, Some((k, inner))) => {
            let at = at.key(k);
            let f = read::object(&at, inner, "struct Http", &["method", "url"])?;
            Ok(Target::Http { method: f.req("method", read::string_at)?, url: f.req("url", read::string_at)? })
        }
        (1, Some((k, inner))) => read::string_at(&at.key(k), inner).map(Target::Route),
        _ => Err(at.error(format!("invalid target, expected {expected}"))),
    }
}

/// The right to send one request now. Hand its `request` id back to
/// [`complete`](crate::TrafficControl::complete) when the response (or failure) is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Permit {
    /// The admitted request.
    pub request: RequestId,
    /// The reservations made for its follow-ups, in the order they were asked.
    pub reservations: Vec<ReservationId>,
    /// When it was admitted.
    pub at: Timestamp,
    /// The key of a pool it was admitted on (`pools`): send it with that key's credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<std::sync::Arc<str>>,
}

/// The answer of [`try_acquire`](crate::TrafficControl::try_acquire).
#[must_use = "a decision says whether the request may go"]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Send it now.
    Go(Permit),
    /// Not now; ask again at `until` (the earliest instant it could go if nothing else changes).
    /// `None` when only a completion or a cancel can make room.
    Wait {
        /// The earliest instant worth asking again.
        until: Option<Timestamp>,
    },
    /// It can never go as asked.
    Reject(RequestError),
}

/// What happened to an admitted request, as the host reports it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Outcome {
    /// The HTTP status, or `None` when no response came (network failure, timeout).
    pub status: Option<u16>,
    /// Response headers (names in any case).
    pub headers: Vec<(String, String)>,
    /// The response body, or the part of it that carries limit fields (Keepa's token fields,
    /// BaseLinker's error), when the API reports limits there.
    pub body: Option<String>,
    /// The host's wall clock when the response arrived, in seconds since the Unix epoch: the
    /// reference for absolute times (HTTP-dates, epoch resets) when the response has no `Date`.
    pub unix_time: Option<f64>,
    /// The host does not know what happened (a permit let go without a report: a context manager
    /// left, a scheduled task that returned no response): its holds come back as for any end, and
    /// breakers do not judge it (it is neither a success nor a failure).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreported: bool,
}

/// The longest text body a host reads for an error page (Cloudflare's block pages are a few KB).
pub(crate) const MAX_TEXT_BODY: u64 = 256 * 1024;

impl Outcome {
    /// Whether a host must read a response's body for the core to see what it says about limits,
    /// whatever the status: JSON bodies carry Keepa's token fields and BaseLinker's errors (a blocked
    /// token comes with status 200), short text or HTML pages of a 403, 429 or 503 carry Cloudflare's
    /// block codes. Anything else (files, HTML pages of successes) is left unread. The one rule every
    /// host follows (JavaScript `fetch` and `schedule`, the httpx transports, the shared stores).
    pub fn wants_body(status: u16, content_type: Option<&str>, content_length: Option<u64>) -> bool {
        let kind = content_type.unwrap_or("").to_ascii_lowercase();
        if kind.contains("json") {
            return true;
        }
        matches!(status, 403 | 429 | 503)
            && (kind.is_empty() || kind.contains("html") || kind.contains("text"))
            && content_length.is_none_or(|n| n <= MAX_TEXT_BODY)
    }

    /// An outcome with this status and no headers.
    pub fn status(status: u16) -> Self {
        Outcome { status: Some(status), ..Outcome::default() }
    }

    /// An outcome with no response.
    pub fn failed() -> Self {
        Outcome::default()
    }

    /// An end the host did not report (see [`Outcome::unreported`](Outcome#structfield.unreported)).
    pub fn unreported() -> Self {
        Outcome { unreported: true, ..Outcome::default() }
    }

    /// Sets the body (or its limit fields).
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the wall-clock reference for absolute times in the response.
    #[must_use]
    pub fn unix_time(mut self, seconds: f64) -> Self {
        self.unix_time = Some(seconds);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the host should do after [`complete`](crate::TrafficControl::complete).
#[must_use = "a completion may ask for a retry"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Completion {
    /// Finished; nothing more to do.
    Done,
    /// The server rate limited it: the core queued it again at its priority, and its
    /// [`EventKind::Go`](crate::EventKind::Go) (same request id) comes out of `poll` no earlier
    /// than `at`.
    Retry {
        /// The earliest instant it may go again.
        at: Timestamp,
    },
    /// The server rate limited it and its retries are spent (or its deadline would pass): report
    /// the failure to the caller.
    GiveUp,
    /// The request id was not in flight (already completed, cancelled, or its lease expired).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_what_they_serialize() {
        let request = Request::http("POST", "/ws/listings/1?key=k")
            .priority(Priority::High)
            .cost(3)
            .limit("extra")
            .deadline(Timestamp::from_millis(5))
            .spend(ReservationId(7))
            .reserve(FollowUp::route("listings").cost(2).ttl(Duration::from_secs(5)))
            .reserve(FollowUp::default());
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(Request::from_json(&json).unwrap(), request);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        assert_eq!(Request::from_json(r#"{"target":"none"}"#).unwrap(), Request::default());
        assert_eq!(Request::from_json(r#"{"target":{"route":"r"}}"#).unwrap(), Request::route("r"));
    }

    #[test]
    fn request_errors_name_the_field() {
        let e = |json: &str| Request::from_json(json).unwrap_err();
        assert_eq!(
            e(r#"{"reserve":[{"ttl":"soon"}]}"#),
            "reserve[0].ttl: \"soon\" is not a duration: expected number at 0"
        );
        assert!(e(r#"{"priority":"urgent"}"#).starts_with("priority: unknown variant `urgent`"));
        assert!(e(r#"{"target":{"http":{"method":"GET"}}}"#).starts_with("target.http: missing field `url`"));
        assert!(e(r#"{"target":{"bogus":1}}"#).starts_with("target.bogus: unknown variant `bogus`"));
        assert!(e(r#"{"target":"route"}"#).starts_with("target: invalid target"));
        assert!(e(r#"{"cost":-1}"#).starts_with("cost: invalid value: integer `-1`"));
        assert!(e(r#"{"colour":1}"#).starts_with("colour: unknown field `colour`"));
        assert!(e("[]").starts_with("invalid type: sequence"));
    }
}
