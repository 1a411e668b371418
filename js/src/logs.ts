// The seed's `rate_limit_logs` table, fed from a controller's events without ever slowing an
// admission: the listener maps an event to a row and pushes it to a bounded buffer; a timer writes
// the buffer in batches through any writer (`drizzleWriter` in `traffic-control/drizzle`, or one's
// own). No dependency: the table's Drizzle schema lives in the `drizzle` subpath.
import type { TrafficEvent } from './types.js';

/** The `status` column: what happened to the request. */
export type LogStatus = 'QUEUED' | 'EXECUTED' | '429_HIT' | 'ERROR';

/** The `status` column's values, in the order of the table's enum. */
export const LOG_STATUSES: readonly LogStatus[] = ['QUEUED', 'EXECUTED', '429_HIT', 'ERROR'];

/** The `priority` column: 0 critical, 1 high, 2 normal, 3 low. */
export const LOG_PRIORITIES: Readonly<Record<string, number>> = { critical: 0, high: 1, normal: 2, low: 3 };

/** The `endpoint` column's length (`varchar(255)`: characters, not bytes or UTF-16 units). */
export const ENDPOINT_MAX_CHARS = 255;

/**
 * One row of `rate_limit_logs`, with the Drizzle schema's property names (`id` is the table's
 * auto-increment).
 */
export interface RateLimitLogRow {
  /** 0 critical, 1 high, 2 normal, 3 low. */
  priority: number;
  status: LogStatus;
  /** `METHOD /path` without the query string's values (or the route name), at most 255 characters. */
  endpoint: string;
  /** The HTTP status, or null (queued, rejected, expired, no response). */
  responseStatus: number | null;
  /** The event's duration in whole milliseconds (request time; for a block, how long the limits pause), or null. */
  duration: number | null;
  /** When it happened, wall clock. */
  timestamp: Date;
}

/** The event fields a row is made of. */
export type LogEvent = Pick<TrafficEvent, 'type' | 'timestampMs' | 'endpoint' | 'priority' | 'responseStatus' | 'durationMs'>;

/**
 * The row an event makes, or null when the event makes none (see the table in `tests/log_rows.json`):
 * `queued` → QUEUED; `completed` → EXECUTED below 400, 429_HIT at 429, ERROR at any other status or
 * without a response; `rate_limited` at a status other than 429 (a block signalled at 200 or a WAF's
 * 403) → 429_HIT (a 429's `completed` row already says it); `rejected`, `expired` → ERROR; every
 * other kind → null. `wallOffsetMs` is the wall-clock instant (epoch ms) of the controller's 0.
 */
export function toLogRow(event: LogEvent, wallOffsetMs: number): RateLimitLogRow | null {
  const status = rowStatus(event.type, event.responseStatus);
  if (status === null) return null;
  // Only a response's row carries its status (a rejection or an expiry never had one).
  const answered = event.type === 'completed' || event.type === 'rate_limited';
  return {
    priority: LOG_PRIORITIES[event.priority] ?? 2,
    status,
    endpoint: truncate(event.endpoint, ENDPOINT_MAX_CHARS),
    responseStatus: answered ? (event.responseStatus ?? null) : null,
    duration: event.durationMs == null ? null : roundHalfUp(event.durationMs),
    timestamp: new Date(roundHalfUp(wallOffsetMs + event.timestampMs)),
  };
}

function rowStatus(type: string, responseStatus: number | undefined): LogStatus | null {
  switch (type) {
    case 'queued':
      return 'QUEUED';
    case 'completed':
      if (responseStatus === undefined || responseStatus === null) return 'ERROR';
      if (responseStatus === 429) return '429_HIT';
      return responseStatus < 400 ? 'EXECUTED' : 'ERROR';
    case 'rate_limited':
      return responseStatus === 429 ? null : '429_HIT';
    case 'rejected':
    case 'expired':
      return 'ERROR';
    default:
      return null;
  }
}

/** Half up, as Python's side does (`Math.round` differs on negative halves, Python's `round` on every half). */
function roundHalfUp(x: number): number {
  return Math.floor(x + 0.5);
}

/** At most `max` characters (code points: what MariaDB's varchar counts), never half a surrogate pair. */
function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  let out = '';
  let n = 0;
  for (const ch of s) {
    if (n++ === max) break;
    out += ch;
  }
  return out;
}

/** Writes one batch of rows: one multi-row INSERT. A rejection counts the batch as lost. */
export type LogWriter = (rows: RateLimitLogRow[]) => Promise<unknown> | unknown;

