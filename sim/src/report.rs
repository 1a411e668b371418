//! What a simulation found: the report (per limit, per priority, per tenant, per stream, the
//! server's view), the series behind the charts, and the report as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use traffic_control_core::{LimitKind, Priority, Snapshot};

use crate::server::ServerState;

/// Everything one run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The config's label (a preset name, a file, with its overrides).
    pub label: String,
    /// Simulated seconds of arrivals.
    pub simulated_s: f64,
    /// Requests (jobs: a sequence counts once) that arrived.
    pub arrived: u64,
    /// Per limit of the config, in name order.
    pub limits: Vec<LimitReport>,
    /// Per priority that had requests go: how long they waited.
    pub priorities: Vec<WaitReport>,
    /// Per tenant named in the workload.
    pub tenants: Vec<WaitReport>,
    /// Per stream or burst of the workload.
    pub streams: Vec<StreamReport>,
    /// Refusals (at once, or expired while waiting) by error code.
    pub rejections: BTreeMap<String, u64>,
    /// Requests the server rate limited that the core queued again.
    pub retries: u64,
    /// Requests whose retries ran out.
    pub gave_up: u64,
    /// `rate_limited` events: the server said a request was over its limit.
    pub rate_limited: u64,
    /// The server model's view, when there was one.
    pub server: Option<ServerReport>,
    /// What else happened (limits learnt from the server).
    pub notes: Vec<String>,
    /// Admissions (`go`), retries included.
    pub went: u64,
    #[serde(skip)]
    pub(crate) relearned: u64,
    #[serde(skip)]
    waits: [Vec<f64>; 4],
    #[serde(skip)]
    tenant_waits: BTreeMap<String, Vec<f64>>,
}

/// One limit of the config.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    /// Its name.
    pub name: String,
    /// `window`, `token_bucket`, `concurrency` or `budget`.
    pub kind: &'static str,
    /// Its capacity at the end (a window: its max, or the server's smaller quota).
    pub capacity: u64,
    /// The most it held at once, as the core counts (a window: in any window of its length,
    /// in-flight requests included).
    pub peak: u64,
    /// Used over capacity, averaged over the run's samples.
    pub utilisation_mean: f64,
    /// The highest sample of used and reserved over capacity.
    pub utilisation_max: f64,
    /// A budget: its balance at the start (first known), lowest and end.
    pub balance: Option<BalanceReport>,
}

/// A budget's balance over the run.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceReport {
    /// The first balance known.
    pub first: i64,
    /// The lowest.
    pub lowest: i64,
    /// At the end.
    pub last: i64,
}

/// How long requests waited before they went, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    /// The priority or the tenant.
    pub name: String,
    /// Admissions.
    pub went: u64,
    /// Went without waiting.
    pub at_once: u64,
    /// Median wait.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The longest.
    pub max_ms: f64,
}

/// One stream or burst of the workload.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Arrivals.
    pub arrived: u64,
    /// Finished every step with a response below 400.
    pub done: u64,
    /// Refused, expired, gave up, or answered 4xx/5xx.
    pub failed: u64,
}

/// The server model's view: what it counted at arrival.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// Its name.
    pub name: String,
    /// Requests it served.
    pub served: u64,
    /// Requests it refused as over a limit (the 429s, or blocked tokens, the run predicts).
    pub refused: u64,
    /// Per window.
    pub windows: Vec<ServerWindowReport>,
    /// Its token balance, Keepa's way.
    pub budget: Option<ServerBudgetReport>,
}

/// One window of the server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerWindowReport {
    /// Its name.
    pub name: String,
    /// Its max.
    pub max: u64,
    /// Its length in seconds.
    pub per_s: f64,
    /// The most it counted in any window of its length.
    pub peak: u64,
    /// Requests it refused.
    pub refused: u64,
    /// Times it was exceeded.
    pub exceeded: u64,
}

/// The server's token balance.
#[derive(Debug, Clone, Serialize)]
pub struct ServerBudgetReport {
    /// At the end.
    pub balance: i64,
    /// The lowest.
    pub lowest: i64,
    /// Requests refused for want of tokens.
    pub refused: u64,
}

/// The series behind the charts: one sample per step of time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Seconds from the start.
    pub t: Vec<f64>,
    /// Limit names, in the snapshot's order.
    pub limits: Vec<String>,
    /// Per limit: used over capacity at each sample.
    pub utilisation: Vec<Vec<f64>>,
    /// Per limit: reserved over capacity at each sample.
    pub reserved: Vec<Vec<f64>>,
    /// Per priority (critical, high, normal, low): waiting requests at each sample.
    pub queue: [Vec<u32>; 4],
    /// Per limit: a budget's balance at each sample (`None` for other limits or while unknown).
    pub balance: Vec<Vec<Option<i64>>>,
    /// Per priority: every wait, in milliseconds.
    pub waits: [Vec<f64>; 4],
    #[serde(skip)]
    pub(crate) peak_used: Vec<u64>,
}

