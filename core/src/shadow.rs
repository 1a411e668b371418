//! Shadow mode: a second config run beside the enforced one on the same live traffic, deciding
//! nothing that is acted on, so an operator can see what a stricter or looser config would have
//! done before it runs ([`TrafficControl::set_shadow`](crate::TrafficControl::set_shadow)).
//!
//! The shadow is a controller of its own, fed what the enforced one sees, at the instants it sees
//! it: each request's arrival; each response's outcome, replayed after the same time in flight
//! measured from the shadow's own go (a shadow that let a request go later finishes it later);
//! cancellations by the caller. It runs lazily on the host's clock: every call into the enforced
//! controller first plays the shadow's pending instants (its wake-ups and completions) in order up
//! to `now`. The report counts the same requests on both sides: went at once, went after a wait
//! (with wait percentiles), refused by code, cancelled, still waiting.
//!
//! What it cannot know, and how it is taken:
//! - a request the enforced controller refused (a deadline, a full queue) stays in the shadow,
//!   which may let it go later: it then finishes at once with a success (it was never sent);
//! - a request the shadow lets go before the enforced one finishes no earlier than the enforced
//!   one's completion (the response is not known before): the shadow holds concurrency slots
//!   and completion-held windows that long, which errs on its strict side;
//! - the direct path (`try_acquire`): only its final answer is seen (a go or a refusal), so a
//!   request that waited on the host between attempts arrives in the shadow when it went.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::config::Config;
use crate::controller::TrafficControl;
use crate::error::ConfigError;
use crate::event::EventKind;
use crate::request::{Completion, Outcome, Request, RequestId, ReservationId};
use crate::time::Timestamp;

/// One request as both sides see it.
#[derive(Debug)]
struct Entry {
    arrived: Timestamp,
    /// Its id in the shadow, if the shadow took it.
    sid: Option<RequestId>,
    /// The enforced side: when it went (the current attempt), and whether it has ended.
    real_went: Option<Timestamp>,
    /// Its first go was counted, on either side.
    real_counted: bool,
    shadow_counted: bool,
    real_done: bool,
    /// Attempts the enforced side finished, not yet replayed in the shadow: (time in flight, outcome).
    attempts: Vec<(Duration, Outcome)>,
    /// The reservations the enforced permit made, in follow-up order.
    real_reservations: Vec<ReservationId>,
    /// The reservations the shadow's permit made.
    shadow_reservations: Vec<ReservationId>,
    shadow: Side,
}

