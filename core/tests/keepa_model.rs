//! A Keepa server model in fake time, driven by a host that uses only `submit` / `poll` /
//! `poll_timeout` / `complete` with the `keepa` preset.
//!
//! The model: a token balance refilled by `rate` every minute at the server's own phase, capped at
//! 60 × rate; costs per call (product: 1 per ASIN, bestsellers 50, deals 5, token 0); a request
//! that finds the balance not positive is refused with 429 `NOT_ENOUGH_TOKEN`, one that finds it
//! positive goes through even if it then takes the balance below zero. Every response body carries
//! `tokensLeft`, `refillIn`, `refillRate`, `tokensConsumed` and `timestamp`. A request reaches the
//! server 50–300 ms after its Go and its response reaches the host 150–500 ms later (200–800 ms in
//! all), so responses can arrive out of order.
//!
//! Run with `--nocapture` to see the figures.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use traffic_control_core::{
    Completion, Config, EventKind, Outcome, Priority, Request, RequestError, RequestId, Timestamp, TrafficControl,
};

mod support;
use support::{percentile, Rng, MS, SEC};

const MIN: u64 = 60 * SEC;
/// The server's wall clock at the host's origin (Unix milliseconds).
const EPOCH_MS: u64 = 1_795_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Token,
    /// A batch of this many ASINs.
    Product(u64),
    Bestsellers,
    Deals,
}

impl Call {
    /// What the server charges.
    fn cost(self) -> i64 {
        match self {
            Call::Token => 0,
            Call::Product(n) => n as i64,
            Call::Bestsellers => 50,
            Call::Deals => 5,
        }
    }

    /// The request as the host sends it; product batches give their cost explicitly or leave it to
    /// the route's estimate from the `asin` parameter.
    fn request(self, explicit_cost: bool) -> Request {
        match self {
            Call::Token => Request::http("GET", "https://api.keepa.com/token?key=SECRET"),
            Call::Product(n) => {
                let asins: Vec<String> = (0..n).map(|i| format!("B0{i:08}")).collect();
                let url = format!("https://api.keepa.com/product?key=SECRET&domain=1&asin={}", asins.join(","));
                let r = Request::http("GET", url);
                if explicit_cost {
                    r.cost(n)
                } else {
                    r
                }
            }
            Call::Bestsellers => {
                Request::http("GET", "https://api.keepa.com/bestsellers?key=SECRET&domain=1&category=281052")
            }
            Call::Deals => {
                Request::http("GET", "https://api.keepa.com/deals?key=SECRET&selection=%7B%22page%22%3A0%7D")
            }
        }
    }
}

/// The Keepa server: balance, refills at its own phase, the 429 rule.
struct KeepaServer {
    rate: i64,
    max: i64,
    floor: i64,
    balance: i64,
    next_refill: u64,
    /// (instant, tokens actually added).
    refills: Vec<(u64, i64)>,
    /// (instant, tokens consumed).
    spends: Vec<(u64, i64)>,
    served: u64,
    refused: u64,
    lowest: i64,
    /// Requests that took the balance below the floor: (instant, call, balance after).
    below_floor: Vec<(u64, Call, i64)>,
}

impl KeepaServer {
    fn new(rate: i64, initial: i64, floor: i64, first_refill: u64) -> Self {
        KeepaServer {
            rate,
            max: 60 * rate,
            floor,
            balance: initial,
            next_refill: first_refill,
            refills: Vec::new(),
            spends: Vec::new(),
            served: 0,
            refused: 0,
            lowest: initial,
            below_floor: Vec::new(),
        }
    }

    fn advance(&mut self, t: u64) {
        while self.next_refill <= t {
            let before = self.balance;
            self.balance = (self.balance + self.rate).min(self.max).max(before);
            self.refills.push((self.next_refill, self.balance - before));
            self.next_refill += MIN;
        }
    }

