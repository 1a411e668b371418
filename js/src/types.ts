/**
 * A duration in a config: `"10s"`, `"250ms"`, `"1m"`, or a number of milliseconds. `tc.config`
 * gives each duration back twice: as text (`per: "10s"`) and as milliseconds a program can read
 * (`per_ms: 10000`); a config may carry either or both (both must agree), so it reads back as is.
 */
export type Duration = string | number;

/** One limit of a config. `window` (the default for "N per W") is exact: at most `max` in any interval of length `per`. */
export type LimitConfig =
  | {
      kind: 'window';
      max: number;
      per: Duration;
      /** `per` in milliseconds (as `tc.config` gives it). */
      per_ms?: number;
      /** Until when a request counts: `completion` (the default: from its go until its completion plus `per`, whatever the latency) or `go` (`per` from its go). */
      hold?: 'completion' | 'go';
    }
  | { kind: 'token_bucket'; capacity: number; refill: number; per: Duration; per_ms?: number }
  | { kind: 'concurrency'; max: number }
  | { kind: 'budget'; max: number; refill: number; per: Duration; per_ms?: number; floor?: number; initial?: number; /** Warn (`budget_low`) when an admission takes the balance below this. */ warn_below?: number }
  | BreakerLimit;

/**
 * A circuit breaker (in-memory controller only): it opens for failures over `per`, an
 * authentication failure (401, a WAF 403, a blocked token) or a 429/block (until the server's
 * time exactly), stops every request that takes it while open, lets `probes` through when
 * half-open, and closes after `close_after` successes. Defaults: 5 failures, 30 s, 2 successes.
 */
export interface BreakerLimit {
  kind: 'breaker';
  /** Failures (a 5xx, or no response) within `per` that open it (default 5). */
  failures?: number;
  /** The share of the calls within `per` that must have failed too, in percent (default 0: any). */
  failure_percent?: number;
  /** The fewest calls within `per` for the share to count (default: `failures`). */
  min_calls?: number;
  /** The failures' window (default `1m`). */
  per?: Duration;
  per_ms?: number;
  /** How long it opens when the server names no time, doubled per opening until it closes (default `30s`). */
  open_for?: Duration;
  open_for_ms?: number;
  /** The longest opening it computes itself (default `10m`). */
  max_open?: Duration;
  max_open_ms?: number;
  /** Requests let through at once while half-open (default 1). */
  probes?: number;
  /** Probe successes that close it (default 2). */
  close_after?: number;
}

/** A per-item extra cost switched on by a query parameter (Keepa's `offers`, `buybox`). */
export interface CostExtra {
  param: string;
  cost: number;
  /** Charge `cost` for every started `per` of the parameter's value. */
  per?: number;
}

/** How a route estimates a request's cost: fixed, or counted from a query parameter's items. */
export type RouteCost = number | { count: string; factor?: number; extras?: CostExtra[]; plus?: number; max?: number };

/** A route: which requests (method, path regex) take which limits, at what cost. */
export interface RouteConfig {
  name: string;
  method?: string;
  path: string;
  limits?: Array<string | { limit: string; cost: number }>;
  cost?: RouteCost;
  /** The free request that reports the budgets' balance (Keepa's `/token`), made from any request to the same API. */
  status?: { path: string; query?: string[] };
}

/** What the controller does with the server's answers. */
export interface FeedbackConfig {
  /** How long a 429 pauses when the server names no time (default 10 s); repeats double it. */
  block?: Duration;
  block_ms?: number;
  /** A limit's own block, by limit name. */
  blocks?: Record<string, Duration>;
  blocks_ms?: Record<string, number>;
  /** The longest pause backoff reaches (default 5 min). */
  max_block?: Duration;
  max_block_ms?: number;
  /** How long a WAF block or a blocked token stops the limits when the server names no end (default 1 min). */
  cooldown?: Duration;
  cooldown_ms?: number;
  /** Retries of a rate-limited request before giving up (default 3). */
  max_retries?: number;
  /** Up to this fraction of a backoff pause is added at random (default 0.1). */
  jitter?: number;
  /** Seed of the jitter's generator. */
  seed?: number;
}