impl Entry {
    /// Pairs the follow-ups' reservations once both sides made theirs (a follow-up whose pair is
    /// missing competes in the shadow like any request).
    fn pair(&self, map: &mut FxHashMap<ReservationId, ReservationId>) {
        for (real, own) in self.real_reservations.iter().zip(&self.shadow_reservations) {
            map.insert(*real, *own);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Queued in the shadow under this id.
    Waiting(RequestId),
    /// Went in the shadow at this instant (its completion comes from an enforced attempt).
    Went(RequestId, Timestamp),
    /// Finished, refused or cancelled in the shadow.
    Done,
}

/// The shadow of a [`TrafficControl`]: see the module docs.
#[derive(Debug)]
pub(crate) struct Shadow {
    inner: TrafficControl,
    since: Timestamp,
    /// By the enforced request id.
    entries: FxHashMap<RequestId, Entry>,
    /// Shadow request id → enforced request id.
    ids: FxHashMap<RequestId, RequestId>,
    /// Completions to replay: (instant, shadow id), with the outcome in `outcomes`.
    completions: BinaryHeap<Reverse<(Timestamp, RequestId)>>,
    outcomes: FxHashMap<RequestId, Outcome>,
    /// Enforced reservation → the shadow's own reservation for the same follow-up.
    reservations: FxHashMap<ReservationId, ReservationId>,
    enforced: Tally,
    shadowed: Tally,
}

impl Shadow {
    pub(crate) fn new(now: Timestamp, config: Config) -> Result<Self, ConfigError> {
        let mut inner = TrafficControl::new(config)?;
        // Only the decisions: the Go of a request that waited (or reserved), refusals, expiries.
        inner.set_event_log(false);
        inner.poll(now);
        Ok(Shadow {
            inner,
            since: now,
            entries: FxHashMap::default(),
            ids: FxHashMap::default(),
            completions: BinaryHeap::new(),
            outcomes: FxHashMap::default(),
            reservations: FxHashMap::default(),
            enforced: Tally::default(),
            shadowed: Tally::default(),
        })
    }

    /// The config the shadow runs.
    pub(crate) fn config(&self) -> &Config {
        self.inner.config()
    }

    /// A request arrived at the enforced controller (its id there: `id`).
    pub(crate) fn arrive(&mut self, now: Timestamp, id: RequestId, request: &Request) {
        self.advance(now);
        self.enforced.requests += 1;
        self.shadowed.requests += 1;
        let mut request = request.clone();
        // A follow-up spends the shadow's reservation for the same follow-up, when it made one.
        request.spend = request.spend.and_then(|r| self.reservations.remove(&r));
        let shadow = match self.inner.submit(now, &request) {
            Ok(sid) => {
                self.ids.insert(sid, id);
                if self.inner.is_waiting(sid) {
                    Side::Waiting(sid)
                } else {
                    self.shadowed.went(Duration::ZERO);
                    Side::Went(sid, now)
                }
            }
            Err(e) => {
                self.shadowed.refused(e.code());
                Side::Done
            }
        };
        let entry = Entry {
            arrived: now,
            sid: match shadow {
                Side::Waiting(sid) | Side::Went(sid, _) => Some(sid),
                Side::Done => None,
            },
            real_went: None,
            real_counted: false,
            shadow_counted: !matches!(shadow, Side::Waiting(_)),
            real_done: false,
            attempts: Vec::new(),
            real_reservations: Vec::new(),
            shadow_reservations: Vec::new(),
            shadow,
        };
        self.entries.insert(id, entry);
        // A Go for a request that reserved comes out of poll even when it went at once.
        self.drain(now);
    }

    /// The enforced controller let request `id` go (first attempt or a retry). `at_once`: it never
    /// had to wait (a shared store's round trip is not a wait), though time passed since it arrived.
    pub(crate) fn went(&mut self, now: Timestamp, id: RequestId, reservations: &[ReservationId], at_once: bool) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        if !e.real_counted {
            e.real_counted = true;
            self.enforced.went(if at_once { Duration::ZERO } else { now.saturating_since(e.arrived) });
        }
        e.real_went = Some(now);
        if !reservations.is_empty() {
            e.real_reservations = reservations.to_vec();
            e.pair(&mut self.reservations);
        }
    }

    /// The enforced controller finished an attempt of request `id` with `outcome`; `last`: the
    /// request has ended there (no retry).
    pub(crate) fn completed(&mut self, now: Timestamp, id: RequestId, outcome: &Outcome, last: bool) {
        self.advance(now);
        let Some(e) = self.entries.get_mut(&id) else { return };
        let in_flight = e.real_went.take().map_or(Duration::ZERO, |went| now.saturating_since(went));
        if e.shadow != Side::Done {
            e.attempts.push((in_flight, outcome.clone()));
        }
        e.real_done |= last;
        if let Side::Went(sid, went) = e.shadow {
            self.schedule(id, sid, went, now);
        }
        self.forget_if_done(id);
    }

    /// The enforced controller ended request `id` without a response: refused, expired or
    /// cancelled by its caller.
    pub(crate) fn ended(&mut self, now: Timestamp, id: RequestId, kind: &EventKind) {
        match kind {
            EventKind::Rejected { error } => self.ended_by(now, id, Some(error.code())),
            EventKind::Expired { .. } => self.ended_by(now, id, Some("DEADLINE_EXCEEDED")),
            _ => self.ended_by(now, id, None),
        }
    }

    /// [`ended`](Self::ended) by what the enforced side said: refused with a code, or cancelled
    /// by its caller (`None`).
    pub(crate) fn ended_by(&mut self, now: Timestamp, id: RequestId, refused: Option<&'static str>) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        let was_waiting = e.real_went.is_none() && e.attempts.is_empty();
        e.real_done = true;
        match refused {
            Some(code) => self.enforced.refused(code),
            None => self.enforced.cancelled += u64::from(was_waiting),
        }
        let shadow = e.shadow;
        if refused.is_none() {
            // The caller gave up: the shadow's caller would have too.
            match shadow {
                Side::Waiting(sid) => {
                    self.inner.cancel(now, sid);
                    self.shadowed.cancelled += 1;
                    self.set_side(id, Side::Done);
                }
                Side::Went(sid, went) => {
                    let e = self.entries.get_mut(&id).expect("checked");
                    e.attempts.push((Duration::ZERO, Outcome::status(200)));
                    self.schedule(id, sid, went, now);
                }
                Side::Done => {}
            }
        } else if let Side::Went(sid, went) = shadow {
            // Refused here, gone in the shadow: it would have been sent; it finishes at once.
            self.schedule(id, sid, went, now);
        }
        self.forget_if_done(id);
    }

    /// The enforced controller released reservation `rid` early: the shadow releases its pair.
    pub(crate) fn release(&mut self, now: Timestamp, rid: ReservationId) {
        self.advance(now);
        if let Some(own) = self.reservations.remove(&rid) {
            self.inner.release(now, own);
        }
    }

    /// The server's word for a budget's balance, taken by the shadow too.
    pub(crate) fn sync_budget(&mut self, now: Timestamp, limit: &str, tokens_left: i64, refill_in: Option<Duration>) {
        self.advance(now);
        // A shadow config without this budget has nothing to learn.
        let _ = self.inner.sync_budget(now, limit, tokens_left, refill_in);
    }

    /// The report as of `now` (plays the shadow up to `now` first).
    pub(crate) fn report(&mut self, now: Timestamp) -> ShadowReport {
        self.advance(now);
        let mut enforced = self.enforced.side();
        let mut shadow = self.shadowed.side();
        for e in self.entries.values() {
            enforced.waiting += u64::from(!e.real_done && e.real_went.is_none() && e.attempts.is_empty());
            shadow.waiting += u64::from(matches!(e.shadow, Side::Waiting(_)));
        }
        ShadowReport { since: self.since, at: now, tracked: self.entries.len() as u64, enforced, shadow }
    }

    /// Plays the shadow's own instants (wake-ups, replayed completions) in order up to `now`.
    fn advance(&mut self, now: Timestamp) {
        // A timer that polling at its instant did not move: nothing more happens then.
        let mut stuck = None;
        loop {
            let completion = self.completions.peek().map(|Reverse((t, _))| *t).filter(|&t| t <= now);
            let timer = self.inner.poll_timeout().filter(|&t| t <= now && Some(t) != stuck);
            let Some(t) = [completion, timer].into_iter().flatten().min() else { break };
            if completion == Some(t) {
                let Reverse((_, sid)) = self.completions.pop().expect("peeked");
                self.replay(t, sid);
                self.drain(t);
                continue;
            }
            self.drain(t);
            if self.inner.poll_timeout() == Some(t) {
                stuck = Some(t);
            }
        }
        self.drain(now);
    }

    /// Applies the shadow's decisions made at `t`.
    fn drain(&mut self, t: Timestamp) {
        while let Some(event) = self.inner.poll(t) {
            let Some(&id) = self.ids.get(&event.request) else { continue };
            match event.kind {
                EventKind::Go { permit, .. } => {
                    let Some(e) = self.entries.get_mut(&id) else { continue };
                    if matches!(e.shadow, Side::Waiting(_)) {
                        e.shadow = Side::Went(event.request, t);
                    }
                    if !permit.reservations.is_empty() {
                        e.shadow_reservations = permit.reservations;
                        e.pair(&mut self.reservations);
                    }
                    // A retry's wait is the server's doing: only a first go counts its wait.
                    let first = !e.shadow_counted;
                    e.shadow_counted = true;
                    let ready = !e.attempts.is_empty() || e.real_done;
                    if first {
                        self.shadowed.went(t.saturating_since(e.arrived));
                    }
                    if ready {
                        self.schedule(id, event.request, t, t);
                    }
                }
                EventKind::Rejected { error } => {
                    self.shadowed.refused(error.code());
                    self.set_side(id, Side::Done);
                    self.forget_if_done(id);
                }
                EventKind::Expired { .. } => {
                    self.shadowed.refused("DEADLINE_EXCEEDED");
                    self.set_side(id, Side::Done);
                    self.forget_if_done(id);
                }
                _ => {}
            }
        }
    }

    /// The next enforced attempt of `id` replays in the shadow, which let it go at `went`: it
    /// finishes after the same time in flight, and never before `now`.
    fn schedule(&mut self, id: RequestId, sid: RequestId, went: Timestamp, now: Timestamp) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        if self.outcomes.contains_key(&sid) {
            return;
        }
        let (in_flight, outcome) = if e.attempts.is_empty() {
            // The enforced side ended without a response (refused, expired): never sent there.
            (Duration::ZERO, Outcome::status(200))
        } else {
            e.attempts.remove(0)
        };
        self.outcomes.insert(sid, outcome);
        self.completions.push(Reverse(((went + in_flight).max(now), sid)));
    }

