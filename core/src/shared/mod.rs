//! The shared store: limit state held in Redis for every process calling with one account, still
//! sans-IO. [`SharedStore`] turns a request into one [`StoreCall`] (an `EVALSHA` of [`SCRIPT`] with
//! its keys and arguments) and the reply into the same [`Decision`] the in-memory controller gives;
//! the host runs the call with its own Redis client.
//!
//! ```
//! use traffic_control_core::{Config, Decision, Request, ReplyValue, SharedStore, StoreOptions, Timestamp};
//!
//! let config = Config::preset("backmarket").unwrap();
//! let mut store = SharedStore::new(config, StoreOptions::new("seller-42")).unwrap();
//! let now = Timestamp::from_millis(0); // the host's monotonic clock (only for its own bookkeeping)
//! let call = store.admit(now, &Request::http("POST", "/ws/listings/7"), &Default::default()).unwrap();
//! assert_eq!(call.keys[0], "tc:{seller-42}:meta"); // every key hash-tagged by account
//! // The host runs EVALSHA script_sha1() keys.len() keys.. args.. (EVAL SCRIPT on NOSCRIPT); say
//! // Redis answered "go, request 1, no reservation" at server time 1_700_000_000_000_000 us:
//! let reply = [1, 1_700_000_000_000_000, 1_700_000_000_000_000, 1].map(ReplyValue::Int);
//! let admitted = store.decide(now, &call, &reply).unwrap();
//! assert!(matches!(admitted.decision, Decision::Go(_)));
//! ```
//!
//! # What the script guarantees
//! - **Atomic, all or nothing**: one script run checks every limit the request (and what it
//!   reserves) touches, then writes all of them, at one instant of Redis server time (`TIME`).
//! - **Every key expires**: windows after `per`, leases and reservations after their TTL, buckets
//!   and budgets once full again, pauses when they end, waiter claims shortly after their waiter
//!   stops coming back, the account's meta key after the longest of those plus a minute.
//! - **Crashed callers leak nothing**: concurrency slots are leases scored by expiry (`lease_ttl`)
//!   and reservations carry their expiry (`reservation_ttl` or the follow-up's).
//! - **Priority across processes**: a request that has to wait registers a claim (its lane and cost,
//!   with a short TTL refreshed each time it asks again) on every limit it needs. A request admits on
//!   a limit only if the room left after it still covers the claims of every live waiter ahead of it:
//!   a lower lane (covered follow-ups, then CRITICAL, HIGH, NORMAL, LOW), or the same lane registered
//!   earlier. So a flood of LOW from one process cannot take room that a waiting CRITICAL or HIGH
//!   from another needs. FIFO within a level holds between registered waiters (hosts register the
//!   head of each of their local queues); a newcomer goes behind every registered waiter of its lane.
//! - **Cost independent of the fleet**: no admission reads a whole set. Per limit the store keeps
//!   the claims registered in each lane (`h:<limit>`) and, per account, the total the live
//!   reservations hold on each limit (`rt`), updated as claims and reservations come and go; expired
//!   ones leave through an expiry index (`x:<limit>`, `rx`) in O(log n) each; a pause that grows
//!   extends only the paused limits' reservations (an index by limit, `ri`). Only when the lane
//!   totals would refuse a request does it walk the claims of its own lane ahead of it
//!   (`o:<limit>`), and it stops once they pass the limit's room: at most capacity + 1 entries
//!   however many processes wait.
//! - **State loss is detected**: a host that saw the account's state within the meta key's lifetime
//!   and finds it gone (Redis restarted or flushed), or finds it older than the ids it got from it
//!   (a replica promoted before it had the last writes), puts the account in quarantine: each limit
//!   admits nothing until its own window (a bucket's refill, a lease) has passed since, because the
//!   API still counts what the store forgot; a request waits for the longest of its limits.
//!
//! - **A reservation being spent is kept**: while a follow-up waits to spend it (a pause, or a
//!   CRITICAL request took the room first), the reservation lives as long as the follow-up's claim,
//!   as in memory; a crashed follow-up's lapses with its claim.
//!
//! - **One pause policy**: a 429 or block pauses the limits it points at for every process by the
//!   in-memory controller's rules (the server's time exactly, a reset alone included; else the
//!   block doubled on every repeat, jittered, capped at `max_block`; CRITICAL waits only for the
//!   server's part). The strikes live in Redis with the pause (`s:<limit>`), so a repeat in any
//!   process doubles it. A success saying the quota is used up (`remaining: 0` with a reset)
//!   pauses until the reset (`exhausted`).
//! - **Learnt quotas are shared**: a reported quota smaller than a window's max lowers it for
//!   every process (`m:<limit>`, tagged with the config's max: a changed config is not bound by
//!   it), an hour past the last report.
//!
//! Differences from the in-memory controller: budget reports are not reduced by other processes'
//! in-flight cost. A limit's pause state (its strikes, the server's part) is forgotten `lease_ttl`
//! plus the longest pause after the pause ended (memory keeps the strikes until a success). An
//! answer that is not rate limited clears the strikes only when this process knows of some on the
//! request's limits (its admission said so, or it reported the 429 itself): a round trip per
//! completion is not spent on strikes that may not exist. The jitter is drawn from each process's
//! own generator (`feedback.seed`), one draw per rate-limited answer as in memory. No
//! [`EventKind::LimitLowered`](crate::EventKind::LimitLowered) is produced here: the store has no
//! event log (the snapshot's capacity shows the lowered max).
//! Times in the store are whole microseconds (windows and periods are rounded up, never down).

use std::sync::OnceLock;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::config::{Config, LimitConfig, WindowHold, DEFAULT_TENANT};
use crate::error::{ConfigError, RequestError, StoreError};
use crate::event::EventEndpoint;
use crate::feedback::Feedback;
use crate::limit::pause::{Jitter, Told};
use crate::limit::{Limit, PauseReason};
use crate::metrics::{Counted, Counters};
use crate::queue::merge_needs;
use crate::queue::SHARE;
use crate::request::{Decision, Outcome, Permit, Priority, Request, RequestId, ReservationId};
use crate::route::{Need, Needs, Router};
use crate::snapshot::{LimitSnapshot, PauseSnapshot, Snapshot};
use crate::time::Timestamp;

