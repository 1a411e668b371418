//! What a simulation runs: a workload (who sends what, when) and, optionally, a model of the
//! server (how the API counts and answers). Both are data (JSON or TOML), with presets for the
//! seeds' APIs.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::SimError;

/// Who sends what, when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// How long the workload runs (arrivals stop then; what is queued is still served).
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// The seed of the arrival times and latencies: the same seed gives the same run.
    #[serde(default = "one")]
    pub seed: u64,
    /// The time a request travels to the server before the server counts it (uniform in `[min, max]`);
    /// the response travels back as long again.
    #[serde(default = "Latency::default_network")]
    pub latency: Latency,
    /// Requests arriving at a rate.
    #[serde(default)]
    pub streams: Vec<Stream>,
    /// Many requests at once.
    #[serde(default)]
    pub bursts: Vec<Burst>,
    /// Requests replayed at recorded instants (from an event log).
    #[serde(default, skip)]
    pub recorded: Vec<Recorded>,
}

/// A range of durations, drawn uniformly.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The shortest.
    #[serde(deserialize_with = "duration")]
    pub min: Duration,
    /// The longest.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
}

impl Latency {
    fn default_network() -> Latency {
        Latency { min: Duration::from_millis(10), max: Duration::from_millis(150) }
    }
}

/// Requests (or sequences of requests, such as a price probe) arriving at a rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// Its name in the report.
    pub name: String,
    /// The tenant it belongs to (reported apart).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Arrivals per second.
    pub rate: f64,
    /// `uniform` (evenly spaced, the default) or `poisson` (random, exponential gaps).
    #[serde(default)]
    pub arrival: Arrival,
    /// When it starts.
    #[serde(default, deserialize_with = "duration")]
    pub start: Duration,
    /// When it stops (the workload's end when absent).
    #[serde(default, deserialize_with = "some_duration")]
    pub stop: Option<Duration>,
    /// A sequence run one after another (each step once the previous completed).
    #[serde(default)]
    pub sequence: Option<Vec<Step>>,
    /// One request.
    #[serde(default)]
    pub request: Option<Step>,
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly.
    #[default]
    Uniform,
    /// Exponential gaps (a Poisson process).
    Poisson,
}

/// Many requests at one instant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Its name in the report.
    pub name: String,
    /// The tenant it belongs to.
    #[serde(default)]
    pub tenant: Option<String>,
    /// When.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// How many.
    pub count: u32,
    /// A sequence run one after another.
    #[serde(default)]
    pub sequence: Option<Vec<Step>>,
    /// One request.
    #[serde(default)]
    pub request: Option<Step>,
}

/// A request as the workload sends it. `{n}` in the URL is the arrival's number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The HTTP method (`GET` when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// The URL; `{n}` is replaced by the arrival's number.
    #[serde(default)]
    pub url: Option<String>,
    /// A route name instead of a URL.
    #[serde(default)]
    pub route: Option<String>,
    /// `critical`, `high`, `normal` (the default) or `low`.
    #[serde(default)]
    pub priority: Option<String>,
    /// The cost, when the request says it (otherwise the config's).
    #[serde(default)]
    pub cost: Option<u64>,
    /// The longest it may wait before it is refused (`expired`).
    #[serde(default, deserialize_with = "some_duration")]
    pub max_wait: Option<Duration>,
    /// Reserve a later step of the sequence (its index, from 0) when this one goes: that step
    /// spends the reservation (a Dip reserving its Peak).
    #[serde(default)]
    pub reserve: Option<usize>,
    /// What the server's token model charges for it (its own rules when absent).
    #[serde(default)]
    pub server_cost: Option<i64>,
}

/// A request replayed from an event log.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived, from the log's first instant.
    pub at: Duration,
    /// The step.
    pub step: Step,
}

/// How the server counts and answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Its name in the report.
    #[serde(default)]
    pub name: String,
    /// Sliding windows counted at arrival.
    #[serde(default)]
    pub windows: Vec<ServerWindow>,
    /// A token balance, Keepa's way.
    #[serde(default)]
    pub budget: Option<ServerBudget>,
    /// How the server says it is over a window: `429` with `Retry-After` (the default), or
    /// `blocked_token` (BaseLinker: status 200, `ERROR_BLOCKED_TOKEN … blocked until <time>`).
    #[serde(default)]
    pub answer: Answer,
}

/// How a server refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// 429 with `Retry-After` in seconds.
    #[default]
    RetryAfter,
    /// BaseLinker: status 200, a JSON body `ERROR_BLOCKED_TOKEN … blocked until <time>`.
    BlockedToken,
}