    /// Serves one request arriving at `t`: (status, body).
    fn serve(&mut self, t: u64, call: Call) -> (u16, String) {
        self.advance(t);
        let cost = call.cost();
        let refill_in = (self.next_refill - t) / MS;
        let timestamp = EPOCH_MS + t / MS;
        if cost > 0 && self.balance <= 0 {
            self.refused += 1;
            let body = format!(
                r#"{{"timestamp":{timestamp},"tokensLeft":{},"refillIn":{refill_in},"refillRate":{},"tokensConsumed":0,"error":{{"type":"NOT_ENOUGH_TOKEN","message":"Not enough tokens."}}}}"#,
                self.balance, self.rate
            );
            return (429, body);
        }
        self.balance -= cost;
        self.served += 1;
        if cost > 0 {
            self.spends.push((t, cost));
        }
        self.lowest = self.lowest.min(self.balance);
        if self.balance < self.floor {
            self.below_floor.push((t, call, self.balance));
        }
        let body = format!(
            r#"{{"timestamp":{timestamp},"tokensLeft":{},"refillIn":{refill_in},"refillRate":{},"tokensConsumed":{cost},"processingTimeInMs":12,"products":[]}}"#,
            self.balance, self.rate
        );
        (200, body)
    }

    /// The earliest instant refills alone bring `balance - pending` to `cost` above the floor, if
    /// ever (the balance never holds more than `max`).
    fn earliest_by_refill(&self, now: u64, pending: i64, cost: i64) -> Option<u64> {
        if cost + self.floor > self.max {
            return None;
        }
        let need = self.floor + cost - (self.balance - pending);
        if need <= 0 {
            return Some(now);
        }
        let refills = (need + self.rate - 1) / self.rate;
        Some(self.next_refill + (refills as u64 - 1) * MIN)
    }

    /// Tokens refilled and spent in `[from, to)`.
    fn totals(&self, from: u64, to: u64) -> (i64, i64) {
        let within = |&&(t, _): &&(u64, i64)| t >= from && t < to;
        let refilled = self.refills.iter().filter(within).map(|&(_, n)| n).sum();
        let spent = self.spends.iter().filter(within).map(|&(_, n)| n).sum();
        (refilled, spent)
    }
}

#[derive(Debug, Clone, Copy)]
struct Job {
    at: u64,
    call: Call,
    priority: Priority,
    /// Asks for a deadline this long after submission (HIGH requests only).
    deadline_in: Option<u64>,
    explicit_cost: bool,
}

/// Submissions faster than the refill allows: about `overload` × the refill rate in tokens, with
/// an opening burst that spends the initial balance, HIGH requests with deadlines among them.
fn workload(rng: &mut Rng, rate: u64, start: u64, end: u64, overload: f64) -> Vec<Job> {
    let mut jobs = Vec::new();
    for i in 0..12 {
        let call = Call::Product(rng.range(40, 100));
        jobs.push(Job {
            at: start + i * 100 * MS,
            call,
            priority: Priority::Normal,
            deadline_in: None,
            explicit_cost: i % 2 == 0,
        });
    }
    // Mean cost per job, from the mix below: about 17 tokens.
    let mean_cost = 17.0;
    let per_min = overload * rate as f64 / mean_cost;
    let mean_gap = (MIN as f64 / per_min) as u64;
    let mut t = start + 2 * SEC;
    while t < end {
        let r = rng.unit();
        let job = if r < 0.12 {
            let call = match rng.range(0, 4) {
                0 | 1 => Call::Deals,
                2 | 3 => Call::Product(rng.range(1, 20)),
                _ => Call::Bestsellers,
            };
            let deadline_in = [1, 20, 45, 90, 300][rng.range(0, 4) as usize] * SEC;
            Job { at: t, call, priority: Priority::High, deadline_in: Some(deadline_in), explicit_cost: false }
        } else if r < 0.62 {
            let size = match rng.range(0, 19) {
                0..=13 => rng.range(1, 10),
                14..=18 => rng.range(11, 50),
                _ => rng.range(51, 100),
            };
            Job {
                at: t,
                call: Call::Product(size),
                priority: Priority::Normal,
                deadline_in: None,
                explicit_cost: rng.range(0, 1) == 0,
            }
        } else if r < 0.88 {
            Job { at: t, call: Call::Deals, priority: Priority::Normal, deadline_in: None, explicit_cost: false }
        } else {
            Job { at: t, call: Call::Bestsellers, priority: Priority::Low, deadline_in: None, explicit_cost: false }
        };
        jobs.push(job);
        t += rng.range(mean_gap / 4, 2 * mean_gap - mean_gap / 4);
    }
    jobs
}