/// The Lua script every binding loads (`SCRIPT LOAD`) and calls by [`script_sha1`]: the commented
/// source `src/shared/admit.lua` without its comments and indentation (see `build.rs`).
pub const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/admit.lua"));

/// The SHA1 of [`SCRIPT`], hex: what `EVALSHA` names.
pub fn script_sha1() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| sha1_smol::Sha1::from(SCRIPT).digest().to_string())
}

/// The largest integer a Lua number (a double) holds exactly.
const LUA_EXACT: u128 = 1 << 53;

/// How a store is set up besides the config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The account every process shares: it names the hash tag of every key (`tc:{account}:...`).
    pub account: String,
    /// How long a waiter's claim outlives the instant it said it would ask again.
    pub waiter_ttl: Duration,
}

impl StoreOptions {
    /// Options for `account`, with a waiter TTL of 2 s.
    pub fn new(account: impl Into<String>) -> Self {
        StoreOptions { account: account.into(), waiter_ttl: Duration::from_secs(2) }
    }
}

/// How one admission asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmitOptions {
    /// A host-chosen id, unique across processes, for a request that will keep asking until it goes:
    /// if it has to wait, it registers its claim under this id (cross-process priority). `None`: a
    /// one-off question that claims nothing.
    pub waiter: Option<String>,
    /// The place a previous reply gave ([`Admitted::since`]): keeps it.
    pub since: Option<u64>,
    /// The longest it may still wait: when even empty limits could not take it in time, the reply is
    /// a reject (`DEADLINE_UNREACHABLE`, `INSUFFICIENT_BUDGET`) instead of a wait.
    pub max_wait: Option<Duration>,
    /// The request's id, given by an earlier reply ([`Admitted::request`]): the request keeps it
    /// through its waits and goes under it. `None`: the store draws one when it first answers.
    pub request: Option<RequestId>,
    /// With tenants: how many requests of its class (priority, tenant, limits) wait in this process,
    /// itself included, when only the first asks. Its registration then claims for those of them
    /// whose start tags come before another tenant's waiter, so that tenants are served by weight
    /// in every window, not one request per class. `None`: 1.
    pub backlog: Option<u64>,
}

impl AdmitOptions {
    /// Options for a waiter with this id.
    pub fn waiter(id: impl Into<String>) -> Self {
        AdmitOptions { waiter: Some(id.into()), ..AdmitOptions::default() }
    }
}

/// One script call: `EVALSHA <script_sha1()> <keys.len()> <keys...> <args...>`, or `EVAL <SCRIPT>
/// ...` after a `NOSCRIPT` error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreCall {
    /// Every key it touches, all hash-tagged with the account.
    pub keys: Vec<String>,
    /// The arguments.
    pub args: Vec<String>,
    what: CallKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallKind {
    Admit {
        needs: Needs,
        budgets: Vec<u16>,
        follow_ups: usize,
        limits: Vec<u16>,
        slot: u16,
        priority: Priority,
        endpoint: EventEndpoint,
    },
    Other,
}

impl StoreCall {
    /// An admission's route slot for the metrics (0 for any other call).
    pub(crate) fn route_slot(&self) -> u16 {
        match &self.what {
            CallKind::Admit { slot, .. } => *slot,
            CallKind::Other => 0,
        }
    }

    /// An admission's endpoint, as its events name it.
    pub(crate) fn endpoint(&self) -> EventEndpoint {
        match &self.what {
            CallKind::Admit { endpoint, .. } => endpoint.clone(),
            CallKind::Other => EventEndpoint::NoTarget,
        }
    }

    /// The whole `EVALSHA` command as strings, for clients that take a command array.
    pub fn evalsha_command(&self) -> Vec<String> {
        let mut c = Vec::with_capacity(3 + self.keys.len() + self.args.len());
        c.push("EVALSHA".to_string());
        c.push(script_sha1().to_string());
        c.push(self.keys.len().to_string());
        c.extend(self.keys.iter().cloned());
        c.extend(self.args.iter().cloned());
        c
    }
}

/// One element of a script reply, as the host's client returns it (integers and strings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum ReplyValue {
    /// An integer reply.
    Int(i64),
    /// A bulk string reply.
    Text(String),
}

impl ReplyValue {
    fn int(&self) -> Option<i64> {
        match self {
            ReplyValue::Int(v) => Some(*v),
            ReplyValue::Text(s) => s.parse().ok(),
        }
    }

    fn text(&self) -> String {
        match self {
            ReplyValue::Int(v) => v.to_string(),
            ReplyValue::Text(s) => s.clone(),
        }
    }
}

/// The answer to an admission, in the store's time (Redis server time).
#[must_use = "an admission says whether the request may go"]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Admitted {
    /// Go (the permit's `request` is unique across processes, `at` in server time), wait until an
    /// instant of server time (`None`: only another process's completion can make room), or reject.
    pub decision: Decision,
    /// Redis server time when the script ran: a wait lasts `until - server_now`.
    pub server_now: Timestamp,
    /// For a registered waiter: its place in its lane, to pass back in [`AdmitOptions::since`]: its
    /// registration instant, or with tenants its start tag (start-time fair queueing).
    pub since: Option<u64>,
    /// The request's id, drawn by the store (unique across processes), for a wait or a refusal as
    /// for a go: pass it back in [`AdmitOptions::request`] so that it goes under the same id.
    pub request: Option<RequestId>,
}

