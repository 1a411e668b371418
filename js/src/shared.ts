// The shared store: limits of one account held in Redis for every process (Bun and Node instances,
// the Python service) that calls the API with it. The core builds each script call and reads its
// reply (sans-IO); this file runs the calls with the application's Redis client, waits, and keeps
// the process's own waiters in priority order.
import { TrafficControlError, type ErrorCode } from './errors.js';
import { theHost } from './host.js';
import { coreRequest, headerList, metricsOf, outcomeOf, shadowReportOf, type FollowUp, type RawMetrics } from './traffic-control.js';
import type { Config, LimitPause, Metrics, PresetName, Priority, ShadowReport, TrafficEvent } from './types.js';

/**
 * A Redis client: ioredis (`evalsha(sha, n, ...keysAndArgs)`) or node-redis (`evalSha(sha, { keys, arguments })`).
 * In Cloudflare Workers, a client over `cloudflare:sockets` adapted to the first shape (see the wasm
 * package's `examples/workers/shared-store.mjs`).
 */
export type RedisClient =
  | { evalsha(sha: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown>; eval(script: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown> }
  | { evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>; eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown> };

/** One output of the core's shared-store driver (`host::DriverHost`). */
type DriverOutput =
  | { output: 'run'; call: number; keys: string[]; args: string[] }
  | { output: 'go'; handle: number; request: number; reservations: number[] }
  | { output: 'fail'; handle: number; code: string; message: string }
  | { output: 'done'; handle: number; live: boolean }
  | { output: 'giveUp'; handle: number }
  | { output: 'snapshot'; handle: number; snapshot: SharedSnapshot }
  | { output: 'metrics'; handle: number; metrics: RawMetrics; text: string }
  | { output: 'status'; handle: number; url: string }
  | { output: 'subscribe'; channel: string }
  | { output: 'unsubscribe' }
  | { output: 'event'; event: TrafficEvent };

/** What the native side (napi or wasm) provides for the shared store: the core's driver behind one call. */
interface SharedNative {
  sharedScript(): string[];
  driverCreate(configJson: string, optionsJson: string): unknown;
  driverCreateFromPreset(name: string, env: Record<string, string>, optionsJson: string): unknown;
  driverStep(h: unknown, now: number, inputJson: string): string;
  /** Shadow mode (absent from the wasm browser build). */
  driverSetShadow?(h: unknown, now: number, configJson: string | null): void;
  driverSetShadowPreset?(h: unknown, now: number, name: string, env: Record<string, string>): void;
  driverShadowReportJson?(h: unknown, now: number): string | null | undefined;
}

/** Every limit's shared state (times in Redis server milliseconds). */
export interface SharedSnapshot {
  at: number;
  limits: Array<{ name: string; kind: string; capacity: number; used: number; reserved: number; available: number; nextFree: number | null; balance: number | null; pause: LimitPause | null }>;
  waiters: number;
}

/** Options of a shared controller. */
export interface SharedOptions {
  /** The Redis client every call goes through. */
  redis: RedisClient;
  /** The account the processes share: the hash tag of every key (`tc:{account}:…`). */
  account: string;
  /**
   * What a request does while Redis is unreachable: `wait` (the default: retry with backoff, then
   * fail with `STORE_UNAVAILABLE` once its `maxWait` is spent) or `fail` (fail at once). Never
   * unlimited.
   */
  onUnavailable?: 'wait' | 'fail';
  /** With `wait` and no `maxWait`: how long a request waits for Redis before failing (ms, default 30 000). */
  unavailableMaxWait?: number;
  /** How long a waiter's claim outlives the instant it said it would ask again (ms, default 2 000). */
  waiterTtl?: number;
  /** Where presets read overrides (`BM_RATE_LIMIT_…`): `process.env` by default (in Workers, pass the worker's `env`). */
  env?: Record<string, string | undefined>;
  /** Counts round trips to Redis (for benchmarks). */
  onRoundTrip?: () => void;
  /**
   * The `fetch` that sends the status request (Keepa's `/token`) when a budget's balance is unknown
   * (default `globalThis.fetch`): `acquire` learns the balance by itself before the first costly call.
   */
  fetch?: typeof fetch;
  /**
   * Listen for wake-ups (default true): while requests wait, a second connection (the client's
   * `duplicate()`) subscribes to `tc:{account}:wake`, where the store announces freed room, so a
   * waiter asks again within milliseconds of room freeing in any process instead of at its next
   * poll. Closed a second after the last waiter, or by `close()`.
   */
  wake?: boolean;
  /** A listener for every event of this process's requests (the `rate_limit_logs` fields); see `on()`. */
  onEvent?: (event: TrafficEvent) => void;
}

/** How a request asks for admission through the shared store. */
export interface SharedRequest {
  method?: string;
  url?: string | URL;
  route?: string;
  priority?: Priority;
  cost?: number;
  limits?: string[];
  /** Follow-ups to reserve in the same admission. */
  reserve?: SharedReservation[];
  /** A reservation this request spends. */
  spend?: SharedReservation;
  /** Whom the request is for, when the config's `tenants` divide the account: within a priority, tenants are served by weight across processes. */
  tenant?: string;
  /** The longest the request may wait (ms), Redis outages included. */
  maxWait?: number;
  /** Aborting it stops the wait: the promise rejects with `CANCELLED`. */
  signal?: AbortSignal;
}

/** Capacity reserved in Redis for a follow-up; every process counts it. */
export class SharedReservation {
  id: number | undefined = undefined;
  readonly #tc: SharedTrafficControl;
  constructor(
    tc: SharedTrafficControl,
    readonly followUp: FollowUp,
  ) {
    this.#tc = tc;
  }
  /** Gives the capacity back now. False when already spent, released or expired. */
  release(): Promise<boolean> {
    return this.id === undefined ? Promise.resolve(false) : this.#tc.releaseReservation(this.id);
  }
}

/** What to do after `SharedPermit.complete()`, as `Completion` of the in-memory controller. */
export type SharedCompletion =
  | { kind: 'done' }
  /** The server rate limited it and its retries are spent (or the pause ends past its `maxWait`): report the failure. */
  | { kind: 'give_up' }
  /** The server rate limited it; the store paused its limits and this new permit came when the retry may go. */
  | { kind: 'retry'; permit: SharedPermit };

/** The right to send one request now; `complete()` it once (concurrency leases, 429 pauses, budget reports). */
export class SharedPermit {
  readonly #tc: SharedTrafficControl;
  readonly #signal: AbortSignal | undefined;
  constructor(
    tc: SharedTrafficControl,
    readonly request: number,
    readonly reservations: readonly SharedReservation[],
    signal?: AbortSignal,
  ) {
    this.#tc = tc;
    this.#signal = signal;
  }
  /**
   * Reports the outcome: only a lease, a 429 or a budget report costs a round trip. A rate-limited
   * answer (a 429, a block) is retried as in memory: the store pauses the limits, the request
   * waits again at its priority, and `{ kind: 'retry', permit }` comes when it may go (the
   * request's `signal` still cancels that wait); after `feedback.max_retries`, `give_up`.
   */
  complete(outcome?: { status?: number; headers?: Record<string, string> | Array<[string, string]> | Headers; body?: string }): Promise<SharedCompletion> {
    return this.#tc.completePermit(this.request, outcome, this.#signal);
  }
}

/**
 * Tells this process's (or isolate's) waiters from every other's in Redis. Made at first use, not at
 * load: Workers freeze the clock at 0 and refuse random values in a module's global scope.
 */
let processTag: string | undefined;
let controllers = 0;
function theProcessTag(): string {
  processTag ??= globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  return processTag;
}

/** Runs a script call with EVALSHA, and EVAL (which also loads it) when Redis answers NOSCRIPT. */
export async function runScript(client: RedisClient, sha: string, script: string, keys: string[], args: string[], onRoundTrip?: () => void): Promise<unknown> {
  const c = client as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const ioredis = typeof c.evalsha === 'function';
  onRoundTrip?.();
  try {
    return ioredis ? await c.evalsha.call(client, sha, keys.length, ...keys, ...args) : await c.evalSha.call(client, sha, { keys, arguments: args });
  } catch (e) {
    if (!/NOSCRIPT|No matching script/.test(String((e as Error)?.message ?? e))) throw e;
    onRoundTrip?.();
    return ioredis ? await c.eval.call(client, script, keys.length, ...keys, ...args) : await c.eval.call(client, script, { keys, arguments: args });
  }
}

interface Pending {
  resolve: (value: never) => void;
  reject: (e: unknown) => void;
  reserve?: readonly SharedReservation[];
  signal?: AbortSignal;
  /** A completion: its go is a retry's permit. */
  completion?: boolean;
  /** Removes the abort listener once settled (a long-lived signal must not collect one per request). */
  unlisten?: () => void;
}

/**
 * A traffic controller whose limit state lives in Redis, shared by every process calling with one
 * account. One script call per admission on the fast path; a request that must wait asks again at
 * the instant the script names, and its claim keeps lower priorities (of every process) off the
 * room it needs. The core's driver decides every step (classes, waits, wake-ups, the unavailable
 * policy, budget learning); this class runs its Redis and HTTP calls and its one timer.
 *
 * ```ts
 * const tc = new SharedTrafficControl('backmarket', { redis: new Redis(), account: 'seller-42' })
 * const permit = await tc.acquire({ method: 'POST', url: '/ws/listings/42', priority: 'high' })
 * try { res = await fetch(...) } finally { await permit.complete({ status: res.status, headers: res.headers }) }
 * ```
 */
export class SharedTrafficControl {
  readonly #native: SharedNative;
  readonly #h: unknown;
  readonly #redis: RedisClient;
  readonly #script: string;
  readonly #sha: string;
  readonly #options: SharedOptions;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<(event: TrafficEvent) => void>();
  #tagged = false;
  /** This controller's number in its process: waiter ids are unique per controller, not per process. */
  readonly #serial = ++controllers;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | null = null;
  #waiting = 0;
  #steps = 0;
  /** The wake-up subscription (a duplicate of the client), while requests wait. */
  #sub: { quit?: () => unknown; disconnect?: () => unknown } | undefined;
  #subscribing: Promise<void> | undefined;
  #wakeups = 0;

  constructor(config: Config | PresetName | string, options: SharedOptions) {
    const native = theHost().native as unknown as SharedNative;
    if (typeof native.driverCreate !== 'function') {
      throw new Error("traffic-control: this build has no shared store (the wasm package's browser build leaves it out: a browser cannot reach Redis)");
    }
    this.#native = native;
    this.#redis = options.redis;
    this.#options = options;
    [this.#script, this.#sha] = native.sharedScript();
    const env = Object.fromEntries(Object.entries(options.env ?? theHost().env()).filter(([, v]) => v !== undefined)) as Record<string, string>;
    const canWake = options.wake !== false && typeof (options.redis as { duplicate?: unknown }).duplicate === 'function';
    const driverOptions = JSON.stringify({
      account: options.account,
      processTag: '',
      waiterTtl: options.waiterTtl,
      onUnavailable: options.onUnavailable,
      unavailableMaxWait: options.unavailableMaxWait,
      wake: canWake,
      learnBudgets: typeof (options.fetch ?? globalThis.fetch) === 'function',
    });
    try {
      this.#h =
        typeof config === 'string' && !config.trimStart().startsWith('{')
          ? native.driverCreateFromPreset(config, env, driverOptions)
          : native.driverCreate(typeof config === 'string' ? config : JSON.stringify(config), driverOptions);
    } catch (e) {
      throw coded(e);
    }
    if (options.onEvent) this.on(options.onEvent);
  }

  /** The clock of this process's events (ms): the host's, as `TrafficControl.now()`. */
  now(): number {
    return theHost().now();
  }

  /**
   * Listens to every event of this process's requests from now on (queued, go, completed,
   * rate_limited, rejected, expired, cancelled), as `TrafficControl.on` does: a `LogSink` fed by
   * every process fills one `rate_limit_logs` table. A request's events carry the id the store drew
   * for it, unique across the processes of the account (0 when the store was never reached).
   * Returns the function that stops listening.
   */
  on(listener: (event: TrafficEvent) => void): () => boolean {
    if (this.#listeners.size === 0) this.#step({ input: 'events', on: true });
    this.#listeners.add(listener);
    return () => {
      const removed = this.#listeners.delete(listener);
      if (removed && this.#listeners.size === 0) this.#step({ input: 'events', on: false });
      return removed;
    };
  }

  /** A reservation to name in a request's `reserve` and a follow-up's `spend`. */
  reservation(followUp: SharedReservation['followUp']): SharedReservation {
    return new SharedReservation(this, followUp);
  }

  /**
   * Waits until the request may go; rejects with a coded error when it never can or its `maxWait` is
   * spent. A budget whose balance nobody reported yet is learnt first with the free status request
   * (Keepa's `/token`, made from the request's URL), once per URL at a time.
   */
  acquire(request: SharedRequest): Promise<SharedPermit> {
    if (request.signal?.aborted) {
      return Promise.reject(new TrafficControlError('CANCELLED', 'the request was cancelled before it was asked', { cause: request.signal.reason }));
    }
    if (!this.#tagged) {
      // Two controllers of one process on one account must not share waiter ids (one would take or
      // withdraw the other's claims): the process's tag and the controller's number.
      this.#step({ input: 'processTag', tag: `${theProcessTag()}.${this.#serial}` });
      this.#tagged = true;
    }
    return new Promise<SharedPermit>((resolve, reject) => {
      try {
        const input = { input: 'acquire', request: coreRequest(request, undefined), maxWait: request.maxWait };
        this.#step(input, (handle) => this.#await(handle, { resolve: resolve as (v: never) => void, reject, reserve: request.reserve ?? [], signal: request.signal }));
      } catch (e) {
        reject(coded(e));
      }
    });
  }

  /**
   * Acquires, runs `task`, then completes (with the status, headers and, when the core's rule says
   * it carries limit fields, the body, when it returns a `Response`), and runs `task` again on the
   * retry's permit when that answer was rate limited. The arguments come in the in-memory
   * controller's order, `(request, task)`; `(task, request)` is still accepted.
   */
  async schedule<T>(request: SharedRequest | ((permit: SharedPermit) => T | PromiseLike<T>), task?: ((permit: SharedPermit) => T | PromiseLike<T>) | SharedRequest): Promise<T> {
    if (typeof request === 'function') [request, task] = [(task ?? {}) as SharedRequest, request];
    const run = task as (permit: SharedPermit) => T | PromiseLike<T>;
    let permit = await this.acquire(request);
    for (;;) {
      let result: T;
      try {
        result = await run(permit);
      } catch (e) {
        await permit.complete({}).catch(() => undefined);
        throw e;
      }
      const response = typeof Response !== 'undefined' && result instanceof Response ? result : undefined;
      const outcome = response ? await outcomeOf(response, (status, type, length) => theHost().native.wantsBody(status, type, length)) : { status: 200 };
      const completion = await permit.complete(outcome).catch(() => ({ kind: 'done' }) as const);
      if (completion.kind !== 'retry') return result;
      await response?.body?.cancel().catch(() => undefined);
      permit = completion.permit;
    }
  }

  /**
   * Performs `fetch(input, init)` (with the `fetch` option's function, else the global one) once
   * the request's limits admit it, reports the response (its body when the core's rule says it
   * carries limit fields), and sends it again on the retry's permit when the server rate limited
   * it. Resolves with the `Response`, like `fetch` (a 429 whose retries are spent is returned as is).
   */
  fetch(input: string | URL | Request, init?: RequestInit, options: SharedRequest = {}): Promise<Response> {
    const isRequest = typeof Request !== 'undefined' && input instanceof Request;
    const method = (options.method ?? init?.method ?? (isRequest ? input.method : 'GET')).toUpperCase();
    const url = options.route !== undefined ? undefined : (options.url ?? (typeof input === 'string' ? input : input instanceof URL ? input.href : (input as Request).url));
    const send = this.#options.fetch ?? globalThis.fetch;
    const request = { ...options, method, url, signal: options.signal ?? init?.signal ?? undefined };
    return this.schedule(request, () => send(isRequest ? input.clone() : input, init));
  }

  /** @internal */
  completePermit(request: number, outcome?: Parameters<SharedPermit['complete']>[0], signal?: AbortSignal): Promise<SharedCompletion> {
    return new Promise<SharedCompletion>((resolve, reject) => {
      try {
        const input = { input: 'complete', request, status: outcome?.status, headers: headerList(outcome?.headers), body: outcome?.body, unixTime: Date.now() };
        this.#step(input, (handle) => this.#await(handle, { resolve: resolve as (v: never) => void, reject, signal, completion: true }));
      } catch (e) {
        reject(coded(e));
      }
    });
  }

  /** Waits for the outcome of an acquire (or of a completion that may be retried): a cancel ends it. */
  #await(handle: number, pending: Pending): void {
    this.#pending.set(handle, pending);
    const signal = pending.signal;
    if (!signal) return;
    const onAbort = () => this.#step({ input: 'cancel', handle });
    signal.addEventListener('abort', onAbort, { once: true });
    pending.unlisten = () => signal.removeEventListener('abort', onAbort);
  }

  /** @internal */
  releaseReservation(id: number): Promise<boolean> {
    return this.#operation({ input: 'release', reservation: id });
  }

  /** Sets a budget to the server's balance (Keepa's `tokensLeft`, `refillIn` in ms). */
  syncBudget(limit: string, tokensLeft: number, refillInMs?: number): Promise<void> {
    return this.#operation({ input: 'syncBudget', limit, tokensLeft, refillIn: refillInMs });
  }

  /** Every limit's shared state (times in Redis server milliseconds). */
  snapshot(): Promise<SharedSnapshot> {
    return this.#operation({ input: 'snapshot' });
  }

  /**
   * The metrics: this process's counters (requests by route, priority and result, refusals by code,
   * time waited, the pauses its answers caused) and queue (`snapshot.waiting`), with the account's
   * limits as Redis holds them (every process reports the same gauges: aggregate them with `max`,
   * the counters with `sum`). One round trip. `registerMetrics` hands them to prom-client.
   */
  async metrics(): Promise<Metrics> {
    return (await this.#metricsRead()).metrics;
  }

  /** The metrics in Prometheus's text exposition format (version 0.0.4). One round trip. */
  async metricsText(): Promise<string> {
    return (await this.#metricsRead()).text;
  }

  async #metricsRead(): Promise<{ metrics: Metrics; text: string }> {
    try {
      return await this.#operation({ input: 'metrics' });
    } catch (e) {
      if ((e as TrafficControlError)?.code === 'INVALID_ARGUMENT' && /unknown input/.test(String((e as Error).message))) {
        throw new TrafficControlError('CONFIG', 'metrics are not in this build (the wasm browser build leaves them out): use snapshot()');
      }
      throw e;
    }
  }

  /**
   * Runs `config` (a config object, JSON text or a preset name, with overrides from `options.env`
   * or the environment) in memory beside this process's traffic as a shadow: it sees every
   * acquire, go, refusal, cancel, completion (with its response), release and budget sync of this
   * controller and decides on them, and nothing it decides is acted on; `shadowReport()` compares
   * the two. It sees this process only: on an account shared by several processes its limits
   * stand for this process's share (or try it in the process that carries the traffic). `null`
   * stops it; an invalid config throws `CONFIG` naming the field and leaves the running shadow.
   */
  setShadow(config: Config | PresetName | string | null, options: { env?: Record<string, string | undefined> } = {}): void {
    const n = this.#native;
    if (!n.driverSetShadow || !n.driverSetShadowPreset) throw new TrafficControlError('CONFIG', 'shadow mode is not in this build (the wasm browser build leaves it out)');
    try {
      if (typeof config === 'string' && !config.trimStart().startsWith('{')) {
        const env: Record<string, string> = {};
        for (const [k, v] of Object.entries(options.env ?? theHost().env())) if (typeof v === 'string') env[k] = v;
        n.driverSetShadowPreset(this.#h, theHost().now(), config, env);
      } else {
        n.driverSetShadow(this.#h, theHost().now(), config === null ? null : typeof config === 'string' ? config : JSON.stringify(config));
      }
    } catch (e) {
      throw coded(e);
    }
  }

  /** What the shadow config would have decided beside what the store decided, for this process's requests; `null` without a shadow. */
  shadowReport(): ShadowReport | null {
    const json = this.#native.driverShadowReportJson?.(this.#h, theHost().now());
    return json == null ? null : shadowReportOf(json);
  }

  /** Requests of this process waiting. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Wake-up messages received (the driver counts them; for tests and benchmarks). */
  get wakeups(): number {
    return this.#wakeups;
  }

  /** The channel the store publishes freed room on. */
  get wakeChannel(): string {
    return `tc:{${this.#options.account}}:wake`;
  }

  /** Closes the wake-up subscription now (waiting requests fall back to polling until they end). */
  async close(): Promise<void> {
    this.#step({ input: 'close' });
    await this.#subscribing;
    await this.#unsubscribe();
  }

  #operation<T>(input: object): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      try {
        this.#step(input, (handle) => this.#pending.set(handle, { resolve: resolve as (v: never) => void, reject }));
      } catch (e) {
        reject(coded(e));
      }
    });
  }

  /** Hands one input to the driver and carries out what it asks. */
  #step(input: object, started?: (handle: number) => void): void {
    const answer = JSON.parse(this.#native.driverStep(this.#h, theHost().now(), JSON.stringify(input))) as {
      result: number | null;
      outputs: DriverOutput[];
      timeout: number | null;
      waiting: number;
      wakeups: number;
    };
    if (answer.result !== null) started?.(answer.result);
    this.#waiting = answer.waiting;
    this.#wakeups = answer.wakeups;
    const step = ++this.#steps;
    for (const o of answer.outputs) this.#act(o);
    // A step taken while acting knows the time better.
    if (step === this.#steps) this.#arm(answer.timeout);
  }

  #act(o: DriverOutput): void {
    switch (o.output) {
      case 'run':
        runScript(this.#redis, this.#sha, this.#script, o.keys, o.args, this.#options.onRoundTrip).then(
          (reply) => this.#step({ input: 'reply', call: o.call, reply }),
          (e: unknown) => this.#step({ input: 'storeError', call: o.call, reason: String((e as Error)?.message ?? e) }),
        );
        return;
      case 'go': {
        const p = this.#settle(o.handle);
        p?.reserve?.forEach((r, i) => (r.id = o.reservations[i]));
        const permit = new SharedPermit(this, o.request, p?.reserve ?? [], p?.signal);
        p?.resolve((p.completion ? { kind: 'retry', permit } : permit) as never);
        return;
      }
      case 'fail': {
        const p = this.#settle(o.handle);
        const cause = o.code === 'CANCELLED' ? p?.signal?.reason : undefined;
        p?.reject(new TrafficControlError(o.code as ErrorCode, o.message, cause === undefined ? undefined : { cause }));
        return;
      }
      case 'done': {
        const p = this.#settle(o.handle);
        p?.resolve((p.completion ? { kind: 'done' } : o.live) as never);
        return;
      }
      case 'giveUp':
        this.#settle(o.handle)?.resolve({ kind: 'give_up' } as never);
        return;
      case 'snapshot':
        this.#settle(o.handle)?.resolve(o.snapshot as never);
        return;
      case 'metrics':
        this.#settle(o.handle)?.resolve({ metrics: metricsOf(o.metrics), text: o.text } as never);
        return;
      case 'status':
        void this.#status(o.handle, o.url);
        return;
      case 'subscribe':
        this.#subscribing = this.#subscribe(o.channel).finally(() => (this.#subscribing = undefined));
        return;
      case 'unsubscribe':
        void this.#unsubscribe();
        return;
      case 'event':
        for (const listener of this.#listeners) {
          try {
            listener(o.event);
          } catch (err) {
            queueMicrotask(() => {
              throw err;
            });
          }
        }
    }
  }

  #settle(handle: number): Pending | undefined {
    const p = this.#pending.get(handle);
    this.#pending.delete(handle);
    p?.unlisten?.();
    return p;
  }

  /** The driver's one timer: it sleeps until the instant the driver names. */
  #arm(at: number | null): void {
    if (at === this.#timerAt) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === null) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = null;
      this.#step({ input: 'timeout' });
    }, Math.max(0, Math.ceil(at - theHost().now())));
  }

  /** Sends the status request (Keepa's `/token`) the driver asked for and reports its answer. */
  async #status(handle: number, url: string): Promise<void> {
    let input: Record<string, unknown> = { input: 'statusDone', handle };
    try {
      const res = await (this.#options.fetch ?? globalThis.fetch)(url);
      input = { ...input, status: res.status, headers: headerList(res.headers), body: await res.text() };
    } catch {
      // No answer: the requests waiting for the balance fail with BUDGET_UNKNOWN.
    }
    this.#step(input);
  }

  /** Subscribes to wake-ups on a duplicate of the client; tells the driver whether it worked. */
  async #subscribe(channel: string): Promise<void> {
    const client = this.#redis as Record<string, (...a: unknown[]) => unknown>;
    const ioredis = typeof client.evalsha === 'function';
    const onMessage = () => this.#step({ input: 'woken' });
    let sub: Record<string, (...a: unknown[]) => unknown> | undefined;
    try {
      sub = client.duplicate.call(client) as Record<string, (...a: unknown[]) => unknown>;
      if (ioredis) {
        sub.on.call(sub, 'error', () => undefined);
        sub.on.call(sub, 'message', onMessage);
        await sub.subscribe.call(sub, channel);
      } else {
        sub.on?.call(sub, 'error', () => undefined);
        await sub.connect.call(sub);
        await sub.subscribe.call(sub, channel, onMessage);
      }
    } catch {
      await Promise.resolve(sub?.disconnect?.call(sub)).catch(() => undefined);
      this.#step({ input: 'subscribed', ok: false });
      return;
    }
    this.#sub = sub;
    this.#step({ input: 'subscribed', ok: true });
  }

  async #unsubscribe(): Promise<void> {
    await this.#subscribing;
    const sub = this.#sub;
    this.#sub = undefined;
    if (!sub) return;
    try {
      await (sub.quit ?? sub.disconnect)?.call(sub);
    } catch {
      // Closing a broken connection: nothing left to do.
    }
  }
}

/** A response's outcome: its body read only when the core's rule says it carries limit fields. */
/** For tests: a distinct waiter-id prefix per controller process. */
export function setProcessTag(tag: string): void {
  processTag = tag;
}

function coded(e: unknown): unknown {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== 'GenericFailure') return new TrafficControlError(code as ErrorCode, (e as Error).message);
  return e;
}