/// One sliding window of the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerWindow {
    /// Its name.
    pub name: String,
    /// The paths it counts (a regular expression; every path when absent).
    #[serde(default)]
    pub path: Option<String>,
    /// The methods it counts (every method when absent).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// The most requests in any window.
    pub max: u64,
    /// The window's length.
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
    /// How long the server blocks the window once it is exceeded (no block when absent).
    #[serde(default, deserialize_with = "some_duration")]
    pub block: Option<Duration>,
}

/// A token balance refilled at a fixed pace, as Keepa's: a request that finds it not positive
/// gets 429; others take their cost (the balance may go negative); every response reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerBudget {
    /// The balance at the start.
    pub tokens: i64,
    /// The most it holds.
    pub max: i64,
    /// Tokens added every `per`.
    pub refill: i64,
    /// The refill's period.
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
    /// Costs by path (a regular expression each), the first match wins; 1 otherwise.
    #[serde(default)]
    pub costs: Vec<PathCost>,
}

/// A path's cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathCost {
    /// A regular expression on the path.
    pub path: String,
    /// Its cost.
    pub cost: i64,
    /// Instead of a fixed cost: count the comma-separated values of this query parameter.
    #[serde(default)]
    pub per_value_of: Option<String>,
}

/// A workload by preset name, or read from a file's text (JSON, TOML, or an event log in JSON
/// lines: one `event.log()` row per line).
pub fn workload_from(name_or_text: &str, file_name: Option<&str>) -> Result<Workload, SimError> {
    if file_name.is_none() {
        if let Some(text) = preset_workload(name_or_text) {
            return parse_workload(text, "preset");
        }
        return Err(SimError::new(
            "workload",
            format!("unknown preset {name_or_text:?}: the presets are {}", WORKLOADS.join(", ")),
        ));
    }
    let name = file_name.unwrap_or_default();
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        return recorded_workload(name_or_text);
    }
    if name.ends_with(".toml") {
        let workload: Workload = toml::from_str(name_or_text).map_err(|e| SimError::new("workload", e.to_string()))?;
        workload.check()?;
        return Ok(workload);
    }
    parse_workload(name_or_text, name)
}

fn parse_workload(text: &str, _origin: &str) -> Result<Workload, SimError> {
    let workload: Workload = serde_json::from_str(text).map_err(|e| SimError::new("workload", e.to_string()))?;
    workload.check()?;
    Ok(workload)
}

impl Workload {
    /// Checks what serde cannot: rates, counts, sequences.
    pub fn check(&self) -> Result<(), SimError> {
        if self.duration.is_zero() {
            return Err(SimError::new("workload.duration", "must be more than zero"));
        }
        if self.latency.min > self.latency.max {
            return Err(SimError::new("workload.latency", "min is more than max"));
        }
        for (i, s) in self.streams.iter().enumerate() {
            if !(s.rate.is_finite() && s.rate > 0.0) {
                return Err(SimError::new(format!("workload.streams[{i}].rate"), "must be a number above zero"));
            }
            check_steps(&format!("workload.streams[{i}]"), s.sequence.as_deref(), s.request.as_ref())?;
        }
        for (i, b) in self.bursts.iter().enumerate() {
            check_steps(&format!("workload.bursts[{i}]"), b.sequence.as_deref(), b.request.as_ref())?;
        }
        Ok(())
    }
}

/// The steps of a stream or burst: its `sequence`, or its one `request`.
pub(crate) fn steps(sequence: Option<&[Step]>, request: Option<&Step>) -> Vec<Step> {
    match (sequence, request) {
        (Some(s), _) => s.to_vec(),
        (None, Some(r)) => vec![r.clone()],
        (None, None) => Vec::new(),
    }
}

fn check_steps(at: &str, sequence: Option<&[Step]>, request: Option<&Step>) -> Result<(), SimError> {
    if sequence.is_some() == request.is_some() {
        return Err(SimError::new(at, "needs exactly one of `request` and `sequence`"));
    }
    let steps = steps(sequence, request);
    if steps.is_empty() {
        return Err(SimError::new(format!("{at}.sequence"), "has no step"));
    }
    for (i, s) in steps.iter().enumerate() {
        if s.url.is_none() && s.route.is_none() {
            return Err(SimError::new(format!("{at}.sequence[{i}]"), "needs a url or a route"));
        }
        if let Some(k) = s.reserve {
            if k <= i || k >= steps.len() {
                return Err(SimError::new(
                    format!("{at}.sequence[{i}].reserve"),
                    format!("{k} is not the index of a later step (0 to {})", steps.len() - 1),
                ));
            }
        }
        if let Some(p) = &s.priority {
            if traffic_control_core::Priority::parse(p).is_none() {
                return Err(SimError::new(
                    format!("{at}.sequence[{i}].priority"),
                    format!("{p:?} is not one of critical, high, normal, low"),
                ));
            }
        }
    }
    Ok(())
}