enum Step {
    /// The request reaches the server.
    Arrive(RequestId),
    /// Its response reaches the host.
    Respond(RequestId, u16, String, u64),
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    call: Call,
    priority: Priority,
}

/// How a request with a deadline fared, judged against the server's true state at submission.
#[derive(Debug, Default)]
struct Deadlines {
    /// Unreachable by refill and refused at once with INSUFFICIENT_BUDGET (as it must be).
    refused_unreachable: u32,
    /// Unreachable by refill yet accepted or refused otherwise: (instant, call, deadline_in, result).
    wrongly_handled: Vec<String>,
    /// Reachable by the server's truth, refused anyway (the core's view is more cautious).
    refused_reachable: u32,
    accepted: u32,
    met: u32,
    /// Accepted, then expired while waiting.
    expired: Vec<String>,
}

struct Sim {
    tc: TrafficControl,
    server: KeepaServer,
    rng: Rng,
    now: u64,
    steps: BinaryHeap<Reverse<(u64, u64)>>,
    step_data: HashMap<u64, Step>,
    seq: u64,
    sent: HashMap<RequestId, Sent>,
    /// Cost of requests gone but not yet at the server.
    uplink: i64,
    /// Waits from submission to Go, per priority (ns).
    waits: BTreeMap<Priority, Vec<u64>>,
    /// First instant the guard held a request back.
    first_queued: Option<u64>,
    deadlines: Deadlines,
    /// Deadline requests accepted and not yet gone: id -> (deadline, description).
    open_deadlines: HashMap<RequestId, (u64, String)>,
    completions: BTreeMap<&'static str, u32>,
    retries: u32,
    /// The most the core's balance exceeded the server's (less what is on its way to it) at a Go.
    max_optimism: i64,
    optimism_at: Option<(u64, i64, i64)>,
    stuck: u32,
    /// Server order of the newest response delivered, and responses older than it when delivered.
    newest_report: u64,
    stale_reports: u32,
    /// One connection: requests reach the server, and responses the host, in the order sent.
    ordered: bool,
    last_arrival: u64,
    last_delivery: u64,
}

impl Sim {
    fn new(tc: TrafficControl, server: KeepaServer, seed: u64) -> Self {
        Sim {
            tc,
            server,
            rng: Rng(seed),
            now: 0,
            steps: BinaryHeap::new(),
            step_data: HashMap::new(),
            seq: 0,
            sent: HashMap::new(),
            uplink: 0,
            waits: BTreeMap::new(),
            first_queued: None,
            deadlines: Deadlines::default(),
            open_deadlines: HashMap::new(),
            completions: BTreeMap::new(),
            retries: 0,
            max_optimism: i64::MIN,
            optimism_at: None,
            stuck: 0,
            newest_report: 0,
            stale_reports: 0,
            ordered: false,
            last_arrival: 0,
            last_delivery: 0,
        }
    }

    fn ts(&self) -> Timestamp {
        Timestamp::from_nanos(self.now)
    }

    fn schedule(&mut self, at: u64, step: Step) {
        self.seq += 1;
        self.steps.push(Reverse((at, self.seq)));
        self.step_data.insert(self.seq, step);
    }

    fn core_balance(&mut self) -> Option<i64> {
        let now = self.ts();
        self.tc.snapshot(now).limits.iter().find(|l| l.name == "tokens").and_then(|l| l.balance)
    }

