// The shared store: limits of one account held in Redis for every process (Bun and Node instances,
// the Python service) that calls the API with it. The core builds each script call and reads its
// reply (sans-IO); this file runs the calls with the application's Redis client, waits, and keeps
// the process's own waiters in priority order.
import { TrafficControlError, type ErrorCode } from './errors.js';
import { theHost } from './host.js';
import { coreRequest, headerList, type FollowUp } from './traffic-control.js';
import type { Config, LimitPause, PresetName, Priority } from './types.js';

/**
 * A Redis client: ioredis (`evalsha(sha, n, ...keysAndArgs)`) or node-redis (`evalSha(sha, { keys, arguments })`).
 * In Cloudflare Workers, a client over `cloudflare:sockets` adapted to the first shape (see the wasm
 * package's `examples/workers/shared-store.mjs`).
 */
export type RedisClient =
  | { evalsha(sha: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown>; eval(script: string, numKeys: number, ...keysAndArgs: string[]): Promise<unknown> }
  | { evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>; eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown> };

interface NativeStoreCall {
  token?: number | null;
  keys: string[];
  args: string[];
}

interface NativeSharedDecision {
  decision: string;
  requestId?: number | null;
  reservations?: number[] | null;
  waitMs?: number | null;
  code?: string | null;
  message?: string | null;
}

/** What the native side (napi or wasm) provides for the shared store. */
interface SharedNative {
  sharedScript(): string[];
  sharedCreate(configJson: string, account: string, waiterTtlMs?: number | null): unknown;
  sharedCreateFromPreset(name: string, env: Record<string, string>, account: string, waiterTtlMs?: number | null): unknown;
  sharedAdmit(h: unknown, now: number, requestJson: string, waiter?: string | null, maxWaitMs?: number | null): NativeStoreCall;
  sharedForget(h: unknown, token: number): void;
  sharedDecide(h: unknown, now: number, token: number, replyJson: string): NativeSharedDecision;
  sharedWithdraw(h: unknown, now: number, waiter: string, requestJson: string): NativeStoreCall;
  sharedComplete(h: unknown, now: number, request: number, status?: number | null, headers?: string[] | null, body?: string | null): NativeStoreCall | null | undefined;
  sharedRelease(h: unknown, now: number, reservation: number): NativeStoreCall;
  sharedSyncBudget(h: unknown, now: number, limit: string, tokensLeft: number, refillInMs?: number | null): NativeStoreCall;
  sharedObserve(h: unknown, now: number, replyJson: string): boolean;
  sharedSnapshotCall(h: unknown, now: number): NativeStoreCall;
  sharedSnapshot(h: unknown, now: number, replyJson: string): string;
  sharedStatusUrl(h: unknown, url: string): string | null | undefined;
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

/** The right to send one request now; `complete()` it once (concurrency leases, 429 pauses, budget reports). */
export class SharedPermit {
  readonly #tc: SharedTrafficControl;
  constructor(
    tc: SharedTrafficControl,
    readonly request: number,
    readonly reservations: readonly SharedReservation[],
  ) {
    this.#tc = tc;
  }
  /** Reports the outcome: only a lease, a 429 or a budget report costs a round trip. */
  complete(outcome?: { status?: number; headers?: Record<string, string> | Array<[string, string]> | Headers; body?: string }): Promise<void> {
    return this.#tc.completePermit(this.request, outcome);
  }
}

interface Waiter {
  id: string;
  json: string;
  maxWaitAt: number | undefined;
  storeDownAt: number | undefined;
  signal: AbortSignal | undefined;
  reserve: readonly SharedReservation[];
  resolve: (p: SharedPermit) => void;
  reject: (e: unknown) => void;
}

/**
 * Tells this process's (or isolate's) waiters from every other's in Redis. Made at first use, not at
 * load: Workers freeze the clock at 0 and refuse random values in a module's global scope.
 */
let processTag: string | undefined;
function theProcessTag(): string {
  processTag ??= globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  return processTag;
}
let waiterSeq = 0;

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

/**
 * A traffic controller whose limit state lives in Redis, shared by every process calling with one
 * account. One script call per admission on the fast path; a request that must wait asks again at
 * the instant the script names, and its claim keeps lower priorities (of every process) off the
 * room it needs.
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
  /** The process's own waiters, by class (priority and limits): only each class's head asks Redis. */
  readonly #classes = new Map<string, Waiter[]>();
  /** Resolves sleeping heads early when this process frees something, or a wake-up arrives. */
  #kick: (() => void) | undefined;
  #kicked: Promise<void>;
  /** The wake-up subscription (a duplicate of the client), while requests wait. */
  #sub: { quit?: () => unknown; disconnect?: () => unknown } | undefined;
  #subscribing: Promise<void> | undefined;
  #linger: ReturnType<typeof setTimeout> | undefined;
  /** Wake-up messages received (for tests and benchmarks). */
  wakeups = 0;
  /** Counts kicks: a waiter that saw one while its question was out asks again instead of sleeping. */
  #kicks = 0;

  constructor(config: Config | PresetName | string, options: SharedOptions) {
    const native = theHost().native as unknown as SharedNative;
    if (typeof native.sharedCreate !== 'function') {
      throw new Error("traffic-control: this build has no shared store (the wasm package's browser build leaves it out: a browser cannot reach Redis)");
    }
    this.#native = native;
    this.#redis = options.redis;
    this.#options = options;
    [this.#script, this.#sha] = native.sharedScript();
    const env = Object.fromEntries(Object.entries(options.env ?? theHost().env()).filter(([, v]) => v !== undefined)) as Record<string, string>;
    try {
      this.#h =
        typeof config === 'string' && !config.trimStart().startsWith('{')
          ? native.sharedCreateFromPreset(config, env, options.account, options.waiterTtl)
          : native.sharedCreate(typeof config === 'string' ? config : JSON.stringify(config), options.account, options.waiterTtl);
    } catch (e) {
      throw coded(e);
    }
    this.#kicked = new Promise((r) => (this.#kick = r));
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
    const url = request.url === undefined ? undefined : String(request.url);
    return this.#acquireOnce(request).catch(async (e: unknown) => {
      if (!(e instanceof TrafficControlError && e.code === 'BUDGET_UNKNOWN') || url === undefined || !(await this.#learnBudget(url))) throw e;
      return this.#acquireOnce(request);
    });
  }

  #learning = new Map<string, Promise<boolean>>();

  #learnBudget(url: string): Promise<boolean> {
    const status = this.#native.sharedStatusUrl(this.#h, url);
    const doFetch = this.#options.fetch ?? globalThis.fetch;
    if (!status || typeof doFetch !== 'function') return Promise.resolve(false);
    let learning = this.#learning.get(status);
    if (!learning) {
      learning = (async () => {
        const permit = await this.#acquireOnce({ method: 'GET', url: status, priority: 'high' });
        let outcome: Parameters<SharedPermit['complete']>[0] = {};
        try {
          const res = await doFetch(status);
          outcome = { status: res.status, headers: res.headers, body: await res.text() };
          return res.ok;
        } finally {
          await permit.complete(outcome);
        }
      })()
        .catch(() => false)
        .finally(() => this.#learning.delete(status));
      this.#learning.set(status, learning);
    }
    return learning;
  }

  #acquireOnce(request: SharedRequest): Promise<SharedPermit> {
    const now = theHost().now();
    const json = JSON.stringify(coreRequest(request, undefined));
    const id = `${theProcessTag()}-${++waiterSeq}`;
    let call: NativeStoreCall;
    try {
      call = this.#native.sharedAdmit(this.#h, now, json, null, null);
      this.#native.sharedForget(this.#h, call.token ?? 0);
    } catch (e) {
      return Promise.reject(coded(e));
    }
    // A class: the same priority on the same keys (a spender of a reservation is its own class).
    const klass = `${request.priority ?? 'normal'}|${request.spend ? `spend ${id}` : ''}|${call.keys.join(' ')}`;
    return new Promise<SharedPermit>((resolve, reject) => {
      const maxWaitAt = request.maxWait === undefined ? undefined : now + request.maxWait;
      const w: Waiter = { id, json, maxWaitAt, storeDownAt: undefined, signal: request.signal, reserve: request.reserve ?? [], resolve, reject };
      let queue = this.#classes.get(klass);
      if (!queue) this.#classes.set(klass, (queue = []));
      queue.push(w);
      request.signal?.addEventListener('abort', () => this.#kickAll(), { once: true });
      if (queue.length === 1) void this.#drive(klass, queue);
    });
  }

  /** Acquires, runs `task`, then completes (with the status and headers when it returns a `Response`). */
  async schedule<T>(task: (permit: SharedPermit) => T | PromiseLike<T>, request: SharedRequest = {}): Promise<T> {
    const permit = await this.acquire(request);
    let outcome: Parameters<SharedPermit['complete']>[0] = {};
    try {
      const result = await task(permit);
      outcome = typeof Response !== 'undefined' && result instanceof Response ? { status: result.status, headers: result.headers } : { status: 200 };
      return result;
    } finally {
      await permit.complete(outcome).catch(() => undefined);
    }
  }

  /** @internal */
  async completePermit(request: number, outcome?: Parameters<SharedPermit['complete']>[0]): Promise<void> {
    const now = theHost().now();
    const call = this.#native.sharedComplete(this.#h, now, request, outcome?.status ?? null, headerList(outcome?.headers) ?? null, outcome?.body ?? null);
    if (call) this.#native.sharedObserve(this.#h, theHost().now(), JSON.stringify(await this.#runOrWait(call)));
    this.#kickAll();
  }

  /** @internal */
  async releaseReservation(id: number): Promise<boolean> {
    const call = this.#native.sharedRelease(this.#h, theHost().now(), id);
    const live = this.#native.sharedObserve(this.#h, theHost().now(), JSON.stringify(await this.#runOrWait(call)));
    this.#kickAll();
    return live;
  }

  /** Sets a budget to the server's balance (Keepa's `tokensLeft`, `refillIn` in ms). */
  async syncBudget(limit: string, tokensLeft: number, refillInMs?: number): Promise<void> {
    let call: NativeStoreCall;
    try {
      call = this.#native.sharedSyncBudget(this.#h, theHost().now(), limit, tokensLeft, refillInMs ?? null);
    } catch (e) {
      throw coded(e);
    }
    this.#native.sharedObserve(this.#h, theHost().now(), JSON.stringify(await this.#runOrWait(call)));
    this.#kickAll();
  }

  /** Every limit's shared state (times in Redis server milliseconds). */
  async snapshot(): Promise<{ at: number; limits: Array<{ name: string; kind: string; capacity: number; used: number; reserved: number; available: number; nextFree: number | null; balance: number | null; pause: LimitPause | null }>; waiters: number }> {
    const call = this.#native.sharedSnapshotCall(this.#h, theHost().now());
    return JSON.parse(this.#native.sharedSnapshot(this.#h, theHost().now(), JSON.stringify(await this.#run(call))));
  }

  /** Requests of this process waiting. */
  get waiting(): number {
    let n = 0;
    for (const q of this.#classes.values()) n += q.length;
    return n;
  }

  #run(call: NativeStoreCall): Promise<unknown> {
    return runScript(this.#redis, this.#sha, this.#script, call.keys, call.args, this.#options.onRoundTrip);
  }

  /**
   * Runs a call that reports (a completion, a release, a budget): while the store is unreachable
   * (a restart), retries under the unavailability policy, as admissions do, then fails with
   * STORE_UNAVAILABLE rather than the client's own error. The request was sent: what it held comes
   * back by its TTL even if the report never lands, but a 429's pause should reach every process.
   */
  async #runOrWait(call: NativeStoreCall): Promise<unknown> {
    const limit = theHost().now() + (this.#options.unavailableMaxWait ?? 30_000);
    for (let backoff = 50; ; backoff = Math.min(backoff * 2, 1_000)) {
      try {
        return await this.#run(call);
      } catch (e) {
        if (this.#options.onUnavailable === 'fail' || theHost().now() + backoff > limit) {
          throw storeUnavailable(e);
        }
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
  }

  #kickAll(): void {
    this.#kicks++;
    const k = this.#kick;
    this.#kicked = new Promise((r) => (this.#kick = r));
    k?.();
  }

  /** The channel the store publishes freed room on. */
  get wakeChannel(): string {
    return `tc:{${this.#options.account}}:wake`;
  }

  /** Subscribes to wake-ups while requests wait (once; failures leave the polling in charge). */
  #ensureWake(): void {
    if (this.#linger !== undefined) {
      clearTimeout(this.#linger);
      this.#linger = undefined;
    }
    if (this.#options.wake === false || this.#sub || this.#subscribing) return;
    const client = this.#redis as Record<string, (...a: unknown[]) => unknown>;
    if (typeof client.duplicate !== 'function') return;
    const ioredis = typeof client.evalsha === 'function';
    const onMessage = () => {
      this.wakeups++;
      this.#kickAll();
    };
    this.#subscribing = (async () => {
      const sub = client.duplicate.call(client) as Record<string, (...a: unknown[]) => unknown>;
      try {
        if (ioredis) {
          sub.on.call(sub, 'error', () => undefined);
          sub.on.call(sub, 'message', onMessage);
          await sub.subscribe.call(sub, this.wakeChannel);
        } else {
          sub.on?.call(sub, 'error', () => undefined);
          await sub.connect.call(sub);
          await sub.subscribe.call(sub, this.wakeChannel, onMessage);
        }
      } catch {
        await Promise.resolve(sub.disconnect?.call(sub)).catch(() => undefined);
        return;
      }
      this.#sub = sub;
      // Room may have freed between the last answer and the subscription: ask again.
      this.#kickAll();
      if (this.waiting === 0) this.#scheduleUnsubscribe();
    })().finally(() => (this.#subscribing = undefined));
  }

  #scheduleUnsubscribe(): void {
    if (this.#linger !== undefined || !this.#sub) return;
    this.#linger = setTimeout(() => {
      this.#linger = undefined;
      if (this.waiting === 0) void this.#unsubscribe();
    }, 1_000);
  }

  async #unsubscribe(): Promise<void> {
    const sub = this.#sub;
    this.#sub = undefined;
    if (!sub) return;
    try {
      await (sub.quit ?? sub.disconnect)?.call(sub);
    } catch {
      // Closing a broken connection: nothing left to do.
    }
  }

  /** Closes the wake-up subscription now (waiting requests fall back to polling until they end). */
  async close(): Promise<void> {
    if (this.#linger !== undefined) clearTimeout(this.#linger);
    this.#linger = undefined;
    await this.#subscribing;
    await this.#unsubscribe();
  }

  /** Serves one class: its head asks Redis until it goes, fails or is cancelled; then the next. */
  async #drive(klass: string, queue: Waiter[]): Promise<void> {
    let backoff = 50;
    while (queue.length > 0) {
      const w = queue[0];
      const now = theHost().now();
      const finish = (f: () => void, withdraw: boolean) => {
        queue.shift();
        if (withdraw) void this.#withdraw(w);
        f();
      };
      if (w.signal?.aborted) {
        finish(() => w.reject(new TrafficControlError('CANCELLED', 'the request was cancelled while it waited', { cause: w.signal?.reason })), true);
        continue;
      }
      const left = w.maxWaitAt === undefined ? undefined : w.maxWaitAt - now;
      if (left !== undefined && left < 0) {
        finish(() => w.reject(new TrafficControlError('DEADLINE_EXCEEDED', `the request could not go within its maximum wait`)), true);
        continue;
      }
      let call: NativeStoreCall;
      try {
        call = this.#native.sharedAdmit(this.#h, now, w.json, w.id, left ?? null);
      } catch (e) {
        finish(() => w.reject(coded(e)), false);
        continue;
      }
      let reply: unknown;
      // A wake-up that arrives while the question is out must not be lost.
      const kicks = this.#kicks;
      // The client's own retries must not outlast the request's maximum wait.
      const bound = left ?? (w.storeDownAt ?? now) + (this.#options.unavailableMaxWait ?? 30_000) - now;
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${Math.round(bound)} ms`)), Math.max(bound, 50));
        });
        reply = await Promise.race([this.#run(call), timeout]);
      } catch (e) {
        clearTimeout(timer);
        this.#native.sharedForget(this.#h, call.token ?? 0);
        // Fail closed: never admit without the store. Wait and retry, or fail clearly.
        w.storeDownAt ??= now;
        const limit = w.maxWaitAt ?? w.storeDownAt + (this.#options.unavailableMaxWait ?? 30_000);
        if (this.#options.onUnavailable === 'fail' || theHost().now() + backoff > limit) {
          const error = storeUnavailable(e);
          finish(() => w.reject(error), false);
          continue;
        }
        await this.#sleep(backoff, w);
        backoff = Math.min(backoff * 2, 1_000);
        continue;
      }
      clearTimeout(timer);
      backoff = 50;
      w.storeDownAt = undefined;
      let d: NativeSharedDecision;
      try {
        d = this.#native.sharedDecide(this.#h, theHost().now(), call.token ?? 0, JSON.stringify(reply));
      } catch (e) {
        finish(() => w.reject(coded(e)), true);
        continue;
      }
      if (d.decision === 'go') {
        const ids = d.reservations ?? [];
        w.reserve.forEach((r, i) => (r.id = ids[i]));
        finish(() => w.resolve(new SharedPermit(this, d.requestId ?? 0, w.reserve)), false);
        continue;
      }
      if (d.decision === 'reject') {
        finish(() => w.reject(new TrafficControlError((d.code ?? 'CONFIG') as ErrorCode, d.message ?? 'rejected')), true);
        continue;
      }
      // Wait: back at the instant the script named (its claim lives until then plus the waiter
      // TTL), or sooner when this process frees something or a wake-up comes; without an instant,
      // within half the TTL.
      const ttl = this.#options.waiterTtl ?? 2_000;
      let sleep = d.waitMs ?? ttl / 2;
      // Without wake-ups (a client that cannot subscribe, `wake: false`) room freed elsewhere is
      // seen only by asking: at least every half TTL.
      sleep = Math.min(sleep, this.#sub ? 10_000 : ttl / 2);
      if (left !== undefined) sleep = Math.min(sleep, left + 1);
      // Room freed in another process wakes it at once (see `wake`); room freed while the question
      // was out: ask again now.
      this.#ensureWake();
      if (this.#kicks !== kicks) continue;
      await this.#sleep(Math.max(0, sleep), w);
    }
    this.#classes.delete(klass);
    if (this.waiting === 0) this.#scheduleUnsubscribe();
  }

  #sleep(ms: number, w: Waiter): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, Math.ceil(ms));
      // Woken early by a local completion or release (or an abort): asking again is harmless.
      void this.#kicked.then(() => {
        clearTimeout(timer);
        resolve();
      });
      if (w.signal?.aborted) resolve();
    });
  }

  async #withdraw(w: Waiter): Promise<void> {
    try {
      const call = this.#native.sharedWithdraw(this.#h, theHost().now(), w.id, w.json);
      this.#native.sharedObserve(this.#h, theHost().now(), JSON.stringify(await this.#run(call)));
    } catch {
      // Its claims lapse with the waiter TTL anyway.
    }
  }
}

/** For tests: a distinct waiter-id prefix per controller process. */
export function setProcessTag(tag: string): void {
  processTag = tag;
}

/** The error of a call the store did not answer: the client's error as its cause. */
function storeUnavailable(e: unknown): TrafficControlError {
  return new TrafficControlError('STORE_UNAVAILABLE' as ErrorCode, `the shared store is unavailable: ${(e as Error)?.message ?? e}`, { cause: e });
}

function coded(e: unknown): unknown {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== 'GenericFailure') return new TrafficControlError(code as ErrorCode, (e as Error).message);
  return e;
}