/// A workload replayed from an event log: one JSON object per line, as `event.log()` writes it
/// (`timestamp_ms`, `request_id`, `endpoint` (`METHOD /path` or a route name), `priority`) or as
/// the `rate_limit_logs` sinks store it (`timestamp`, `endpoint`, `priority` 0–3). Each request
/// arrives at its first line's instant.
fn recorded_workload(text: &str) -> Result<Workload, SimError> {
    let mut seen = std::collections::HashSet::new();
    let mut recorded = Vec::new();
    let mut first: Option<f64> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let field = |f: &str| SimError::new(format!("event log line {}", n + 1), f.to_string());
        let row: serde_json::Value = serde_json::from_str(line).map_err(|e| field(&e.to_string()))?;
        let at = row
            .get("timestamp_ms")
            .or_else(|| row.get("timestampMs"))
            .or_else(|| row.get("timestamp"))
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| field("needs timestamp_ms (a number of milliseconds)"))?;
        if let Some(id) = row.get("request_id").or_else(|| row.get("requestId")).and_then(serde_json::Value::as_u64) {
            if !seen.insert(id) {
                continue;
            }
        }
        let endpoint =
            row.get("endpoint").and_then(serde_json::Value::as_str).ok_or_else(|| field("needs endpoint"))?;
        let priority = match row.get("priority") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => {
                let names = ["critical", "high", "normal", "low"];
                Some(
                    names.get(n.as_u64().unwrap_or(9) as usize).ok_or_else(|| field("priority is 0 to 3"))?.to_string(),
                )
            }
            _ => None,
        };
        let mut step = Step {
            method: None,
            url: None,
            route: None,
            priority,
            cost: None,
            max_wait: None,
            reserve: None,
            server_cost: None,
        };
        match endpoint.split_once(' ') {
            Some((method, path)) => {
                step.method = Some(method.to_string());
                step.url = Some(path.to_string());
            }
            None => step.route = Some(endpoint.to_string()),
        }
        let origin = *first.get_or_insert(at);
        let since = Duration::from_secs_f64(((at - origin) / 1e3).max(0.0));
        recorded.push(Recorded { at: since, step });
    }
    if recorded.is_empty() {
        return Err(SimError::new("event log", "has no request"));
    }
    recorded.sort_by_key(|r| r.at);
    let last = recorded.last().map_or(Duration::ZERO, |r| r.at);
    Ok(Workload {
        duration: last + Duration::from_millis(1),
        seed: 1,
        latency: Latency::default_network(),
        streams: Vec::new(),
        bursts: Vec::new(),
        recorded,
    })
}

/// A server model by preset name, or read from a file's text (JSON or TOML).
pub fn server_from(name_or_text: &str, file_name: Option<&str>) -> Result<Server, SimError> {
    let (text, toml_file) = match file_name {
        None => (
            preset_server(name_or_text).ok_or_else(|| {
                SimError::new(
                    "server",
                    format!("unknown server model {name_or_text:?}: the models are {}", SERVERS.join(", ")),
                )
            })?,
            false,
        ),
        Some(name) => (name_or_text, name.ends_with(".toml")),
    };
    let server: Server = if toml_file {
        toml::from_str(text).map_err(|e| SimError::new("server", e.to_string()))?
    } else {
        serde_json::from_str(text).map_err(|e| SimError::new("server", e.to_string()))?
    };
    for (i, w) in server.windows.iter().enumerate() {
        if w.max == 0 || w.per.is_zero() {
            return Err(SimError::new(format!("server.windows[{i}]"), "max and per must be more than zero"));
        }
        if let Some(p) = &w.path {
            regex_lite::Regex::new(p).map_err(|e| SimError::new(format!("server.windows[{i}].path"), e.to_string()))?;
        }
    }
    if let Some(b) = &server.budget {
        for (i, c) in b.costs.iter().enumerate() {
            regex_lite::Regex::new(&c.path)
                .map_err(|e| SimError::new(format!("server.budget.costs[{i}].path"), e.to_string()))?;
        }
    }
    Ok(server)
}

/// The workload presets.
pub const WORKLOADS: &[&str] = &["backmarket", "keepa", "baselinker", "demo"];
/// The server model presets.
pub const SERVERS: &[&str] = &["backmarket", "keepa", "baselinker"];

fn preset_workload(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "backmarket" => include_str!("../workloads/backmarket.json"),
        "keepa" => include_str!("../workloads/keepa.json"),
        "baselinker" => include_str!("../workloads/baselinker.json"),
        "demo" => include_str!("../workloads/demo.json"),
        _ => return None,
    })
}

fn preset_server(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "backmarket" => include_str!("../servers/backmarket.json"),
        "keepa" => include_str!("../servers/keepa.json"),
        "baselinker" => include_str!("../servers/baselinker.json"),
        _ => return None,
    })
}

fn one() -> u64 {
    1
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
