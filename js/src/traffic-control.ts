// The JavaScript scheduler around the core: one controller handle, one timer that sleeps until the
// core's next deadline (`pollTimeout`), and promises for requests that wait. Shared by the Node/Bun
// package (napi) and the wasm package: all it needs from the host is in `Host`.
import { TrafficControlError, fromNative } from './errors.js';
import { theHost } from './host.js';
import type {
  Config,
  Decision,
  LimitPause,
  LimitSnapshot,
  MetricFamily,
  Metrics,
  Native,
  NativeEvent,
  PresetName,
  Priority,
  ShadowReport,
  ShadowSide,
  Snapshot,
  TrafficEvent,
} from './types.js';

const LEVELS: Record<string, number> = { critical: 0, high: 1, normal: 2, low: 3 };

/** What a request or a follow-up targets: a method and URL matched against the routes, or a route by name. */
export interface Target {
  method?: string;
  url?: string | URL;
  route?: string;
}

/** A follow-up whose capacity a request reserves in its own admission. */
export interface FollowUp extends Target {
  /** The cost reserved; the route's when absent. */
  cost?: number;
  /** Limits reserved on top of the route's and the global ones. */
  limits?: string[];
  /** How long the reservation lives unless spent or released (ms); the config's `reservation_ttl` when absent. */
  ttl?: number;
}

/** How a request asks for admission. Every field is optional. */
export interface RequestOptions extends Target {
  /** CRITICAL, HIGH, NORMAL (the default) or LOW. */
  priority?: Priority;
  /** An explicit cost, which wins over the route's. */
  cost?: number;
  /** Limits taken on top of the route's and the global ones. */
  limits?: string[];
  /** Follow-ups to reserve in the same admission (see `reservation()`). */
  reserve?: Reservation[];
  /** A reservation this request spends: it goes on reserved capacity, without competing. */
  spend?: Reservation;
  /** The longest the request may wait (ms) before it fails with a deadline or budget error. */
  maxWait?: number;
  /** An absolute deadline on the controller's clock (`tc.now()`), instead of `maxWait`. */
  deadline?: number;
  /** Aborting it removes the waiting request from the queue: the promise rejects with code `CANCELLED`. */
  signal?: AbortSignal;
  /** Whom the request is for, when the config's `tenants` divide the account: within a priority, tenants are served by weight. */
  tenant?: string;
  /** The key of a pool (the config's `pools`) it must go on (a dedicated key); absent: the least-loaded key that can admit it. */
  key?: string;
}

/** What a request's response said, for `permit.complete()`. */
export interface Outcome {
  /** The HTTP status; absent when no response came (network failure). */
  status?: number;
  /** The response headers. */
  headers?: Headers | Record<string, string> | Array<[string, string]>;
  /** The body, or the part of it with limit fields (Keepa's token fields, BaseLinker's errors). */
  body?: string;
}

/** What to do after `permit.complete()`. */
export type Completion =
  | { kind: 'done' }
  /** The server rate limited it and retries are spent: report the failure. */
  | { kind: 'give_up' }
  /** The server rate limited it; the core queued it again and this new permit came when it may go. */
  | { kind: 'retry'; permit: Permit };

/** Options of a controller. */
export interface TrafficControlOptions {
  /** Where presets read overrides (`BM_RATE_LIMIT_CATALOG_MAX_REQUESTS=…`): `process.env` by default. */
  env?: Record<string, string | undefined>;
  /** The `fetch` that performs requests: the global one by default. */
  fetch?: typeof fetch;
  /** A listener for every event (the `rate_limit_logs` fields). */
  onEvent?: (event: TrafficEvent) => void;
  /**
   * The credentials of a key pool's keys (the config's `pools`), by key id: `fetch` sends a
   * request with the headers of the key its permit names. The core only ever sees the ids.
   */
  keys?: Record<string, Record<string, string>>;
}

/**
 * Capacity set aside for a follow-up (the Peak of a price probe): made when the request that names
 * it in `reserve` is admitted, spent by the request that names it in `spend`, released early by
 * `release()`, and freed by its TTL if the caller forgets.
 */
export class Reservation {
  /** What it reserves for. */
  readonly followUp: FollowUp;
  /** The core's reservation id, once the reserving request was admitted. */
  id: number | undefined = undefined;
  readonly #tc: TrafficControl;

  /** @internal use `tc.reservation()`. */
  constructor(tc: TrafficControl, followUp: FollowUp) {
    this.#tc = tc;
    this.followUp = followUp;
  }

  /** Gives the capacity back now: the follow-up will not be sent. False when already spent, released or expired. */
  release(): boolean {
    return this.id !== undefined && this.#tc.releaseReservation(this.id);
  }
}

/** The right to send one request now. Report how it went with `complete()`, exactly once. */
export class Permit {
  /** The admitted request's id (the `requestId` of its events). */
  readonly request: number;
  /** The reservations made for its follow-ups, in the order they were asked. */
  readonly reservations: readonly Reservation[];
  /** The id of the pool key it was admitted on (the config's `pools`): send it with that key's credentials. */
  readonly key: string | undefined;
  readonly #tc: TrafficControl;
  readonly #signal: AbortSignal | undefined;

  /** @internal */
  constructor(tc: TrafficControl, request: number, reservations: readonly Reservation[], signal?: AbortSignal) {
    this.#tc = tc;
    this.request = request;
    this.reservations = reservations;
    this.key = tc.keyOf(request);
    this.#signal = signal;
  }

  /**
   * Reports the outcome: frees concurrency slots and feeds what the server said (429, Retry-After,
   * RateLimit fields, token counts) back to the limits. When the core asks for a retry, resolves
   * once the retry may go, with its permit.
   */
  complete(outcome?: Outcome): Promise<Completion> {
    return this.#tc.completePermit(this, outcome, this.#signal);
  }

