//! Admission benchmarks, all on a fake clock (a nanosecond counter advanced by hand).
//!
//! - `try_acquire_complete_2_limits/{by_route,by_route_no_log,by_url}`: the direct path through a
//!   window and a concurrency limit: `try_acquire`, `complete`, drain `poll`. By route name no regex
//!   runs; by URL the route table's regex does; `no_log` with the event log off.
//! - `submit_poll_cancel_with_n_waiting/{n}`: n requests wait on a full window; one more is
//!   submitted, the events drained, and it is cancelled again (n stays constant).
//! - `complete_go_submit_with_n_waiting/{n}`: n requests wait on a concurrency limit at its max;
//!   one in-flight request completes, so exactly one waiter goes (a scheduling pass with n waiting),
//!   and a new waiter is submitted in its place.
//! - `complete_go_submit_with_tenants/{t}`: the same with 10,000 waiting spread over t tenants of
//!   weights 1 to 3 (each tenant has its own class: a scheduling pass sees t heads).
//! - `complete_go_submit_with_shares/{t}`: the same again, every tenant's borrowing capped at 50%
//!   (each has its own copy of the limit) and eight of them guaranteed 10% (every check on the
//!   limit counts what those eight do not use).
//!
//! The cost per operation must grow no faster than log n; after the run, the medians are read back
//! from criterion's `estimates.json` and printed side by side.
//!
//! Run: `cargo bench --bench admission -- --warm-up-time 1 --measurement-time 3`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion};
use traffic_control_core::{Config, Decision, EventKind, Outcome, Request, RequestId, Timestamp, TrafficControl};

const WAITING: [usize; 3] = [1_000, 10_000, 100_000];

/// Builds the request of one iteration.
type MakeRequest = fn() -> Request;

/// A fake monotonic clock.
struct Clock(u64);

impl Clock {
    fn advance(&mut self, nanos: u64) -> Timestamp {
        self.0 += nanos;
        Timestamp::from_nanos(self.0)
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.0)
    }
}

fn controller(json: &str) -> TrafficControl {
    TrafficControl::new(Config::from_json(json).expect("valid config")).expect("valid config")
}

/// Drains the events, returning the requests that got a Go.
fn drain_goes(tc: &mut TrafficControl, now: Timestamp, goes: &mut VecDeque<RequestId>) {
    while let Some(event) = tc.poll(now) {
        if let EventKind::Go { permit, .. } = event.kind {
            goes.push_back(permit.request);
        }
    }
}

fn try_acquire_complete(c: &mut Criterion) {
    let config = r#"{
        "limits": {
            "rate":     { "kind": "window", "max": 1000, "per": "1s" },
            "inflight": { "kind": "concurrency", "max": 64 }
        },
        "routes": [ { "name": "r", "method": "POST", "path": "^/ws/listings", "limits": ["rate", "inflight"] } ]
    }"#;
    let mut group = c.benchmark_group("try_acquire_complete_2_limits");
    // `no_log`: the event log off (set_event_log(false)), as a host that keeps no log runs it.
    let variants: [(&str, MakeRequest, bool); 3] = [
        ("by_route", || Request::route("r"), true),
        ("by_route_no_log", || Request::route("r"), false),
        ("by_url", || Request::http("POST", "/ws/listings/1"), true),
    ];
    for (name, make, log) in variants {
        let mut tc = controller(config);
        tc.set_event_log(log);
        let mut clock = Clock(0);
        // The host builds its request once and hands it by reference.
        let request = make();
        group.bench_function(name, |b| {
            b.iter(|| {
                // One per millisecond: exactly at the window's max (1000 in any second).
                let now = clock.advance(1_000_000);
                let Decision::Go(permit) = tc.try_acquire(now, &request) else {
                    panic!("1 per ms must always fit 1000 per s and 64 in flight");
                };
                let _ = black_box(tc.complete(now, permit.request, Outcome::status(200)));
                while tc.poll(now).is_some() {}
            });
        });
    }
    group.finish();
}

fn submit_poll_cancel(c: &mut Criterion) {
    // The window is full for 30 days after the first admission: every later request waits.
    let config = r#"{
        "limits": { "rate": { "kind": "window", "max": 1, "per": "30days" } },
        "routes": [ { "name": "r", "path": "^/x", "limits": ["rate"] } ],
        "queue": { "max_waiting": 1000000 }
    }"#;
    let mut group = c.benchmark_group("submit_poll_cancel_with_n_waiting");
    for n in WAITING {
        let mut tc = controller(config);
        let mut clock = Clock(0);
        let now = clock.now();
        assert!(matches!(tc.try_acquire(now, Request::route("r")), Decision::Go(_)));
        for _ in 0..n {
            tc.submit(now, Request::route("r")).expect("queued");
        }
        while tc.poll(now).is_some() {}
        assert_eq!(tc.waiting(), n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let now = clock.advance(1_000);
                let id = tc.submit(now, Request::route("r")).expect("queued");
                while tc.poll(now).is_some() {}
                assert!(tc.cancel(now, id));
                while tc.poll(now).is_some() {}
            });
        });
        assert_eq!(tc.waiting(), n);
    }
    group.finish();
}

