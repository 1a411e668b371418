//! Metrics: what the controller counts as it decides, and the gauges read off its state.
//!
//! The counters are kept as decisions are made, in memory bounded by the config (one slot per
//! route, priority and result; rejections, pauses and waits in small tables): an admission adds
//! one to an array cell. The gauges (utilisation, queue depth, budget balance, pauses) are read
//! from the state when [`metrics`](crate::TrafficControl::metrics) is called. Nothing is read from
//! a clock: the instant is the host's, like every other input.
//!
//! Names and units follow Prometheus and OpenTelemetry conventions: one `traffic_control_` prefix,
//! base units (seconds, ratios), `_total` counters, low-cardinality labels only (`limit`, `route`,
//! `priority`, `result`, `code`, `reason`): never a URL, never a key. [`Metrics::to_prometheus`]
//! writes the text exposition format (version 0.0.4) by hand: three kinds of lines and one escaping
//! rule, where a client crate would bring a registry, dynamic dispatch and its own clock, and would
//! weigh on the wasm module (its size is budgeted).

#[cfg(not(feature = "metrics"))]
use std::time::Duration;

#[cfg(not(feature = "metrics"))]
use crate::request::Priority;

/// What became of a request (the `result` label of `traffic_control_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Counted {
    /// Admitted when it asked.
    WentAtOnce = 0,
    /// Admitted after waiting in the queue.
    WentAfterWait = 1,
    /// Refused without going.
    Rejected = 2,
    /// Cancelled by the host while it waited or was in flight.
    Cancelled = 3,
    /// Its deadline passed while it waited.
    Expired = 4,
    /// The server answered that it was rate limited or blocked.
    RateLimited = 5,
}

#[cfg(feature = "metrics")]
const RESULTS: [&str; 6] = ["went_at_once", "went_after_wait", "rejected", "cancelled", "expired", "rate_limited"];

#[cfg(feature = "metrics")]
/// Upper bounds (seconds) of the wait histogram's buckets; a last one, `+Inf`, holds everything.
pub const WAIT_BUCKETS: [f64; 14] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[cfg(feature = "metrics")]
/// The buckets' `le` labels, `+Inf` last.
const WAIT_LABELS: [&str; 15] =
    ["0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf"];

/// Without the `metrics` feature: nothing is counted (the wasm browser build).
#[cfg(not(feature = "metrics"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters;