  /** The request will not be sent: its slots go back (its window admission stays counted). */
  cancel(): boolean {
    return this.#tc.cancelRequest(this.request);
  }
}

/** A `schedule()` job gathered for the next batch. */
interface Job {
  o: RequestOptions;
  level: number;
  deadline: number | undefined;
  task: Task<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

interface Waiter {
  resolve: (permit: Permit) => void;
  reject: (error: unknown) => void;
  reserve: readonly Reservation[] | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Per-request timers (Workers): this request's own wake-up. */
  wake?: ReturnType<typeof setTimeout>;
}

type Task<T> = (permit: Permit) => T | PromiseLike<T>;

/**
 * The traffic controller: decides when each request may go so that no limit is ever exceeded.
 *
 * ```ts
 * const tc = new TrafficControl('backmarket')            // or a config object
 * const res = await tc.fetch('https://www.backmarket.fr/ws/listings/42', { method: 'POST', body })
 * ```
 */
export class TrafficControl {
  readonly #native: Native;
  readonly #h: unknown;
  readonly #now: () => number;
  readonly #perRequestTimers: boolean;
  readonly #fetch: typeof fetch | undefined;
  /** Whether the config has key pools (permits then name their key). */
  readonly #pools: boolean;
  readonly #keys: Record<string, Record<string, string>>;
  /** Status requests in flight, by URL: concurrent requests that met an unknown balance share one. */
  readonly #learning = new Map<string, Promise<boolean>>();
  readonly #waiters = new Map<number, Waiter>();
  readonly #listeners = new Set<(event: TrafficEvent) => void>();
  /** `schedule()` jobs not yet submitted, and requests ended but not yet reported: one native call each per tick. */
  #batch: Job[] = [];
  readonly #done: number[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined = undefined;
  #timerAt = Infinity;
  #pumpQueued = false;
  #spinning = false;
  #closed = false;

  /**
   * A controller from a config object (the core's JSON shape), its JSON text, or a preset name
   * (`'backmarket'`, `'keepa'`, `'baselinker'`) with overrides from the environment.
   * An invalid config throws a `TrafficControlError` with code `CONFIG` naming the field.
   */
  constructor(config: Config | PresetName | string, options: TrafficControlOptions = {}) {
    const h = theHost();
    if (!warmed.has(h.native)) {
      warmed.add(h.native);
      warmUp(h.native);
    }
    this.#native = h.native;
    this.#now = h.now;
    this.#perRequestTimers = h.timers === 'per-request';
    this.#fetch = options.fetch;
    try {
      if (typeof config === 'string' && !config.trimStart().startsWith('{')) {
        const env: Record<string, string> = {};
        for (const [k, v] of Object.entries(options.env ?? h.env())) if (typeof v === 'string') env[k] = v;
        this.#h = this.#native.createFromPreset(config, env);
      } else {
        this.#h = this.#native.create(typeof config === 'string' ? config : JSON.stringify(config));
      }
    } catch (e) {
      throw fromNative(e);
    }
    this.#pools = Object.keys(this.config.pools ?? {}).length > 0;
    this.#keys = options.keys ?? {};
    if (options.onEvent) this.#listeners.add(options.onEvent);
    // Nobody listens: the core keeps only the events that deliver decisions.
    else this.#native.setEventLog(this.#h, false);
  }

  /** @internal The pool key an in-flight request went on. */
  keyOf(request: number): string | undefined {
    return this.#pools ? (this.#native.keyOf(this.#h, request) ?? undefined) : undefined;
  }

  /** The controller's clock (ms): the time base of events, snapshots and `deadline`. */
  now(): number {
    return this.#now();
  }

