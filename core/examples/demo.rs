//! The Back Market probe workload, simulated in fake time against the seed's safe limits.
//!
//! Run: `cargo run --release --example demo`
//!
//! - Limits: global window 150/10s (every request), catalog 15/10s (`POST ^/ws/listings`),
//!   competitor 2/1s (`^/ws/backbox/v1/competitors`), care 300/60s (`^/ws/sav`).
//! - 100 probes, one starting every second: Dip (`POST /ws/listings/{id}`, NORMAL, reserving the
//!   Peak), then Peek (`GET /ws/backbox/v1/competitors/{id}`, HIGH) once the Dip completes, then
//!   Peak (`POST /ws/listings/{id}`, HIGH, spending the reservation) once the Peek completes.
//! - A flood of LOW scans (`GET /ws/listings?page=n`: no POST, so global only), 20 per second with
//!   a 30 s deadline, until the last probe is done; a trickle of NORMAL care reads
//!   (`GET /ws/sav/tickets?page=n`) every 2 s; a few CRITICAL reverts (`POST /ws/listings/{id}`).
//! - Responses take 50-300 ms (a deterministic xorshift).
//!
//! The host loop is the queued path: submit, drain `poll(now)`, on Go schedule the completion, then
//! jump the fake clock to the earliest of the next completion, `poll_timeout()` and the next
//! arrival. The report checks every limit independently, from the Go events' timestamps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use traffic_control_core::{
    Config, EventKind, FollowUp, Outcome, Priority, Request, RequestId, ReservationId, Timestamp, TrafficControl,
};

pub(crate) const PROBES: usize = 100;
const PROBE_EVERY: u64 = 1_000 * MS;
const SCAN_EVERY: u64 = 50 * MS;
const SCAN_DEADLINE: u64 = 30 * SEC;
const CARE_EVERY: u64 = 2 * SEC;
pub(crate) const REVERTS_AT: [u64; 5] = [15 * SEC, 40 * SEC, 65 * SEC, 90 * SEC, 115 * SEC];
const PROGRESS_EVERY: u64 = 10 * SEC;

const MS: u64 = 1_000_000;
pub(crate) const SEC: u64 = 1_000 * MS;

const CONFIG: &str = r#"{
    "limits": {
        "global":     { "kind": "window", "max": 150, "per": "10s" },
        "catalog":    { "kind": "window", "max": 15,  "per": "10s" },
        "competitor": { "kind": "window", "max": 2,   "per": "1s" },
        "care":       { "kind": "window", "max": 300, "per": "60s" }
    },
    "global": ["global"],
    "routes": [
        { "name": "catalog",    "method": "POST", "path": "^/ws/listings",               "limits": ["catalog"] },
        { "name": "competitor",                   "path": "^/ws/backbox/v1/competitors", "limits": ["competitor"] },
        { "name": "care",                         "path": "^/ws/sav",                    "limits": ["care"] }
    ]
}"#;

/// The limits as this report checks them (name, max, window), independent of the core.
pub(crate) const LIMITS: [(&str, usize, u64); 4] =
    [("global", 150, 10 * SEC), ("catalog", 15, 10 * SEC), ("competitor", 2, SEC), ("care", 300, 60 * SEC)];
const GLOBAL: usize = 0;
pub(crate) const CATALOG: usize = 1;
const COMPETITOR: usize = 2;
const CARE: usize = 3;

/// What a request is, in the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dip(usize),
    Peek(usize),
    Peak(usize),
    Scan,
    Care,
    Revert,
}

impl Kind {
    /// The limits the request takes by the workload's own reading of the API's rules.
    fn limits(self) -> &'static [usize] {
        match self {
            Kind::Dip(_) | Kind::Peak(_) | Kind::Revert => &[GLOBAL, CATALOG],
            Kind::Peek(_) => &[GLOBAL, COMPETITOR],
            Kind::Care => &[GLOBAL, CARE],
            Kind::Scan => &[GLOBAL],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Dip(_) => "dip",
            Kind::Peek(_) => "peek",
            Kind::Peak(_) => "peak",
            Kind::Scan => "scan",
            Kind::Care => "care",
            Kind::Revert => "revert",
        }
    }
}

const KINDS: [&str; 6] = ["dip", "peek", "peak", "scan", "care", "revert"];