/** The controller's config: the same JSON the core, the Python and the wasm packages read. */
export interface Config {
  limits: Record<string, LimitConfig>;
  /** Limits every request takes. */
  global?: string[];
  routes?: RouteConfig[];
  queue?: { max_waiting?: number };
  reservation_ttl?: Duration;
  reservation_ttl_ms?: number;
  lease_ttl?: Duration;
  lease_ttl_ms?: number;
  events?: { query?: 'drop' | 'redact' };
  feedback?: FeedbackConfig;
  /**
   * Tenants sharing the account, by name (`default`: the class of those not named): within a
   * priority, waiting requests are served by weight (1 to 1000, default 1), and a tenant may have a
   * share of every window and concurrency limit outside key pools (its use shows as a limit named
   * `<limit>#<tenant>`). In-memory only: the shared store refuses it for now.
   */
  tenants?: Record<string, TenantConfig>;
  /** Named sets of tenant settings (`premium`, `standard`, `basic`) that tenants take with `tier`. */
  tiers?: Record<string, TierConfig>;
  /**
   * Pools of API keys, by name (in-memory controller only): each key has its own copy of the
   * pool's `limits` (named `<limit>@<key>` in snapshots and events), and a request taking them goes
   * on the least-loaded key that can admit it now, or the key it names (`key`). A breaker among
   * the limits is one per key: an open key is skipped. Keys are ids, never secrets.
   */
  pools?: Record<string, { keys: string[]; limits: string[] }>;
}

/** A tier of tenants: the settings its tenants take unless they set them themselves. */
export interface TierConfig {
  /** Its weight against the other tenants waiting at the same priority (1 to 1000, default 1). */
  weight?: number;
  /**
   * The percentage of each limit's capacity kept for it while it has requests waiting (0 to 80;
   * all tenants' shares add up to 80 at most). Within it, it goes ahead of other tenants' waiters.
   */
  guaranteed?: number;
  /** The percentage of its guaranteed share lent to others while it has nothing waiting (default 100). */
  lendable?: number;
  /** The percentage of each limit's capacity it may use beyond its guaranteed share (no cap if absent). */
  borrow?: number;
}

/** A tenant's share of the account. */
export interface TenantConfig extends TierConfig {
  /** The tier (`tiers`) whose settings it takes. */
  tier?: string;
  /** A key of a pool dedicated to it. */
  key?: string;
}

/** The presets shipped with the package. */
export type PresetName = 'backmarket' | 'keepa' | 'baselinker';

/** Priorities: CRITICAL (emergency reverts; may use reserved capacity), HIGH, NORMAL, LOW. FIFO within a level. */
export const Priority = {
  CRITICAL: 'critical',
  HIGH: 'high',
  NORMAL: 'normal',
  LOW: 'low',
} as const;
/** One of the four priorities. */
export type Priority = (typeof Priority)[keyof typeof Priority];

/** One event: a row of the `rate_limit_logs` table plus what its kind carries. Endpoints never hold secrets. */
export interface TrafficEvent {
  /** The event's kind: `queued`, `go`, `completed`, `rate_limited`, `retried`, `rejected`, `expired`, `cancelled`, `lease_expired`, `reservation_expired`, `reservation_released`, `limit_lowered`, `budget_low`, `breaker_opened`, `breaker_half_open`, `breaker_closed` (Python's `Event.type`). */
  type: EventType;
  /** @deprecated The same as `type` (its former name; the HTTP status is `responseStatus`). */
  status: string;
  /** When, on the controller's clock (ms). */
  timestampMs: number;
  /** The request (for reservation events: the request that made the reservation). */
  requestId: number;
  /** `METHOD /path` without the query string's values, or the route name. */
  endpoint: string;
  /** The route matched. */
  route?: string;
  /** `critical`, `high`, `normal` or `low`. */
  priority: string;
  /** HTTP status of a completed or rate-limited request. */
  responseStatus?: number;
  /** Completed: request duration; go: time waited; lease expired: time held (ms). */
  durationMs?: number;
  /** Error code of a rejected or expired request. */
  error?: string;
  /** Its message. */
  message?: string;
  /** Go: reservation ids made for the follow-ups. */
  reservations?: number[];
  /** Go: the id of the pool key it went on (the config's `pools`). */
  key?: string;
  /** Rate limited: until when the limits are paused; breaker opened: when it half-opens (controller clock, ms). */
  until?: number;
  /** Retried: 1 for the first retry. */
  attempt?: number;
  /** Retried: earliest instant the retry may go. */
  retryAt?: number;
  /** Reservation expired or released: which. */
  reservation?: number;
  /** Limit lowered: the window whose max the server's quota lowered; budget low: the budget; breaker events: the breaker. */
  limit?: string;
  /** Limit lowered: its max from now on. */
  max?: number;
  /** Limit lowered: the max it had. */
  previous?: number;
  /** Budget low: the balance left after the request's estimated cost. */
  balance?: number;
  /** Budget low: the request's estimated cost. */
  cost?: number;
  /** Budget low: `cost_over_half` (it takes more than half the balance it found) or `below_warning` (it took the balance below `warn_below`). Breaker opened: `failures`, `auth`, `rate_limited` or `probe_failed`. */
  reason?: 'cost_over_half' | 'below_warning' | 'failures' | 'auth' | 'rate_limited' | 'probe_failed';
}

