//! The virtual-clock host: the real core's queued path (`submit`, `poll`, `poll_timeout`,
//! `complete`), a network that delays each request before the server counts it, and the server
//! model's answers fed back as a host would feed them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;
use traffic_control_core::{
    Completion, Config, EventKind, FollowUp, Outcome, Priority, Request, RequestId, ReservationId, Timestamp,
    TrafficControl,
};

use crate::report::{Report, Series};
use crate::server::ServerState;
use crate::spec::{self, Arrival, Server, Step, Workload};
use crate::{SimError, MS, SEC};

/// Who sends a request: a stream, a burst or the event log.
struct Source {
    name: String,
    tenant: Option<String>,
    steps: Vec<Step>,
}

/// A stream's or burst's run: its steps one after another.
struct Job {
    source: u32,
    n: u64,
    step: usize,
    /// A reservation made by an earlier step, and the step that spends it.
    reservation: Option<(ReservationId, usize)>,
    /// Asked the status endpoint once already for a budget nobody had reported.
    learned: bool,
}

/// The request a job's step sent.
struct Flight {
    job: u32,
    url: Option<String>,
    method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pending {
    /// A job starts.
    Arrive(u32),
    /// A request reaches the server.
    AtServer(u64),
    /// Its response reaches the host.
    Response(u64),
}

/// A status request (Keepa's free `/token`) sent to learn a budget's balance.
const STATUS_JOB: u32 = u32::MAX;

pub(crate) struct Engine {
    tc: TrafficControl,
    now: u64,
    rng: Rng,
    latency: (u64, u64),
    sources: Vec<Source>,
    jobs: Vec<Job>,
    flights: FxHashMap<u64, Flight>,
    responses: FxHashMap<u64, Outcome>,
    queue: BinaryHeap<Reverse<(u64, u64, Pending)>>,
    seq: u64,
    server: Option<ServerState>,
    /// Jobs waiting for a status request's answer before they are sent again.
    parked: Vec<u32>,
    status_in_flight: bool,
    pub(crate) report: Report,
    pub(crate) series: Series,
    sample_every: u64,
    next_sample: u64,
}

impl Engine {
    pub(crate) fn new(config: Config, workload: &Workload, server: Option<&Server>) -> Result<Engine, SimError> {
        let limits: Vec<String> = config.limits.keys().cloned().collect();
        let tc = TrafficControl::new(config).map_err(|e| SimError::new("config", e.to_string()))?;
        let duration = nanos(workload.duration);
        let mut engine = Engine {
            tc,
            now: 0,
            rng: Rng::new(workload.seed),
            latency: (nanos(workload.latency.min), nanos(workload.latency.max)),
            sources: Vec::new(),
            jobs: Vec::new(),
            flights: FxHashMap::default(),
            responses: FxHashMap::default(),
            queue: BinaryHeap::new(),
            seq: 0,
            server: server.map(ServerState::new),
            parked: Vec::new(),
            status_in_flight: false,
            report: Report::default(),
            series: Series::new(&limits),
            sample_every: (duration / 300).clamp(100 * MS, 10 * SEC),
            next_sample: 0,
        };
        engine.report.simulated_s = workload.duration.as_secs_f64();
        engine.arrivals(workload);
        Ok(engine)
    }

    /// Every arrival of the workload, on the queue.
    fn arrivals(&mut self, w: &Workload) {
        let end = nanos(w.duration);
        for s in &w.streams {
            let source = self.source(&s.name, s.tenant.clone(), spec::steps(s.sequence.as_deref(), s.request.as_ref()));
            let stop = s.stop.map_or(end, nanos).min(end);
            let mut t = nanos(s.start) as f64;
            let mut n = 0u64;
            loop {
                if s.arrival == Arrival::Poisson {
                    t += -(1.0 - self.rng.unit()).ln() / s.rate * SEC as f64;
                }
                if t >= stop as f64 {
                    break;
                }
                self.job(t as u64, source, n);
                n += 1;
                if s.arrival == Arrival::Uniform {
                    t += SEC as f64 / s.rate;
                }
            }
        }
        for b in &w.bursts {
            let source = self.source(&b.name, b.tenant.clone(), spec::steps(b.sequence.as_deref(), b.request.as_ref()));
            for n in 0..u64::from(b.count) {
                self.job(nanos(b.at), source, n);
            }
        }
        for (n, r) in w.recorded.iter().enumerate() {
            let source = self.source("recorded", None, vec![r.step.clone()]);
            self.job(nanos(r.at), source, n as u64);
        }
    }

    fn source(&mut self, name: &str, tenant: Option<String>, steps: Vec<Step>) -> u32 {
        self.sources.push(Source { name: name.to_string(), tenant, steps });
        (self.sources.len() - 1) as u32
    }

