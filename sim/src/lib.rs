//! What-if simulator for traffic-control: runs the real core (`traffic-control-core`) on a virtual
//! clock, a config (a preset or a file, with environment-style overrides) against a workload
//! (arrival rates per stream, priority and tenant; probe sequences with reservations; bursts; or a
//! recorded event log) and optionally a model of the server (sliding windows counted at arrival
//! with 429s and blocks, Back Market's way; a token balance, Keepa's; a blocked token at status
//! 200, BaseLinker's). It reports per limit, per priority, per tenant and per stream, and draws a
//! self-contained HTML page.
//!
//! ```
//! use traffic_control_sim::{config_from, simulate, spec};
//! let config = config_from("backmarket", None, &[]).unwrap();
//! let mut workload = spec::workload_from("backmarket", None).unwrap();
//! workload.duration = std::time::Duration::from_secs(30);
//! let server = spec::server_from("backmarket", None).unwrap();
//! let sim = simulate(vec![config], &workload, Some(&server)).unwrap();
//! assert_eq!(sim.runs[0].0.server.as_ref().unwrap().refused, 0);
//! ```

use std::fmt;

use traffic_control_core::{Config, Preset};

mod html;
mod report;
mod run;
mod server;
pub mod spec;

pub use report::{
    text, BalanceReport, LimitReport, Report, Series, ServerBudgetReport, ServerReport, ServerWindowReport,
    StreamReport, WaitReport,
};
pub use spec::{Server, Workload};

pub(crate) const MS: u64 = 1_000_000;
pub(crate) const SEC: u64 = 1_000 * MS;
/// The wall clock (Unix seconds) at the simulation's start, for the server's dates.
pub(crate) const UNIX0: u64 = 1_795_000_000;

/// An input the simulator cannot use: which one (`field`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// The input: `config`, `workload.streams[0].rate`, `server`, …
    pub field: String,
    /// Why.
    pub reason: String,
}

impl SimError {
    /// The stable code the packages give it: `CONFIG` for a config, `INVALID_ARGUMENT` for a
    /// workload, a server model or the call itself.
    pub fn code(&self) -> &'static str {
        if self.field.starts_with("config") {
            "CONFIG"
        } else {
            "INVALID_ARGUMENT"
        }
    }

    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> SimError {
        SimError { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for SimError {}

/// A config to run, with the label the report gives it.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The label: the preset's name or the file's, with the overrides.
    pub label: String,
    /// The config.
    pub config: Config,
}

/// A config by preset name (`text` is the name, `file` is `None`) or from a file's text (JSON or
/// TOML by the file's name), with environment-style overrides (`BM_RATE_LIMIT_CATALOG_MAX_REQUESTS`
/// for a preset, under the preset's prefix; `TRAFFIC_CONTROL_…` for a file).
pub fn config_from(text: &str, file: Option<&str>, overrides: &[(String, String)]) -> Result<Labelled, SimError> {
    let invalid = |e: traffic_control_core::ConfigError| SimError::new("config", e.to_string());
    let (config, prefix, name) = match file {
        None => {
            let preset = Preset::named(text).map_err(invalid)?;
            (preset.config().map_err(invalid)?, preset.env_prefix, preset.name.to_string())
        }
        Some(file) => {
            let config = if file.ends_with(".toml") { Config::from_toml(text) } else { Config::from_json(text) };
            (config.map_err(invalid)?, "TRAFFIC_CONTROL", file.to_string())
        }
    };
    let config = if overrides.is_empty() {
        config
    } else {
        config.with_env(prefix, overrides.iter().cloned()).map_err(invalid)?
    };
    let mut label = name;
    for (k, v) in overrides {
        label.push_str(&format!(" {k}={v}"));
    }
    Ok(Labelled { label, config })
}

/// The runs of one simulation: each config against the same workload and server.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// One per config, in order: the report and the series behind its charts.
    pub runs: Vec<(Report, Series)>,
}

impl Simulation {
    /// The reports as text, side by side.
    pub fn text(&self) -> String {
        let reports: Vec<Report> = self.runs.iter().map(|(r, _)| r.clone()).collect();
        text(&reports)
    }

    /// The self-contained HTML page.
    pub fn html(&self, title: &str) -> String {
        html::html(&self.runs, title)
    }