  /** The config as the core runs it (defaults filled in). */
  get config(): Config {
    return JSON.parse(this.#native.configJson(this.#h)) as Config;
  }

  /** Requests waiting, all priorities. */
  get waiting(): number {
    this.#sync();
    return this.#native.waiting(this.#h);
  }

  /**
   * Performs `fetch(input, init)` once the request's limits admit it, reports the response to the
   * core, and sends it again when the core says the server rate limited it. Resolves with the
   * `Response`, like `fetch` (a 429 whose retries are spent is returned as is).
   */
  async fetch(input: string | URL | Request, init?: RequestInit, options: RequestOptions = {}): Promise<Response> {
    const isRequest = typeof Request !== 'undefined' && input instanceof Request;
    const method = (options.method ?? init?.method ?? (isRequest ? (input as Request).method : 'GET')).toUpperCase();
    const url =
      options.route !== undefined
        ? undefined
        : (options.url ?? (typeof input === 'string' ? input : input instanceof URL ? input.href : (input as Request).url));
    const signal = options.signal ?? init?.signal ?? undefined;
    const doFetch = this.#fetch ?? globalThis.fetch;
    let permit: Permit;
    try {
      permit = await this.#enqueue({ ...options, method, url, signal });
    } catch (e) {
      // A budget whose balance nobody reported yet: learn it with the free status request (Keepa's
      // /token) through this controller, then ask once more.
      if (!(e instanceof TrafficControlError && e.code === 'BUDGET_UNKNOWN') || url === undefined || !(await this.#learnBudget(String(url), init))) throw e;
      permit = await this.#enqueue({ ...options, method, url, signal });
    }
    for (;;) {
      let response: Response;
      try {
        const credentials = permit.key === undefined ? undefined : this.#keys[permit.key];
        response = await doFetch(isRequest ? (input as Request).clone() : input, credentials ? withHeaders(init, credentials) : init);
      } catch (e) {
        this.#report(permit.request, endStatus(e), undefined, undefined);
        throw e;
      }
      const outcome = await outcomeOf(response, (status, type, length) => this.#native.readsBody(this.#h, permit.request, status, type, length));
      const completion = await permit.complete(outcome);
      if (completion.kind !== 'retry') return response;
      await response.body?.cancel().catch(() => undefined);
      permit = completion.permit;
    }
  }

  /**
   * Sends the status request made from `url` (one at a time per status URL): its response's token
   * fields set the budget. Resolves whether it learnt anything to retry with.
   */
  #learnBudget(url: string, init?: RequestInit): Promise<boolean> {
    const status = this.#native.statusUrl(this.#h, url);
    if (!status) return Promise.resolve(false);
    let learning = this.#learning.get(status);
    if (!learning) {
      const headers = init?.headers;
      learning = this.fetch(status, headers ? { headers } : undefined)
        .then(async (res) => {
          await res.arrayBuffer().catch(() => undefined);
          return res.ok;
        })
        .catch(() => false)
        .finally(() => this.#learning.delete(status));
      this.#learning.set(status, learning);
    }
    return learning;
  }

  /**
   * Runs `task` once the limits admit it, and reports its end. When the task returns a
   * `Response`, its status and headers are fed back (and the task runs again if the core asks
   * for a retry).
   */
  schedule<T>(options: RequestOptions, task: Task<T>): Promise<T> {
    if (options.url === undefined) return this.#scheduleOnce(options, task);
    // A budget whose balance nobody reported yet: learn it with the free status request, then ask
    // once more (only when the task never ran).
    let started = false;
    const once = (p: Permit) => {
      started = true;
      return task(p);
    };
    return this.#scheduleOnce(options, once).catch(async (e: unknown) => {
      if (started || !(e instanceof TrafficControlError && e.code === 'BUDGET_UNKNOWN') || !(await this.#learnBudget(String(options.url)))) throw e;
      return this.#scheduleOnce(options, task);
    });
  }

  #scheduleOnce<T>(options: RequestOptions, task: Task<T>): Promise<T> {
    const o = options;
    if (!o.reserve?.length && !o.spend && !o.limits?.length && !o.signal && o.tenant === undefined && o.key === undefined && !this.#closed && (o.cost === undefined || o.cost >= 0)) {
      const level = LEVELS[o.priority ?? 'normal'];
      if (level !== undefined) {
        // Gathered, and submitted with this tick's other jobs in one native call (#submitBatch).
        const deadline = o.deadline ?? (o.maxWait === undefined ? undefined : this.#now() + o.maxWait);
        return new Promise<T>((resolve, reject) => {
          this.#batch.push({ o, level, deadline, task: task as Task<unknown>, resolve: resolve as (v: unknown) => void, reject });
          this.#queuePump();
        });
      }
    }
    const permit = this.#enqueue(options);
    if (permit instanceof Permit) return this.#run(permit, task);
    return permit.then((p) => this.#run(p, task));
  }

  /** Waits for admission and hands the permit over: the caller sends the request and calls `permit.complete()`. */
  async acquire(options: RequestOptions = {}): Promise<Permit> {
    return this.#enqueue(options);
  }

  /** Decides at once, without queueing: go (with a permit), wait until an instant, or never. */
  tryAcquire(options: RequestOptions = {}): Decision<Permit> {
    this.#sync();
    const now = this.#now();
    const deadline = deadlineOf(options, now);
    let d;
    try {
      if (needsJson(options)) {
        d = this.#native.tryAcquireJson(this.#h, now, JSON.stringify(coreRequest(options, deadline)));
      } else {
        d = this.#native.tryAcquire(this.#h, now, ...partsOf(options, deadline));
      }
    } catch (e) {
      throw fromNative(e);
    }
    this.#queuePump();
    if (d.decision === 'go') {
      const reservations = attach(options.reserve, d.reservations ?? []);
      return { decision: 'go', permit: new Permit(this, d.requestId!, reservations, options.signal) };
    }
    if (d.decision === 'wait') return { decision: 'wait', until: d.until ?? null };
    return { decision: 'reject', error: new TrafficControlError(d.code as never, d.message ?? d.code ?? '') };
  }

  /** A reservation for a follow-up, to pass in `reserve` of the request that makes it and `spend` of the follow-up. */
  reservation(followUp: FollowUp): Reservation {
    return new Reservation(this, followUp);
  }

  /** Listens to every event from now on; returns the function that stops listening. */
  on(listener: (event: TrafficEvent) => void): () => void {
    this.#sync();
    if (this.#listeners.size === 0) this.#native.setEventLog(this.#h, true);
    this.#listeners.add(listener);
    return () => {
      const removed = this.#listeners.delete(listener);
      if (removed && this.#listeners.size === 0) this.#native.setEventLog(this.#h, false);
      return removed;
    };
  }

  /** Every limit's state and the queue depths, now. */
  snapshot(): Snapshot {
    this.#sync();
    const raw = JSON.parse(this.#native.snapshotJson(this.#h, this.#now())) as RawSnapshot;
    this.#queuePump();
    return snapshotOf(raw);
  }

  /**
   * The metrics, now: requests by route, priority and result, refusals by code, time waited per
   * priority, pauses by reason, and the snapshot the gauges come from. `metricsText()` gives them in
   * Prometheus's text format; `registerMetrics` (the `prometheus` export) hands them to prom-client.
   */
  metrics(): Metrics {
    return metricsOf(JSON.parse(this.#metricsCall('metricsJson')) as RawMetrics);
  }

  /** The metrics in Prometheus's text exposition format (version 0.0.4), for a `/metrics` endpoint. */
  metricsText(): string {
    return this.#metricsCall('metricsText');
  }

  #metricsCall(name: 'metricsJson' | 'metricsText'): string {
    const f = this.#native[name];
    if (!f) throw new TrafficControlError('CONFIG', 'metrics are not in this build (the wasm browser build leaves them out): use snapshot()');
    this.#sync();
    const out = f.call(this.#native, this.#h, this.#now());
    this.#queuePump();
    return out;
  }

  /**
   * Runs `config` (a config object, JSON text or a preset name, with overrides from `options.env`
   * or the environment) beside this controller as a shadow: it sees the same requests, outcomes and
   * cancellations and decides on them, but nothing it decides is acted on; `shadowReport()` compares
   * the two. `null` stops it; a new config starts a fresh one. An invalid config throws `CONFIG`
   * naming the field and leaves the running shadow. Only on the in-memory controller.
   */
  setShadow(config: Config | PresetName | string | null, options: { env?: Record<string, string | undefined> } = {}): void {
    const set = this.#native.setShadow;
    const preset = this.#native.setShadowPreset;
    if (!set || !preset) throw new TrafficControlError('CONFIG', 'shadow mode is not in this build (the wasm browser build leaves it out)');
    this.#sync();
    try {
      if (typeof config === 'string' && !config.trimStart().startsWith('{')) {
        const env: Record<string, string> = {};
        for (const [k, v] of Object.entries(options.env ?? theHost().env())) if (typeof v === 'string') env[k] = v;
        preset.call(this.#native, this.#h, this.#now(), config, env);
      } else {
        set.call(this.#native, this.#h, this.#now(), config === null ? null : typeof config === 'string' ? config : JSON.stringify(config));
      }
    } catch (e) {
      throw fromNative(e);
    } finally {
      this.#queuePump();
    }
  }

  /** What the shadow config would have decided beside what this one decided; `null` without a shadow. */
  shadowReport(): ShadowReport | null {
    const f = this.#native.shadowReportJson;
    if (!f) return null;
    this.#sync();
    const json = f.call(this.#native, this.#h, this.#now());
    this.#queuePump();
    if (json == null) return null;
    return shadowReportOf(json);
  }

  /** Sets a budget's balance to what the server reported (tokens left, ms until the next refill). */
  syncBudget(limit: string, tokensLeft: number, refillInMs?: number): void {
    this.#sync();
    try {
      this.#native.syncBudget(this.#h, this.#now(), limit, tokensLeft, refillInMs ?? null);
    } catch (e) {
      throw fromNative(e);
    }
    this.#queuePump();
  }

  /** Stops the timer and fails every waiting request with code `CANCELLED`. */
  close(): void {
    this.#sync();
    this.#closed = true;
    const now = this.#now();
    for (const [id, w] of [...this.#waiters]) {
      this.#native.cancel(this.#h, now, id);
      this.#settle(id, w);
      w.reject(new TrafficControlError('CANCELLED', 'the traffic controller was closed'));
    }
    this.#pump();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  // ---- used by Permit and Reservation ----------------------------------------------------------

  /** @internal */
  releaseReservation(id: number): boolean {
    this.#sync();
    const ok = this.#native.release(this.#h, this.#now(), id);
    this.#queuePump();
    return ok;
  }

  /** @internal */
  cancelRequest(id: number): boolean {
    this.#sync();
    const ok = this.#native.cancel(this.#h, this.#now(), id);
    this.#queuePump();
    return ok;
  }

  /** @internal */
  completePermit(permit: Permit, outcome: Outcome | undefined, signal: AbortSignal | undefined): Promise<Completion> {
    // No outcome at all: the host does not know what happened (0), not a request that got no answer.
    const status = outcome === undefined ? 0 : outcome.status;
    const code = this.#report(permit.request, status, headerList(outcome?.headers), outcome?.body);
    if (code === -1 || code === -3) return DONE;
    if (code === -2) return GIVE_UP;
    // The core queued it again under the same id: its next Go delivers the retry's permit.
    return new Promise<Permit>((resolve, reject) => {
      this.#wait(permit.request, resolve, reject, permit.reservations, signal);
      this.#arm();
    }).then((p) => ({ kind: 'retry', permit: p }));
  }

  // ---- internals ---------------------------------------------------------------------------------

  /**
   * Runs the task on its permit and reports its end. Written with explicit promises rather than
   * `async`: a task that returns at once costs no extra promise or microtask, which is most of the
   * cost of a job whose limits do not bind.
   */
  #run<T>(permit: Permit, task: Task<T>): Promise<T> {
    let result: T | PromiseLike<T>;
    try {
      result = task(permit);
    } catch (e) {
      this.#report(permit.request, endStatus(e), undefined, undefined);
      return Promise.reject(e);
    }
    if (result !== null && typeof (result as PromiseLike<T>)?.then === 'function') {
      return Promise.resolve(result).then(
        (r) => this.#finish(permit, r, task),
        (e) => {
          this.#report(permit.request, endStatus(e), undefined, undefined);
          throw e;
        },
      );
    }
    return this.#finish(permit, result as T, task);
  }

  /**
   * Runs a batched job's task and settles the job's promise. `admitted` is the job's permit, or
   * only its request id when the task declares no parameter (then no Permit object is made unless
   * the task returns an object). A returned `Response` goes through `#finish`, which calls the
   * task itself again when the core asks for a retry.
   */
  #runJob(admitted: Permit | number, job: Job): void {
    const request = typeof admitted === 'number' ? admitted : admitted.request;
    let result: unknown;
    try {
      result = typeof admitted === 'number' ? (job.task as () => unknown)() : job.task(admitted);
    } catch (e) {
      // A task that throws is a request that got no answer (a network failure, most often).
      this.#report(request, endStatus(e), undefined, undefined);
      job.reject(e);
      return;
    }
    if (result === null || (typeof result !== 'object' && typeof result !== 'function')) {
      this.#ended(request);
      job.resolve(result);
      return;
    }
    const permit = typeof admitted === 'number' ? new Permit(this, admitted, [], undefined) : admitted;
    if (typeof (result as PromiseLike<unknown>).then === 'function') {
      Promise.resolve(result)
        .then(
          (r) => this.#finish(permit, r, job.task),
          (e) => {
            this.#report(request, endStatus(e), undefined, undefined);
            throw e;
          },
        )
        .then(job.resolve, job.reject);
    } else {
      this.#finish(permit, result, job.task).then(job.resolve, job.reject);
    }
  }

  /** A task ended without an HTTP response: its end is reported with the tick's others (#completeBatch). */
  #ended(request: number): void {
    this.#done.push(request);
    this.#queuePump();
  }

  /**
   * Submits the jobs gathered since the last tick, a chunk per native call; runs those admitted at
   * once, and reports the ends of the chunk's tasks before the next chunk goes in, so the core
   * never holds more finished-but-unreported requests than a chunk (a tick of 100k no-op jobs
   * would otherwise grow its in-flight table to 100k entries).
   */
  #submitBatch(): void {
    const batch = this.#batch;
    if (batch.length === 0) return;
    this.#batch = [];
    for (let from = 0; from < batch.length; from += BATCH_CHUNK) {
      const to = Math.min(batch.length, from + BATCH_CHUNK);
      const spec = new Float64Array(4 * (to - from));
      let strings: Array<string | null> | null = null;
      for (let i = from, k = 0; i < to; i++, k += 4) {
        const { o, level, deadline } = batch[i];
        spec[k] = level;
        spec[k + 1] = o.cost ?? -1;
        spec[k + 2] = deadline ?? NaN;
        if (o.method === undefined && o.url === undefined && o.route === undefined) {
          spec[k + 3] = -1;
        } else {
          strings ??= [];
          spec[k + 3] = strings.length / 3;
          strings.push(o.method ?? null, o.url === undefined ? null : String(o.url), o.route ?? null);
        }
      }
      const ids = this.#native.submitBatch(this.#h, this.#now(), spec, strings);
      let refused: Array<{ code: string; message: string }> | undefined;
      let r = 0;
      for (let i = from; i < to; i++) {
        const job = batch[i];
        const raw = ids[i - from];
        if (raw > 0) {
          this.#runJob(job.task.length === 0 ? raw : new Permit(this, raw, [], undefined), job);
        } else if (raw < 0) {
          this.#wait(-raw, (permit) => this.#runJob(permit, job), job.reject, undefined, undefined);
        } else {
          refused ??= this.#native.takeRefused(this.#h);
          const e = refused[r++];
          job.reject(fromNative(Object.assign(new Error(e.message), { code: e.code })));
        }
      }
      this.#completeBatch();
    }
  }

  /** Reports the ends gathered since the last tick in one native call (ends whose outcome is not known: no response object came back). */
  #completeBatch(): void {
    if (this.#done.length === 0) return;
    const done = Float64Array.from(this.#done);
    this.#done.length = 0;
    this.#native.completeBatch(this.#h, this.#now(), done);
  }

  /** Brings the core up to date with the gathered jobs and ends, before any other call. */
  #sync(): void {
    if (this.#batch.length) this.#submitBatch();
    if (this.#done.length) this.#completeBatch();
  }

  /** Reports the task's end; runs it again when its Response was rate limited and the core says retry. */
  #finish<T>(permit: Permit, result: T, task: Task<T>): Promise<T> {
    if (!isResponse(result)) {
      this.#ended(permit.request);
      return Promise.resolve(result);
    }
    return outcomeOf(result, (status, type, length) => this.#native.readsBody(this.#h, permit.request, status, type, length))
      .then((outcome) => permit.complete(outcome))
      .then((c) => (c.kind === 'retry' ? this.#run(c.permit, task) : result));
  }

  #report(request: number, status: number | undefined, headers: string[] | undefined, body: string | undefined): number {
    this.#sync();
    const code = this.#native.complete(this.#h, this.#now(), request, status ?? null, headers ?? null, body ?? null, Date.now());
    this.#queuePump();
    return code;
  }

  /** Submits; a Permit at once when the request goes now, else a promise of one. */
  #enqueue(o: RequestOptions): Permit | Promise<Permit> {
    if (this.#closed) return Promise.reject(new TrafficControlError('CANCELLED', 'the traffic controller was closed'));
    if (o.signal?.aborted) return Promise.reject(cancelled(o.signal, 'before it was asked'));
    this.#sync();
    const now = this.#now();
    const deadline = deadlineOf(o, now);
    let raw: number;
    try {
      if (needsJson(o)) {
        raw = this.#native.submitJson(this.#h, now, JSON.stringify(coreRequest(o, deadline)));
      } else {
        raw = this.#native.submit(this.#h, now, ...partsOf(o, deadline));
      }
    } catch (e) {
      this.#queuePump();
      return Promise.reject(fromNative(e));
    }
    if (raw > 0 && !o.reserve?.length) {
      this.#queuePump();
      return new Permit(this, raw, [], o.signal);
    }
    return new Promise<Permit>((resolve, reject) => {
      this.#wait(Math.abs(raw), resolve, reject, o.reserve, o.signal);
      // Admitted at once with follow-ups: its Go event carries the reservation ids.
      if (raw > 0) this.#pump();
      else this.#arm();
    });
  }

  #wait(
    id: number,
    resolve: (p: Permit) => void,
    reject: (e: unknown) => void,
    reserve: readonly Reservation[] | undefined,
    signal: AbortSignal | undefined,
  ): void {
    const w: Waiter = { resolve, reject, reserve, signal, onAbort: undefined };
    if (signal) {
      w.onAbort = () => {
        if (this.#waiters.get(id) !== w) return;
        this.#native.cancel(this.#h, this.#now(), id);
        this.#settle(id, w);
        reject(cancelled(signal));
        this.#queuePump();
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
    }
    this.#waiters.set(id, w);
    if (this.#perRequestTimers) this.#watch(id, w);
  }

  /**
   * Per-request timers (Workers): the runtime cancels a request that waits on nothing of its own
   * and drops the timers of a request that has ended, so the one shared timer cannot serve
   * requests from other contexts. Each waiting request keeps a timer in its own context instead,
   * set to the core's next deadline, until it settles.
   */
  #watch(id: number, w: Waiter): void {
    const arm = (): void => {
      const at = this.#native.pollTimeout(this.#h);
      const delay = at == null ? IDLE_WAKE_MS : Math.min(IDLE_WAKE_MS, Math.max(0, Math.ceil(at - this.#now())));
      w.wake = setTimeout(tick, delay);
    };
    const tick = (): void => {
      if (this.#waiters.get(id) !== w) return;
      this.#pump();
      if (this.#waiters.get(id) === w) arm();
    };
    arm();
  }

  #settle(id: number, w: Waiter): void {
    this.#waiters.delete(id);
    if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
    if (w.wake !== undefined) clearTimeout(w.wake);
  }

  #go(id: number, reservationIds: ArrayLike<number>): void {
    const w = this.#waiters.get(id);
    if (!w) return;
    this.#settle(id, w);
    const reservations = reservationIds.length ? attach(w.reserve, reservationIds) : (w.reserve ?? []);
    w.resolve(new Permit(this, id, reservations, w.signal));
  }

  #fail(e: NativeEvent): void {
    const w = this.#waiters.get(e.requestId);
    if (!w) return;
    this.#settle(e.requestId, w);
    w.reject(new TrafficControlError((e.error ?? 'CANCELLED') as never, e.message ?? e.error ?? 'failed'));
  }

  #queuePump(): void {
    if (this.#pumpQueued) return;
    this.#pumpQueued = true;
    queueMicrotask(() => this.#pump());
  }

  /** Drains the core's events at the current time: settles waiting promises, tells listeners, re-arms the timer. */
  #pump(): void {
    this.#pumpQueued = false;
    this.#sync();
    const now = this.#now();
    if (this.#listeners.size > 0) {
      for (const e of this.#native.drain(this.#h, now)) {
        if (e.status === 'go') this.#go(e.requestId, e.reservations ?? []);
        else if (e.status === 'rejected' || e.status === 'expired') this.#fail(e);
        for (const listener of this.#listeners) {
          try {
            listener(e);
          } catch (err) {
            queueMicrotask(() => {
              throw err;
            });
          }
        }
      }
    } else {
      // No listener: only go, rejected and expired, in one flat array (see drainActionable).
      const a = this.#native.drainActionable(this.#h, now);
      let failures = false;
      for (let i = 0; i < a.length; ) {
        const n = a[i + 2];
        if (a[i] === 1) this.#go(a[i + 1], n ? a.subarray(i + 3, i + 3 + n) : EMPTY);
        else failures = true;
        i += 3 + n;
      }
      if (failures) for (const e of this.#native.takeFailures(this.#h)) this.#fail(e);
    }
    this.#arm();
  }

  /** Sets the one timer to the core's next deadline. */
  #arm(): void {
    if (this.#closed || this.#perRequestTimers) return;
    const at = this.#native.pollTimeout(this.#h);
    if (at == null) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#timerAt = Infinity;
      return;
    }
    const delay = at - this.#now();
    if (delay <= SPIN_MS && immediate) {
      // Timers fire up to a millisecond late (whole-millisecond clock): the last stretch before
      // the instant is covered by event-loop turns, which still let I/O run.
      if (!this.#spinning) {
        this.#spinning = true;
        immediate(() => {
          this.#spinning = false;
          this.#pump();
        });
      }
      return;
    }
    if (this.#timer !== undefined && this.#timerAt <= at) {
      this.#keepAlive();
      return;
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    // Wake a little early on the timer, then turn the event loop until the instant.
    const sleep = Math.max(0, immediate ? Math.floor(delay - SPIN_MS) : Math.ceil(delay));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#pump();
    }, sleep);
    this.#keepAlive();
  }

  /** The timer keeps the process alive only while requests wait (not for reservation or lease expiry). */
  #keepAlive(): void {
    const t = this.#timer as unknown as { ref?: () => void; unref?: () => void } | undefined;
    if (this.#waiters.size > 0) t?.ref?.();
    else t?.unref?.();
  }
}

const DONE: Promise<Completion> = Promise.resolve({ kind: 'done' });
/** How close to its instant a wake-up stops sleeping on a timer and turns the event loop instead. */
const SPIN_MS = 3;
/** Jobs per native call when a tick's `schedule()` jobs are submitted. */
const BATCH_CHUNK = 1024;
/** Per-request timers: how long a waiting request sleeps when only a completion can make room. */
const IDLE_WAKE_MS = 1000;
const immediate: ((f: () => void) => unknown) | undefined = (globalThis as { setImmediate?: (f: () => void) => unknown }).setImmediate;
const GIVE_UP: Promise<Completion> = Promise.resolve({ kind: 'give_up' });
const EMPTY = new Float64Array(0);

/** Native backends whose admission paths have run once. */
const warmed = new WeakSet<object>();

/**
 * Runs the admission paths once on a throwaway controller. V8 compiles a wasm module's functions at
 * their first call: the first batch took 3 ms in `submitBatch` and 1.6 ms in `drain`, so the first
 * tasks started milliseconds after the instant the core admitted them, and the server saw them
 * closer to the next window's requests than the limit allows. Costs a few ms once per module;
 * nothing of it is seen outside.
 */
function warmUp(native: Native): void {
  try {
    const h = native.create('{"limits":{"w":{"kind":"window","max":1,"per":"1s"}},"global":["w"]}');
    for (const [k, log] of [false, true].entries()) {
      const t = k * 2000;
      native.setEventLog(h, log);
      const ids = native.submitBatch(h, t, Float64Array.of(2, -1, NaN, -1, 2, -1, NaN, -1), null);
      native.drainActionable(h, t);
      native.drain(h, t);
      native.completeBatch(h, t, Float64Array.of(ids[0]));
      native.cancel(h, t, -ids[1]);
      native.tryAcquireJson(h, t + 1000, '{"priority":"normal"}');
      native.tryAcquire(h, t + 1000, null, null, null, 2, null, null);
      native.pollTimeout(h);
      native.drainActionable(h, t + 1000);
      native.drain(h, t + 1000);
    }
  } catch {
    // Only a warm-up: a backend without some path simply compiles it later.
  }
}

/** The core's snapshot (times in nanoseconds) as the package shows it (times in ms). */
function snapshotOf(raw: RawSnapshot): Snapshot {
  const ms = (ns: number | null) => (ns == null ? null : ns / 1e6);
  return {
    at: raw.at / 1e6,
    limits: raw.limits.map(
      (l): LimitSnapshot => ({
        name: l.name,
        kind: l.kind,
        capacity: l.capacity,
        used: l.used,
        reserved: l.reserved,
        available: l.available,
        nextFree: ms(l.next_free),
        balance: l.balance ?? null,
        pause: l.pause ? { until: l.pause.until / 1e6, serverUntil: l.pause.server_until / 1e6, reason: l.pause.reason, strikes: l.pause.strikes } : null,
      }),
    ),
    waiting: { critical: raw.waiting[0], high: raw.waiting[1], normal: raw.waiting[2], low: raw.waiting[3] },
    inFlight: raw.in_flight,
    reservations: raw.reservations,
  };
}

/** The core's `ShadowReport` JSON (instants in ns, waits in seconds). */
interface RawShadowSide {
  requests: number;
  went_at_once: number;
  went_after_wait: number;
  refused: Array<[string, number]>;
  cancelled: number;
  retried: number;
  waiting: number;
  wait_p50: number;
  wait_p95: number;
  wait_p99: number;
  wait_max: number;
  wait_total: number;
}
interface RawShadowReport {
  since: number;
  at: number;
  tracked: number;
  enforced: RawShadowSide;
  shadow: RawShadowSide;
}

/** The core's `ShadowReport` JSON as the package's `ShadowReport` (in-memory and shared controllers). */
export function shadowReportOf(json: string): ShadowReport {
  const raw = JSON.parse(json) as RawShadowReport;
  return { since: raw.since / 1e6, at: raw.at / 1e6, tracked: raw.tracked, enforced: sideOf(raw.enforced), shadow: sideOf(raw.shadow) };
}

function sideOf(r: RawShadowSide): ShadowSide {
  return {
    requests: r.requests,
    wentAtOnce: r.went_at_once,
    wentAfterWait: r.went_after_wait,
    refused: Object.fromEntries(r.refused),
    cancelled: r.cancelled,
    retried: r.retried,
    waiting: r.waiting,
    waitSeconds: { p50: r.wait_p50, p95: r.wait_p95, p99: r.wait_p99, max: r.wait_max, total: r.wait_total },
  };
}

/** The core's metrics JSON as the package's `Metrics` (in-memory and shared controllers). */
export function metricsOf(raw: RawMetrics): Metrics {
  return {
    requests: raw.requests,
    rejected: raw.rejected,
    wait: raw.wait.map((h) => ({
      priority: h.priority,
      buckets: h.buckets.map(([le, n]) => [le ?? Infinity, n] as [number, number]),
      count: h.count,
      sumSeconds: h.sum_seconds,
    })),
    pauses: raw.pauses,
    snapshot: snapshotOf(raw.snapshot),
    families: raw.families.map((f) => ({
      name: f.name,
      help: f.help,
      type: f.type,
      samples: f.samples.map((x) => ({ name: x.name, labels: Object.fromEntries(x.labels), value: x.value })),
    })),
  };
}

/** The core's metrics JSON (an infinite bucket bound comes as null). */
export interface RawMetrics extends Omit<Metrics, 'wait' | 'snapshot' | 'families'> {
  families: Array<Omit<MetricFamily, 'samples'> & { samples: Array<{ name: string; labels: Array<[string, string]>; value: number }> }>;
  wait: Array<{ priority: Metrics['wait'][number]['priority']; buckets: Array<[number | null, number]>; count: number; sum_seconds: number }>;
  snapshot: RawSnapshot;
}

interface RawSnapshot {
  at: number;
  limits: Array<{
    name: string;
    kind: LimitSnapshot['kind'];
    capacity: number;
    used: number;
    reserved: number;
    available: number;
    next_free: number | null;
    balance?: number | null;
    pause?: { until: number; server_until: number; reason: LimitPause['reason']; strikes: number } | null;
  }>;
  waiting: [number, number, number, number];
  in_flight: number;
  reservations: number;
}

/**
 * The status a request's end reports when its sending threw: none (no answer came: a failure for a
 * breaker), or 0 when the caller aborted it (nothing is known of the server: not judged).
 */
function endStatus(e: unknown): number | undefined {
  return (e as { name?: string } | null)?.name === 'AbortError' ? 0 : undefined;
}

function deadlineOf(o: RequestOptions, now: number): number | undefined {
  if (o.deadline !== undefined) return o.deadline;
  return o.maxWait === undefined ? undefined : now + o.maxWait;
}

function targetOf(t: Target): unknown {
  if (t.route !== undefined) {
    if (t.url !== undefined) throw new TrafficControlError('INVALID_ARGUMENT', 'a request has a url or a route, not both');
    return { route: t.route };
  }
  if (t.url !== undefined) return { http: { method: (t.method ?? 'GET').toUpperCase(), url: String(t.url) } };
  return 'none';
}

/** The request in the core's serde shape (deadline in integer nanoseconds). */
/** What the core's request JSON is built from: `RequestOptions`, or the shared store's request. */
export interface CoreRequestParts extends Target {
  priority?: Priority;
  cost?: number;
  limits?: string[];
  reserve?: ReadonlyArray<{ readonly followUp: FollowUp }>;
  spend?: { readonly id: number | undefined };
  tenant?: string;
  key?: string;
}

/** A request in the core's JSON shape (`deadline` on the controller's clock, ms). */
export function coreRequest(o: CoreRequestParts, deadline: number | undefined): unknown {
  const priority = o.priority ?? 'normal';
  if (LEVELS[priority] === undefined) throw invalidPriority(priority);
  let spend: number | null = null;
  if (o.spend) {
    if (o.spend.id === undefined) {
      throw new TrafficControlError('INVALID_ARGUMENT', 'spend: the reservation was not made yet (its request was not admitted)');
    }
    spend = o.spend.id;
  }
  return {
    target: targetOf(o),
    limits: o.limits ?? [],
    cost: o.cost ?? null,
    priority,
    deadline: deadline === undefined ? null : Math.max(0, Math.round(deadline * 1e6)),
    reserve: (o.reserve ?? []).map((r) => ({
      target: targetOf(r.followUp),
      limits: r.followUp.limits ?? [],
      cost: r.followUp.cost ?? null,
      ttl: r.followUp.ttl ?? null,
    })),
    spend,
    ...(o.tenant === undefined ? {} : { tenant: o.tenant }),
    ...(o.key === undefined ? {} : { key: o.key }),
  };
}

/** `init` with `headers` set on top of its own (a pool key's credentials). */
function withHeaders(init: RequestInit | undefined, headers: Record<string, string>): RequestInit {
  const merged = new Headers(init?.headers);
  for (const [k, v] of Object.entries(headers)) merged.set(k, v);
  return { ...init, headers: merged };
}

function attach(reserve: readonly Reservation[] | undefined, ids: ArrayLike<number>): readonly Reservation[] {
  const list = reserve ?? [];
  for (let i = 0; i < list.length && i < ids.length; i++) list[i].id = ids[i];
  return list;
}

/**
 * A response as the core's outcome: its status and headers, and its body (read from a clone, so
 * the caller still reads it) when `reads(status, contentType, contentLength)` says the core wants
 * it (the core's rule: `readsBody` for a request of this controller, `wantsBody` for any).
 */
export async function outcomeOf(
  response: Response,
  reads: (status: number, contentType: string | null, contentLength: number | null) => boolean,
): Promise<Outcome> {
  const length = response.headers.get('content-length');
  const outcome: Outcome = { status: response.status, headers: response.headers };
  if (reads(response.status, response.headers.get('content-type'), length === null ? null : Number(length))) {
    outcome.body = await response
      .clone()
      .text()
      .catch(() => undefined);
  }
  return outcome;
}

/** Headers of any shape as alternating names and values, as the native side takes them. */
export function headerList(h: Outcome['headers']): string[] | undefined {
  if (!h) return undefined;
  const out: string[] = [];
  if (Array.isArray(h)) for (const [k, v] of h) out.push(k, v);
  else if (typeof (h as Headers).forEach === 'function') (h as Headers).forEach((v, k) => out.push(k, v));
  else for (const [k, v] of Object.entries(h)) out.push(k, v);
  return out;
}

function isResponse(x: unknown): x is Response {
  // Objects only: the first read of the global `Response` loads Node's fetch (~20 ms).
  return typeof x === 'object' && x !== null && typeof Response !== 'undefined' && x instanceof Response;
}

/** Whether a request needs the JSON path (follow-ups, spends, named limits); simple ones cross as parts. */
function needsJson(o: RequestOptions): boolean {
  return Boolean(o.reserve?.length || o.spend || o.limits?.length || o.tenant !== undefined || o.key !== undefined);
}

/** A simple request as the native side's `submit` and `tryAcquire` take it: method, URL, route, level (0 critical .. 3 low), cost, deadline. */
function partsOf(o: RequestOptions, deadline: number | undefined): [string | null, string | null, string | null, number, number | null, number | null] {
  const level = LEVELS[o.priority ?? 'normal'];
  if (level === undefined) throw invalidPriority(o.priority);
  return [o.method ?? null, o.url === undefined ? null : String(o.url), o.route ?? null, level, o.cost ?? null, deadline ?? null];
}

function invalidPriority(p: unknown): TrafficControlError {
  return new TrafficControlError('INVALID_ARGUMENT', `priority must be one of critical, high, normal, low, not ${String(p)}`);
}

function cancelled(signal: AbortSignal, when = 'while it waited'): TrafficControlError {
  return new TrafficControlError('CANCELLED', `the request was cancelled ${when}`, { cause: signal.reason });
}
