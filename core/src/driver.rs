//! The host driver of the shared store: everything a host does around [`SharedStore`] besides its
//! timer, its promises or futures and its Redis calls, written once (str0m's shape).
//!
//! A host feeds inputs (an acquire, a store reply, a store failure, a cancel, a completion, a
//! wake-up, the time) and drains [`Output`]s: "run this script call", "this acquire may go", "this
//! operation failed", "subscribe to wake-ups", "send this status request". It sleeps until
//! [`poll_timeout`](SharedDriver::poll_timeout) and then calls
//! [`handle_timeout`](SharedDriver::handle_timeout). The driver owns:
//!
//! - **Waiters**: within a local class (the same priority and tenant on the same limits) requests go in
//!   arrival order and only the head asks the store; a waiter registers its claim under an id unique
//!   across processes and keeps its place (`since`) while it asks again.
//! - **When to ask again**: at the instant the store names; without one, within half the waiter
//!   TTL; never later than 10 s while subscribed to wake-ups, half the waiter TTL without them; at
//!   once when a wake-up (another process freed room) or a local completion came while a question
//!   was out.
//! - **The longest wait** (`max_wait`): a waiter that reaches it fails with `DEADLINE_EXCEEDED` and
//!   withdraws its claim; the store refuses at once what cannot go in time.
//! - **The store-unavailable policy**: fail closed, never admit without the store. With
//!   [`Unavailable::Wait`], retry after 50 ms doubling to 1 s, until the request's longest wait (or
//!   `unavailable_max_wait`) is spent, then fail with `STORE_UNAVAILABLE`; with
//!   [`Unavailable::Fail`], fail at once. A call the client does not answer within that bound counts
//!   as failed. Reports (completions, releases, budgets) retry under the same policy.
//! - **Budgets learnt on first use**: a request refused with `BUDGET_UNKNOWN` whose URL gives a
//!   status request (Keepa's `/token`) waits while the driver acquires that request (HIGH), asks the
//!   host to send it ([`Output::Status`]), reports its answer and asks once more; one status request
//!   per URL at a time.
//! - **Wake-up subscriptions**: subscribe while requests wait, unsubscribe a second after the last.
//! - **Retries after a rate-limited answer**, as in memory: a completion whose answer was rate
//!   limited (a 429, a block) queues the request again at its priority under the same id, once the
//!   store has paused its limits (doubling per repeat, with jitter, or the server's time); its next
//!   go comes out as [`Output::Go`] naming the completion's handle. After `feedback.max_retries`,
//!   or when the pause ends past the request's longest wait, [`Output::GiveUp`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::error::{ConfigError, RequestError, StoreError};
use crate::event::{Event, EventEndpoint, EventKind};
use crate::metrics::Counted;
use crate::request::{Decision, Outcome, Permit, Priority, Request, RequestId, ReservationId, Target};
use crate::shared::{AdmitOptions, ReplyValue, SharedStore, StoreCall, StoreOptions};
use crate::snapshot::Snapshot;
use crate::time::Timestamp;
use crate::Config;

/// What a request does while the shared store cannot be reached. Never unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unavailable {
    /// Retry with backoff (50 ms doubling to 1 s) until the request's longest wait, or
    /// `unavailable_max_wait`, is spent; then fail with `STORE_UNAVAILABLE`.
    #[default]
    Wait,
    /// Fail at once with `STORE_UNAVAILABLE`.
    Fail,
}

/// How a [`SharedDriver`] behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverOptions {
    /// What a request does while the store is unreachable.
    pub on_unavailable: Unavailable,
    /// With [`Unavailable::Wait`] and no longest wait of its own: how long a request (or a report)
    /// waits for the store before failing. Default 30 s.
    pub unavailable_max_wait: Duration,
    /// Tells this process's waiters from every other's in Redis (a random tag made by the host).
    pub process_tag: String,
    /// Subscribe to wake-ups while requests wait (the host can listen on the channel).
    pub wake: bool,
    /// Learn an unknown budget with the status request (the host can send HTTP requests).
    pub learn_budgets: bool,
}

impl DriverOptions {
    /// Defaults: wait for the store up to 30 s, wake-ups and budget learning on.
    pub fn new(process_tag: impl Into<String>) -> Self {
        DriverOptions {
            on_unavailable: Unavailable::Wait,
            unavailable_max_wait: Duration::from_secs(30),
            process_tag: process_tag.into(),
            wake: true,
            learn_budgets: true,
        }
    }
}

/// An operation the host started (an acquire, a completion, a release, a budget sync, a snapshot):
/// its result comes as an [`Output`] naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u64);

/// A script call the host runs; its reply or failure goes back under this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Why an operation failed: the core refused the request, or the store did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// Refused, cancelled, out of time or budget.
    Request(RequestError),
    /// The store was unreachable for longer than allowed, or answered nonsense.
    Store(StoreError),
}