    /// Drains the core's events at `now`.
    fn drain(&mut self) {
        let now = self.ts();
        while let Some(event) = self.tc.poll(now) {
            match event.kind {
                EventKind::Go { permit, waited } => {
                    let id = permit.request;
                    let sent = self.sent[&id];
                    self.waits.entry(sent.priority).or_default().push(waited.as_nanos() as u64);
                    assert_eq!(event.priority, sent.priority, "{id} goes at its own priority");
                    if let Some((deadline, what)) = self.open_deadlines.remove(&id) {
                        assert!(self.now <= deadline, "{what} went after its deadline");
                        self.deadlines.met += 1;
                    }
                    self.uplink += sent.call.cost();
                    self.server.advance(self.now);
                    if let Some(core) = self.core_balance() {
                        let truth = self.server.balance - self.uplink;
                        if core - truth > self.max_optimism {
                            self.max_optimism = core - truth;
                            self.optimism_at = Some((self.now, core, truth));
                        }
                    }
                    let mut at = self.now + self.rng.range(50, 300) * MS;
                    if self.ordered {
                        at = at.max(self.last_arrival);
                        self.last_arrival = at;
                    }
                    self.schedule(at, Step::Arrive(id));
                }
                EventKind::Queued => {
                    self.first_queued.get_or_insert(self.now);
                }
                EventKind::Expired { error } => {
                    if let Some((_, what)) = self.open_deadlines.remove(&event.request) {
                        self.deadlines.expired.push(format!("{what}: {error}"));
                    }
                }
                EventKind::Retried { .. } => self.retries += 1,
                _ => {}
            }
        }
    }

    fn submit(&mut self, job: Job) {
        let mut request = job.call.request(job.explicit_cost).priority(job.priority);
        let mut deadline = None;
        let mut reachable = true;
        if let Some(d) = job.deadline_in {
            // The bound the core must honour at once is "refill alone": no other HIGH request
            // ahead of this one may be waiting, or the queue would be the reason, not the budget.
            let high_waiting = self.tc.snapshot(self.ts()).waiting[1];
            if high_waiting == 0 {
                let at = self.now + d;
                deadline = Some(at);
                request = request.deadline(Timestamp::from_nanos(at));
                self.server.advance(self.now);
                reachable =
                    self.server.earliest_by_refill(self.now, self.uplink, job.call.cost()).is_some_and(|t| t <= at);
            }
        }
        let what = format!(
            "{:?} {:?} at {:.3}s deadline +{:?}",
            job.priority,
            job.call,
            self.now as f64 / 1e9,
            job.deadline_in.map(|d| d / SEC)
        );
        match self.tc.submit(self.ts(), request) {
            Ok(id) => {
                self.sent.insert(id, Sent { call: job.call, priority: job.priority });
                if let Some(at) = deadline {
                    if reachable {
                        self.deadlines.accepted += 1;
                        self.open_deadlines.insert(id, (at, what));
                    } else {
                        self.deadlines.wrongly_handled.push(format!("{what}: accepted although refill cannot make it"));
                        self.open_deadlines.insert(id, (at, what));
                    }
                }
            }
            Err(error @ RequestError::InsufficientBudget { .. }) => {
                assert!(deadline.is_some(), "{what}: refused without a deadline: {error}");
                assert_eq!(error.code(), "INSUFFICIENT_BUDGET");
                if reachable {
                    self.deadlines.refused_reachable += 1;
                } else {
                    self.deadlines.refused_unreachable += 1;
                }
            }
            Err(error) => {
                if deadline.is_some() && !reachable {
                    self.deadlines.wrongly_handled.push(format!("{what}: refused with {} ({error})", error.code()));
                } else {
                    panic!("{what}: refused: {error}");
                }
            }
        }
        self.drain();
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Arrive(id) => {
                let call = self.sent[&id].call;
                self.uplink -= call.cost();
                let (status, body) = self.server.serve(self.now, call);
                let order = self.server.served + self.server.refused;
                let mut at = self.now + self.rng.range(150, 500) * MS;
                if self.ordered {
                    at = at.max(self.last_delivery);
                    self.last_delivery = at;
                }
                self.schedule(at, Step::Respond(id, status, body, order));
            }
            Step::Respond(id, status, body, order) => {
                if order < self.newest_report {
                    self.stale_reports += 1;
                }
                self.newest_report = self.newest_report.max(order);
                let completion = self.tc.complete(self.ts(), id, Outcome::status(status).body(body));
                let name = match completion {
                    Completion::Done => "done",
                    Completion::Retry { .. } => "retry",
                    Completion::GiveUp => "give_up",
                    Completion::Unknown => "unknown",
                    _ => "other",
                };
                *self.completions.entry(name).or_default() += 1;
            }
        }
        self.drain();
    }

    /// Runs until nothing is left to do or `end`, submitting `jobs` at their instants.
    fn run(&mut self, jobs: &[Job], end: u64) {
        let mut next_job = 0;
        loop {
            self.drain();
            let t_core = self.tc.poll_timeout().map(Timestamp::as_nanos);
            let t_step = self.steps.peek().map(|Reverse((t, _))| *t);
            let t_job = jobs.get(next_job).map(|j| j.at);
            let Some(next) = [t_core, t_step, t_job].into_iter().flatten().min() else { break };
            if next > end {
                break;
            }
            if next <= self.now {
                self.stuck += 1;
                assert!(self.stuck < 10_000, "poll_timeout keeps naming {next} ns at {} ns", self.now);
            } else {
                self.stuck = 0;
            }
            self.now = self.now.max(next);
            while let Some(&Reverse((t, seq))) = self.steps.peek() {
                if t > self.now {
                    break;
                }
                self.steps.pop();
                let step = self.step_data.remove(&seq).expect("scheduled");
                self.step(step);
            }
            while next_job < jobs.len() && jobs[next_job].at <= self.now {
                self.submit(jobs[next_job]);
                next_job += 1;
            }
        }
    }
}