    fn replay(&mut self, t: Timestamp, sid: RequestId) {
        let Some(outcome) = self.outcomes.remove(&sid) else { return };
        let Some(&id) = self.ids.get(&sid) else { return };
        match self.inner.complete(t, sid, outcome) {
            Completion::Retry { .. } => {
                self.shadowed.retried += 1;
                self.set_side(id, Side::Waiting(sid));
            }
            Completion::GiveUp => {
                self.shadowed.refused("RATE_LIMITED");
                self.set_side(id, Side::Done);
            }
            Completion::Done | Completion::Unknown => self.set_side(id, Side::Done),
        }
        self.forget_if_done(id);
    }

    fn set_side(&mut self, id: RequestId, side: Side) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.shadow = side;
        }
    }

    fn forget_if_done(&mut self, id: RequestId) {
        let Some(e) = self.entries.get(&id) else { return };
        if e.real_done && e.shadow == Side::Done {
            if let Some(sid) = e.sid {
                self.ids.remove(&sid);
            }
            self.entries.remove(&id);
        }
        if self.reservations.len() > 4096 {
            // Follow-ups never sent leave their pairing behind; keep the live ones' order of size.
            self.reservations.clear();
        }
    }
}

/// What one side decided about the requests the shadow saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    went_at_once: u64,
    went_after_wait: u64,
    retried: u64,
    cancelled: u64,
    refused: Vec<(&'static str, u64)>,
    waits: Histogram,
}