impl DriverError {
    /// The stable code (`DEADLINE_EXCEEDED`, `STORE_UNAVAILABLE`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            DriverError::Request(e) => e.code(),
            DriverError::Store(e) => e.code(),
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Request(e) => e.fmt(f),
            DriverError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for DriverError {}

/// What the driver asks of its host, drained with [`SharedDriver::poll_output`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Run this script call (`EVALSHA`, `EVAL` on `NOSCRIPT`) and hand back its reply
    /// ([`SharedDriver::on_reply`]) or its failure ([`SharedDriver::on_store_error`]).
    Run {
        /// The call's id.
        call: CallId,
        /// The call.
        store_call: StoreCall,
    },
    /// The acquire may go: send the request, then complete it.
    Go {
        /// The acquire.
        handle: Handle,
        /// The request's id, unique across processes.
        request: RequestId,
        /// The reservations made for its follow-ups, in their order.
        reservations: Vec<ReservationId>,
    },
    /// The operation failed.
    Fail {
        /// The operation.
        handle: Handle,
        /// Why.
        error: DriverError,
    },
    /// A completion, a release or a budget sync reached the store (`live`: the released
    /// reservation was still held).
    Done {
        /// The operation.
        handle: Handle,
        /// For a release: whether the reservation was live.
        live: bool,
    },
    /// A completion whose answer was rate limited, and whose request may not be retried: its
    /// retries are spent, or the pause ends past its longest wait. Report the failure.
    GiveUp {
        /// The completion.
        handle: Handle,
    },
    /// The metrics asked for by [`SharedDriver::metrics`].
    #[cfg(feature = "metrics")]
    Metrics {
        /// The operation.
        handle: Handle,
        /// This process's counters and queue, the account's limits.
        metrics: Box<crate::Metrics>,
    },
    /// The snapshot asked for.
    Snapshot {
        /// The operation.
        handle: Handle,
        /// Every limit's shared state (times in server time).
        snapshot: Snapshot,
    },
    /// Send `GET url` (the free status request that reports the budgets' balance) and hand its
    /// answer to [`SharedDriver::status_done`].
    Status {
        /// The status request's handle.
        handle: Handle,
        /// The URL.
        url: String,
    },
    /// Listen for wake-ups on this channel; say whether it worked with
    /// [`SharedDriver::subscribed`], and hand each message to [`SharedDriver::woken`].
    Subscribe {
        /// `tc:{account}:wake`.
        channel: String,
    },
    /// Stop listening for wake-ups.
    Unsubscribe,
    /// Something that happened to one of this process's requests (only while events are on, see
    /// [`SharedDriver::set_events`]): the rows of the `rate_limit_logs` table.
    Event(Box<Event>),
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The longest a waiter sleeps between questions while wake-ups would tell it of freed room.
const SUBSCRIBED_POLL: Duration = Duration::from_secs(10);
/// How long the subscription outlives the last waiter.
const LINGER: Duration = Duration::from_secs(1);
/// After a failed subscription, polling alone for this long before trying again.
const SUBSCRIBE_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum WaiterState {
    /// Behind the head of its class.
    Queued,
    /// Its question is out.
    Asking { call: CallId, kicks: u64, asked_at: Timestamp, timeout_at: Timestamp },
    /// Asks again at `until` (or at a wake-up).
    Sleeping { until: Timestamp },
    /// Waits for the status request of `url` to report the budget.
    Learning { url: String },
}

#[derive(Debug)]
struct Waiter {
    request: Request,
    /// When it was acquired, and whether it has had to wait (a wait decision, a store outage, a
    /// budget being learnt) since: what the metrics count it as when it goes.
    started: Timestamp,
    waited: bool,
    /// Its route's metrics slot.
    slot: u16,
    /// Whom it is for, as its events name it.
    endpoint: EventEndpoint,
    /// Its id, once the store drew one (at its first wait or refusal, or its go).
    request_id: Option<RequestId>,
    /// Its `queued` event went out.
    queued: bool,
    id: String,
    class: String,
    max_wait_at: Option<Timestamp>,
    store_down_at: Option<Timestamp>,
    backoff: Duration,
    since: Option<u64>,
    /// Asked the store at least once: it may hold a claim to withdraw.
    asked: bool,
    /// The budget learning was tried for it.
    learnt: bool,
    /// A status request made by the driver for this URL.
    status_of: Option<String>,
    /// Rate-limited answers it has had (a retry's count; 0 for a first try).
    attempt: u32,
    state: WaiterState,
}

/// A request that went, kept until its completion for a retry if its answer is rate limited.
#[derive(Debug)]
struct Retriable {
    /// The request as it asked (without its reservations and the one it spent), and its id.
    request: Request,
    id: RequestId,
    attempt: u32,
    max_wait_at: Option<Timestamp>,
    went: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportKind {
    Done,
    Release,
    /// The completion of a status request: ends the learning of that URL.
    StatusComplete,
}

#[derive(Debug)]
enum CallState {
    Admit {
        handle: Handle,
        store_call: StoreCall,
    },
    Report {
        handle: Handle,
        kind: ReportKind,
        store_call: StoreCall,
        started: Timestamp,
        backoff: Duration,
        /// A completion reported while events are on: its `rate_limited` event, if the store says
        /// the answer paused its limits.
        about: Option<Box<About>>,
        /// What the report's landing settles: done, or (a rate-limited answer) a retry or not.
        then: Then,
    },
    Withdraw,
    Snapshot {
        handle: Handle,
    },
    #[cfg(feature = "metrics")]
    Metrics {
        handle: Handle,
    },
}

/// What a report settles once it lands.
#[derive(Debug)]
enum Then {
    /// [`Output::Done`].
    Done,
    /// A rate-limited answer: the request is queued again (or given up past its retries).
    Retry(Box<Retriable>),
    /// A rate-limited answer of a request that may not be retried: [`Output::GiveUp`].
    GiveUp,
}

/// The request a completion reported on, for its `rate_limited` event.
#[derive(Debug)]
struct About {
    request: RequestId,
    endpoint: EventEndpoint,
    priority: Priority,
    status: Option<u16>,
}

#[derive(Debug)]
struct Learning {
    parked: Vec<(Handle, RequestError)>,
    /// The status request's answer said the balance (status below 400).
    ok: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Off,
    Subscribing,
    On,
}

/// The shared store's host driver; see the [module docs](self).
#[derive(Debug)]
pub struct SharedDriver {
    store: SharedStore,
    options: DriverOptions,
    waiter_ttl: Duration,
    waiters: BTreeMap<Handle, Waiter>,
    classes: HashMap<String, VecDeque<Handle>>,
    calls: HashMap<CallId, CallState>,
    /// Reports to run again after a failure: (when, call).
    retries: Vec<(Timestamp, CallId)>,
    learning: HashMap<String, Learning>,
    /// When the status request of each URL last reported a balance.
    learnt_at: HashMap<String, Timestamp>,
    /// Status requests sent by the host: their URL and request id.
    status_requests: HashMap<Handle, (String, RequestId)>,
    /// Requests in flight that may be retried (when `feedback.max_retries` > 0).
    flights: HashMap<RequestId, Retriable>,
    /// How many kept requests trigger a sweep of those whose lease is over.
    sweep_flights_at: usize,
    outputs: VecDeque<Output>,
    next_handle: u64,
    next_call: u64,
    seq: u64,
    kicks: u64,
    wakeups: u64,
    sub: Sub,
    sub_retry_at: Option<Timestamp>,
    linger_at: Option<Timestamp>,
    /// Events are drained as [`Output::Event`].
    events: bool,
    /// Shadow mode: a config run in memory beside this process's traffic (see [`Self::set_shadow`]).
    #[cfg(feature = "shadow")]
    shadow: Option<ShadowRun>,
}

/// A shadow beside the shared driver: its requests are keyed by the acquire's handle; a permitted
/// request is found again by its store id when it completes.
#[cfg(feature = "shadow")]
#[derive(Debug)]
struct ShadowRun {
    shadow: Box<crate::shadow::Shadow>,
    /// Store request id → the handle's id, for requests in flight.
    flights: HashMap<RequestId, RequestId>,
    /// Requests in flight in go order: a permit never completed ends with its lease.
    order: VecDeque<(Timestamp, RequestId)>,
}

impl SharedDriver {
    /// A driver over a new store for `config`.
    pub fn new(config: Config, store: StoreOptions, options: DriverOptions) -> Result<Self, ConfigError> {
        let waiter_ttl = store.waiter_ttl;
        Ok(SharedDriver {
            store: SharedStore::new(config, store)?,
            options,
            waiter_ttl,
            waiters: BTreeMap::new(),
            classes: HashMap::new(),
            calls: HashMap::new(),
            retries: Vec::new(),
            learning: HashMap::new(),
            status_requests: HashMap::new(),
            flights: HashMap::new(),
            sweep_flights_at: SWEEP_FLIGHTS,
            learnt_at: HashMap::new(),
            outputs: VecDeque::new(),
            next_handle: 1,
            next_call: 1,
            seq: 0,
            kicks: 0,
            wakeups: 0,
            sub: Sub::Off,
            sub_retry_at: None,
            linger_at: None,
            events: false,
            #[cfg(feature = "shadow")]
            shadow: None,
        })
    }