struct Figures {
    share: f64,
}

/// The whole scenario for one refill rate; `env` holds the host's overrides.
fn scenario(
    name: &str,
    env: &[(&str, &str)],
    rate: i64,
    floor: i64,
    initial: i64,
    seed: u64,
    ordered: bool,
) -> Figures {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = Config::preset("keepa").unwrap().with_env("KEEPA_RATE_LIMIT", &env).unwrap();
    let tc = TrafficControl::new(config).unwrap();
    // The server's refill phase is its own: 23.456 s after the host's origin, then every minute.
    let server = KeepaServer::new(rate, initial, floor, 23_456 * MS);
    let mut sim = Sim::new(tc, server, seed);
    sim.ordered = ordered;

    // The balance is unknown: a costly request fails at once, the free /token goes.
    let err = sim.tc.submit(sim.ts(), Call::Deals.request(false)).unwrap_err();
    assert_eq!(err.code(), "BUDGET_UNKNOWN", "{err}");
    let token = sim.tc.submit(sim.ts(), Call::Token.request(false)).unwrap();
    sim.sent.insert(token, Sent { call: Call::Token, priority: Priority::Normal });
    sim.drain();
    assert_eq!(sim.uplink, 0);
    assert!(sim.steps.len() == 1, "/token went at once while the balance was unknown");
    sim.run(&[], 5 * SEC);
    // The /token response must tell the core the balance. If it does not (a core bug), the host
    // syncs by hand so the rest of the run still checks the guard; the test fails at the end.
    let synced_by_token = sim.core_balance();
    if synced_by_token.is_none() {
        let refill_in = std::time::Duration::from_nanos(sim.server.next_refill - sim.now);
        sim.tc.sync_budget(sim.ts(), "tokens", initial, Some(refill_in)).unwrap();
    }

    let start = sim.now + SEC;
    let end = start + 2 * 60 * MIN;
    let mut wl_rng = Rng(seed ^ 0xABCD);
    let jobs = workload(&mut wl_rng, rate as u64, start, end, 1.25);
    sim.run(&jobs, end);

    // ---- figures -------------------------------------------------------------------------------
    let s = &sim.server;
    // The guard paces from the first refill after the balance came within one large request of
    // the floor, to the last refill before the end: whole refill periods.
    let first_low = {
        // Replay balance after each spend, refills included, to find when it first got low.
        let mut events: Vec<(u64, i64)> =
            s.refills.iter().copied().chain(s.spends.iter().map(|&(t, c)| (t, -c))).collect();
        events.sort_by_key(|&(t, _)| t);
        let mut b = initial;
        events
            .iter()
            .find_map(|&(t, d)| {
                b += d;
                (d < 0 && b < floor + 100).then_some(t)
            })
            .expect("the initial balance was used up")
    };
    let from = s.refills.iter().map(|&(t, _)| t).find(|&t| t > first_low).expect("a refill after");
    let to = s.refills.iter().map(|&(t, _)| t).filter(|&t| t <= end).max().unwrap();
    let (refilled, spent) = s.totals(from, to);
    let share = spent as f64 / refilled as f64;

    let all_waits: Vec<u64> = {
        let mut w: Vec<u64> = sim.waits.values().flatten().copied().collect();
        w.sort_unstable();
        w
    };
    eprintln!(
        "--- {name}: rate {rate}/min, floor {floor}, initial {initial}, seed {seed:#x}, {}",
        if ordered { "one connection (in order)" } else { "parallel connections (responses may overtake)" }
    );
    eprintln!(
        "server: {} served, {} refused (429), lowest balance {} (floor {floor}), {} below the floor",
        s.served,
        s.refused,
        s.lowest,
        s.below_floor.len()
    );
    eprintln!(
        "throughput: {spent} spent / {refilled} refilled = {:.1}% over {:.1} min of pacing (from {:.1} s)",
        share * 100.0,
        (to - from) as f64 / MIN as f64,
        from as f64 / 1e9
    );
    eprintln!(
        "waits (submit -> Go, {} requests): p50 {:.1} s, p99 {:.1} s, max {:.1} s",
        all_waits.len(),
        percentile(&all_waits, 0.5),
        percentile(&all_waits, 0.99),
        percentile(&all_waits, 1.0)
    );
    for (p, w) in &sim.waits {
        let mut w = w.clone();
        w.sort_unstable();
        eprintln!("  {p}: {} requests, p50 {:.1} s, p99 {:.1} s", w.len(), percentile(&w, 0.5), percentile(&w, 0.99));
    }
    let d = &sim.deadlines;
    eprintln!(
        "deadlines: {} refused at once (INSUFFICIENT_BUDGET, unreachable by refill), {} refused though the server's \
         truth could make it, {} accepted ({} met, {} expired), {} mishandled",
        d.refused_unreachable,
        d.refused_reachable,
        d.accepted,
        d.met,
        d.expired.len(),
        d.wrongly_handled.len()
    );
    eprintln!(
        "responses delivered after a newer one (stale token reports): {} of {}",
        sim.stale_reports,
        sim.server.served + sim.server.refused
    );
    eprintln!(
        "completions: {:?}, retries {}, still waiting at the end: {}; core balance vs server (less uplink) at Go: \
         worst optimism {} {:?}",
        sim.completions,
        sim.retries,
        sim.tc.waiting(),
        sim.max_optimism,
        sim.optimism_at.map(|(t, core, truth)| format!("at {:.3}s core {core} truth {truth}", t as f64 / 1e9))
    );

    // ---- assertions ----------------------------------------------------------------------------
    let s = &sim.server;
    assert_eq!(s.refused, 0, "the server never answers 429");
    assert!(
        s.below_floor.is_empty(),
        "the balance went below the floor {floor}: first {:?}",
        s.below_floor
            .iter()
            .take(5)
            .map(|(t, c, b)| format!("{:.3}s {c:?} -> {b}", *t as f64 / 1e9))
            .collect::<Vec<_>>()
    );
    assert!(
        d.wrongly_handled.is_empty(),
        "deadlines unreachable by refill not refused at once: {:#?}",
        d.wrongly_handled
    );
    assert!(d.refused_unreachable > 0, "the workload exercised unreachable deadlines");
    assert!(share >= 0.95, "sustained throughput {:.1}% < 95% of the refill rate", share * 100.0);
    assert_eq!(
        synced_by_token,
        Some(initial),
        "the /token response ({initial} tokens left) must tell the core the balance"
    );
    assert_eq!(
        sim.completions.get("done").copied().unwrap_or(0) as usize,
        sim.completions.values().sum::<u32>() as usize
    );
    Figures { share }
}

