//! Memory per waiting request: a counting global allocator measures the heap bytes a controller
//! holds before and after 100 000 requests queue up (each with a deadline, two routes mixed).
//!
//! Run: `cargo run --release --example memory`
//!
//! The counter is `stats_alloc` (it wraps `std::alloc::System`): a `GlobalAlloc` impl needs
//! `unsafe`, which this workspace forbids in its own targets. It counts the bytes asked of the
//! allocator, not the allocator's own overhead (about 8-16 bytes per live allocation with glibc), so
//! live allocations are printed too.

use std::alloc::System;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use traffic_control_core::{Config, Decision, Request, Timestamp, TrafficControl};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WAITING: usize = 100_000;

/// (bytes, allocations) live on the heap right now.
fn live() -> (i64, i64) {
    let s = GLOBAL.stats();
    (s.bytes_allocated as i64 - s.bytes_deallocated as i64, s.allocations as i64 - s.deallocations as i64)
}

fn config() -> Config {
    Config::from_json(
        r#"{
        "limits": {
            "global":     { "kind": "window", "max": 150, "per": "10s" },
            "catalog":    { "kind": "window", "max": 15,  "per": "10s" },
            "competitor": { "kind": "window", "max": 2,   "per": "1s" }
        },
        "global": ["global"],
        "routes": [
            { "name": "catalog",    "method": "POST", "path": "^/ws/listings",                "limits": ["catalog"] },
            { "name": "competitor", "method": "GET",  "path": "^/ws/backbox/v1/competitors", "limits": ["competitor"] }
        ],
        "queue": { "max_waiting": 1000000 }
    }"#,
    )
    .expect("valid config")
}

/// Fills the global window so that every later request waits.
fn full_controller(now: Timestamp) -> TrafficControl {
    let mut tc = TrafficControl::new(config()).expect("valid config");
    for _ in 0..150 {
        assert!(matches!(tc.try_acquire(now, Request::default()), Decision::Go(_)));
    }
    while tc.poll(now).is_some() {}
    tc
}

/// Queues `n` requests built by `make`; returns the heap bytes held per waiting request.
fn measure(name: &str, n: usize, make: impl Fn(usize, Timestamp) -> Request) -> i64 {
    let now = Timestamp::from_millis(1_000);
    let mut tc = full_controller(now);
    let (bytes0, allocs0) = live();
    let mut ids = Vec::with_capacity(n);
    let (bytes_ids, allocs_ids) = live();
    for i in 0..n {
        ids.push(tc.submit(now, make(i, now)).expect("queued"));
    }
    while tc.poll(now).is_some() {}
    assert_eq!(tc.waiting(), n);
    let (bytes1, allocs1) = live();
    // The ids vector is the measurement's, not the controller's.
    let held = bytes1 - bytes0 - (bytes_ids - bytes0);
    let allocs = allocs1 - allocs0 - (allocs_ids - allocs0);
    println!(
        "{name}: {n} waiting hold {:.1} MiB: {} bytes and {:.2} live allocations per waiting request",
        held as f64 / (1 << 20) as f64,
        held / n as i64,
        allocs as f64 / n as f64,
    );
    for id in ids.drain(..) {
        assert!(tc.cancel(now, id));
    }
    while tc.poll(now).is_some() {}
    let (bytes2, _) = live();
    println!(
        "{name}: after cancelling all, {:.1} MiB still held (kept capacity), {} bytes per former waiter",
        (bytes2 - bytes0) as f64 / (1 << 20) as f64,
        (bytes2 - bytes0) / n as i64
    );
    held / n as i64
}

fn main() {
    let deadline = |now: Timestamp| Timestamp::from_nanos(now.as_nanos() + 3_600_000_000_000);
    // Requests named by URL, as hosts send them: each keeps its own endpoint string
    // ("POST /ws/listings/123").
    let by_url = measure("by url", WAITING, |i, now| {
        let request = if i % 2 == 0 {
            Request::http("POST", format!("/ws/listings/{i}"))
        } else {
            Request::http("GET", format!("/ws/backbox/v1/competitors/{i}"))
        };
        request.deadline(deadline(now))
    });
    // Requests named by route: the endpoint is the route's shared name.
    measure("by route", WAITING, |i, now| {
        Request::route(if i % 2 == 0 { "catalog" } else { "competitor" }).deadline(deadline(now))
    });
    println!("bytes per waiting request: {by_url}");
}