impl Series {
    pub(crate) fn new(limits: &[String]) -> Series {
        Series {
            limits: limits.to_vec(),
            utilisation: vec![Vec::new(); limits.len()],
            reserved: vec![Vec::new(); limits.len()],
            balance: vec![Vec::new(); limits.len()],
            peak_used: vec![0; limits.len()],
            ..Series::default()
        }
    }

    pub(crate) fn push(&mut self, t: f64, s: &Snapshot) {
        self.t.push(t);
        for (i, l) in s.limits.iter().enumerate().take(self.limits.len()) {
            let capacity = l.capacity.max(1) as f64;
            self.utilisation[i].push(l.used as f64 / capacity);
            self.reserved[i].push(l.reserved as f64 / capacity);
            self.balance[i].push(l.balance);
        }
        for p in 0..4 {
            self.queue[p].push(s.waiting[p] as u32);
        }
    }
}

impl Report {
    pub(crate) fn stream(&mut self, name: &str, tenant: &Option<String>) -> &mut StreamReport {
        let i = match self.streams.iter().position(|s| s.name == name && &s.tenant == tenant) {
            Some(i) => i,
            None => {
                self.streams.push(StreamReport {
                    name: name.to_string(),
                    tenant: tenant.clone(),
                    ..StreamReport::default()
                });
                self.streams.len() - 1
            }
        };
        &mut self.streams[i]
    }

    pub(crate) fn went(&mut self, priority: Priority, waited_ms: f64) {
        self.went += 1;
        self.waits[priority as usize].push(waited_ms);
    }

    pub(crate) fn tenant_went(&mut self, tenant: Option<String>, waited_ms: f64) {
        if let Some(t) = tenant {
            self.tenant_waits.entry(t).or_default().push(waited_ms);
        }
    }

    pub(crate) fn limits_from(&mut self, end: &Snapshot, series: &Series) {
        for (i, l) in end.limits.iter().enumerate() {
            let util = &series.utilisation[i];
            let mean = if util.is_empty() { 0.0 } else { util.iter().sum::<f64>() / util.len() as f64 };
            let max = util.iter().zip(&series.reserved[i]).map(|(u, r)| u + r).fold(0.0, f64::max);
            let balances: Vec<i64> = series.balance[i].iter().flatten().copied().collect();
            self.limits.push(LimitReport {
                name: l.name.clone(),
                kind: match l.kind {
                    LimitKind::Window => "window",
                    LimitKind::TokenBucket => "token_bucket",
                    LimitKind::Concurrency => "concurrency",
                    LimitKind::Budget => "budget",
                    _ => "other",
                },
                capacity: l.capacity,
                peak: series.peak_used[i],
                utilisation_mean: round3(mean),
                utilisation_max: round3(max),
                balance: (!balances.is_empty()).then(|| BalanceReport {
                    first: balances[0],
                    lowest: balances.iter().copied().min().unwrap_or(0),
                    last: *balances.last().unwrap_or(&0),
                }),
            });
        }
    }

    pub(crate) fn server_from(&mut self, s: &ServerState) {
        self.server = Some(ServerReport {
            name: s.name.clone(),
            served: s.served,
            refused: s.refused,
            windows: s
                .windows
                .iter()
                .map(|w| ServerWindowReport {
                    name: w.name.clone(),
                    max: w.max,
                    per_s: w.per as f64 / crate::SEC as f64,
                    peak: peak_in_window(&w.counted, w.per) as u64,
                    refused: w.refused,
                    exceeded: w.exceeded,
                })
                .collect(),
            budget: s.budget.as_ref().map(|b| ServerBudgetReport {
                balance: b.balance,
                lowest: b.lowest,
                refused: b.refused,
            }),
        });
    }

    pub(crate) fn finish(&mut self, _series: &Series) {
        for (p, name) in ["critical", "high", "normal", "low"].iter().enumerate() {
            if let Some(w) = wait_report(name, &mut self.waits[p]) {
                self.priorities.push(w);
            }
        }
        let tenants = std::mem::take(&mut self.tenant_waits);
        for (name, mut waits) in tenants {
            if let Some(w) = wait_report(&name, &mut waits) {
                self.tenants.push(w);
            }
        }
    }