/// The preset (20 tokens a minute, at most 1,200) with a floor of 5, over one connection:
/// requests reach the server and responses come back in the order sent.
#[test]
fn keepa_preset_one_connection_paces_two_hours_above_the_floor() {
    let f = scenario(
        "keepa preset (20/min)",
        &[("KEEPA_RATE_LIMIT_TOKENS_FLOOR", "5")],
        20,
        5,
        400,
        0x4B45_4550_4131,
        true,
    );
    assert!(f.share <= 1.05);
}

/// The same over parallel connections: 200-800 ms latencies, so responses overtake each other and
/// token reports arrive out of order.
#[test]
fn keepa_preset_parallel_connections_paces_two_hours_above_the_floor() {
    let f = scenario(
        "keepa preset (20/min)",
        &[("KEEPA_RATE_LIMIT_TOKENS_FLOOR", "5")],
        20,
        5,
        400,
        0x4B45_4550_4131,
        false,
    );
    assert!(f.share <= 1.05);
}

/// A bigger plan through the environment: 60 a minute, at most 3,600, a floor of 50; parallel
/// connections.
#[test]
fn keepa_env_rate_60_floor_50_parallel_connections() {
    let f = scenario(
        "keepa env override (60/min, max 3600)",
        &[
            ("KEEPA_RATE_LIMIT_TOKENS_FLOOR", "50"),
            ("KEEPA_RATE_LIMIT_TOKENS_REFILL", "60"),
            ("KEEPA_RATE_LIMIT_TOKENS_MAX", "3600"),
        ],
        60,
        50,
        1500,
        0x4B45_4550_4132,
        false,
    );
    assert!(f.share <= 1.05);
}