fn complete_go_submit(c: &mut Criterion) {
    let config = r#"{
        "limits": { "inflight": { "kind": "concurrency", "max": 64 } },
        "routes": [ { "name": "r", "path": "^/x", "limits": ["inflight"] } ],
        "queue": { "max_waiting": 1000000 }
    }"#;
    let mut group = c.benchmark_group("complete_go_submit_with_n_waiting");
    for n in WAITING {
        let mut tc = controller(config);
        let mut clock = Clock(0);
        let now = clock.now();
        let mut in_flight = VecDeque::new();
        for _ in 0..64 + n {
            tc.submit(now, Request::route("r")).expect("admitted or queued");
        }
        drain_goes(&mut tc, now, &mut in_flight);
        assert_eq!((in_flight.len(), tc.waiting()), (64, n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // Each request is in flight for 64 iterations: far below the 60 s lease.
                let now = clock.advance(1_000);
                let done = in_flight.pop_front().expect("64 in flight");
                let _ = black_box(tc.complete(now, done, Outcome::status(200)));
                drain_goes(&mut tc, now, &mut in_flight);
                tc.submit(now, Request::route("r")).expect("queued");
                drain_goes(&mut tc, now, &mut in_flight);
            });
        });
        assert_eq!((in_flight.len(), tc.waiting()), (64, n));
    }
    group.finish();
}

const TENANTS: [usize; 2] = [10, 1_000];

fn complete_go_submit_tenants(c: &mut Criterion, shares: bool) {
    let mut group =
        c.benchmark_group(if shares { "complete_go_submit_with_shares" } else { "complete_go_submit_with_tenants" });
    for t in TENANTS {
        let share = |i: usize| match (shares, i < 8) {
            (false, _) => String::new(),
            (true, true) => r#", "guaranteed": 10, "borrow": 50"#.to_string(),
            (true, false) => r#", "borrow": 50"#.to_string(),
        };
        let tenants: Vec<String> =
            (0..t).map(|i| format!(r#""t{i}": {{ "weight": {}{} }}"#, 1 + i % 3, share(i))).collect();
        let config = format!(
            r#"{{ "limits": {{ "inflight": {{ "kind": "concurrency", "max": 64 }} }},
                 "routes": [ {{ "name": "r", "path": "^/x", "limits": ["inflight"] }} ],
                 "queue": {{ "max_waiting": 1000000 }}, "tenants": {{ {} }} }}"#,
            tenants.join(", ")
        );
        let names: Vec<String> = (0..t).map(|i| format!("t{i}")).collect();
        let mut tc = controller(&config);
        let mut clock = Clock(0);
        let now = clock.now();
        let mut in_flight = VecDeque::new();
        let n = 10_000;
        for i in 0..64 + n {
            tc.submit(now, Request::route("r").tenant(names[i % t].clone())).expect("admitted or queued");
        }
        drain_goes(&mut tc, now, &mut in_flight);
        assert_eq!((in_flight.len(), tc.waiting()), (64, n));
        let mut next = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(t), &t, |b, _| {
            b.iter(|| {
                let now = clock.advance(1_000);
                let done = in_flight.pop_front().expect("64 in flight");
                let _ = black_box(tc.complete(now, done, Outcome::status(200)));
                drain_goes(&mut tc, now, &mut in_flight);
                next = (next + 1) % t;
                tc.submit(now, Request::route("r").tenant(names[next].clone())).expect("queued");
                drain_goes(&mut tc, now, &mut in_flight);
            });
        });
    }
    group.finish();
}

/// Where criterion writes its results (its own lookup order, with the bench binary's location
/// standing in for `cargo metadata`).
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    // target/<profile>/deps/admission-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median of a benchmark measured by this run, in nanoseconds.
fn median_ns(dir: &std::path::Path, id: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn print_summary(since: SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let mut lines = Vec::new();
    for id in ["by_route", "by_route_no_log", "by_url"] {
        if let Some(m) = median_ns(&dir, &format!("try_acquire_complete_2_limits/{id}"), since) {
            lines.push(format!("  try_acquire_complete_2_limits/{id:<15} median {m:>9.1} ns"));
        }
    }
    for group in ["submit_poll_cancel_with_n_waiting", "complete_go_submit_with_n_waiting"] {
        let medians: Vec<(usize, f64)> =
            WAITING.iter().filter_map(|&n| median_ns(&dir, &format!("{group}/{n}"), since).map(|m| (n, m))).collect();
        for &(n, m) in &medians {
            lines.push(format!("  {group}/{n:<7} median {m:>9.1} ns"));
        }
        if let (Some(&(n0, m0)), Some(&(n1, m1))) = (medians.first(), medians.last()) {
            if n1 > n0 {
                // Growing like log n would give at most log(n1)/log(n0) times the cost.
                let log_bound = (n1 as f64).ln() / (n0 as f64).ln();
                lines.push(format!(
                    "  {group}: {n1} vs {n0} waiting costs x{:.2} (log n growth would allow x{log_bound:.2})",
                    m1 / m0
                ));
            }
        }
    }
    for group in ["complete_go_submit_with_tenants", "complete_go_submit_with_shares"] {
        for t in TENANTS {
            if let Some(m) = median_ns(&dir, &format!("{group}/{t}"), since) {
                lines.push(format!("  {group}/{t:<5} median {m:>9.1} ns"));
            }
        }
    }
    if !lines.is_empty() {
        println!("\nMedians measured by this run:\n{}", lines.join("\n"));
    }
}

fn main() {
    // The harness, not the core, reads the wall clock: only to tell this run's results from older ones.
    #[allow(clippy::disallowed_methods)]
    let since = SystemTime::now() - Duration::from_secs(1);
    let mut c = Criterion::default().configure_from_args();
    try_acquire_complete(&mut c);
    submit_poll_cancel(&mut c);
    complete_go_submit(&mut c);
    complete_go_submit_tenants(&mut c, false);
    complete_go_submit_tenants(&mut c, true);
    c.final_summary();
    print_summary(since);
}