    /// The rows a report prints, as (section, label, value) for side-by-side comparison.
    fn rows(&self) -> Vec<(String, String, String)> {
        let mut rows = Vec::new();
        let mut row = |section: &str, label: String, value: String| rows.push((section.to_string(), label, value));
        row("workload", "arrivals".into(), self.arrived.to_string());
        row("workload", "admissions (go)".into(), self.went.to_string());
        for l in &self.limits {
            let v = match &l.balance {
                Some(b) => format!("balance {} at first, lowest {}, {} at the end", b.first, b.lowest, b.last),
                None => format!(
                    "peak {}/{}  mean {:.0}%  max {:.0}%",
                    l.peak,
                    l.capacity,
                    l.utilisation_mean * 100.0,
                    l.utilisation_max * 100.0
                ),
            };
            row("limits (as the core counts)", format!("{} ({})", l.name, l.kind), v);
        }
        if let Some(s) = &self.server {
            row("server (counted at arrival)", "served".into(), s.served.to_string());
            row("server (counted at arrival)", "predicted 429s".into(), s.refused.to_string());
            for w in &s.windows {
                row(
                    "server (counted at arrival)",
                    format!("{} {}/{}s", w.name, w.max, w.per_s),
                    format!("peak {}  refused {}  exceeded {}", w.peak, w.refused, w.exceeded),
                );
            }
            if let Some(b) = &s.budget {
                row(
                    "server (counted at arrival)",
                    "tokens".into(),
                    format!("end {}  lowest {}  refused {}", b.balance, b.lowest, b.refused),
                );
            }
        }
        for w in &self.priorities {
            row("wait by priority (ms)", w.name.clone(), wait_text(w));
        }
        for w in &self.tenants {
            row("wait by tenant (ms)", w.name.clone(), wait_text(w));
        }
        for s in &self.streams {
            let name = match &s.tenant {
                Some(t) => format!("{} [{t}]", s.name),
                None => s.name.clone(),
            };
            row("streams", name, format!("arrived {}  done {}  failed {}", s.arrived, s.done, s.failed));
        }
        if self.rejections.is_empty() {
            row("refusals", "none".into(), "0".into());
        }
        for (code, n) in &self.rejections {
            row("refusals", code.clone(), n.to_string());
        }
        row("server feedback", "rate limited".into(), self.rate_limited.to_string());
        row("server feedback", "retries".into(), self.retries.to_string());
        row("server feedback", "gave up".into(), self.gave_up.to_string());
        for n in &self.notes {
            row("notes", String::new(), n.clone());
        }
        rows
    }
}

fn wait_text(w: &WaitReport) -> String {
    format!(
        "went {} ({} at once)  p50 {:.0}  p95 {:.0}  p99 {:.0}  max {:.0}",
        w.went, w.at_once, w.p50_ms, w.p95_ms, w.p99_ms, w.max_ms
    )
}

fn wait_report(name: &str, waits: &mut [f64]) -> Option<WaitReport> {
    if waits.is_empty() {
        return None;
    }
    waits.sort_unstable_by(f64::total_cmp);
    Some(WaitReport {
        name: name.to_string(),
        went: waits.len() as u64,
        at_once: waits.iter().filter(|&&w| w == 0.0).count() as u64,
        p50_ms: round3(quantile(waits, 0.50)),
        p95_ms: round3(quantile(waits, 0.95)),
        p99_ms: round3(quantile(waits, 0.99)),
        max_ms: round3(*waits.last().unwrap_or(&0.0)),
    })
}

/// The value at quantile `q` (nearest rank) of sorted values.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The most instants in any half-open interval `[s, s + per)` of sorted instants.
pub(crate) fn peak_in_window(sorted: &[u64], per: u64) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (start, &s) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < s + per {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The reports as text: one column per run, rows grouped by section.
pub fn text(reports: &[Report]) -> String {
    let tables: Vec<Vec<(String, String, String)>> = reports.iter().map(Report::rows).collect();
    let mut out = String::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for t in &tables {
        for (s, l, _) in t {
            if !keys.iter().any(|(ks, kl)| ks == s && kl == l) {
                keys.push((s.clone(), l.clone()));
            }
        }
    }
    // Sections in first-seen order, each with its rows.
    let mut sections: Vec<String> = Vec::new();
    for (s, _) in &keys {
        if !sections.contains(s) {
            sections.push(s.clone());
        }
    }
    let label_width = keys.iter().map(|(_, l)| l.chars().count()).max().unwrap_or(0).max(8);
    let value_width =
        tables.iter().flat_map(|t| t.iter().map(|(_, _, v)| v.chars().count())).max().unwrap_or(0).max(12);
    if reports.len() > 1 {
        let _ = write!(out, "{:label_width$}", "");
        for r in reports {
            let _ = write!(out, "  {:value_width$}", r.label);
        }
        out.push('\n');
    } else if let Some(r) = reports.first() {
        let _ = writeln!(out, "config: {}", r.label);
    }
    for section in &sections {
        let _ = writeln!(out, "\n== {section} ==");
        for (s, l) in keys.iter().filter(|(s, _)| s == section) {
            let _ = write!(out, "{l:label_width$}");
            for t in &tables {
                let v = t.iter().find(|(ts, tl, _)| ts == s && tl == l).map_or("-", |(_, _, v)| v.as_str());
                let _ = write!(out, "  {v:value_width$}");
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
    }
    out
}