    /// The reports as JSON (an array).
    pub fn reports_json(&self) -> String {
        let reports: Vec<&Report> = self.runs.iter().map(|(r, _)| r).collect();
        serde_json::to_string(&reports).unwrap_or_default()
    }
}

/// Runs each config against the workload (and the server model), on a virtual clock.
pub fn simulate(configs: Vec<Labelled>, workload: &Workload, server: Option<&Server>) -> Result<Simulation, SimError> {
    workload.check()?;
    let mut runs = Vec::with_capacity(configs.len());
    for c in configs {
        let engine = run::Engine::new(c.config, workload, server)?;
        let (mut report, series) = engine.run();
        report.label = c.label;
        runs.push((report, series));
    }
    Ok(Simulation { runs })
}

/// The bindings' entry: one JSON document in, one out.
///
/// In: `{"configs": [C, …]}` or `{"config": C}`, where C is a preset name, a config object, or
/// `{"preset": name | "config": object, "env": {VAR: value}, "label": text}`; `"workload"`: a
/// preset name, a workload object, or `{"events": "<JSON lines>"}`; `"server"`: a model name, a
/// model object, or absent; `"html"`: true to get the page; `"title"`: its title.
///
/// Out: `{"reports": [...], "text": "...", "html": "..."}`.
pub fn simulate_json(input: &str) -> Result<String, SimError> {
    use serde_json::Value;
    let input: Value = serde_json::from_str(input).map_err(|e| SimError::new("input", e.to_string()))?;
    let configs: Vec<Value> = match (input.get("configs"), input.get("config")) {
        (Some(Value::Array(a)), _) => a.clone(),
        (None, Some(c)) => vec![c.clone()],
        _ => return Err(SimError::new("configs", "give `config` or a `configs` array")),
    };
    let mut labelled = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let at = |e: SimError| SimError::new(format!("configs[{i}]: {}", e.field), e.reason);
        let mut l = match c {
            Value::String(name) => config_from(name, None, &[]).map_err(at)?,
            Value::Object(o) if o.contains_key("limits") => {
                config_from(&c.to_string(), Some("config.json"), &[]).map_err(at)?
            }
            Value::Object(o) => {
                let env: Vec<(String, String)> = o
                    .get("env")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                match (o.get("preset").and_then(Value::as_str), o.get("config")) {
                    (Some(p), _) => config_from(p, None, &env).map_err(at)?,
                    (None, Some(cfg)) => config_from(&cfg.to_string(), Some("config.json"), &env).map_err(at)?,
                    _ => return Err(SimError::new(format!("configs[{i}]"), "needs `preset` or `config`")),
                }
            }
            _ => return Err(SimError::new(format!("configs[{i}]"), "a preset name or an object")),
        };
        if let Some(label) = c.get("label").and_then(Value::as_str) {
            l.label = label.to_string();
        }
        labelled.push(l);
    }
    let workload = match input.get("workload") {
        Some(Value::String(name)) => spec::workload_from(name, None)?,
        Some(Value::Object(o)) if o.contains_key("events") => {
            let text = o.get("events").and_then(Value::as_str).unwrap_or_default();
            spec::workload_from(text, Some("events.jsonl"))?
        }
        Some(w @ Value::Object(_)) => spec::workload_from(&w.to_string(), Some("workload.json"))?,
        _ => return Err(SimError::new("workload", "a preset name, a workload object or {\"events\": …}")),
    };
    let server = match input.get("server") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(spec::server_from(name, None)?),
        Some(s @ Value::Object(_)) => Some(spec::server_from(&s.to_string(), Some("server.json"))?),
        _ => return Err(SimError::new("server", "a model name or a model object")),
    };
    let sim = simulate(labelled, &workload, server.as_ref())?;
    let mut out = serde_json::json!({
        "reports": sim.runs.iter().map(|(r, _)| r).collect::<Vec<_>>(),
        "text": sim.text(),
    });
    if input.get("html").and_then(Value::as_bool) == Some(true) {
        let title = input.get("title").and_then(Value::as_str).unwrap_or("traffic-control: what if");
        out["html"] = Value::String(sim.html(title));
    }
    Ok(out.to_string())
}