/** A controller whose events the sink reads: `TrafficControl` (Node, Bun, wasm). */
export interface LogSource {
  on(listener: (event: TrafficEvent) => void): () => unknown;
  /** The controller's clock (ms): the time base of `timestampMs`. */
  now(): number;
}

/** Options of a `LogSink`. */
export interface LogSinkOptions {
  /** Most rows per INSERT (default 500). A full batch is written at once, not at the next tick. */
  batchSize?: number;
  /** How often buffered rows are written (ms, default 1000). */
  flushIntervalMs?: number;
  /** Most rows held while the database is slow or down (default 10 000); past it the oldest are dropped and counted. */
  maxBuffered?: number;
  /** How long `close()` keeps writing what is left (ms, default 5000). */
  closeTimeoutMs?: number;
  /**
   * Called once per failure streak (the first failed write after a success or the start) with the
   * error; the next call comes only after a write succeeded and another failed. Default: one
   * `console.warn`.
   */
  onError?: (error: unknown, stats: LogSinkStats) => void;
}

/** What a sink did so far. */
export interface LogSinkStats {
  /** Rows the writer accepted. */
  written: number;
  /** Rows dropped unwritten because the buffer was full (the oldest go first). */
  dropped: number;
  /** Rows of batches whose write failed (not retried: a failed INSERT may still have committed). */
  lost: number;
  /** Batches whose write failed. */
  failedBatches: number;
  /** Rows waiting in the buffer. */
  pending: number;
  /** Rows of the write in progress. */
  inFlight: number;
}

/**
 * Stores a controller's events as `rate_limit_logs` rows, off the admission path: the listener only
 * maps the event and pushes the row to a bounded buffer (no I/O, no await, no promise); a timer
 * (and a full batch) hands batches to the writer, one write at a time. A slow or dead database
 * therefore never delays or loses an admission: rows wait in the buffer, and past `maxBuffered` the
 * oldest are dropped and counted. A failed batch is counted as lost, not retried (the INSERT may
 * have committed before the connection broke: a retry could write it twice), and after a failure
 * the sink waits for the next tick before it tries again. The failure is reported once per streak.
 *
 * ```ts
 * import { LogSink } from 'traffic-control/logs';
 * import { drizzleWriter } from 'traffic-control/drizzle';
 * const sink = new LogSink(tc, drizzleWriter(db), { batchSize: 500, flushIntervalMs: 1000 });
 * // at shutdown
 * await sink.close();
 * ```
 */
export class LogSink {
  readonly #source: LogSource;
  readonly #writer: LogWriter;
  readonly #batchSize: number;
  readonly #maxBuffered: number;
  readonly #closeTimeoutMs: number;
  readonly #onError: ((error: unknown, stats: LogSinkStats) => void) | undefined;
  readonly #off: () => unknown;
  readonly #timer: ReturnType<typeof setInterval>;
  /** The buffer: a ring of `maxBuffered` slots (dropping the oldest costs nothing). */
  readonly #ring: Array<RateLimitLogRow | undefined>;
  #head = 0;
  #size = 0;
  /**
   * The wall-clock instant of the controller's 0 (epoch ms). Events carry the controller's time of
   * the step itself, which is exact, whereas a listener runs when the controller drains its events
   * (after a timer or at the next microtask): converting the event's time is more accurate than
   * reading `Date.now()` on arrival. Taken at construction and again at every tick, so the rows
   * follow adjustments of the wall clock (NTP) within one interval.
   */
  #offset: number;
  #running: Promise<void> | undefined;
  #kick: ReturnType<typeof setTimeout> | undefined;
  #failing = false;
  #closed = false;
  #written = 0;
  #dropped = 0;
  #lost = 0;
  #failedBatches = 0;
  #inFlight = 0;