#[cfg(not(feature = "metrics"))]
impl Counters {
    pub(crate) fn new(_routes: usize) -> Self {
        Counters
    }
    #[inline(always)]
    pub(crate) fn count(&mut self, _slot: u16, _priority: Priority, _result: Counted) {}
    #[inline(always)]
    pub(crate) fn went(&mut self, _slot: u16, _priority: Priority, _waited: Option<Duration>) {}
    #[inline(always)]
    pub(crate) fn rejected(&mut self, _slot: u16, _priority: Priority, _code: &'static str) {}
    #[inline(always)]
    pub(crate) fn paused(&mut self, _limit: u16, _reason: &'static str) {}
    #[inline(always)]
    pub(crate) fn budget_warned(&mut self, _limit: u16, _reason: &'static str) {}
}

#[cfg(feature = "metrics")]
pub use counted::*;

/// The counters and what they report (the `metrics` feature).
#[cfg(feature = "metrics")]
mod counted {
    use std::fmt::Write as _;
    use std::time::Duration;

    use serde::Serialize;

    use super::{Counted, RESULTS, WAIT_BUCKETS, WAIT_LABELS};
    use crate::request::Priority;
    use crate::snapshot::{LimitSnapshot, Snapshot};

    /// The counters a controller keeps. Route slot 0 is "no route", slot `i + 1` is route `i`.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Counters {
        /// `(slot * 4 + priority) * 6 + result`.
        requests: Vec<u64>,
        /// Small tables searched in order: refusals and pauses are rare, their keys few (a map type
        /// of their own weighed kilobytes of the wasm module).
        rejected: Vec<((u16, Priority, &'static str), u64)>,
        wait: [Histogram; 4],
        pauses: Vec<((u16, &'static str), u64)>,
        budget_warnings: Vec<((u16, &'static str), u64)>,
    }

    impl Counters {
        pub(crate) fn new(routes: usize) -> Self {
            Counters { requests: vec![0; (routes + 1) * 4 * RESULTS.len()], ..Counters::default() }
        }

        #[inline]
        pub(crate) fn count(&mut self, slot: u16, priority: Priority, result: Counted) {
            let i = (usize::from(slot) * 4 + priority as usize) * RESULTS.len() + result as usize;
            if let Some(c) = self.requests.get_mut(i) {
                *c += 1;
            }
        }

        /// An admission: at once (`waited` is `None`) or after a wait; its wait goes to the histogram.
        #[inline]
        pub(crate) fn went(&mut self, slot: u16, priority: Priority, waited: Option<Duration>) {
            match waited {
                None => {
                    self.count(slot, priority, Counted::WentAtOnce);
                    self.wait[priority as usize].observe_zero();
                }
                Some(w) => {
                    self.count(slot, priority, Counted::WentAfterWait);
                    self.wait[priority as usize].observe(w);
                }
            }
        }

        pub(crate) fn rejected(&mut self, slot: u16, priority: Priority, code: &'static str) {
            self.count(slot, priority, Counted::Rejected);
            bump(&mut self.rejected, (slot, priority, code));
        }

        pub(crate) fn paused(&mut self, limit: u16, reason: &'static str) {
            bump(&mut self.pauses, (limit, reason));
        }

        pub(crate) fn budget_warned(&mut self, limit: u16, reason: &'static str) {
            bump(&mut self.budget_warnings, (limit, reason));
        }

        /// The counters by name, for [`Metrics`]: `routes[i]` names slot `i + 1`, `limits[i]` limit `i`.
        pub(crate) fn report(&self, routes: &[&str], limits: &[&str], snapshot: Snapshot) -> Metrics {
            let route =
                |slot: u16| if slot == 0 { NO_ROUTE.to_string() } else { routes[usize::from(slot) - 1].to_string() };
            let mut requests = Vec::new();
            for (i, &count) in self.requests.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let result = i % RESULTS.len();
                let priority = Priority::ALL[(i / RESULTS.len()) % 4];
                let slot = (i / RESULTS.len() / 4) as u16;
                requests.push(RequestCount { route: route(slot), priority, result: RESULTS[result], count });
            }
            let mut rejected_cells = self.rejected.clone();
            rejected_cells.sort_unstable_by_key(|&(k, _)| k);
            let by_limit = |cells: &[((u16, &'static str), u64)]| {
                let mut cells = cells.to_vec();
                cells.sort_unstable_by_key(|&(k, _)| k);
                cells
                    .iter()
                    .map(|&((limit, reason), count)| PauseCount {
                        limit: limits[usize::from(limit)].to_string(),
                        reason,
                        count,
                    })
                    .collect::<Vec<_>>()
            };
            let rejected = rejected_cells
                .iter()
                .map(|&((slot, priority, code), count)| RejectedCount { route: route(slot), priority, code, count })
                .collect();
            let pauses = by_limit(&self.pauses);
            let budget_warnings = by_limit(&self.budget_warnings);
            let wait = Priority::ALL.map(|p| self.wait[p as usize].report(p));
            Metrics { requests, rejected, wait, pauses, budget_warnings, snapshot }
        }
    }

    fn bump<K: PartialEq>(table: &mut Vec<(K, u64)>, key: K) {
        match table.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => table.push((key, 1)),
        }
    }

    /// The `route` label of requests that matched no route.
    pub const NO_ROUTE: &str = "none";

    #[derive(Debug, Clone, Copy, Default)]
    struct Histogram {
        /// Observations per bucket (not cumulative); the last is `+Inf`.
        buckets: [u64; WAIT_BUCKETS.len() + 1],
        sum_nanos: u128,
    }

    impl Histogram {
        #[inline]
        fn observe_zero(&mut self) {
            self.buckets[0] += 1;
        }

        fn observe(&mut self, d: Duration) {
            let s = d.as_secs_f64();
            let i = WAIT_BUCKETS.iter().position(|&le| s <= le).unwrap_or(WAIT_BUCKETS.len());
            self.buckets[i] += 1;
            self.sum_nanos += d.as_nanos();
        }

        fn report(&self, priority: Priority) -> WaitHistogram {
            let mut cumulative = 0;
            let buckets = self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    cumulative += n;
                    (WAIT_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), cumulative)
                })
                .collect();
            WaitHistogram { priority, buckets, count: cumulative, sum_seconds: self.sum_nanos as f64 / 1e9 }
        }
    }

    /// A controller's metrics at one instant: counters since it started, gauges as of now.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[non_exhaustive]
    pub struct Metrics {
        /// Requests by route, priority and what became of them (only the non-zero ones).
        pub requests: Vec<RequestCount>,
        /// Refused requests by route, priority and error code.
        pub rejected: Vec<RejectedCount>,
        /// Time waited before going, per priority (critical, high, normal, low).
        pub wait: [WaitHistogram; 4],
        /// Pauses after a 429 or a block, by limit and reason.
        pub pauses: Vec<PauseCount>,
        /// The budget guard's warnings, by limit and reason (`cost_over_half`, `below_warning`).
        pub budget_warnings: Vec<PauseCount>,
        /// The state the gauges come from: every limit, the queue depths, requests in flight.
        pub snapshot: Snapshot,
    }

    /// One cell of `traffic_control_requests_total`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    #[non_exhaustive]
    pub struct RequestCount {
        /// The route's name, or `none`.
        pub route: String,
        /// The request's priority.
        pub priority: Priority,
        /// `went_at_once`, `went_after_wait`, `rejected`, `cancelled`, `expired` or `rate_limited`.
        pub result: &'static str,
        /// How many.
        pub count: u64,
    }

    /// One cell of `traffic_control_rejected_total`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    #[non_exhaustive]
    pub struct RejectedCount {
        /// The route's name, or `none`.
        pub route: String,
        /// The request's priority.
        pub priority: Priority,
        /// The error's code (`QUEUE_FULL`, `NEVER_SUCCEEDS`, …).
        pub code: &'static str,
        /// How many.
        pub count: u64,
    }

    /// One cell of `traffic_control_pauses_total` (or of `traffic_control_budget_warnings_total`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    #[non_exhaustive]
    pub struct PauseCount {
        /// The limit paused.
        pub limit: String,
        /// `retry_after`, `block`, `backoff`, `cooldown` or `exhausted`.
        pub reason: &'static str,
        /// How many times.
        pub count: u64,
    }

    /// The wait histogram of one priority.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[non_exhaustive]
    pub struct WaitHistogram {
        /// Its priority.
        pub priority: Priority,
        /// `(upper bound in seconds, requests that waited at most that long)`, cumulative; the last
        /// bound is infinite.
        pub buckets: Vec<(f64, u64)>,
        /// Requests that went.
        pub count: u64,
        /// Seconds waited, all together.
        pub sum_seconds: f64,
    }

    impl Metrics {
        /// The metrics as Prometheus families (name, help, type, samples), in the order
        /// [`to_prometheus`](Self::to_prometheus) writes them: what the bindings' collectors (prom-client,
        /// prometheus_client) hand over, so every name and help text lives here only.
        pub fn families(&self) -> Vec<Family> {
            let s = &self.snapshot;
            let mut out = Vec::with_capacity(16);
            let mut f =
                Family::new("requests_total", "counter", "Requests by route, priority and what became of them.");
            for r in &self.requests {
                f.sample(
                    "",
                    &[("route", &r.route), ("priority", r.priority.as_str()), ("result", r.result)],
                    r.count as f64,
                );
            }
            out.push(f);
            let mut f = Family::new("rejected_total", "counter", "Requests refused without going, by error code.");
            for r in &self.rejected {
                f.sample(
                    "",
                    &[("route", &r.route), ("priority", r.priority.as_str()), ("code", r.code)],
                    r.count as f64,
                );
            }
            out.push(f);
            let mut f = Family::new("wait_seconds", "histogram", "Time a request waited before it went.");
            for h in &self.wait {
                let p = h.priority.as_str();
                for (&(_, n), le) in h.buckets.iter().zip(WAIT_LABELS) {
                    f.sample("_bucket", &[("priority", p), ("le", le)], n as f64);
                }
                f.sample("_sum", &[("priority", p)], h.sum_seconds);
                f.sample("_count", &[("priority", p)], h.count as f64);
            }
            out.push(f);
            let mut f = Family::new("pauses_total", "counter", "Pauses after a 429 or a block, by limit and reason.");
            for p in &self.pauses {
                f.sample("", &[("limit", &p.limit), ("reason", p.reason)], p.count as f64);
            }
            out.push(f);
            let mut f = Family::new(
                "budget_warnings_total",
                "counter",
                "Budget warnings before any refusal: a request costing more than half the balance, or a balance taken below warn_below.",
            );
            for p in &self.budget_warnings {
                f.sample("", &[("limit", &p.limit), ("reason", p.reason)], p.count as f64);
            }
            out.push(f);

            let per_limit: [(&'static str, &'static str, LimitGauge); 8] = [
                (
                    "limit_capacity",
                    "The most a limit holds (cost units; a window's is lowered by a smaller server quota).",
                    |l, _| Some(l.capacity as f64),
                ),
                ("limit_used", "Cost counted against a limit now.", |l, _| Some(l.used as f64)),
                ("limit_reserved", "Cost held by live reservations.", |l, _| Some(l.reserved as f64)),
                ("limit_utilisation_ratio", "Used and reserved cost over capacity.", |l, _| {
                    Some(if l.capacity == 0 { 0.0 } else { (l.used + l.reserved) as f64 / l.capacity as f64 })
                }),
                ("limit_paused", "1 while a limit is paused after a 429 or a block.", |l, _| {
                    Some(f64::from(u8::from(l.pause.is_some())))
                }),
                ("limit_pause_remaining_seconds", "Time left in a limit's pause.", |l, s| {
                    Some(l.pause.as_ref().map_or(0.0, |p| (p.until - s.at).as_secs_f64()))
                }),
                (
                    "limit_next_free_seconds",
                    "Time until room grows by time alone (a budget: its next refill).",
                    |l, s| l.next_free.map(|t| (t - s.at).as_secs_f64()),
                ),
                ("budget_balance", "A budget's balance (tokens left), once known.", |l, _| l.balance.map(|b| b as f64)),
            ];
            for (name, help, value) in per_limit {
                let mut f = Family::new(name, "gauge", help);
                for l in &s.limits {
                    if let Some(v) = value(l, s) {
                        f.sample("", &[("limit", &l.name)], v);
                    }
                }
                out.push(f);
            }
            let mut f = Family::new("queue_depth", "gauge", "Requests waiting, by priority.");
            for (p, &n) in Priority::ALL.iter().zip(&s.waiting) {
                f.sample("", &[("priority", p.as_str())], n as f64);
            }
            out.push(f);
            let mut f = Family::new("in_flight", "gauge", "Requests admitted and not yet completed.");
            f.sample("", &[], s.in_flight as f64);
            out.push(f);
            let mut f = Family::new("reservations", "gauge", "Live reservations.");
            f.sample("", &[], s.reservations as f64);
            out.push(f);
            out
        }

        /// The metrics as JSON, as the bindings hand them to their hosts: every field of [`Metrics`]
        /// (the snapshot's times in nanoseconds) and `families` (see [`families`](Self::families)).
        pub fn to_json(&self) -> String {
            let mut v = serde_json::to_value(self).expect("metrics always serialize");
            v["families"] = serde_json::to_value(self.families()).expect("families always serialize");
            v.to_string()
        }

        /// The metrics in Prometheus's text exposition format (version 0.0.4).
        pub fn to_prometheus(&self) -> String {
            let mut o = String::with_capacity(4096);
            for f in self.families() {
                let _ = writeln!(o, "# HELP {} {}", f.name, f.help);
                let _ = writeln!(o, "# TYPE {} {}", f.name, f.kind);
                for s in &f.samples {
                    sample(&mut o, &s.name, &s.labels, s.value);
                }
            }
            o
        }
    }

    /// A per-limit gauge's value, read off the snapshot (`None`: no sample for that limit).
    type LimitGauge = fn(&LimitSnapshot, &Snapshot) -> Option<f64>;

    /// One metric family: its full name (`traffic_control_…`), help text, type and samples.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[non_exhaustive]
    pub struct Family {
        /// `traffic_control_requests_total`, …
        pub name: String,
        /// What it measures.
        pub help: &'static str,
        /// `counter`, `gauge` or `histogram`.
        #[serde(rename = "type")]
        pub kind: &'static str,
        /// Its samples (a histogram's: `_bucket` with `le`, `_sum`, `_count`).
        pub samples: Vec<Sample>,
    }

    /// One sample of a family.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[non_exhaustive]
    pub struct Sample {
        /// The sample's full name (the family's, or with `_bucket`, `_sum`, `_count`).
        pub name: String,
        /// Label names and values, in order.
        pub labels: Vec<(&'static str, String)>,
        /// The value.
        pub value: f64,
    }

    impl Family {
        fn new(name: &str, kind: &'static str, help: &'static str) -> Self {
            Family { name: format!("traffic_control_{name}"), help, kind, samples: Vec::new() }
        }

        fn sample(&mut self, suffix: &str, labels: &[(&'static str, &str)], value: f64) {
            let labels = labels.iter().map(|&(k, v)| (k, v.to_string())).collect();
            self.samples.push(Sample { name: format!("{}{suffix}", self.name), labels, value });
        }
    }

    fn sample(o: &mut String, name: &str, labels: &[(&'static str, String)], value: f64) {
        o.push_str(name);
        if !labels.is_empty() {
            o.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                o.push_str(k);
                o.push_str("=\"");
                // The format's one escaping rule: backslash, double quote and line feed.
                for c in v.chars() {
                    match c {
                        '\\' => o.push_str("\\\\"),
                        '"' => o.push_str("\\\""),
                        '\n' => o.push_str("\\n"),
                        c => o.push(c),
                    }
                }
                o.push('"');
            }
            o.push('}');
        }
        o.push(' ');
        number(o, value);
        o.push('\n');
    }

    /// A sample value as Prometheus reads it: `+Inf`, `-Inf`, `NaN`, a whole number without a
    /// fraction, otherwise the shortest text that reads back as the same `f64`.
    fn number(o: &mut String, v: f64) {
        if v.is_nan() {
            o.push_str("NaN");
        } else if v.is_infinite() {
            o.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
            let _ = write!(o, "{}", v as i64);
        } else {
            o.push_str(zmij::Buffer::new().format_finite(v));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_wait_lands_in_the_first_bucket_that_holds_it_and_buckets_are_cumulative() {
            let mut c = Counters::new(1);
            c.went(1, Priority::High, None);
            c.went(1, Priority::High, Some(Duration::from_millis(30)));
            c.went(0, Priority::High, Some(Duration::from_secs(100)));
            let h = &c.wait[Priority::High as usize].report(Priority::High);
            assert_eq!(h.count, 3);
            assert_eq!(h.buckets[0], (0.001, 1));
            assert_eq!(h.buckets[4], (0.05, 2)); // 30 ms: in the 50 ms bucket
            assert_eq!(h.buckets.last().unwrap().1, 3);
            assert!(h.buckets.last().unwrap().0.is_infinite());
            assert!((h.sum_seconds - 100.03).abs() < 1e-9);
        }

        #[test]
        fn values_are_written_as_prometheus_reads_them() {
            let text = |v| {
                let mut o = String::new();
                number(&mut o, v);
                o
            };
            assert_eq!(text(2.0), "2");
            assert_eq!(text(0.25), "0.25");
            assert_eq!(text(f64::INFINITY), "+Inf");
            assert_eq!(text(f64::NAN), "NaN");
            assert_eq!(text(0.1 + 0.2).parse::<f64>().unwrap(), 0.1 + 0.2);
        }

        #[test]
        fn label_values_are_escaped() {
            let mut o = String::new();
            sample(&mut o, "traffic_control_x", &[("route", "a\"b\\c\nd".to_string())], 1.0);
            assert_eq!(o, "traffic_control_x{route=\"a\\\"b\\\\c\\nd\"} 1\n");
        }
    }
}