/// The product route estimates 1 token per ASIN from the `asin` parameter; an explicit cost wins.
#[test]
fn product_route_costs_one_token_per_asin() {
    let env = BTreeMap::from([("KEEPA_RATE_LIMIT_TOKENS_INITIAL".to_string(), "500".to_string())]);
    let config = Config::preset("keepa").unwrap().with_env("KEEPA_RATE_LIMIT", &env).unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let t = Timestamp::from_millis(1);
    let balance = |tc: &mut TrafficControl| tc.snapshot(t).limits[0].balance.unwrap();
    let cases = [
        (Call::Product(7).request(false), 7),
        (Call::Product(100).request(false), 100),
        (Call::Product(3).request(true), 3),
        (Request::http("GET", "/product?key=SECRET&asin=B01,B02&stats=90").cost(30), 30),
        (Call::Bestsellers.request(false), 50),
        (Call::Deals.request(false), 5),
        (Call::Token.request(false), 0),
    ];
    for (request, cost) in cases {
        let before = balance(&mut tc);
        let id = tc.submit(t, &request).unwrap();
        assert_eq!(before - balance(&mut tc), cost, "{request:?}");
        while tc.poll(t).is_some() {}
        let _ = tc.complete(t, id, Outcome::status(200));
    }
}

/// Two requests in flight; the server answers them in order, but the first one's response is
/// delivered last. Its older `tokensLeft` must not put back the tokens the second one spent.
///
/// Server: 20 tokens. A (deals, 5) then B (10 ASINs) are processed: 15 left, then 5.
/// B's response (tokensLeft 5) arrives first, A's (tokensLeft 15) after it.
#[test]
fn an_older_token_report_delivered_late_does_not_overstate_the_balance() {
    let env = BTreeMap::from([("KEEPA_RATE_LIMIT_TOKENS_FLOOR".to_string(), "5".to_string())]);
    let config = Config::preset("keepa").unwrap().with_env("KEEPA_RATE_LIMIT", &env).unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let ms = Timestamp::from_millis;
    let body = |left: i64, consumed: u64, at_ms: u64| {
        format!(
            r#"{{"timestamp":{},"tokensLeft":{left},"refillIn":30000,"refillRate":20,"tokensConsumed":{consumed}}}"#,
            EPOCH_MS + at_ms
        )
    };
    let token = tc.submit(ms(0), Call::Token.request(false)).unwrap();
    while tc.poll(ms(0)).is_some() {}
    let _ = tc.complete(ms(300), token, Outcome::status(200).body(body(20, 0, 100)));
    tc.sync_budget(ms(300), "tokens", 20, Some(std::time::Duration::from_millis(29_800))).unwrap(); // in case /token did not
    let a = tc.submit(ms(1000), Call::Deals.request(false)).unwrap();
    let b = tc.submit(ms(1000), Call::Product(10).request(false)).unwrap();
    while tc.poll(ms(1000)).is_some() {}
    let balance = |tc: &mut TrafficControl, t| tc.snapshot(t).limits[0].balance.unwrap();
    assert_eq!(balance(&mut tc, ms(1000)), 5, "both admitted, down to the floor");
    // Server processed A at 1100 ms (15 left), B at 1150 ms (5 left).
    let _ = tc.complete(ms(1300), b, Outcome::status(200).body(body(5, 10, 1150)));
    let _ = tc.complete(ms(1800), a, Outcome::status(200).body(body(15, 5, 1100)));
    let seen = balance(&mut tc, ms(1800));
    assert!(seen <= 5, "the server holds 5 tokens; the core believes {seen}");
    // What the optimism costs: a request the server cannot afford above the floor goes at once.
    let c = tc.submit(ms(1800), Call::Deals.request(false)).unwrap();
    let went =
        std::iter::from_fn(|| tc.poll(ms(1800))).any(|e| matches!(e.kind, EventKind::Go { .. }) && e.request == c);
    assert!(!went, "a deals request (5) went with the server at 5 tokens and a floor of 5");
}