/// Deterministic pseudo-random response latencies: xorshift64.
struct Latency(u64);

impl Latency {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        50 * MS + self.0 % (250 * MS + 1)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    dip_go: Option<u64>,
    reservation: Option<ReservationId>,
    done_at: Option<u64>,
}

pub(crate) struct Sim {
    tc: TrafficControl,
    now: u64,
    kinds: HashMap<RequestId, Kind>,
    probes: Vec<Probe>,
    /// (completion time, sequence, request): completions in time order, ties in go order.
    completions: BinaryHeap<Reverse<(u64, u64, RequestId)>>,
    latency: Latency,
    /// Go instants per limit, for the independent window check.
    pub(crate) admitted: [Vec<u64>; 4],
    /// Time waited per priority, and per kind (nanoseconds).
    waits: BTreeMap<Priority, Vec<u64>>,
    pub(crate) kind_waits: BTreeMap<&'static str, Vec<u64>>,
    /// Go instants of the CRITICAL reverts.
    pub(crate) revert_goes: Vec<u64>,
    goes: BTreeMap<&'static str, usize>,
    pub(crate) peaks_waited: Vec<(usize, Duration)>,
    expired: BTreeMap<&'static str, usize>,
    rejected: BTreeMap<&'static str, usize>,
    pub(crate) reservations_expired: usize,
    scans: u64,
    cares: u64,
    reverts: usize,
}

impl Sim {
    fn at(&self) -> Timestamp {
        Timestamp::from_nanos(self.now)
    }

    fn submit(&mut self, kind: Kind, request: Request) {
        match self.tc.submit(self.at(), request) {
            Ok(id) => {
                self.kinds.insert(id, kind);
            }
            // The Rejected event is drained with the others; nothing is queued.
            Err(error) => eprintln!("{:>8}: {} refused: {error}", fmt_t(self.now), kind.name()),
        }
    }

    fn start_probe(&mut self, p: usize) {
        let url = format!("/ws/listings/{}", 1000 + p);
        let dip = Request::http("POST", url.clone()).priority(Priority::Normal).reserve(FollowUp::http("POST", url));
        self.submit(Kind::Dip(p), dip);
    }

    fn complete(&mut self, id: RequestId) {
        let _ = self.tc.complete(self.at(), id, Outcome::status(200));
        match self.kinds[&id] {
            Kind::Dip(p) => {
                let peek = Request::http("GET", format!("/ws/backbox/v1/competitors/{}", 1000 + p));
                self.submit(Kind::Peek(p), peek.priority(Priority::High));
            }
            Kind::Peek(p) => {
                let mut peak = Request::http("POST", format!("/ws/listings/{}", 1000 + p)).priority(Priority::High);
                if let Some(reservation) = self.probes[p].reservation {
                    peak = peak.spend(reservation);
                }
                self.submit(Kind::Peak(p), peak);
            }
            Kind::Peak(p) => self.probes[p].done_at = Some(self.now),
            Kind::Scan | Kind::Care | Kind::Revert => {}
        }
    }

    /// Drains every event; Go events start the (simulated) HTTP request.
    fn drain(&mut self) {
        while let Some(event) = self.tc.poll(self.at()) {
            let kind = self.kinds.get(&event.request).copied();
            match event.kind {
                EventKind::Go { permit, waited } => {
                    let kind = kind.expect("every Go is for a request this host submitted");
                    let at = permit.at.as_nanos();
                    for &l in kind.limits() {
                        self.admitted[l].push(at);
                    }
                    self.waits.entry(event.priority).or_default().push(duration_nanos(waited));
                    self.kind_waits.entry(kind.name()).or_default().push(duration_nanos(waited));
                    *self.goes.entry(kind.name()).or_default() += 1;
                    match kind {
                        Kind::Dip(p) => {
                            self.probes[p].dip_go = Some(at);
                            self.probes[p].reservation = permit.reservations.first().copied();
                        }
                        Kind::Peak(p) if !waited.is_zero() => self.peaks_waited.push((p, waited)),
                        Kind::Revert => self.revert_goes.push(at),
                        _ => {}
                    }
                    let done = self.now + self.latency.next();
                    self.completions.push(Reverse((done, permit.request.0, permit.request)));
                }
                EventKind::Expired { .. } => *self.expired.entry(kind.map_or("?", Kind::name)).or_default() += 1,
                EventKind::Rejected { .. } => *self.rejected.entry(kind.map_or("?", Kind::name)).or_default() += 1,
                EventKind::ReservationExpired { .. } => self.reservations_expired += 1,
                _ => {}
            }
        }
    }