impl Tally {
    fn went(&mut self, waited: Duration) {
        if waited.is_zero() {
            self.went_at_once += 1;
        } else {
            self.went_after_wait += 1;
        }
        self.waits.record(waited);
    }

    fn refused(&mut self, code: &'static str) {
        match self.refused.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => self.refused.push((code, 1)),
        }
    }

    fn side(&self) -> SideReport {
        let mut refused: Vec<(String, u64)> = self.refused.iter().map(|(c, n)| ((*c).to_string(), *n)).collect();
        refused.sort_unstable();
        SideReport {
            requests: self.requests,
            went_at_once: self.went_at_once,
            went_after_wait: self.went_after_wait,
            refused,
            cancelled: self.cancelled,
            retried: self.retried,
            waiting: 0,
            wait_p50: self.waits.quantile(0.50),
            wait_p95: self.waits.quantile(0.95),
            wait_p99: self.waits.quantile(0.99),
            wait_max: self.waits.max,
            wait_total: self.waits.total,
        }
    }
}

/// Waits in log buckets, eight per power of two of microseconds (within 12.5%): bounded memory
/// whatever the traffic, integer arithmetic only.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: Duration,
    total: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], n: 0, max: Duration::ZERO, total: Duration::ZERO }
    }
}

const BUCKETS: usize = 8 + 61 * 8;

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros < 8 {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros() as usize;
        8 + (exp - 3) * 8 + ((micros >> (exp - 3)) & 7) as usize
    }

    /// The largest value (µs) in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 8 {
            return i as u64;
        }
        let exp = (i - 8) / 8 + 3;
        let sub = ((i - 8) % 8) as u64;
        ((8 + sub + 1) << (exp - 3)) - 1
    }

    fn record(&mut self, wait: Duration) {
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(micros)] += 1;
        self.n += 1;
        self.max = self.max.max(wait);
        self.total = self.total.saturating_add(wait);
    }

    /// The wait under which a fraction `q` of the requests went (a bucket's upper bound, at most
    /// the longest wait seen).
    fn quantile(&self, q: f64) -> Duration {
        if self.n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(Self::upper(i)).min(self.max);
            }
        }
        self.max
    }
}