/// The same, with both responses stamped in the same millisecond (Keepa's `timestamp` has no
/// finer grain, and a burst of requests shares it): the one delivered last must not raise the
/// balance either.
#[test]
fn a_token_report_from_the_same_millisecond_delivered_late_does_not_overstate_the_balance() {
    let env = BTreeMap::from([("KEEPA_RATE_LIMIT_TOKENS_FLOOR".to_string(), "5".to_string())]);
    let config = Config::preset("keepa").unwrap().with_env("KEEPA_RATE_LIMIT", &env).unwrap();
    let mut tc = TrafficControl::new(config).unwrap();
    let ms = Timestamp::from_millis;
    let body = |left: i64, consumed: u64| {
        format!(
            r#"{{"timestamp":{},"tokensLeft":{left},"refillIn":30000,"refillRate":20,"tokensConsumed":{consumed}}}"#,
            EPOCH_MS + 1100
        )
    };
    tc.sync_budget(ms(300), "tokens", 20, Some(std::time::Duration::from_millis(29_800))).unwrap();
    let a = tc.submit(ms(1000), Call::Deals.request(false)).unwrap();
    let b = tc.submit(ms(1000), Call::Product(10).request(false)).unwrap();
    while tc.poll(ms(1000)).is_some() {}
    // Server processed A (15 left), then B (5 left), in the same millisecond; B's answer comes first.
    let _ = tc.complete(ms(1300), b, Outcome::status(200).body(body(5, 10)));
    let _ = tc.complete(ms(1800), a, Outcome::status(200).body(body(15, 5)));
    let seen = tc.snapshot(ms(1800)).limits[0].balance.unwrap();
    assert!(seen <= 5, "the server holds 5 tokens; the core believes {seen}");
}

/// The free `/token` request is how a host learns the balance: its response's `tokensLeft` and
/// `refillIn` must sync the budget, so that costly requests can be submitted afterwards.
#[test]
fn the_token_response_syncs_the_budget() {
    let mut tc = TrafficControl::new(Config::preset("keepa").unwrap()).unwrap();
    let ms = Timestamp::from_millis;
    let token = tc.submit(ms(0), Call::Token.request(false)).unwrap();
    let went =
        std::iter::from_fn(|| tc.poll(ms(0))).any(|e| matches!(e.kind, EventKind::Go { .. }) && e.request == token);
    assert!(went, "/token goes while the balance is unknown");
    let body = format!(
        r#"{{"timestamp":{},"tokensLeft":400,"refillIn":41000,"refillRate":20,"tokensConsumed":0}}"#,
        EPOCH_MS + 100
    );
    assert_eq!(tc.complete(ms(300), token, Outcome::status(200).body(body)), Completion::Done);
    assert_eq!(tc.snapshot(ms(300)).limits[0].balance, Some(400), "the balance /token reported");
    tc.submit(ms(300), Call::Deals.request(false)).expect("a costly request after the /token response");
}