    /// The store under the driver.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The store under the driver, mutably (tests pin its clock).
    pub fn store_mut(&mut self) -> &mut SharedStore {
        &mut self.store
    }

    /// Requests of this process waiting (the driver's own status requests left out).
    pub fn waiting(&self) -> usize {
        self.waiters.values().filter(|w| w.status_of.is_none()).count()
    }

    /// Names this process's waiters from now on (a host that could not draw a random tag earlier).
    pub fn set_process_tag(&mut self, tag: String) {
        self.options.process_tag = tag;
    }

    /// Turns events on or off: while on, every step of this process's requests (queued, go,
    /// completed, rate limited, rejected, expired, cancelled) comes out as an [`Output::Event`].
    /// A request's events carry the id the store drew for it (unique across processes); a request
    /// that never reached the store (it was unreachable) has id 0.
    pub fn set_events(&mut self, on: bool) {
        self.events = on;
    }

    fn emit(
        &mut self,
        at: Timestamp,
        request: RequestId,
        endpoint: EventEndpoint,
        priority: Priority,
        kind: EventKind,
    ) {
        let event = Event { at, request, endpoint, priority, kind };
        self.outputs.push_back(Output::Event(Box::new(event)));
    }

    /// The `completed` event of a request this store admitted, and what its `rate_limited` event
    /// will need (events on only).
    fn completed_event(&mut self, now: Timestamp, request: RequestId, outcome: &Outcome) -> Option<Box<About>> {
        if !self.events {
            return None;
        }
        let (endpoint, priority, went) = self.store.in_flight(request)?;
        let (endpoint, status) = (endpoint.clone(), outcome.status);
        let kind = EventKind::Completed { status, duration: now.saturating_since(went) };
        self.emit(now, request, endpoint.clone(), priority, kind);
        Some(Box::new(About { request, endpoint, priority, status }))
    }

    /// Wake-up messages received.
    pub fn wakeups(&self) -> u64 {
        self.wakeups
    }

    fn handle(&mut self) -> Handle {
        let h = Handle(self.next_handle);
        self.next_handle += 1;
        h
    }

    fn run(&mut self, state: CallState, store_call: StoreCall) -> CallId {
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(call, state);
        self.outputs.push_back(Output::Run { call, store_call });
        call
    }

    // ---- inputs ---------------------------------------------------------------------------------

    /// Starts waiting for `request` to go: [`Output::Go`] or [`Output::Fail`] will name the handle.
    /// A request that can never go (unknown route or limit, cost above a capacity) is an error at
    /// once. `max_wait` bounds the whole wait, store outages included.
    pub fn acquire(
        &mut self,
        now: Timestamp,
        request: Request,
        max_wait: Option<Duration>,
    ) -> Result<Handle, DriverError> {
        // The handle is drawn once the request is known to be valid.
        let handle = Handle(self.next_handle);
        self.add_waiter(now, handle, request, max_wait.map(|d| now.saturating_add(d)), 0, None)?;
        self.next_handle += 1;
        Ok(handle)
    }

    /// A waiter under `handle`: a new acquire, or a retry (`attempt` > 0) of the request `id`.
    fn add_waiter(
        &mut self,
        now: Timestamp,
        handle: Handle,
        request: Request,
        max_wait_at: Option<Timestamp>,
        attempt: u32,
        id: Option<RequestId>,
    ) -> Result<(), DriverError> {
        let call = self.store.admit(now, &request, &AdmitOptions::default()).map_err(DriverError::Request)?;
        let slot = call.route_slot();
        let endpoint = call.endpoint();
        self.seq += 1;
        let waiter = format!("{}-{}", self.options.process_tag, self.seq);
        // A class: the same priority and tenant class on the same keys; a spender of a reservation
        // is its own. Tenants wait apart: the store orders them by weight, not this process.
        let class = format!(
            "{}|{}|{}|{}",
            request.priority as u8,
            if request.spend.is_some() { waiter.as_str() } else { "" },
            self.store.tenant_class(&request).map_or(0, |(c, _)| c),
            call.keys.join(" ")
        );
        self.waiters.insert(
            handle,
            Waiter {
                request,
                started: now,
                waited: attempt > 0,
                slot,
                endpoint,
                request_id: id,
                // A retry's `retried` event stands for its `queued` one.
                queued: attempt > 0,
                id: waiter,
                class: class.clone(),
                max_wait_at,
                store_down_at: None,
                backoff: BACKOFF_MIN,
                since: None,
                asked: false,
                learnt: false,
                status_of: None,
                attempt,
                state: WaiterState::Queued,
            },
        );
        if attempt == 0 {
            self.shadow_arrive(now, handle);
        }
        self.enqueue(now, handle);
        Ok(())
    }

    fn enqueue(&mut self, now: Timestamp, handle: Handle) {
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        w.state = WaiterState::Queued;
        let queue = self.classes.entry(w.class.clone()).or_default();
        queue.push_back(handle);
        self.linger_at = None;
        if queue.len() == 1 {
            self.ask(now, handle);
        }
    }

    /// Gives up an acquire: it fails with `CANCELLED` and its claims are withdrawn.
    pub fn cancel(&mut self, now: Timestamp, handle: Handle) {
        if self.waiters.contains_key(&handle) {
            self.finish(now, handle, Err(DriverError::Request(RequestError::Cancelled)), true);
        }
    }

    /// Reports a permitted request's outcome: [`Output::Done`] names the handle once the store
    /// knows (at once when there is nothing to tell). Waiters of this process ask again. A
    /// rate-limited answer queues the request again (see the [module docs](self)): its next go is
    /// an [`Output::Go`] naming this handle, or [`Output::GiveUp`] says it may not be retried.
    pub fn complete(&mut self, now: Timestamp, request: RequestId, outcome: &Outcome) -> Handle {
        self.shadow_completed(now, request, outcome);
        let handle = self.handle();
        let about = self.completed_event(now, request, outcome);
        let retriable = self.flights.remove(&request);
        match self.store.complete_told(now, request, outcome) {
            (Some(call), rate_limited) => {
                let then = match retriable {
                    _ if !rate_limited => Then::Done,
                    Some(r) => Then::Retry(Box::new(r)),
                    None => Then::GiveUp,
                };
                self.report_then(now, handle, call, about, then);
            }
            (None, _) => {
                self.outputs.push_back(Output::Done { handle, live: false });
                self.kick(now);
            }
        }
        handle
    }