    /// Admissions, expiries and reservation expiries so far.
    fn happenings(&self) -> usize {
        self.goes.values().sum::<usize>() + self.expired.values().sum::<usize>() + self.reservations_expired
    }

    pub(crate) fn probes_done(&self) -> usize {
        self.probes.iter().filter(|p| p.done_at.is_some()).count()
    }

    fn progress(&mut self, t: u64) {
        let waiting = self.tc.snapshot(self.at()).waiting;
        let goes = |k: &str| self.goes.get(k).copied().unwrap_or(0);
        println!(
            "t={:>4}s  probes {:>3}/{PROBES}  go: dip {:>3} peek {:>3} peak {:>3} scan {:>5} care {:>3} revert {}  \
             waiting crit/high/normal/low {}/{}/{}/{:<4}  expired {}",
            t / SEC,
            self.probes_done(),
            goes("dip"),
            goes("peek"),
            goes("peak"),
            goes("scan"),
            goes("care"),
            goes("revert"),
            waiting[0],
            waiting[1],
            waiting[2],
            waiting[3],
            self.expired.values().sum::<usize>(),
        );
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn fmt_t(nanos: u64) -> String {
    format!("{:.3}s", nanos as f64 / SEC as f64)
}

fn fmt_ms(nanos: u64) -> String {
    format!("{:.1}ms", nanos as f64 / MS as f64)
}

/// The most admissions in any half-open interval `[s, s + per)`: the maximum is reached by an
/// interval starting at an admission.
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

/// The value at quantile `q` (nearest rank) of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    // The host, not the core, reads the wall clock: only to report how long the simulation took.
    #[allow(clippy::disallowed_methods)]
    let wall = Instant::now();
    println!("Back Market probe workload, simulated: {PROBES} probes, LOW scan flood, care reads, CRITICAL reverts");
    let (mut sim, wakeups) = simulate(true);
    let simulated = sim.now;
    let wall = wall.elapsed();
    report(&mut sim, simulated, wall, wakeups);
}

/// Runs the whole workload in fake time; prints a progress line every simulated 10 s if asked.
/// `core/tests/backmarket.rs` runs the same simulation and asserts on its outcome.
pub(crate) fn simulate(show_progress: bool) -> (Sim, Wakeups) {
    let config = Config::from_json(CONFIG).expect("valid config");
    let mut sim = Sim {
        tc: TrafficControl::new(config).expect("valid config"),
        now: 0,
        kinds: HashMap::new(),
        probes: vec![Probe::default(); PROBES],
        completions: BinaryHeap::new(),
        latency: Latency(0x9E37_79B9_7F4A_7C15),
        admitted: Default::default(),
        waits: BTreeMap::new(),
        kind_waits: BTreeMap::new(),
        revert_goes: Vec::new(),
        goes: BTreeMap::new(),
        peaks_waited: Vec::new(),
        expired: BTreeMap::new(),
        rejected: BTreeMap::new(),
        reservations_expired: 0,
        scans: 0,
        cares: 0,
        reverts: 0,
    };
    let mut next_probe = 0usize;
    let mut next_scan = 0u64;
    let mut next_care = 0u64;
    let mut next_progress = PROGRESS_EVERY;
    let mut wakeups = 0usize;
    let mut timer_wakeup = false;
    let mut timer_wakeups = 0usize;
    let mut empty_timer_wakeups = 0usize;
    let mut stuck_timeouts = 0usize;
    loop {
        // Completions due now, then arrivals due now, then the events they caused.
        while let Some(&Reverse((at, _, id))) = sim.completions.peek() {
            if at > sim.now {
                break;
            }
            sim.completions.pop();
            sim.complete(id);
        }
        let flooding = sim.probes_done() < PROBES;
        while next_probe < PROBES && next_probe as u64 * PROBE_EVERY <= sim.now {
            sim.start_probe(next_probe);
            next_probe += 1;
        }
        while flooding && next_scan <= sim.now {
            let page = sim.scans;
            let deadline = Timestamp::from_nanos(sim.now + SCAN_DEADLINE);
            let scan = Request::http("GET", format!("/ws/listings?page={page}")).priority(Priority::Low);
            sim.submit(Kind::Scan, scan.deadline(deadline));
            sim.scans += 1;
            next_scan += SCAN_EVERY;
        }
        while flooding && next_care <= sim.now {
            let care = Request::http("GET", format!("/ws/sav/tickets?page={}", sim.cares));
            sim.submit(Kind::Care, care.priority(Priority::Normal));
            sim.cares += 1;
            next_care += CARE_EVERY;
        }
        while sim.reverts < REVERTS_AT.len() && REVERTS_AT[sim.reverts] <= sim.now {
            let revert = Request::http("POST", format!("/ws/listings/{}", 9000 + sim.reverts));
            sim.submit(Kind::Revert, revert.priority(Priority::Critical));
            sim.reverts += 1;
        }
        let happened = sim.happenings();
        sim.drain();
        if timer_wakeup {
            timer_wakeups += 1;
            if sim.happenings() == happened {
                empty_timer_wakeups += 1;
            }
        }

        // The next instant anything happens.
        let flooding = sim.probes_done() < PROBES;
        let arrivals = [
            (next_probe < PROBES).then(|| next_probe as u64 * PROBE_EVERY),
            flooding.then_some(next_scan),
            flooding.then_some(next_care),
            REVERTS_AT.get(sim.reverts).copied(),
        ];
        let host_next =
            arrivals.into_iter().flatten().chain(sim.completions.peek().map(|Reverse((at, _, _))| *at)).min();
        let timeout = sim.tc.poll_timeout().map(Timestamp::as_nanos);
        let Some(next) = host_next.into_iter().chain(timeout).min() else { break };
        timer_wakeup = host_next.is_none_or(|h| timeout.is_some_and(|t| t < h));
        // Polling early is harmless; a timeout not after now, once drained, would spin.
        if next <= sim.now {
            stuck_timeouts += 1;
        }
        let next = next.max(sim.now + 1);
        while next_progress <= next {
            if show_progress {
                sim.progress(next_progress);
            }
            next_progress += PROGRESS_EVERY;
        }
        sim.now = next;
        wakeups += 1;
    }
    if show_progress {
        sim.progress(sim.now);
    }
    let wakeups = Wakeups { all: wakeups, timer: timer_wakeups, empty_timer: empty_timer_wakeups, stuck_timeouts };
    (sim, wakeups)
}

/// How often the host loop woke, and why.
pub(crate) struct Wakeups {
    all: usize,
    /// Woken by `poll_timeout()` alone (no arrival or completion due).
    timer: usize,
    /// Timer wake-ups at which nothing was admitted, expired or released.
    empty_timer: usize,
    /// Times `poll_timeout()` named an instant not after now once every event was drained.
    pub(crate) stuck_timeouts: usize,
}

fn report(sim: &mut Sim, simulated: u64, wall: Duration, wakeups: Wakeups) {
    println!("\n== Limits: most admissions in any window of the limit's length (from Go timestamps) ==");
    let mut all_ok = true;
    for (l, (name, max, per)) in LIMITS.iter().enumerate() {
        let times = &mut sim.admitted[l];
        times.sort_unstable();
        let peak = peak_in_window(times, *per);
        let ok = peak <= *max;
        all_ok &= ok;
        println!(
            "  {name:<11} peak {peak:>4} / max {max:>4} per {:>3}s   total {:>5}   {}",
            per / SEC,
            times.len(),
            if ok { "ok" } else { "OVER THE LIMIT" }
        );
    }

    // Global admissions per 10 s, while LOW scans were still arriving (all of them waited).
    let flood_end = sim.probes.iter().filter_map(|p| p.done_at).max().unwrap_or(simulated);
    let global = &sim.admitted[GLOBAL];
    let per_10s: Vec<usize> = (0..flood_end / (10 * SEC))
        .map(|k| global.iter().filter(|&&t| t >= k * 10 * SEC && t < (k + 1) * 10 * SEC).count())
        .collect();
    println!(
        "  global admissions per 10 s during the LOW flood (max 150): {}",
        per_10s.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
    );

    println!("\n== Waits, per priority (Go events' `waited`), then per kind ==");
    for (priority, waits) in &mut sim.waits {
        waits.sort_unstable();
        println!(
            "  {:<8} count {:>5}   p50 {:>10}   p99 {:>10}   max {:>10}",
            priority.as_str(),
            waits.len(),
            fmt_ms(quantile(waits, 0.50)),
            fmt_ms(quantile(waits, 0.99)),
            fmt_ms(*waits.last().unwrap_or(&0)),
        );
    }
    for kind in KINDS {
        let Some(waits) = sim.kind_waits.get_mut(kind) else { continue };
        waits.sort_unstable();
        println!(
            "    {kind:<6} count {:>5}   p50 {:>10}   p99 {:>10}   max {:>10}",
            waits.len(),
            fmt_ms(quantile(waits, 0.50)),
            fmt_ms(quantile(waits, 0.99)),
            fmt_ms(*waits.last().unwrap_or(&0)),
        );
    }
    let count = |m: &BTreeMap<&'static str, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    println!(
        "  go by kind:      {}",
        KINDS.iter().map(|k| format!("{k} {}", count(&sim.goes, k))).collect::<Vec<_>>().join(", ")
    );
    println!("  submitted:       scan {}, care {}, revert {}, probes {PROBES}", sim.scans, sim.cares, sim.reverts);
    println!(
        "  expired:         {}",
        KINDS.iter().map(|k| format!("{k} {}", count(&sim.expired, k))).collect::<Vec<_>>().join(", ")
    );
    println!(
        "  rejected:        {}",
        KINDS.iter().map(|k| format!("{k} {}", count(&sim.rejected, k))).collect::<Vec<_>>().join(", ")
    );