    fn job(&mut self, at: u64, source: u32, n: u64) {
        self.jobs.push(Job { source, n, step: 0, reservation: None, learned: false });
        self.push(at, Pending::Arrive((self.jobs.len() - 1) as u32));
    }

    fn push(&mut self, at: u64, p: Pending) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, p)));
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.latency;
        lo + (self.rng.unit() * (hi - lo) as f64) as u64
    }

    fn at(&self) -> Timestamp {
        Timestamp::from_nanos(self.now)
    }

    /// Runs until nothing is left to happen.
    pub(crate) fn run(mut self) -> (Report, Series) {
        loop {
            while let Some(&Reverse((at, _, p))) = self.queue.peek() {
                if at > self.now {
                    break;
                }
                self.queue.pop();
                match p {
                    Pending::Arrive(job) => {
                        let source = &self.sources[self.jobs[job as usize].source as usize];
                        self.report.stream(&source.name, &source.tenant).arrived += 1;
                        self.report.arrived += 1;
                        self.send(job);
                    }
                    Pending::AtServer(id) => self.at_server(id),
                    Pending::Response(id) => self.response(id),
                }
            }
            self.drain();
            let host = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let timer = self.tc.poll_timeout().map(Timestamp::as_nanos);
            let Some(next) = host.into_iter().chain(timer).min() else { break };
            let next = next.max(self.now + 1);
            while self.next_sample <= next {
                self.sample(self.next_sample);
                self.next_sample += self.sample_every;
            }
            self.now = next;
        }
        self.sample(self.now.max(self.next_sample));
        self.finish();
        (self.report, self.series)
    }

    /// Submits a job's current step.
    fn send(&mut self, job: u32) {
        let j = &self.jobs[job as usize];
        let source = &self.sources[j.source as usize];
        let step = &source.steps[j.step];
        let (request, method, url) = request_of(step, j.n, self.now);
        let mut request = request;
        if let Some(k) = step.reserve {
            let next = &source.steps[k];
            let (_, m, u) = request_of(next, j.n, self.now);
            let follow_up = match (&u, &next.route) {
                (Some(u), _) => FollowUp::http(m.clone(), u.clone()),
                (None, Some(r)) => FollowUp::route(r.clone()),
                (None, None) => unreachable!("checked: a step has a url or a route"),
            };
            request = request.reserve(follow_up);
        }
        if let Some((r, _)) = j.reservation.filter(|&(_, k)| k == j.step) {
            request = request.spend(r);
        }
        match self.tc.submit(self.at(), &request) {
            Ok(id) => {
                self.flights.insert(id.0, Flight { job, url, method });
            }
            Err(e) if e.code() == "BUDGET_UNKNOWN" && !self.jobs[job as usize].learned && self.server.is_some() => {
                // A host learns the balance with the free status request, then asks again.
                let status = url.as_deref().and_then(|u| self.tc.status_url(u));
                self.jobs[job as usize].learned = true;
                self.report.relearned += 1;
                self.parked.push(job);
                if let (Some(status), false) = (status, self.status_in_flight) {
                    match self.tc.submit(self.at(), Request::http("GET", status.clone()).priority(Priority::Critical)) {
                        Ok(id) => {
                            self.status_in_flight = true;
                            self.flights
                                .insert(id.0, Flight { job: STATUS_JOB, url: Some(status), method: "GET".into() });
                        }
                        Err(_) => self.unpark(),
                    }
                }
            }
            Err(_) => self.job_ended(job, false),
        }
    }

    fn unpark(&mut self) {
        for job in std::mem::take(&mut self.parked) {
            self.send(job);
        }
    }

    fn at_server(&mut self, id: u64) {
        let Some(f) = self.flights.get(&id) else { return };
        let outcome = match &mut self.server {
            None => Outcome::status(200),
            Some(server) => {
                let server_cost = (f.job != STATUS_JOB)
                    .then(|| {
                        let j = &self.jobs[f.job as usize];
                        self.sources[j.source as usize].steps[j.step].server_cost
                    })
                    .flatten();
                server.answer(self.now, &f.method, f.url.as_deref(), server_cost)
            }
        };
        self.responses.insert(id, outcome);
        let back = self.now + self.latency();
        self.push(back, Pending::Response(id));
    }

    fn response(&mut self, id: u64) {
        let Some(outcome) = self.responses.remove(&id) else { return };
        let status = outcome_status(&outcome);
        let completion = self.tc.complete(self.at(), RequestId(id), outcome);
        let Some(f) = self.flights.get(&id) else { return };
        let job = f.job;
        match completion {
            Completion::Retry { .. } => self.report.retries += 1,
            _ => {
                self.flights.remove(&id);
                if matches!(completion, Completion::GiveUp) {
                    self.report.gave_up += 1;
                }
                if job == STATUS_JOB {
                    self.status_in_flight = false;
                    self.unpark();
                    return;
                }
                let ok = matches!(completion, Completion::Done) && status < 400;
                let j = &mut self.jobs[job as usize];
                let steps = self.sources[j.source as usize].steps.len();
                if ok && j.step + 1 < steps {
                    j.step += 1;
                    self.send(job);
                } else {
                    self.job_ended(job, ok);
                }
            }
        }
    }

    fn job_ended(&mut self, job: u32, ok: bool) {
        let j = &mut self.jobs[job as usize];
        if let Some((r, _)) = j.reservation.take() {
            if !ok {
                self.tc.release(Timestamp::from_nanos(self.now), r);
            }
        }
        let source = &self.sources[j.source as usize];
        let s = self.report.stream(&source.name, &source.tenant);
        if ok {
            s.done += 1;
        } else {
            s.failed += 1;
        }
    }

    /// Every event the core has for now: a Go sends its request.
    fn drain(&mut self) {
        let mut went = false;
        while let Some(event) = self.tc.poll(self.at()) {
            let flight = self.flights.get(&event.request.0);
            let job = flight.map(|f| f.job).filter(|&j| j != STATUS_JOB);
            match &event.kind {
                EventKind::Go { permit, waited } => {
                    went = true;
                    let waited_ms = waited.as_secs_f64() * 1e3;
                    if let Some(job) = job {
                        self.report.went(event.priority, waited_ms);
                        self.series.waits[event.priority as usize].push(waited_ms);
                        let j = &mut self.jobs[job as usize];
                        let source = &self.sources[j.source as usize];
                        if let Some(k) = source.steps[j.step].reserve {
                            j.reservation = permit.reservations.first().map(|&r| (r, k));
                        } else if j.reservation.is_some_and(|(_, k)| k == j.step) {
                            j.reservation = None;
                        }
                        let tenant = source.tenant.clone();
                        self.report.tenant_went(tenant, waited_ms);
                    }
                    let at = self.now + self.latency();
                    self.push(at, Pending::AtServer(event.request.0));
                }
                EventKind::Rejected { error } | EventKind::Expired { error } => {
                    *self.report.rejections.entry(error.code().to_string()).or_default() += 1;
                    if let Some(job) = job {
                        self.flights.remove(&event.request.0);
                        self.job_ended(job, false);
                    }
                }
                EventKind::RateLimited { .. } => self.report.rate_limited += 1,
                EventKind::LimitLowered { limit, from, to } => {
                    self.report.notes.push(format!("{limit}: the server's quota lowered its max from {from} to {to}"))
                }
                _ => {}
            }
        }
        if went {
            let snapshot = self.tc.snapshot(self.at());
            for (i, l) in snapshot.limits.iter().enumerate() {
                let peak = &mut self.series.peak_used[i];
                *peak = (*peak).max(l.used);
            }
        }
    }

    /// The limits, queues and budgets at `at`.
    fn sample(&mut self, at: u64) {
        let at = at.max(self.now);
        let s = self.tc.snapshot(Timestamp::from_nanos(at));
        self.series.push(at as f64 / SEC as f64, &s);
    }

    fn finish(&mut self) {
        // The BUDGET_UNKNOWN refusals a host answers by learning the balance are not refusals
        // its callers see.
        if let Some(n) = self.report.rejections.get_mut("BUDGET_UNKNOWN") {
            *n = n.saturating_sub(self.report.relearned);
            if *n == 0 {
                self.report.rejections.remove("BUDGET_UNKNOWN");
            }
        }
        let snapshot = self.tc.snapshot(self.at());
        self.report.limits_from(&snapshot, &self.series);
        if let Some(server) = &self.server {
            self.report.server_from(server);
        }
        self.report.finish(&self.series);
    }
}

fn request_of(step: &Step, n: u64, now: u64) -> (Request, String, Option<String>) {
    let method = step.method.clone().unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    let url = step.url.as_ref().map(|u| u.replace("{n}", &n.to_string()));
    let mut request = match (&url, &step.route) {
        (Some(u), _) => Request::http(method.clone(), u.clone()),
        (None, Some(r)) => Request::route(r.clone()),
        (None, None) => unreachable!("checked: a step has a url or a route"),
    };
    if let Some(p) = step.priority.as_deref().and_then(Priority::parse) {
        request = request.priority(p);
    }
    if let Some(c) = step.cost {
        request = request.cost(c);
    }
    if let Some(w) = step.max_wait {
        request = request.deadline(Timestamp::from_nanos(now + nanos(w)));
    }
    (request, method, url)
}

fn outcome_status(o: &Outcome) -> u16 {
    o.status.unwrap_or(0)
}

pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// xorshift64*: the workload's arrivals and latencies, the same for the same seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}