  constructor(source: LogSource, writer: LogWriter, options: LogSinkOptions = {}) {
    if (typeof source?.on !== 'function' || typeof source.now !== 'function') {
      throw new TypeError('LogSink: the source gives no events (it needs on() and now(), as TrafficControl and SharedTrafficControl have)');
    }
    this.#source = source;
    this.#writer = writer;
    this.#batchSize = positive(options.batchSize ?? 500, 'batchSize');
    this.#maxBuffered = positive(options.maxBuffered ?? 10_000, 'maxBuffered');
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    this.#onError = options.onError;
    this.#ring = new Array(this.#maxBuffered);
    this.#offset = Date.now() - source.now();
    const interval = positive(options.flushIntervalMs ?? 1000, 'flushIntervalMs');
    this.#timer = setInterval(() => {
      this.#offset = Date.now() - this.#source.now();
      void this.#drain(true);
    }, interval);
    // The sink never keeps a process alive: close() writes what is left.
    (this.#timer as { unref?: () => void }).unref?.();
    this.#off = source.on(this.#listen);
  }

  /** What the sink did so far. */
  get stats(): LogSinkStats {
    return {
      written: this.#written,
      dropped: this.#dropped,
      lost: this.#lost,
      failedBatches: this.#failedBatches,
      pending: this.#size,
      inFlight: this.#inFlight,
    };
  }

  /** Writes what is buffered now (after the write in progress); stops at the first failure. */
  async flush(): Promise<void> {
    await this.#running;
    await this.#drain(true);
  }

  /**
   * Stops listening and writes what is left, for at most `timeoutMs` (default: the option
   * `closeTimeoutMs`); resolves with the final counts (rows still pending then are not written).
   */
  async close(timeoutMs: number = this.#closeTimeoutMs): Promise<LogSinkStats> {
    if (!this.#closed) {
      this.#closed = true;
      this.#off();
      clearInterval(this.#timer);
      if (this.#kick !== undefined) clearTimeout(this.#kick);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      const rest = (async () => {
        await this.#running;
        const failed = this.#failedBatches;
        while (this.#size > 0 && this.#failedBatches === failed) await this.#drain(true);
      })();
      await Promise.race([rest, deadline]);
      clearTimeout(timer);
    }
    return this.stats;
  }

  /** The listener: maps and buffers, nothing else (it runs inside the controller's drain). */
  readonly #listen = (event: TrafficEvent): void => {
    if (this.#closed) return;
    const row = toLogRow(event, this.#offset);
    if (row === null) return;
    const max = this.#maxBuffered;
    if (this.#size === max) {
      // Full: the oldest row makes room.
      this.#ring[this.#head] = undefined;
      this.#head = (this.#head + 1) % max;
      this.#size--;
      this.#dropped++;
    }
    this.#ring[(this.#head + this.#size) % max] = row;
    this.#size++;
    if (this.#size >= this.#batchSize && this.#running === undefined && this.#kick === undefined && !this.#failing) {
      // A full batch goes on a fresh task, never inside the admission that made it (after a
      // failure, only at the next tick: one attempt per interval while the database is down).
      this.#kick = setTimeout(() => {
        this.#kick = undefined;
        void this.#drain(false);
      }, 0);
    }
  };

  /** Writes batches, one at a time: all that is buffered (`all`), or full batches only. */
  #drain(all: boolean): Promise<void> {
    if (this.#running) return this.#running;
    if (this.#size === 0) return Promise.resolve();
    const run = (async () => {
      try {
        while (this.#size > 0 && (all || this.#size >= this.#batchSize)) {
          // After a failure, wait for the next tick rather than lose the whole buffer at once.
          if (!(await this.#writeBatch())) break;
        }
      } finally {
        this.#running = undefined;
      }
    })();
    this.#running = run;
    return run;
  }

  async #writeBatch(): Promise<boolean> {
    const n = Math.min(this.#size, this.#batchSize);
    const max = this.#maxBuffered;
    const batch: RateLimitLogRow[] = new Array(n);
    for (let i = 0; i < n; i++) {
      batch[i] = this.#ring[this.#head]!;
      this.#ring[this.#head] = undefined;
      this.#head = (this.#head + 1) % max;
    }
    this.#size -= n;
    this.#inFlight = n;
    try {
      await this.#writer(batch);
      this.#written += n;
      this.#failing = false;
      return true;
    } catch (error) {
      this.#lost += n;
      this.#failedBatches++;
      if (!this.#failing) {
        this.#failing = true;
        this.#report(error);
      }
      return false;
    } finally {
      this.#inFlight = 0;
    }
  }

  #report(error: unknown): void {
    try {
      if (this.#onError) this.#onError(error, this.stats);
      else
        console.warn(
          `traffic-control: writing rate_limit_logs failed (${(error as Error)?.message ?? String(error)}); ` +
            'the rows of failed batches are counted as lost (sink.stats.lost) and this is said again only after a write succeeds',
        );
    } catch {
      // A failing reporter must not stop the sink.
    }
  }
}

function positive(n: number, name: string): number {
  if (!(Number.isFinite(n) && n >= 1)) throw new RangeError(`LogSink: ${name} must be at least 1 (got ${n})`);
  return Math.floor(n);
}