    println!("\n== Probes ==");
    let done = sim.probes_done();
    let at_probe_price: Vec<(usize, u64)> =
        sim.probes.iter().enumerate().filter_map(|(p, probe)| Some((p, probe.done_at? - probe.dip_go?))).collect();
    let (worst, worst_time) = at_probe_price.iter().copied().max_by_key(|&(_, t)| t).unwrap_or((0, 0));
    let mut times: Vec<u64> = at_probe_price.iter().map(|&(_, t)| t).collect();
    times.sort_unstable();
    println!("  completed:                 {done} / {PROBES}");
    println!(
        "  time at the probe price:   max {} (probe {worst}), p50 {}, p99 {}   (Dip go -> Peak completion)",
        fmt_ms(worst_time),
        fmt_ms(quantile(&times, 0.50)),
        fmt_ms(quantile(&times, 0.99)),
    );
    if sim.peaks_waited.is_empty() {
        println!("  Peaks that waited:         none (every Peak's Go had waited = 0)");
    } else {
        println!("  Peaks that waited:         {}  <-- must be none", sim.peaks_waited.len());
        for &(p, waited) in &sim.peaks_waited {
            let probe = sim.probes[p];
            let dip_go = probe.dip_go.unwrap_or(0);
            let peak_go = probe.done_at.unwrap_or(simulated);
            // A CRITICAL request may take capacity reserved by others: did one go while this
            // probe's reservation was held?
            let reverts: Vec<String> =
                sim.revert_goes.iter().filter(|&&t| t >= dip_go && t <= peak_go).map(|&t| fmt_t(t)).collect();
            println!(
                "    probe {p}: Peak waited {} (Dip went at {}); CRITICAL reverts admitted meanwhile: {}",
                fmt_ms(duration_nanos(waited)),
                fmt_t(dip_go),
                if reverts.is_empty() { "none".to_string() } else { reverts.join(", ") }
            );
        }
    }
    println!("  reservations expired:      {}", sim.reservations_expired);

    println!("\n== Run ==");
    println!("  simulated duration:        {}", fmt_t(simulated));
    println!(
        "  host wake-ups:             {} ({} by poll_timeout alone, {} of which found nothing to do)",
        wakeups.all, wakeups.timer, wakeups.empty_timer
    );
    if wakeups.stuck_timeouts > 0 {
        println!("  poll_timeout <= now after a full drain: {} times  <-- would spin a host", wakeups.stuck_timeouts);
    }
    println!("  wall-clock time:           {:.1}ms", wall.as_secs_f64() * 1e3);
    let verdict = all_ok && sim.peaks_waited.is_empty() && done == PROBES;
    println!("  verdict:                   {}", if verdict { "OK" } else { "PROBLEM (see above)" });
}