/// A sans-IO view of one account's limits held in Redis. Built from the same [`Config`] as the
/// in-memory controller; see the [module docs](self) for what the script guarantees.
///
/// # The calling contract
/// - The caller MUST run every [`StoreCall`] as `EVALSHA` and, on a `NOSCRIPT` error, as `EVAL` with
///   [`SCRIPT`] (which also loads it), then hand every reply back ([`decide`](Self::decide) for an
///   admission, [`observe`](Self::observe) for the others): the replies carry the account's epoch,
///   which is how a lost state is detected.
/// - A request that waits MUST ask again no later than the wait it was given (or within the waiter
///   TTL when none was given), or call [`withdraw`](Self::withdraw) when it gives up.
/// - After a permitted request finishes, the caller SHOULD call [`complete`](Self::complete) and run
///   the call it returns, if any (a concurrency lease otherwise holds its slot until its TTL).
/// - `now` is the host's monotonic clock; the store uses it only to know how long ago it last saw
///   the account's state.
#[derive(Debug)]
pub struct SharedStore {
    config: Config,
    limits: Vec<Limit>,
    router: Router,
    prefix: String,
    waiter_ttl_us: u64,
    quarantine_us: u64,
    meta_ttl_ms: u64,
    epoch: Option<(String, Timestamp)>,
    /// The highest id (request or reservation) this host got under the current epoch: a state
    /// whose `seq` is below it lost writes (a failover to a replica that lacked them).
    seen_seq: u64,
    clock: Option<Timestamp>,
    in_flight: FxHashMap<RequestId, Flight>,
    /// How many in flight trigger a sweep of those whose lease lapsed (doubles with real load).
    sweep_at: usize,
    /// The jitter of backoff pauses: one draw per rate-limited answer, as in memory.
    rng: Jitter,
    /// How long a limit's strikes outlive its pause (us): `lease_ttl` plus the longest pause.
    keep_us: u64,
    /// Per limit: the quota this process last told the store (and when), so that a server that
    /// reports it on every response costs a round trip only every half [`LEARNT_TTL`].
    learnt: Vec<Option<(u64, Timestamp)>>,
    /// Per limit: strikes may be held in Redis as far as this process knows (it reported a
    /// rate-limited answer on it, or an admission on it said so, and it has not cleared them since).
    struck: Vec<bool>,
    /// What this process counted: the shared driver's admissions, refusals and waits, the store's
    /// rate-limited answers and pauses (see [`SharedDriver::metrics`](crate::driver::SharedDriver::metrics)).
    pub(crate) counters: Counters,
    /// The tenants the config names (the default class left out): their class (1 + their place
    /// in name order) and step of virtual time; the default class's (class 0). See
    /// [`tenant_class`](Self::tenant_class).
    tenant_classes: FxHashMap<String, (u32, u64)>,
    default_class: (u32, u64),
}

/// How long a quota learnt from the server lowers a window in Redis after it was last reported.
const LEARNT_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Flight {
    needs: Needs,
    budgets: Vec<u16>,
    /// The host's instant of the go.
    since: Timestamp,
    /// The server's instant of the go: a rate-limited answer is a repeat when it is past the pause
    /// the server imposed.
    sent: Timestamp,
    /// One of its limits had strikes when it went: an answer that is not rate limited clears them.
    strikes: bool,
    /// Its route's metrics slot and its priority (a rate-limited answer is counted on them).
    slot: u16,
    priority: Priority,
    /// Whom it was for, as its events name it.
    endpoint: EventEndpoint,
}

fn micros_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX)
}

fn micros_ts(us: i64) -> Timestamp {
    Timestamp::from_nanos(u64::try_from(us).unwrap_or(0).saturating_mul(1000))
}

impl SharedStore {
    /// A store for a validated config; refuses configs the script cannot hold exactly.
    pub fn new(config: Config, options: StoreOptions) -> Result<Self, ConfigError> {
        config.validate()?;
        let invalid = |field: String, reason: String| Err(ConfigError::Invalid { field, reason });
        if options.account.is_empty() || options.account.contains(['{', '}']) {
            return invalid("account".into(), "must be non-empty, without '{' or '}' (it is the key hash tag)".into());
        }
        if options.waiter_ttl < Duration::from_millis(1) {
            return invalid("waiter_ttl".into(), "must be at least 1ms".into());
        }
        #[cfg(feature = "tenants")]
        for (name, t) in &config.tenants {
            // Refused rather than ignored: the processes would not keep the share from each other.
            let reason = "the shared store serves tenants by weight but does not keep shares yet: leave it out, or use the in-memory controller";
            if t.guaranteed > 0 {
                return invalid(format!("tenants.{name}.guaranteed"), reason.into());
            }
            if t.borrow.is_some() {
                return invalid(format!("tenants.{name}.borrow"), reason.into());
            }
        }
        #[cfg(feature = "keys")]
        if !config.pools.is_empty() {
            // Refused rather than ignored: every request would go on the pool's template limits.
            let reason = "the shared store has no key pools yet: leave `pools` out, or use the in-memory controller";
            return invalid("pools".into(), reason.into());
        }
        let mut quarantine_us = 0u64;
        let mut has_concurrency = false;
        for (name, l) in &config.limits {
            match *l {
                LimitConfig::Window { per, .. } => quarantine_us = quarantine_us.max(micros_up(per)),
                LimitConfig::TokenBucket { capacity, refill, per } => {
                    if u128::from(capacity) * u128::from(micros_up(per)) > LUA_EXACT {
                        return invalid(
                            format!("limits.{name}.capacity"),
                            "capacity times per (in microseconds) must stay below 2^53 in the shared store".into(),
                        );
                    }
                    quarantine_us = quarantine_us.max((capacity.div_ceil(refill)).saturating_mul(micros_up(per)));
                }
                LimitConfig::Concurrency { .. } => has_concurrency = true,
                LimitConfig::Budget { .. } => {}
                #[cfg(feature = "keys")]
                LimitConfig::Breaker(_) => {
                    // Refused rather than ignored: each process would open its own.
                    let reason = "the shared store has no circuit breakers yet: leave this limit out, or use the in-memory controller";
                    return invalid(format!("limits.{name}.kind"), reason.into());
                }
            }
        }
        if has_concurrency {
            quarantine_us = quarantine_us.max(micros_up(config.lease_ttl));
        }
        let longest = quarantine_us.max(micros_up(config.lease_ttl)).max(micros_up(config.reservation_ttl));
        let meta_ttl_ms = longest.div_ceil(1000) + 60_000;
        let limits: Vec<Limit> = config.limits.iter().map(|(name, c)| Limit::new(name, c)).collect();
        let router = Router::new(&config, &limits);
        let f = &config.feedback;
        let longest_pause =
            f.blocks.values().map(|b| b.0).fold(f.max_block.max(f.cooldown).max(f.block), Duration::max);
        let keep_us = micros_up(config.lease_ttl).saturating_add(micros_up(longest_pause));
        let rng = Jitter::new(f.seed);
        let n_limits = limits.len();
        let counters = Counters::new(config.routes.len());
        let step = |weight: u32| SHARE / u64::from(weight.max(1));
        let tenant_classes = (config.tenants.iter().filter(|(n, _)| *n != DEFAULT_TENANT))
            .zip(1u32..)
            .map(|((name, t), class)| (name.clone(), (class, step(t.weight))))
            .collect();
        let default_class = (0, step(config.tenants.get(DEFAULT_TENANT).map_or(1, |t| t.weight)));
        Ok(SharedStore {
            tenant_classes,
            default_class,
            counters,
            rng,
            keep_us,
            prefix: format!("tc:{{{}}}:", options.account),
            waiter_ttl_us: micros_up(options.waiter_ttl),
            quarantine_us,
            meta_ttl_ms,
            config,
            limits,
            router,
            epoch: None,
            seen_seq: 0,
            clock: None,
            in_flight: FxHashMap::default(),
            sweep_at: 4096,
            learnt: vec![None; n_limits],
            struck: vec![false; n_limits],
        })
    }