/** The kinds of events. */
export type EventType =
  | 'queued'
  | 'go'
  | 'completed'
  | 'rate_limited'
  | 'retried'
  | 'rejected'
  | 'expired'
  | 'cancelled'
  | 'lease_expired'
  | 'reservation_expired'
  | 'reservation_released'
  | 'limit_lowered'
  | 'budget_low'
  | 'breaker_opened'
  | 'breaker_half_open'
  | 'breaker_closed';

/** One limit's state. */
export interface LimitSnapshot {
  name: string;
  kind: 'window' | 'token_bucket' | 'concurrency' | 'budget' | 'breaker';
  capacity: number;
  used: number;
  reserved: number;
  available: number;
  /** Next instant room grows by time alone (controller clock, ms), or null. */
  nextFree: number | null;
  /** Budgets: tokens left (null while unknown). */
  balance: number | null;
  /** The pause in force after a 429 or a block, or null. */
  pause: LimitPause | null;
}

/** A limit's pause: until when (ms), why, and how much of it the server imposed. */
export interface LimitPause {
  /** Nothing but CRITICAL goes before this instant. */
  until: number;
  /** The part the server imposed: CRITICAL waits only until then. */
  serverUntil: number;
  /** `retry_after` (the server's time), `block`, `backoff` (repeats doubled it), `cooldown` (WAF or blocked token), `exhausted` (a success reported 0 remaining until its reset). */
  reason: 'retry_after' | 'block' | 'backoff' | 'cooldown' | 'exhausted';
  /** 429s counted for the backoff (the answers of one burst count once). */
  strikes: number;
}

/** The controller's state at one instant. */
export interface Snapshot {
  at: number;
  limits: LimitSnapshot[];
  waiting: { critical: number; high: number; normal: number; low: number };
  inFlight: number;
  reservations: number;
}

/** The priority names, as metrics label them. */
export type PriorityName = 'critical' | 'high' | 'normal' | 'low';

/**
 * A controller's metrics at one instant (`tc.metrics()`): what it counted since it started, and the
 * snapshot the gauges come from. `tc.metricsText()` gives the same in Prometheus's text format.
 */
export interface Metrics {
  /** Requests by route (`none` when none matched), priority and result (only the non-zero ones). */
  requests: Array<{ route: string; priority: PriorityName; result: 'went_at_once' | 'went_after_wait' | 'rejected' | 'cancelled' | 'expired' | 'rate_limited'; count: number }>;
  /** Refused requests by route, priority and error code. */
  rejected: Array<{ route: string; priority: PriorityName; code: string; count: number }>;
  /** Time waited before going, per priority: cumulative `[upper bound in seconds, count]` buckets (the last bound is `Infinity`). */
  wait: Array<{ priority: PriorityName; buckets: Array<[number, number]>; count: number; sumSeconds: number }>;
  /** Pauses after a 429 or a block, by limit and reason. */
  pauses: Array<{ limit: string; reason: LimitPause['reason']; count: number }>;
  /** The state the gauges come from. */
  snapshot: Snapshot;
  /** All of it as Prometheus families, as `metricsText()` writes them (what `registerMetrics` hands prom-client). */
  families: MetricFamily[];
}

/**
 * What a shadow config would have decided beside what the enforced one decided (`tc.shadowReport()`),
 * over the requests seen since the shadow started.
 */
export interface ShadowReport {
  /** When the shadow started, and the report's instant (the controller's clock, ms). */
  since: number;
  at: number;
  /** Requests the shadow still follows (waiting or in flight on either side). */
  tracked: number;
  /** What the enforced config did. */
  enforced: ShadowSide;
  /** What the shadow config would have done. */
  shadow: ShadowSide;
}

/** One config's decisions in a `ShadowReport`. */
export interface ShadowSide {
  requests: number;
  wentAtOnce: number;
  wentAfterWait: number;
  /** Refused, by error code (`QUEUE_FULL`, `DEADLINE_UNREACHABLE`, ...). */
  refused: Record<string, number>;
  /** Cancelled by their caller while waiting. */
  cancelled: number;
  /** Queued again after a 429 (the shadow's own retries). */
  retried: number;
  /** Waiting at the report's instant. */
  waiting: number;
  /** Wait before going over the requests that went (zero for those that went at once), in seconds. */
  waitSeconds: { p50: number; p95: number; p99: number; max: number; total: number };
}