    /// Gives a reservation back: [`Output::Done`] says whether it was live.
    pub fn release(&mut self, now: Timestamp, reservation: ReservationId) -> Handle {
        #[cfg(feature = "shadow")]
        if let Some(run) = self.shadow.as_mut() {
            run.sweep(now, self.store.config().lease_ttl);
            run.shadow.release(now, reservation);
        }
        let handle = self.handle();
        let call = self.store.release(now, reservation);
        self.report(now, handle, ReportKind::Release, call, None);
        handle
    }

    /// Sets a budget to the server's balance (Keepa's `tokensLeft`, `refillIn`).
    pub fn sync_budget(
        &mut self,
        now: Timestamp,
        limit: &str,
        tokens_left: i64,
        refill_in: Option<Duration>,
    ) -> Result<Handle, DriverError> {
        let call = self.store.sync_budget(now, limit, tokens_left, refill_in).map_err(DriverError::Request)?;
        #[cfg(feature = "shadow")]
        if let Some(run) = self.shadow.as_mut() {
            run.sweep(now, self.store.config().lease_ttl);
            run.shadow.sync_budget(now, limit, tokens_left, refill_in);
        }
        let handle = self.handle();
        self.report(now, handle, ReportKind::Done, call, None);
        Ok(handle)
    }

    /// Reads every limit's shared state: [`Output::Snapshot`] (or a failure; never retried).
    pub fn snapshot(&mut self, now: Timestamp) -> Handle {
        let handle = self.handle();
        let call = self.store.snapshot_call(now);
        self.run(CallState::Snapshot { handle }, call);
        handle
    }

    /// Runs `config` in memory beside this process's traffic as a shadow, from `now` on: it sees
    /// every acquire, go, refusal, cancel, completion (with its response), release and budget sync
    /// of this driver and decides on them, and nothing it decides is acted on.
    /// [`shadow_report`](Self::shadow_report) compares the two. The shadow sees this process only:
    /// on an account shared by several processes, its limits stand for this process's share (or
    /// run it in the process that carries the traffic to try). `None` stops it; an invalid config
    /// is refused with the field and the reason and leaves the running shadow.
    #[cfg(feature = "shadow")]
    pub fn set_shadow(&mut self, now: Timestamp, config: Option<Config>) -> Result<(), ConfigError> {
        self.shadow = match config {
            Some(config) => Some(ShadowRun {
                shadow: Box::new(crate::shadow::Shadow::new(now, config)?),
                flights: HashMap::new(),
                order: VecDeque::new(),
            }),
            None => None,
        };
        Ok(())
    }

    /// What the shadow config would have decided beside what the store decided, for this
    /// process's requests since the shadow started; `None` without a shadow.
    #[cfg(feature = "shadow")]
    pub fn shadow_report(&mut self, now: Timestamp) -> Option<crate::ShadowReport> {
        let lease = self.store.config().lease_ttl;
        let run = self.shadow.as_mut()?;
        run.sweep(now, lease);
        Some(run.shadow.report(now))
    }

    /// Reads the metrics: [`Output::Metrics`] (or a failure; never retried). The counters are this
    /// process's (its requests by route, priority and result, its refusals by code, its waits, the
    /// pauses its answers caused); `queue_depth` is this process's waiters by priority; the limits'
    /// gauges are the account's, as every process sees them (aggregate them with `max`, not `sum`).
    #[cfg(feature = "metrics")]
    pub fn metrics(&mut self, now: Timestamp) -> Handle {
        let handle = self.handle();
        let call = self.store.snapshot_call(now);
        self.run(CallState::Metrics { handle }, call);
        handle
    }

    fn report(
        &mut self,
        now: Timestamp,
        handle: Handle,
        kind: ReportKind,
        store_call: StoreCall,
        about: Option<Box<About>>,
    ) {
        let state = CallState::Report {
            handle,
            kind,
            store_call: store_call.clone(),
            started: now,
            backoff: BACKOFF_MIN,
            about,
            then: Then::Done,
        };
        self.run(state, store_call);
    }

    /// A completion's report.
    fn report_then(
        &mut self,
        now: Timestamp,
        handle: Handle,
        store_call: StoreCall,
        about: Option<Box<About>>,
        then: Then,
    ) {
        let state = CallState::Report {
            handle,
            kind: ReportKind::Done,
            store_call: store_call.clone(),
            started: now,
            backoff: BACKOFF_MIN,
            about,
            then,
        };
        self.run(state, store_call);
    }

    /// A rate-limited answer reached the store, which paused its limits until `until`: the
    /// request is queued again under the completion's handle, or given up.
    fn retry(&mut self, now: Timestamp, handle: Handle, r: Retriable, until: Timestamp) {
        let request = r.id;
        let attempt = r.attempt + 1;
        if attempt > self.store.config().feedback.max_retries || r.max_wait_at.is_some_and(|d| until > d) {
            self.outputs.push_back(Output::GiveUp { handle });
            return;
        }
        let priority = r.request.priority;
        if let Err(error) = self.add_waiter(now, handle, r.request, r.max_wait_at, attempt, Some(request)) {
            self.outputs.push_back(Output::Fail { handle, error });
            return;
        }
        if self.events {
            let endpoint = self.waiters[&handle].endpoint.clone();
            self.emit(now, request, endpoint, priority, EventKind::Retried { attempt, at: until });
        }
    }