    /// The config this store runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The longest any limit stays closed after the account's state was found lost (each limit is
    /// closed for its own: a window's `per`, a bucket's full refill, a lease).
    pub fn quarantine(&self) -> Duration {
        Duration::from_micros(self.quarantine_us)
    }

    /// FOR TESTS ONLY (feature `test-hooks`, enabled by this crate's own tests): stamps every
    /// following call with this instant (whole microseconds) instead of Redis `TIME`, so a
    /// differential test can replay the same timestamps through the in-memory controller and the
    /// store. `None` (the default) uses server time.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn set_test_clock(&mut self, at: Option<Timestamp>) {
        self.clock = at;
    }

    fn header(&self, now: Timestamp, op: &str) -> Vec<String> {
        let clock = self.clock.map_or_else(String::new, |t| (t.as_nanos() / 1000).to_string());
        // The epoch is worth sending only while the meta key must still exist: a host silent for
        // longer would otherwise take an expired (idle) account for a lost one.
        let window = Duration::from_millis(self.meta_ttl_ms.saturating_sub(10_000));
        let epoch = match &self.epoch {
            Some((e, seen)) if now.saturating_since(*seen) < window && self.seen_seq > 0 => {
                format!("{e}:{}", self.seen_seq)
            }
            Some((e, seen)) if now.saturating_since(*seen) < window => e.clone(),
            _ => String::new(),
        };
        vec![op.into(), clock, epoch, self.quarantine_us.to_string(), self.meta_ttl_ms.to_string()]
    }

    /// The pub/sub channel on which the script announces freed room to waiting processes
    /// (`tc:{account}:wake`): a host that subscribes asks again at once on a message instead of at
    /// its next poll. Messages carry nothing to act on but the wake-up itself.
    pub fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }

    fn base_keys(&self) -> Vec<String> {
        vec![
            format!("{}meta", self.prefix),
            format!("{}rv", self.prefix),
            format!("{}rx", self.prefix),
            format!("{}rt", self.prefix),
            format!("{}ri", self.prefix),
        ]
    }

    fn push_limit_keys(&self, keys: &mut Vec<String>, limit: u16) {
        let l = &self.limits[usize::from(limit)];
        let kind = match self.config.limits[&*l.name] {
            LimitConfig::Window { .. } => "w",
            LimitConfig::TokenBucket { .. } => "b",
            LimitConfig::Concurrency { .. } => "c",
            LimitConfig::Budget { .. } => "g",
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(_) => unreachable!("refused by the store's validation"),
        };
        keys.push(format!("{}{kind}:{}", self.prefix, l.name));
        keys.push(format!("{}s:{}", self.prefix, l.name));
        keys.push(format!("{}o:{}", self.prefix, l.name));
        keys.push(format!("{}f:{}", self.prefix, l.name));
        keys.push(format!("{}m:{}", self.prefix, l.name));
        keys.push(format!("{}h:{}", self.prefix, l.name));
        keys.push(format!("{}x:{}", self.prefix, l.name));
    }

    /// name, kind, need, total, and five parameters.
    fn push_limit_args(&self, args: &mut Vec<String>, limit: u16, need: u64, total: u64) {
        let l = &self.limits[usize::from(limit)];
        let (kind, p): (&str, [i128; 5]) = match self.config.limits[&*l.name] {
            LimitConfig::Window { max, per, hold } => {
                ("w", [max.into(), micros_up(per).into(), i128::from(hold == WindowHold::Go), 0, 0])
            }
            LimitConfig::TokenBucket { capacity, refill, per } => {
                ("b", [capacity.into(), refill.into(), micros_up(per).into(), 0, 0])
            }
            LimitConfig::Concurrency { max } => ("c", [max.into(), 0, 0, 0, 0]),
            LimitConfig::Budget { refill, per, max, floor, initial, .. } => {
                ("g", [max.into(), refill.into(), micros_up(per).into(), floor.into(), initial.map_or(-1, i128::from)])
            }
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(_) => unreachable!("refused by the store's validation"),
        };
        args.push(l.name.to_string());
        args.push(kind.into());
        args.push(need.to_string());
        args.push(total.to_string());
        args.extend(p.iter().map(i128::to_string));
        args.push(self.quarantine_of(limit).to_string());
    }

    /// How long `limit` stays closed after the account's state was found lost (us): until the
    /// server has forgotten what the store forgot on it: a window's `per`, a bucket's full refill,
    /// a concurrency limit's lease. A budget's balance is learnt again instead (0).
    fn quarantine_of(&self, limit: u16) -> u64 {
        match self.config.limits[&*self.limits[usize::from(limit)].name] {
            LimitConfig::Window { per, .. } => micros_up(per),
            LimitConfig::TokenBucket { capacity, refill, per } => {
                capacity.div_ceil(refill).saturating_mul(micros_up(per))
            }
            LimitConfig::Concurrency { .. } => micros_up(self.config.lease_ttl),
            LimitConfig::Budget { .. } => 0,
            #[cfg(feature = "keys")]
            LimitConfig::Breaker(_) => 0,
        }
    }

    /// The tenant class `request` is served in (1 + its tenant's place among the tenants the config
    /// names, else 0 for the default class) and the class's step of virtual time (one request's
    /// share at its weight, as in memory); `None` without tenants.
    pub(crate) fn tenant_class(&self, request: &Request) -> Option<(u32, u64)> {
        if self.config.tenants.is_empty() {
            return None;
        }
        let named = request.tenant.as_deref().and_then(|n| self.tenant_classes.get(n));
        Some(named.copied().unwrap_or(self.default_class))
    }

    /// The call that admits `request` now (or says how long to wait). Requests that can never go
    /// (unknown route or limit, cost above a capacity) are refused here, without a round trip.
    pub fn admit(
        &mut self,
        now: Timestamp,
        request: &Request,
        options: &AdmitOptions,
    ) -> Result<StoreCall, RequestError> {
        let resolved = self.router.resolve(&request.target, &request.limits, request.cost, &self.limits)?;
        let mut follow_ups = Vec::with_capacity(request.reserve.len());
        for f in &request.reserve {
            let r = self.router.resolve(&f.target, &f.limits, f.cost, &self.limits)?;
            follow_ups.push((r.needs, f.ttl.unwrap_or(self.config.reservation_ttl)));
        }
        let total: Vec<Need> = merge_needs(std::iter::once(&resolved.needs).chain(follow_ups.iter().map(|(n, _)| n)));
        for n in &total {
            let limit = &self.limits[usize::from(n.limit)];
            if n.cost > limit.capacity() {
                return Err(RequestError::CostExceedsCapacity {
                    limit: limit.name.to_string(),
                    cost: n.cost,
                    capacity: limit.capacity(),
                });
            }
        }
        let mut keys = self.base_keys();
        let mut args = self.header(now, "admit");
        args.push((request.priority as u8).to_string());
        args.push(micros_up(self.config.lease_ttl).to_string());
        args.push(options.waiter.clone().unwrap_or_default());
        args.push(options.since.map_or_else(String::new, |s| s.to_string()));
        args.push(self.waiter_ttl_us.to_string());
        args.push(request.spend.map_or_else(String::new, |r| r.0.to_string()));
        args.push(options.max_wait.map_or_else(String::new, |d| micros_up(d).to_string()));
        args.push(total.len().to_string());
        args.push(follow_ups.len().to_string());
        args.push(options.request.map_or_else(String::new, |r| r.0.to_string()));
        match self.tenant_class(request) {
            Some((class, step)) => {
                args.push(class.to_string());
                args.push(step.to_string());
            }
            None => args.extend([String::new(), String::new()]),
        }
        args.push(options.backlog.unwrap_or(1).to_string());
        for n in &total {
            let need = resolved.needs.iter().find(|m| m.limit == n.limit).map_or(0, |m| m.cost);
            self.push_limit_keys(&mut keys, n.limit);
            self.push_limit_args(&mut args, n.limit, need, n.cost);
        }
        for (needs, ttl) in &follow_ups {
            args.push(micros_up(*ttl).max(1).to_string());
            args.push(needs.len().to_string());
            for n in needs {
                args.push(self.limits[usize::from(n.limit)].name.to_string());
                args.push(n.cost.to_string());
            }
        }
        Ok(StoreCall {
            keys,
            args,
            what: CallKind::Admit {
                needs: resolved.needs,
                budgets: resolved.budgets.as_slice().to_vec(),
                follow_ups: follow_ups.len(),
                limits: total.iter().map(|n| n.limit).collect(),
                slot: Router::slot_of(&resolved.endpoint),
                priority: request.priority,
                endpoint: self.router.endpoint_of(&resolved.endpoint),
            },
        })
    }

    fn reply_head(&mut self, now: Timestamp, reply: &[ReplyValue]) -> Result<(i64, Timestamp), StoreError> {
        let bad = |reason: &str| StoreError::Reply { reason: reason.to_string() };
        let status = reply.first().and_then(ReplyValue::int).ok_or_else(|| bad("no status"))?;
        let server = reply.get(1).and_then(ReplyValue::int).ok_or_else(|| bad("no server time"))?;
        let epoch = reply.get(2).ok_or_else(|| bad("no epoch"))?.text();
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.seen_seq = 0;
        }
        self.epoch = Some((epoch, now));
        Ok((status, micros_ts(server)))
    }

    /// Takes a reply to a call other than an admission (complete, release, withdraw): notes the
    /// account's epoch. For a release, says whether the reservation was live.
    pub fn observe(&mut self, now: Timestamp, reply: &[ReplyValue]) -> Result<bool, StoreError> {
        self.reply_head(now, reply)?;
        Ok(reply.get(3).and_then(ReplyValue::int) == Some(1))
    }

    /// For the reply to a [`complete`](Self::complete) call: until when the answer paused its
    /// limits as rate limited, in the host's time (`None`: it paused none).
    pub fn paused_until(&self, now: Timestamp, reply: &[ReplyValue]) -> Option<Timestamp> {
        let server_now = reply.get(1).and_then(ReplyValue::int)?;
        let until = reply.get(4).and_then(ReplyValue::int).filter(|u| *u >= 0)?;
        let left = u64::try_from(until.saturating_sub(server_now)).unwrap_or(0);
        Some(now.saturating_add(Duration::from_micros(left)))
    }

    /// A request admitted by this store and not yet completed: whom it was for, its priority and
    /// when it went (host time).
    pub(crate) fn in_flight(&self, request: RequestId) -> Option<(&EventEndpoint, Priority, Timestamp)> {
        self.in_flight.get(&request).map(|f| (&f.endpoint, f.priority, f.since))
    }

    /// Interprets the reply to an [`admit`](Self::admit) call.
    pub fn decide(&mut self, now: Timestamp, call: &StoreCall, reply: &[ReplyValue]) -> Result<Admitted, StoreError> {
        let CallKind::Admit { needs, budgets, follow_ups, slot, priority, endpoint, .. } = &call.what else {
            return Err(StoreError::Reply { reason: "decide() takes the call made by admit()".into() });
        };
        let (status, server_now) = self.reply_head(now, reply)?;
        let bad = |reason: String| StoreError::Reply { reason };
        let int = |i: usize| reply.get(i).and_then(ReplyValue::int).ok_or_else(|| bad(format!("field {i} missing")));
        let text = |i: usize| reply.get(i).map(ReplyValue::text).ok_or_else(|| bad(format!("field {i} missing")));
        // Where each reply carries the request's id: a go's field 3, a wait's field 5, a refusal's last.
        let id_at = |v: Option<&ReplyValue>| v.and_then(ReplyValue::int).and_then(|r| u64::try_from(r).ok());
        let (decision, since, request) = match status {
            1 => {
                let request = RequestId(u64::try_from(int(3)?).unwrap_or(0));
                let mut reservations = Vec::with_capacity(*follow_ups);
                for i in 0..*follow_ups {
                    reservations.push(ReservationId(u64::try_from(int(4 + i)?).unwrap_or(0)));
                }
                if self.in_flight.len() > self.sweep_at {
                    // Requests never completed: their leases lapsed in Redis long ago. With many in
                    // flight for real, the next sweep waits until as many again went (amortized O(1)).
                    let lease = self.config.lease_ttl;
                    self.in_flight.retain(|_, f| now.saturating_since(f.since) < lease);
                    self.sweep_at = (2 * self.in_flight.len()).max(4096);
                }
                // After the reservations: whether a limit it took had strikes.
                let strikes = reply.get(4 + *follow_ups).and_then(ReplyValue::int) == Some(1);
                if strikes {
                    for n in needs {
                        self.struck[usize::from(n.limit)] = true;
                    }
                }
                let flight = Flight {
                    needs: needs.clone(),
                    budgets: budgets.clone(),
                    since: now,
                    sent: server_now,
                    strikes,
                    slot: *slot,
                    priority: *priority,
                    endpoint: endpoint.clone(),
                };
                self.in_flight.insert(request, flight);
                // Reservation ids are drawn after the request's: the highest id of the reply.
                self.seen_seq = self.seen_seq.max(reservations.iter().map(|r| r.0).max().unwrap_or(0));
                (Decision::Go(Permit { request, reservations, at: server_now, key: None }), None, Some(request.0))
            }
            2 => {
                let until = int(3)?;
                let wait = Decision::Wait { until: (until >= 0).then(|| micros_ts(until)) };
                (wait, u64::try_from(int(4)?).ok(), id_at(reply.get(5)))
            }
            3 => (
                Decision::Reject(match text(3)?.as_str() {
                    "BUDGET_UNKNOWN" => RequestError::BudgetUnknown { limit: text(4)? },
                    // A window lowered by a quota the server reported (in any process).
                    "COST_EXCEEDS_CAPACITY" => RequestError::CostExceedsCapacity {
                        limit: text(4)?,
                        cost: u64::try_from(int(5)?).unwrap_or(0),
                        capacity: u64::try_from(int(6)?).unwrap_or(0),
                    },
                    "INSUFFICIENT_BUDGET" => RequestError::InsufficientBudget {
                        limit: text(4)?,
                        needed: u64::try_from(int(5)?).unwrap_or(0),
                        available: int(6)?,
                        ahead: reply.get(8).and_then(ReplyValue::int).map_or(0, |a| u64::try_from(a).unwrap_or(0)),
                        enough_at: Some(micros_ts(int(7)?)),
                    },
                    "DEADLINE_UNREACHABLE" => {
                        RequestError::DeadlineUnreachable { earliest: micros_ts(int(4)?), deadline: micros_ts(int(5)?) }
                    }
                    other => return Err(bad(format!("unknown reject code {other:?}"))),
                }),
                None,
                id_at(reply.last()),
            ),
            other => return Err(bad(format!("unexpected status {other} for an admission"))),
        };
        self.seen_seq = self.seen_seq.max(request.unwrap_or(0));
        Ok(Admitted { decision, server_now, since, request: request.map(RequestId) })
    }

    /// The call that drops a waiter's claims when it gives up (deadline, cancel) before going.
    pub fn withdraw(&self, now: Timestamp, waiter: &str, admit_call: &StoreCall) -> StoreCall {
        let limits = match &admit_call.what {
            CallKind::Admit { limits, .. } => limits.clone(),
            CallKind::Other => Vec::new(),
        };
        let mut keys = self.base_keys();
        let mut args = self.header(now, "withdraw");
        args.push(waiter.to_string());
        args.push(limits.len().to_string());
        for l in limits {
            self.push_limit_keys(&mut keys, l);
        }
        StoreCall { keys, args, what: CallKind::Other }
    }

    /// Reports the outcome of a permitted request. Returns the call to run, or `None` when there is
    /// nothing to tell the store (no concurrency lease to release, nothing learnt from the
    /// response): the fast path stays at one round trip per admission.
    ///
    /// What the response says applies to every process, by the in-memory controller's rules
    /// ([`TrafficControl::complete`](crate::TrafficControl::complete)): a 429 or block pauses the
    /// limits it points at for the server's time (`Retry-After`, a reset, a block's end), else for
    /// the limit's block doubled on every repeat, jittered (one draw of this store's generator per
    /// rate-limited answer, seeded by `feedback.seed`) and capped; the strikes are kept in Redis
    /// with the pause and cleared by an answer that is not rate limited (when the admission saw
    /// strikes). A budget report sets the shared balance. A completion past the request's lease
    /// teaches nothing: its holds lapsed already, as in memory.
    pub fn complete(&mut self, now: Timestamp, request: RequestId, outcome: &Outcome) -> Option<StoreCall> {
        self.finish(now, request, outcome, true).0
    }

    /// [`complete`](Self::complete), and whether the answer was rate limited (a 429, a block) for
    /// a request this store knows in flight: the driver retries those.
    pub(crate) fn complete_told(
        &mut self,
        now: Timestamp,
        request: RequestId,
        outcome: &Outcome,
    ) -> (Option<StoreCall>, bool) {
        self.finish(now, request, outcome, true)
    }

    /// A completion (`answered`) or a cancel; and whether the answer was rate limited.
    fn finish(
        &mut self,
        now: Timestamp,
        request: RequestId,
        outcome: &Outcome,
        answered: bool,
    ) -> (Option<StoreCall>, bool) {
        let Some(flight) = self.in_flight.remove(&request) else { return (None, false) };
        if now.saturating_since(flight.since) >= self.config.lease_ttl {
            return (None, false);
        }
        // A concurrency slot, or a window's hold until the completion (see `WindowHold`).
        let holds_lease = flight.needs.iter().any(|n| {
            matches!(
                self.config.limits[&*self.limits[usize::from(n.limit)].name],
                LimitConfig::Concurrency { .. } | LimitConfig::Window { hold: WindowHold::Completion, .. }
            )
        });
        let feedback = if outcome.headers.is_empty() && outcome.body.is_none() && outcome.status != Some(429) {
            Feedback::default()
        } else {
            Feedback::from_outcome(outcome, outcome.body.as_deref(), outcome.unix_time)
        };
        if answered && feedback.rate_limited {
            self.counters.count(flight.slot, flight.priority, Counted::RateLimited);
        }
        let clears = answered
            && !feedback.rate_limited
            && (flight.strikes || flight.needs.iter().any(|n| self.struck[usize::from(n.limit)]));
        let exhausted = !feedback.rate_limited && feedback.remaining == Some(0) && feedback.reset.is_some();
        // A quota smaller than the window's max lowers it for every process (see `quota_target`).
        let learnt = feedback.limit.and_then(|quota| {
            let l = crate::controller::quota_target(&self.config, &self.limits, &flight.needs, &feedback)?;
            let told = self.learnt[usize::from(l)];
            let fresh = told.is_some_and(|(q, at)| q <= quota && now.saturating_since(at) < LEARNT_TTL / 2);
            (quota < self.limits[usize::from(l)].capacity() && !fresh).then_some((l, quota))
        });
        if let Some((l, quota)) = learnt {
            self.learnt[usize::from(l)] = Some((quota, now));
        }
        if !holds_lease
            && !feedback.rate_limited
            && feedback.budget.is_none()
            && !clears
            && !exhausted
            && learnt.is_none()
        {
            return (None, false);
        }
        let mut touched: Vec<u16> = flight.needs.iter().map(|n| n.limit).collect();
        touched.extend(flight.budgets.iter().copied());
        touched.sort_unstable();
        touched.dedup();
        let targets = if feedback.rate_limited || exhausted {
            crate::controller::pause_targets(&self.config, &self.limits, &flight.needs, &feedback)
        } else {
            Vec::new()
        };
        let jitter = if feedback.rate_limited { self.config.feedback.jitter * self.rng.next_unit() } else { 0.0 };
        let mut keys = self.base_keys();
        let mut args = self.header(now, "complete");
        args.push(if holds_lease { request.0.to_string() } else { String::new() });
        args.push((flight.sent.as_nanos() / 1000).to_string());
        args.push(self.keep_us.to_string());
        args.push(touched.len().to_string());
        for &l in &touched {
            self.push_limit_keys(&mut keys, l);
            let limit = &self.limits[usize::from(l)];
            // What the answer does to the limit's pause: the script keeps the strikes and picks the
            // pause for their count from the ladder worked out here (see `Told`).
            let told = targets.contains(&l).then(|| Told::of(&self.config.feedback, &limit.name, &feedback)).flatten();
            // Counted by the first strike's reason: the strikes are counted in Redis, so a repeat
            // shows as `block`, not `backoff`, in this process's counters.
            if let Some(t) = &told {
                self.counters.paused(l, t.reason(1).as_str());
            }
            let (mode, server, ladder) = match told {
                Some(t @ Told::Block { base, cooldown, .. }) => {
                    self.struck[usize::from(l)] = true;
                    let ladder: Vec<String> = t.ladder(jitter).into_iter().map(|d| micros_up(d).to_string()).collect();
                    (if cooldown { "cooldown" } else { "block" }, micros_up(base).to_string(), ladder.join(","))
                }
                Some(Told::Server(d)) => {
                    self.struck[usize::from(l)] = true;
                    ("retry_after", micros_up(d).to_string(), String::new())
                }
                Some(Told::Exhausted(d)) => {
                    self.struck[usize::from(l)] = false;
                    ("exhausted", micros_up(d).to_string(), String::new())
                }
                None if clears && flight.needs.iter().any(|n| n.limit == l) => {
                    self.struck[usize::from(l)] = false;
                    ("clear", String::new(), String::new())
                }
                None => ("", String::new(), String::new()),
            };
            let kind = match self.config.limits[&*limit.name] {
                LimitConfig::Window { .. } => "w",
                LimitConfig::TokenBucket { .. } => "b",
                LimitConfig::Concurrency { .. } => "c",
                LimitConfig::Budget { .. } => "g",
                #[cfg(feature = "keys")]
                LimitConfig::Breaker(_) => unreachable!("refused by the store's validation"),
            };
            let (report, refill_in, max, per) = match (self.config.limits[&*limit.name], &feedback.budget) {
                (LimitConfig::Budget { max, per, .. }, Some(b)) if flight.budgets.contains(&l) => (
                    b.tokens_left.to_string(),
                    b.refill_in.map_or_else(String::new, |d| micros_up(d).to_string()),
                    max,
                    micros_up(per),
                ),
                (LimitConfig::Window { per, max, .. }, _) => (String::new(), String::new(), max, micros_up(per)),
                _ => (String::new(), String::new(), 0, 0),
            };
            let learnt = learnt.filter(|&(t, _)| t == l).map_or_else(String::new, |(_, q)| q.to_string());
            // The cost a window holds until now (its member in the in-flight set).
            let held = flight
                .needs
                .iter()
                .find(|n| n.limit == l && kind == "w")
                .map_or_else(String::new, |n| n.cost.to_string());
            args.extend([limit.name.to_string(), kind.into(), mode.into(), server, ladder, report, refill_in]);
            args.extend([max.to_string(), per.to_string(), held, learnt]);
        }
        args.push(micros_up(LEARNT_TTL).to_string());
        (Some(StoreCall { keys, args, what: CallKind::Other }), feedback.rate_limited)
    }

    /// Forgets a permitted request that will not be sent, releasing its concurrency lease (`None`
    /// when it held none).
    pub fn cancel(&mut self, now: Timestamp, request: RequestId) -> Option<StoreCall> {
        let flight = self.in_flight.get_mut(&request)?;
        // A cancel is a completion that learnt nothing: no budget report, no strikes cleared.
        flight.budgets.clear();
        self.finish(now, request, &Outcome::default(), false).0
    }

    /// The call that releases a reservation early (the follow-up will not be sent).
    pub fn release(&self, now: Timestamp, reservation: ReservationId) -> StoreCall {
        let mut args = self.header(now, "release");
        args.push(reservation.0.to_string());
        StoreCall { keys: self.base_keys(), args, what: CallKind::Other }
    }

    /// The call that sets a budget to the server's balance (Keepa's `tokensLeft`, `refillIn`).
    pub fn sync_budget(
        &self,
        now: Timestamp,
        limit: &str,
        tokens_left: i64,
        refill_in: Option<Duration>,
    ) -> Result<StoreCall, RequestError> {
        let idx = self.router.limit_index(limit).ok_or_else(|| RequestError::UnknownLimit { limit: limit.into() })?;
        let LimitConfig::Budget { max, per, .. } = self.config.limits[limit] else {
            return Err(RequestError::UnknownLimit { limit: format!("{limit} (not a budget)") });
        };
        let mut keys = self.base_keys();
        let mut args = self.header(now, "complete");
        args.extend([String::new(), String::new(), self.keep_us.to_string(), "1".into()]);
        self.push_limit_keys(&mut keys, idx);
        args.extend([
            limit.to_string(),
            "g".into(),
            String::new(),
            String::new(),
            String::new(),
            tokens_left.to_string(),
        ]);
        args.push(refill_in.map_or_else(String::new, |d| micros_up(d).to_string()));
        args.extend([max.to_string(), micros_up(per).to_string(), String::new(), String::new()]);
        args.push(micros_up(LEARNT_TTL).to_string());
        Ok(StoreCall { keys, args, what: CallKind::Other })
    }

    /// This process's counters by name, with the gauges of `snapshot`.
    #[cfg(feature = "metrics")]
    pub(crate) fn metrics(&self, snapshot: Snapshot) -> crate::Metrics {
        let limits: Vec<&str> = self.limits.iter().map(|l| &*l.name).collect();
        self.counters.report(&self.router.route_names(), &limits, snapshot)
    }

    /// The call that reads every limit's shared state; [`snapshot`](Self::snapshot) reads its reply.
    pub fn snapshot_call(&self, now: Timestamp) -> StoreCall {
        let mut keys = self.base_keys();
        let mut args = self.header(now, "snapshot");
        args.push(self.limits.len().to_string());
        for i in 0..self.limits.len() {
            let i = i as u16;
            self.push_limit_keys(&mut keys, i);
            self.push_limit_args(&mut args, i, 0, 0);
        }
        StoreCall { keys, args, what: CallKind::Other }
    }

    /// Every limit's shared state, from the reply to [`snapshot_call`](Self::snapshot_call); times
    /// in server time. `waiting` counts the registered waiters of every lane, per limit summed, in
    /// its NORMAL slot; `in_flight` is this process's own.
    pub fn snapshot(&mut self, now: Timestamp, reply: &[ReplyValue]) -> Result<Snapshot, StoreError> {
        let (_, server_now) = self.reply_head(now, reply)?;
        let int = |i: usize| {
            reply
                .get(i)
                .and_then(ReplyValue::int)
                .ok_or_else(|| StoreError::Reply { reason: format!("field {i} missing") })
        };
        let mut limits = Vec::with_capacity(self.limits.len());
        let mut waiters = 0usize;
        for (i, l) in self.limits.iter().enumerate() {
            let b = 4 + i * 9;
            let used = int(b)?;
            let reserved = u64::try_from(int(b + 2)?).unwrap_or(0);
            // A window's max may have been lowered by a quota the server reported.
            let capacity = match self.config.limits[&*l.name] {
                LimitConfig::Window { .. } => u64::try_from(int(b + 1)?).unwrap_or(0),
                _ => l.capacity(),
            };
            let (used, balance) = match self.config.limits[&*l.name] {
                LimitConfig::Budget { max, .. } if used >= 0 => {
                    (u64::try_from(used).unwrap_or(0), Some(i64::try_from(max).unwrap_or(i64::MAX) - used))
                }
                _ if used < 0 => (capacity, None),
                _ => (u64::try_from(used).unwrap_or(0), None),
            };
            waiters += usize::try_from(int(b + 4)?).unwrap_or(0);
            let next_free = int(b + 5)?;
            limits.push(LimitSnapshot {
                name: l.name.to_string(),
                kind: l.kind(),
                capacity,
                used,
                reserved,
                available: capacity.saturating_sub(used.saturating_add(reserved)),
                next_free: (next_free >= 0).then(|| micros_ts(next_free)),
                balance,
                pause: (int(b + 3)? > server_now.as_nanos() as i64 / 1000).then(|| {
                    let reason = reply.get(b + 6).map(ReplyValue::text);
                    PauseSnapshot {
                        until: micros_ts(int(b + 3).unwrap_or(0)),
                        server_until: micros_ts(int(b + 7).unwrap_or(0)),
                        reason: reason.as_deref().and_then(PauseReason::parse).unwrap_or(PauseReason::Block).as_str(),
                        strikes: int(b + 8).ok().and_then(|s| u32::try_from(s).ok()).unwrap_or(0),
                    }
                }),
            });
        }
        Ok(Snapshot {
            at: server_now,
            limits,
            waiting: [0, 0, waiters, 0],
            in_flight: self.in_flight.len(),
            reservations: 0,
        })
    }
}

/// Describes a call for logs and error messages: its op and keys (no arguments).
impl std::fmt::Display for StoreCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.args.first().map_or("?", String::as_str), self.keys.join(" "))
    }
}
