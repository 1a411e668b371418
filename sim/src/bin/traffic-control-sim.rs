//! `traffic-control-sim`: what a config would do, before it runs.
//!
//! ```sh
//! traffic-control-sim --config backmarket --workload backmarket --server backmarket --html sim.html
//! traffic-control-sim --compare backmarket backmarket,BM_RATE_LIMIT_CATALOG_MAX_REQUESTS=20 --workload backmarket --server backmarket
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use traffic_control_sim::{config_from, simulate, spec, Labelled, SimError};

/// Runs the real traffic-control core on a virtual clock: a config against a workload and,
/// optionally, a model of the server. Prints a report; writes an HTML page with charts.
#[derive(Parser)]
#[command(name = "traffic-control-sim", version)]
struct Args {
    /// The config: a preset name (backmarket, keepa, baselinker) or a JSON/TOML file, followed by
    /// comma-separated overrides in the environment's form (`backmarket,BM_RATE_LIMIT_GLOBAL_MAX_REQUESTS=180`).
    #[arg(long, short, conflicts_with = "compare")]
    config: Option<String>,
    /// Two configs (same form as --config) run side by side on the same workload.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<String>>,
    /// The workload: a preset name (backmarket, keepa, baselinker), a JSON/TOML file, or an event log
    /// (`.jsonl`: one `event.log()` row per line, as the sinks write them).
    #[arg(long, short)]
    workload: String,
    /// The server model: a preset name (backmarket, keepa, baselinker), a JSON/TOML file, or `none`.
    /// Defaults to the workload's preset when it has one.
    #[arg(long, short)]
    server: Option<String>,
    /// Replaces the workload's duration (`10m`, `90s`).
    #[arg(long)]
    duration: Option<String>,
    /// Replaces the workload's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Writes the self-contained HTML page with the charts here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Writes the reports as JSON here (`-` for standard output, instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traffic-control-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), SimError> {
    let specs: Vec<&String> = match (&args.config, &args.compare) {
        (Some(c), _) => vec![c],
        (None, Some(both)) => both.iter().collect(),
        (None, None) => return Err(err("--config", "give --config or --compare A B")),
    };
    let configs = specs.into_iter().map(|s| config(s)).collect::<Result<Vec<Labelled>, _>>()?;
    let mut workload = match file_or_name(&args.workload)? {
        (text, Some(file)) => spec::workload_from(&text, Some(&file))?,
        (name, None) => spec::workload_from(&name, None)?,
    };
    if let Some(d) = &args.duration {
        workload.duration = humantime_duration(d)?;
    }
    if let Some(seed) = args.seed {
        workload.seed = seed;
    }
    let server_arg = args.server.clone().or_else(|| {
        let name = args.workload.to_ascii_lowercase();
        spec::SERVERS.contains(&name.as_str()).then_some(name)
    });
    let server = match server_arg.as_deref() {
        None | Some("none") => None,
        Some(s) => Some(match file_or_name(s)? {
            (text, Some(file)) => spec::server_from(&text, Some(&file))?,
            (name, None) => spec::server_from(&name, None)?,
        }),
    };
    // The host, not the core, reads the wall clock: only to say how long the simulation took.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let sim = simulate(configs, &workload, server.as_ref())?;
    let wall = started.elapsed();
    let requests: u64 = sim.runs.iter().map(|(r, _)| r.went).sum();
    match &args.json {
        Some(p) if p.as_os_str() == "-" => println!("{}", sim.reports_json()),
        Some(p) => {
            write(p, &sim.reports_json())?;
            print!("{}", sim.text());
        }
        None => print!("{}", sim.text()),
    }
    if let Some(p) = &args.html {
        let title = format!("traffic-control: what if ({} for {:?})", args.workload, workload.duration);
        write(p, &sim.html(&title))?;
        eprintln!("wrote {}", p.display());
    }
    eprintln!(
        "simulated {:?} of traffic ({} admissions over {} run(s)) in {:.0} ms: {:.0} simulated requests per second",
        workload.duration,
        requests,
        sim.runs.len(),
        wall.as_secs_f64() * 1e3,
        requests as f64 / wall.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn config(spec: &str) -> Result<Labelled, SimError> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let overrides = parts
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| err("--config", &format!("override {kv:?} is not VAR=value")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut labelled = match file_or_name(head)? {
        (text, Some(file)) => config_from(&text, Some(&file), &overrides)?,
        (name, None) => config_from(&name, None, &overrides)?,
    };
    if let Some(file) = Path::new(head).file_name().filter(|_| Path::new(head).is_file()) {
        labelled.label = labelled.label.replacen(head, &file.to_string_lossy(), 1);
    }
    Ok(labelled)
}

/// A file's text and name when `arg` names a file, else the argument as a preset name.
fn file_or_name(arg: &str) -> Result<(String, Option<String>), SimError> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| err(arg, &e.to_string()))?;
        return Ok((text, Some(arg.to_string())));
    }
    if arg.contains('/') || arg.contains('.') {
        return Err(err(arg, "no such file"));
    }
    Ok((arg.to_string(), None))
}

fn humantime_duration(text: &str) -> Result<Duration, SimError> {
    let d: Duration = text.parse::<humantime::Duration>().map_err(|e| err("--duration", &e.to_string()))?.into();
    Ok(d)
}

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|e| err(&path.display().to_string(), &e.to_string()))
}

fn err(field: &str, reason: &str) -> SimError {
    SimError { field: field.to_string(), reason: reason.to_string() }
}