    /// A call's reply. Replies to calls the driver gave up on (past their bound) are ignored.
    pub fn on_reply(&mut self, now: Timestamp, call: CallId, reply: &[ReplyValue]) {
        let Some(state) = self.calls.remove(&call) else { return };
        match state {
            CallState::Admit { handle, store_call } => self.decided(now, handle, call, &store_call, reply),
            CallState::Report { handle, kind, about, then, .. } => {
                let paused = self.store.paused_until(now, reply);
                if let (Some(a), Some(until)) = (about, paused) {
                    let kind = EventKind::RateLimited { status: a.status, until };
                    self.emit(now, a.request, a.endpoint, a.priority, kind);
                }
                let result = self.store.observe(now, reply);
                let mut retry = None;
                match (kind, result) {
                    (ReportKind::StatusComplete, _) => {}
                    (_, Ok(live)) => match then {
                        Then::Done => self.outputs.push_back(Output::Done { handle, live }),
                        Then::Retry(r) => retry = Some(r),
                        Then::GiveUp => self.outputs.push_back(Output::GiveUp { handle }),
                    },
                    (_, Err(e)) => self.outputs.push_back(Output::Fail { handle, error: DriverError::Store(e) }),
                }
                self.kick(now);
                // After the kick: the retry's first question is not one that room crossed.
                if let Some(r) = retry {
                    self.retry(now, handle, *r, paused.unwrap_or(now));
                }
            }
            CallState::Withdraw => {
                let _ = self.store.observe(now, reply);
            }
            CallState::Snapshot { handle } => {
                let out = match self.store.snapshot(now, reply) {
                    Ok(snapshot) => Output::Snapshot { handle, snapshot },
                    Err(e) => Output::Fail { handle, error: DriverError::Store(e) },
                };
                self.outputs.push_back(out);
            }
            #[cfg(feature = "metrics")]
            CallState::Metrics { handle } => {
                let out = match self.store.snapshot(now, reply) {
                    Ok(snapshot) => Output::Metrics { handle, metrics: Box::new(self.report_metrics(snapshot)) },
                    Err(e) => Output::Fail { handle, error: DriverError::Store(e) },
                };
                self.outputs.push_back(out);
            }
        }
    }

    /// A call's reply that could not even be read as values (`STORE_REPLY`).
    pub fn on_reply_error(&mut self, now: Timestamp, call: CallId, error: StoreError) {
        match self.calls.remove(&call) {
            Some(CallState::Admit { handle, .. }) => self.finish(now, handle, Err(DriverError::Store(error)), true),
            Some(CallState::Report { handle, kind, .. }) if kind != ReportKind::StatusComplete => {
                self.outputs.push_back(Output::Fail { handle, error: DriverError::Store(error) });
            }
            Some(CallState::Snapshot { handle }) => {
                self.outputs.push_back(Output::Fail { handle, error: DriverError::Store(error) });
            }
            #[cfg(feature = "metrics")]
            Some(CallState::Metrics { handle }) => {
                self.outputs.push_back(Output::Fail { handle, error: DriverError::Store(error) });
            }
            _ => {}
        }
    }

    /// A call failed (connection refused, timeout, a restart): `reason` is what the client said.
    pub fn on_store_error(&mut self, now: Timestamp, call: CallId, reason: &str) {
        let Some(state) = self.calls.remove(&call) else { return };
        let unavailable = || DriverError::Store(StoreError::Unavailable { reason: reason.to_string() });
        match state {
            CallState::Admit { handle, .. } => self.unreachable(now, handle, unavailable()),
            CallState::Report { handle, kind, store_call, started, backoff, about, then } => {
                let limit = started.saturating_add(self.options.unavailable_max_wait);
                if self.options.on_unavailable == Unavailable::Fail || now.saturating_add(backoff) > limit {
                    if kind != ReportKind::StatusComplete {
                        self.outputs.push_back(Output::Fail { handle, error: unavailable() });
                    }
                    return;
                }
                let retry = CallState::Report {
                    handle,
                    kind,
                    store_call,
                    started,
                    backoff: (backoff * 2).min(BACKOFF_MAX),
                    about,
                    then,
                };
                self.calls.insert(call, retry);
                self.retries.push((now.saturating_add(backoff), call));
            }
            CallState::Withdraw => {}
            CallState::Snapshot { handle } => self.outputs.push_back(Output::Fail { handle, error: unavailable() }),
            #[cfg(feature = "metrics")]
            CallState::Metrics { handle } => self.outputs.push_back(Output::Fail { handle, error: unavailable() }),
        }
    }

    /// A wake-up message: another process freed room. Sleeping waiters ask again now.
    pub fn woken(&mut self, now: Timestamp) {
        self.wakeups += 1;
        self.kick(now);
    }

    /// Whether the subscription asked for by [`Output::Subscribe`] works. Once it does, waiters ask
    /// again (room may have freed while subscribing). `false` later: the subscription was lost.
    pub fn subscribed(&mut self, now: Timestamp, ok: bool) {
        if !ok && self.sub == Sub::On {
            // The subscription was lost (its connection dropped): poll, and subscribe again later.
            self.sub = Sub::Off;
            self.sub_retry_at = Some(now.saturating_add(SUBSCRIBE_RETRY));
            return;
        }
        if self.sub != Sub::Subscribing {
            if ok && self.sub == Sub::Off {
                // Closed meanwhile.
                self.outputs.push_back(Output::Unsubscribe);
            }
            return;
        }
        if ok {
            self.sub = Sub::On;
            self.kick(now);
            self.idle_check(now);
        } else {
            self.sub = Sub::Off;
            self.sub_retry_at = Some(now.saturating_add(SUBSCRIBE_RETRY));
        }
    }

    /// Stops listening for wake-ups now; waiting requests poll until a new wait subscribes again.
    pub fn close(&mut self) {
        if self.sub != Sub::Off {
            self.outputs.push_back(Output::Unsubscribe);
        }
        self.sub = Sub::Off;
        self.linger_at = None;
    }

    /// The status request asked for by [`Output::Status`] was sent: its outcome (`None` when no
    /// response came). Parked requests ask again when it reported a balance.
    pub fn status_done(&mut self, now: Timestamp, handle: Handle, outcome: Option<&Outcome>) {
        let Some((url, request)) = self.status_requests.remove(&handle) else { return };
        let failed = Outcome::failed();
        let outcome = outcome.unwrap_or(&failed);
        if let Some(l) = self.learning.get_mut(&url) {
            l.ok = outcome.status.is_some_and(|s| s < 400);
        }
        self.shadow_completed(now, request, outcome);
        if let Some(call) = self.store.complete(now, request, outcome) {
            self.report(now, handle, ReportKind::StatusComplete, call, None);
        }
        self.learnt(now, &url);
    }