/** One Prometheus metric family: full name (`traffic_control_…`), help, type and samples. */
export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  /** A histogram's samples are its `_bucket` (with `le`), `_sum` and `_count`. */
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

/** The answer of `tryAcquire`: go now (with a permit), wait until an instant, or never. */
export type Decision<P> =
  | { decision: 'go'; permit: P }
  | { decision: 'wait'; until: number | null }
  | { decision: 'reject'; error: Error };

/** What the native side (napi addon or wasm module) provides: one core call each. */
export interface NativeEvent extends TrafficEvent {}

/** A tryAcquire answer from the native side. */
export interface NativeDecision {
  decision: string;
  requestId?: number;
  reservations?: number[];
  until?: number;
  code?: string;
  message?: string;
}

/** The native side's functions; `H` is its opaque controller handle. */
export interface Native<H = unknown> {
  create(configJson: string): H;
  createFromPreset(name: string, env: Record<string, string>): H;
  configJson(h: H): string;
  submit(h: H, now: number, method?: string | null, url?: string | null, route?: string | null, priority?: number, cost?: number | null, deadline?: number | null): number;
  submitJson(h: H, now: number, requestJson: string): number;
  /** Many simple requests: 4 numbers each (level, cost or -1, deadline or NaN, strings triple index or -1); ids, 0 when refused. */
  submitBatch(h: H, now: number, spec: Float64Array, strings: Array<string | null> | null): Float64Array | ArrayLike<number>;
  /** The errors of the requests `submitBatch` refused, in order. */
  takeRefused(h: H): Array<{ code: string; message: string }>;
  /** Ends, in one call, requests whose task returned no HTTP response. */
  completeBatch(h: H, now: number, requests: Float64Array): void;
  tryAcquireJson(h: H, now: number, requestJson: string): NativeDecision;
  /** A simple request by its parts (as `submit`), decided at once without queueing. */
  tryAcquire(h: H, now: number, method?: string | null, url?: string | null, route?: string | null, priority?: number, cost?: number | null, deadline?: number | null): NativeDecision;
  drain(h: H, now: number): NativeEvent[];
  drainActionable(h: H, now: number): Float64Array;
  takeFailures(h: H): NativeEvent[];
  pollTimeout(h: H): number | null | undefined;
  complete(h: H, now: number, request: number, status?: number | null, headers?: string[] | null, body?: string | null, unixTimeMs?: number | null): number;
  readsBody(h: H, request: number, status: number, contentType?: string | null, contentLength?: number | null): boolean;
  keyOf(h: H, request: number): string | null | undefined;
  wantsBody(status: number, contentType?: string | null, contentLength?: number | null): boolean;
  cancel(h: H, now: number, request: number): boolean;
  release(h: H, now: number, reservation: number): boolean;
  syncBudget(h: H, now: number, limit: string, tokensLeft: number, refillIn?: number | null): void;
  snapshotJson(h: H, now: number): string;
  /** The metrics as JSON (absent from the wasm browser build). */
  metricsJson?(h: H, now: number): string;
  /** The metrics in Prometheus's text format (absent from the wasm browser build). */
  metricsText?(h: H, now: number): string;
  /** Shadow mode (absent from the wasm browser build): a config beside the enforced one, or none. */
  setShadow?(h: H, now: number, configJson: string | null): void;
  setShadowPreset?(h: H, now: number, name: string, env: Record<string, string>): void;
  shadowReportJson?(h: H, now: number): string | null | undefined;
  /** The what-if simulator (absent from the wasm package): JSON in, JSON out. */
  simulateJson?(input: string): string;
  waiting(h: H): number;
  /** The free status request that reports the budgets' balance (Keepa's `/token`), made from a request's URL. */
  statusUrl(h: H, url: string): string | null | undefined;
  errorKind(code: string): string | null | undefined;
  /** The core's event log on or off (off: only the events that deliver a decision). */
  setEventLog(h: H, on: boolean): void;
}

/** What the host runtime provides to the scheduler. */
export interface Host {
  native: Native;
  /** A monotonic clock in milliseconds. */
  now(): number;
  /** The environment presets read overrides from. */
  env(): Record<string, string | undefined>;
  /**
   * `shared` (the default): one timer for the controller. `per-request` (Cloudflare Workers): each
   * waiting request keeps a timer in its own request context, because the runtime cancels a
   * request waiting on nothing of its own and drops an ended request's timers.
   */
  timers?: 'shared' | 'per-request';
}