/// What the shadow config would have decided beside what the enforced one did, for the same
/// requests ([`TrafficControl::shadow_report`](crate::TrafficControl::shadow_report)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ShadowReport {
    /// When the shadow started.
    pub since: Timestamp,
    /// The instant of the report.
    pub at: Timestamp,
    /// Requests the shadow still follows (waiting or in flight on either side): bounded by the
    /// traffic in progress, not by the traffic seen.
    pub tracked: u64,
    /// What the enforced config did.
    pub enforced: SideReport,
    /// What the shadow config would have done.
    pub shadow: SideReport,
}

/// One config's decisions in a [`ShadowReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SideReport {
    /// Requests seen since the shadow started.
    pub requests: u64,
    /// Went at once.
    pub went_at_once: u64,
    /// Went after waiting in the queue.
    pub went_after_wait: u64,
    /// Refused, by error code (`QUEUE_FULL`, `DEADLINE_UNREACHABLE`, `RATE_LIMITED` after the
    /// retries, ...), sorted by code.
    pub refused: Vec<(String, u64)>,
    /// Cancelled by their caller while waiting.
    pub cancelled: u64,
    /// Queued again after a 429 (the shadow's own retries; the enforced side's are in its metrics).
    pub retried: u64,
    /// Waiting at the report's instant.
    pub waiting: u64,
    /// Wait before going, median over the requests that went (zero for those that went at once).
    #[serde(serialize_with = "seconds")]
    pub wait_p50: Duration,
    /// 95th percentile of the wait.
    #[serde(serialize_with = "seconds")]
    pub wait_p95: Duration,
    /// 99th percentile of the wait.
    #[serde(serialize_with = "seconds")]
    pub wait_p99: Duration,
    /// The longest wait.
    #[serde(serialize_with = "seconds")]
    pub wait_max: Duration,
    /// All waits added up.
    #[serde(serialize_with = "seconds")]
    pub wait_total: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ShadowReport {
    /// The report as JSON: durations in seconds (`wait_p50`, ...), instants in the host's
    /// nanoseconds, `refused` as `[code, count]` pairs.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The two sides as a small text table, for a log line or a terminal.
    pub fn to_text(&self) -> String {
        let (a, b) = (&self.enforced, &self.shadow);
        let refused = |s: &SideReport| s.refused.iter().map(|(_, n)| n).sum::<u64>();
        let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
        let rows: [(&str, String, String); 9] = [
            ("requests", a.requests.to_string(), b.requests.to_string()),
            ("went at once", a.went_at_once.to_string(), b.went_at_once.to_string()),
            ("went after a wait", a.went_after_wait.to_string(), b.went_after_wait.to_string()),
            ("refused", refused(a).to_string(), refused(b).to_string()),
            ("cancelled", a.cancelled.to_string(), b.cancelled.to_string()),
            ("waiting now", a.waiting.to_string(), b.waiting.to_string()),
            ("wait p50", secs(a.wait_p50), secs(b.wait_p50)),
            ("wait p99", secs(a.wait_p99), secs(b.wait_p99)),
            ("wait max", secs(a.wait_max), secs(b.wait_max)),
        ];
        let mut out = format!("{:<20}{:>14}{:>14}\n", "", "enforced", "shadow");
        for (name, x, y) in rows {
            out.push_str(&format!("{name:<20}{x:>14}{y:>14}\n"));
        }
        for (code, n) in &b.refused {
            out.push_str(&format!("{:<20}{:>14}{n:>14}\n", format!("  {code}"), a.refused_count(code)));
        }
        out
    }
}

impl SideReport {
    /// How many requests this side refused with `code`.
    pub fn refused_count(&self, code: &str) -> u64 {
        self.refused.iter().find(|(c, _)| c == code).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;
    use std::time::Duration;

    #[test]
    fn buckets_are_ordered_and_within_an_eighth() {
        let mut last = 0;
        for micros in (0..2_000_000u64).step_by(997).chain([u64::MAX / 2]) {
            let i = Histogram::bucket(micros);
            assert!(i >= last && i < super::BUCKETS);
            last = i;
            let upper = Histogram::upper(i);
            assert!(upper >= micros && upper - micros <= micros / 8 + 1, "{micros} → {upper}");
        }
    }

    #[test]
    fn quantiles_of_known_waits() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64();
        assert!((0.050..=0.057).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), Duration::from_millis(100));
    }
}