    /// The time: waiters whose instant came ask again, calls past their bound fail, reports retry.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        // Questions the client did not answer in time.
        let late: Vec<(Handle, CallId, Timestamp)> = self
            .waiters
            .iter()
            .filter_map(|(h, w)| match w.state {
                WaiterState::Asking { call, asked_at, timeout_at, .. } if timeout_at <= now => {
                    Some((*h, call, asked_at))
                }
                _ => None,
            })
            .collect();
        for (handle, call, asked_at) in late {
            self.calls.remove(&call);
            // Unreachable since the question went out.
            if let Some(w) = self.waiters.get_mut(&handle) {
                w.store_down_at.get_or_insert(asked_at);
            }
            let waited = now.saturating_since(asked_at).as_millis();
            let reason = format!("no answer within {waited} ms");
            self.unreachable(now, handle, DriverError::Store(StoreError::Unavailable { reason }));
        }
        // Waiters whose time came, and queued ones past their longest wait.
        let due: Vec<(Handle, bool)> = self
            .waiters
            .iter()
            .filter_map(|(h, w)| match w.state {
                WaiterState::Sleeping { until } if until <= now => Some((*h, false)),
                WaiterState::Queued | WaiterState::Learning { .. } if w.max_wait_at.is_some_and(|m| m < now) => {
                    Some((*h, true))
                }
                _ => None,
            })
            .collect();
        for (handle, expired) in due {
            if expired {
                let deadline = self.waiters[&handle].max_wait_at.unwrap_or(now);
                let error = RequestError::DeadlineExceeded { deadline, now };
                self.finish(now, handle, Err(DriverError::Request(error)), true);
            } else {
                self.ask(now, handle);
            }
        }
        // Reports to run again.
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].0 <= now {
                let (_, call) = self.retries.swap_remove(i);
                if let Some(CallState::Report { store_call, .. }) = self.calls.get(&call) {
                    let store_call = store_call.clone();
                    self.outputs.push_back(Output::Run { call, store_call });
                }
            } else {
                i += 1;
            }
        }
        if self.sub_retry_at.is_some_and(|t| t <= now) {
            self.sub_retry_at = None;
        }
        if self.linger_at.is_some_and(|t| t <= now) {
            self.linger_at = None;
            if self.waiting() == 0 && self.sub != Sub::Off {
                self.sub = Sub::Off;
                self.outputs.push_back(Output::Unsubscribe);
            }
        }
    }

    // ---- outputs --------------------------------------------------------------------------------

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let waiters = self.waiters.values().filter_map(|w| match w.state {
            WaiterState::Asking { timeout_at, .. } => Some(timeout_at),
            WaiterState::Sleeping { until } => Some(until),
            WaiterState::Queued | WaiterState::Learning { .. } => w.max_wait_at.map(|m| m.saturating_add(NANO)),
        });
        waiters.chain(self.retries.iter().map(|(t, _)| *t)).chain(self.linger_at).min()
    }

    // ---- the waiters' turns ---------------------------------------------------------------------

    fn ask(&mut self, now: Timestamp, handle: Handle) {
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        let left = w.max_wait_at.map(|m| (m, m.saturating_since(now)));
        if let Some((deadline, _)) = left.filter(|(m, _)| *m < now) {
            let error = RequestError::DeadlineExceeded { deadline, now };
            self.finish(now, handle, Err(DriverError::Request(error)), true);
            return;
        }
        let backlog = self.classes.get(&w.class).map(|q| q.len() as u64);
        let options = AdmitOptions {
            waiter: Some(w.id.clone()),
            since: w.since,
            max_wait: left.map(|(_, d)| d),
            request: w.request_id,
            backlog,
        };
        let store_call = match self.store.admit(now, &w.request, &options) {
            Ok(c) => c,
            Err(e) => {
                self.finish(now, handle, Err(DriverError::Request(e)), false);
                return;
            }
        };
        // The client's own retries must not outlast the request's longest wait.
        let bound = match left {
            Some((_, d)) => d,
            None => {
                let down = w.store_down_at.unwrap_or(now);
                down.saturating_add(self.options.unavailable_max_wait).saturating_since(now)
            }
        };
        w.asked = true;
        let kicks = self.kicks;
        let timeout_at = now.saturating_add(bound.max(BACKOFF_MIN));
        let call = self.run(CallState::Admit { handle, store_call: store_call.clone() }, store_call);
        if let Some(w) = self.waiters.get_mut(&handle) {
            w.state = WaiterState::Asking { call, kicks, asked_at: now, timeout_at };
        }
    }

    fn decided(&mut self, now: Timestamp, handle: Handle, call: CallId, store_call: &StoreCall, reply: &[ReplyValue]) {
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        let WaiterState::Asking { call: asked, kicks, asked_at, .. } = w.state else { return };
        if asked != call {
            return;
        }
        w.store_down_at = None;
        w.backoff = BACKOFF_MIN;
        let admitted = match self.store.decide(now, store_call, reply) {
            Ok(a) => a,
            Err(e) => {
                self.finish(now, handle, Err(DriverError::Store(e)), true);
                return;
            }
        };
        let can_learn = self.can_learn(handle);
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        if admitted.request.is_some() {
            w.request_id = admitted.request;
        }
        if matches!(admitted.decision, Decision::Wait { .. }) {
            // It waits, and so does every request queued behind it in its class: each of them
            // went after a wait, whenever its own turn comes.
            w.waited = true;
            let class = w.class.clone();
            for h in self.classes.get(&class).into_iter().flatten() {
                if let Some(peer) = self.waiters.get_mut(h) {
                    peer.waited = true;
                }
            }
        }
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        if let Some(event) = Self::queued_of(self.events, w) {
            self.outputs.push_back(Output::Event(event));
        }
        match admitted.decision {
            Decision::Go(permit) => self.finish(now, handle, Ok((permit.request, permit.reservations)), false),
            Decision::Reject(RequestError::BudgetUnknown { limit }) if can_learn => {
                if self.learnt_since(handle, asked_at) {
                    // Its question crossed a status request that reported the balance: ask again.
                    self.ask(now, handle);
                } else {
                    self.learn(now, handle, RequestError::BudgetUnknown { limit });
                }
            }
            Decision::Reject(e) => self.finish(now, handle, Err(DriverError::Request(e)), true),
            Decision::Wait { until } => {
                if admitted.since.is_some() {
                    w.since = admitted.since;
                }
                let half = self.waiter_ttl / 2;
                let mut sleep = until.map_or(half, |u| u.saturating_since(admitted.server_now));
                // Room freed elsewhere is seen only by asking while no wake-up would tell.
                sleep = sleep.min(if self.sub == Sub::On { SUBSCRIBED_POLL } else { half });
                if let Some(m) = w.max_wait_at {
                    sleep = sleep.min(m.saturating_since(now) + Duration::from_millis(1));
                }
                if self.kicks != kicks {
                    // Room freed while the question was out: ask again now.
                    self.ask(now, handle);
                } else {
                    w.state = WaiterState::Sleeping { until: now.saturating_add(sleep) };
                }
                self.ensure_subscribed(now);
            }
        }
    }

    /// The store did not answer an admission: fail closed, then retry with backoff or fail.
    fn unreachable(&mut self, now: Timestamp, handle: Handle, error: DriverError) {
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        let down = *w.store_down_at.get_or_insert(now);
        let limit = w.max_wait_at.unwrap_or_else(|| down.saturating_add(self.options.unavailable_max_wait));
        let backoff = w.backoff;
        if self.options.on_unavailable == Unavailable::Fail || now.saturating_add(backoff) > limit {
            self.finish(now, handle, Err(error), false);
            return;
        }
        w.backoff = (backoff * 2).min(BACKOFF_MAX);
        w.waited = true;
        w.state = WaiterState::Sleeping { until: now.saturating_add(backoff) };
    }

    fn kick(&mut self, now: Timestamp) {
        self.kicks += 1;
        let sleeping: Vec<Handle> = self
            .waiters
            .iter()
            .filter(|(_, w)| matches!(w.state, WaiterState::Sleeping { .. }) && w.store_down_at.is_none())
            .map(|(h, _)| *h)
            .collect();
        for h in sleeping {
            self.ask(now, h);
        }
    }

    fn ensure_subscribed(&mut self, now: Timestamp) {
        self.linger_at = None;
        if !self.options.wake || self.sub != Sub::Off || self.sub_retry_at.is_some_and(|t| t > now) {
            return;
        }
        self.sub = Sub::Subscribing;
        self.outputs.push_back(Output::Subscribe { channel: self.store.wake_channel() });
    }

    fn idle_check(&mut self, now: Timestamp) {
        if self.waiting() == 0 && self.sub == Sub::On && self.linger_at.is_none() {
            self.linger_at = Some(now.saturating_add(LINGER));
        }
    }

    /// Ends an acquire: its result out, its class's next head asking, its claims withdrawn.
    fn finish(
        &mut self,
        now: Timestamp,
        handle: Handle,
        result: Result<(RequestId, Vec<ReservationId>), DriverError>,
        withdraw: bool,
    ) {
        let Some(mut w) = self.waiters.remove(&handle) else { return };
        if w.status_of.is_none() {
            self.count(now, &w, &result);
            if self.events {
                if let Ok((request, _)) = &result {
                    w.request_id = Some(*request);
                }
                if let Some(event) = Self::queued_of(true, &mut w) {
                    self.outputs.push_back(Output::Event(event));
                }
                self.event_of(now, &w, &result);
            }
        }
        if w.attempt == 0 {
            self.shadow_finished(now, handle, &result, !w.waited);
        }
        if let WaiterState::Asking { call, .. } = w.state {
            self.calls.remove(&call);
        }
        if let WaiterState::Learning { url } = &w.state {
            if let Some(l) = self.learning.get_mut(url) {
                l.parked.retain(|(h, _)| *h != handle);
            }
        }
        let mut next = None;
        if let Some(queue) = self.classes.get_mut(&w.class) {
            let was_head = queue.front() == Some(&handle);
            queue.retain(|h| *h != handle);
            if queue.is_empty() {
                self.classes.remove(&w.class);
            } else if was_head {
                next = queue.front().copied();
            }
        }
        if withdraw && w.asked {
            if let Ok(admit) = self.store.admit(now, &w.request, &AdmitOptions::default()) {
                let call = self.store.withdraw(now, &w.id, &admit);
                self.run(CallState::Withdraw, call);
            }
        }
        let handover =
            (next.is_some() && result.is_ok() && !self.store.config().tenants.is_empty()).then(|| w.id.clone());
        match (&w.status_of, result) {
            // The driver's own status request.
            (Some(url), Ok((request, _))) => {
                let url = url.clone();
                self.status_requests.insert(handle, (url.clone(), request));
                self.outputs.push_back(Output::Status { handle, url });
            }
            (Some(url), Err(_)) => {
                let url = url.clone();
                self.learnt(now, &url);
            }
            (None, Ok((request, reservations))) => {
                if self.store.config().feedback.max_retries > 0 {
                    self.keep_retriable(now, w, request);
                }
                self.outputs.push_back(Output::Go { handle, request, reservations });
            }
            (None, Err(error)) => self.outputs.push_back(Output::Fail { handle, error }),
        }
        if let Some(next) = next {
            // With tenants the store handed the class's registration to the next request, under
            // the same waiter id (see `AdmitOptions::backlog`).
            if let (Some(id), Some(n)) = (handover, self.waiters.get_mut(&next)) {
                n.id = id;
            }
            self.ask(now, next);
        }
        self.idle_check(now);
    }

    /// Keeps a request that went until its completion, in case its answer is rate limited.
    /// Requests never completed are forgotten once their lease is long over.
    fn keep_retriable(&mut self, now: Timestamp, w: Waiter, id: RequestId) {
        if self.flights.len() >= self.sweep_flights_at {
            let lease = self.store.config().lease_ttl;
            self.flights.retain(|_, f| now.saturating_since(f.went) < lease);
            // Many in flight for real: the next sweep waits until as many again went (amortized O(1)).
            self.sweep_flights_at = (2 * self.flights.len()).max(SWEEP_FLIGHTS);
        }
        let mut request = w.request;
        request.reserve.clear();
        request.spend = None;
        let kept = Retriable { request, id, attempt: w.attempt, max_wait_at: w.max_wait_at, went: now };
        self.flights.insert(id, kept);
    }

    /// The `queued` event of a waiter that has waited (a wait decision, for it or for the head of
    /// its class, or a store outage), once: as soon as it has its id, or when it ends without one.
    /// Dated at its acquire, as in memory.
    fn queued_of(events: bool, w: &mut Waiter) -> Option<Box<Event>> {
        if !events || w.queued || !w.waited || w.status_of.is_some() {
            return None;
        }
        w.queued = true;
        let request = w.request_id.unwrap_or(RequestId(0));
        Some(Box::new(Event {
            at: w.started,
            request,
            endpoint: w.endpoint.clone(),
            priority: w.request.priority,
            kind: EventKind::Queued,
        }))
    }

    /// The event that ends an acquire: go, rejected, expired or cancelled (after its `queued`
    /// event, if it waited and that did not go out yet).
    fn event_of(&mut self, now: Timestamp, w: &Waiter, result: &Result<(RequestId, Vec<ReservationId>), DriverError>) {
        let request = w.request_id.unwrap_or(RequestId(0));
        let kind = match result {
            Ok((request, reservations)) => EventKind::Go {
                permit: Permit { request: *request, reservations: reservations.clone(), at: now, key: None },
                waited: now.saturating_since(w.started),
            },
            Err(DriverError::Request(RequestError::Cancelled)) => EventKind::Cancelled,
            Err(DriverError::Request(e @ RequestError::DeadlineExceeded { .. })) => {
                EventKind::Expired { error: e.clone() }
            }
            Err(DriverError::Request(e)) => EventKind::Rejected { error: e.clone() },
            Err(DriverError::Store(e)) => EventKind::Rejected { error: RequestError::Store { error: e.clone() } },
        };
        let request = if let EventKind::Go { permit, .. } = &kind { permit.request } else { request };
        self.emit(now, request, w.endpoint.clone(), w.request.priority, kind);
    }

    // ---- metrics ----------------------------------------------------------------------------------

    /// Counts how an acquire ended, as the in-memory controller counts its requests.
    fn count(&mut self, now: Timestamp, w: &Waiter, result: &Result<(RequestId, Vec<ReservationId>), DriverError>) {
        let (slot, priority) = (w.slot, w.request.priority);
        let counters = &mut self.store.counters;
        match result {
            Ok(_) => counters.went(slot, priority, w.waited.then(|| now.saturating_since(w.started))),
            Err(DriverError::Request(RequestError::Cancelled)) => counters.count(slot, priority, Counted::Cancelled),
            Err(DriverError::Request(RequestError::DeadlineExceeded { .. })) => {
                counters.count(slot, priority, Counted::Expired)
            }
            Err(e) => counters.rejected(slot, priority, e.code()),
        }
    }

    #[cfg(feature = "metrics")]
    fn report_metrics(&self, mut snapshot: Snapshot) -> crate::Metrics {
        let mut waiting = [0usize; 4];
        for w in self.waiters.values().filter(|w| w.status_of.is_none()) {
            waiting[w.request.priority as usize] += 1;
        }
        snapshot.waiting = waiting;
        self.store.metrics(snapshot)
    }

    // ---- shadow mode --------------------------------------------------------------------------------

    #[inline]
    fn shadow_arrive(&mut self, _now: Timestamp, _handle: Handle) {
        #[cfg(feature = "shadow")]
        if let (Some(run), Some(w)) = (self.shadow.as_mut(), self.waiters.get(&_handle)) {
            run.sweep(_now, self.store.config().lease_ttl);
            run.shadow.arrive(_now, RequestId(_handle.0), &w.request);
        }
    }

    #[inline]
    fn shadow_finished(
        &mut self,
        _now: Timestamp,
        _handle: Handle,
        _result: &Result<(RequestId, Vec<ReservationId>), DriverError>,
        _at_once: bool,
    ) {
        #[cfg(feature = "shadow")]
        if let Some(run) = self.shadow.as_mut() {
            run.sweep(_now, self.store.config().lease_ttl);
            let sid = RequestId(_handle.0);
            match _result {
                Ok((request, reservations)) => {
                    run.shadow.went(_now, sid, reservations, _at_once);
                    run.flights.insert(*request, sid);
                    run.order.push_back((_now, *request));
                }
                Err(DriverError::Request(RequestError::Cancelled)) => run.shadow.ended_by(_now, sid, None),
                Err(e) => run.shadow.ended_by(_now, sid, Some(e.code())),
            }
        }
    }

    #[inline]
    fn shadow_completed(&mut self, _now: Timestamp, _request: RequestId, _outcome: &Outcome) {
        #[cfg(feature = "shadow")]
        if let Some(run) = self.shadow.as_mut() {
            run.sweep(_now, self.store.config().lease_ttl);
            if let Some(sid) = run.flights.remove(&_request) {
                run.shadow.completed(_now, sid, _outcome, true);
            }
        }
    }

    // ---- budgets learnt on first use --------------------------------------------------------------

    fn can_learn(&self, handle: Handle) -> bool {
        let Some(w) = self.waiters.get(&handle) else { return false };
        self.options.learn_budgets
            && !w.learnt
            && w.status_of.is_none()
            && matches!(&w.request.target, Target::Http { url, .. } if self.store.config().status_url(url).is_some())
    }

    /// A status request for this waiter's URL reported a balance after `asked_at`.
    fn learnt_since(&self, handle: Handle, asked_at: Timestamp) -> bool {
        let Some(w) = self.waiters.get(&handle) else { return false };
        let Target::Http { url, .. } = &w.request.target else { return false };
        self.store.config().status_url(url).and_then(|u| self.learnt_at.get(&u)).is_some_and(|t| *t > asked_at)
    }

    fn learn(&mut self, now: Timestamp, handle: Handle, error: RequestError) {
        let Some(w) = self.waiters.get_mut(&handle) else { return };
        let Target::Http { url, .. } = &w.request.target else { return };
        let Some(status) = self.store.config().status_url(url) else { return };
        w.learnt = true;
        w.waited = true;
        // Out of its class while it waits for the balance (the next of its class asks meanwhile).
        let class = w.class.clone();
        w.state = WaiterState::Learning { url: status.clone() };
        let mut next = None;
        if let Some(queue) = self.classes.get_mut(&class) {
            queue.retain(|h| *h != handle);
            if queue.is_empty() {
                self.classes.remove(&class);
            } else {
                next = queue.front().copied();
            }
        }
        let started = self.learning.contains_key(&status);
        self.learning.entry(status.clone()).or_insert_with(|| Learning { parked: Vec::new(), ok: false });
        if let Some(l) = self.learning.get_mut(&status) {
            l.parked.push((handle, error));
        }
        if !started {
            match self.acquire(now, Request::http("GET", status.clone()).priority(Priority::High), None) {
                Ok(h) => {
                    if let Some(w) = self.waiters.get_mut(&h) {
                        w.status_of = Some(status.clone());
                    }
                }
                Err(_) => self.learnt(now, &status),
            }
        }
        if let Some(next) = next {
            self.ask(now, next);
        }
    }

    /// The learning of `url` ended: parked requests ask once more, or fail with their error.
    fn learnt(&mut self, now: Timestamp, url: &str) {
        let Some(l) = self.learning.remove(url) else { return };
        if l.ok {
            if self.learnt_at.len() > 64 {
                self.learnt_at.clear();
            }
            self.learnt_at.insert(url.to_string(), now);
        }
        for (handle, error) in l.parked {
            if l.ok {
                self.enqueue(now, handle);
            } else {
                self.finish(now, handle, Err(DriverError::Request(error)), false);
            }
        }
    }
}

const NANO: Duration = Duration::from_nanos(1);
/// Kept requests (see `keep_retriable`) before the first sweep.
const SWEEP_FLIGHTS: usize = 4096;

#[cfg(feature = "shadow")]
impl ShadowRun {
    /// Requests permitted a lease ago and never completed: their response never came back, so as
    /// far as the shadow knows they went through (as the in-memory shadow takes a lost lease).
    fn sweep(&mut self, now: Timestamp, lease: Duration) {
        while let Some(&(went, request)) = self.order.front() {
            if went.saturating_add(lease) > now {
                break;
            }
            self.order.pop_front();
            if let Some(sid) = self.flights.remove(&request) {
                self.shadow.completed(went.saturating_add(lease), sid, &Outcome::status(200), true);
            }
        }
    }
}
