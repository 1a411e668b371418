/** The family of an error, the same in every binding (the core's `ErrorKind`). */
export type ErrorKind = 'config' | 'never_succeeds' | 'deadline' | 'queue_full' | 'cancelled' | 'budget' | 'argument';

/** The stable codes an error carries (the core's codes, plus `INVALID_ARGUMENT` for a call made wrong). */
export type ErrorCode =
  | 'CONFIG'
  | 'UNKNOWN_ROUTE'
  | 'UNKNOWN_LIMIT'
  | 'COST_EXCEEDS_CAPACITY'
  | 'DEADLINE_EXCEEDED'
  | 'DEADLINE_UNREACHABLE'
  | 'QUEUE_FULL'
  | 'INSUFFICIENT_BUDGET'
  | 'BUDGET_UNKNOWN'
  | 'CANCELLED'
  | 'INVALID_ARGUMENT';

const KINDS: Record<ErrorCode, ErrorKind> = {
  CONFIG: 'config',
  UNKNOWN_ROUTE: 'never_succeeds',
  UNKNOWN_LIMIT: 'never_succeeds',
  COST_EXCEEDS_CAPACITY: 'never_succeeds',
  DEADLINE_EXCEEDED: 'deadline',
  DEADLINE_UNREACHABLE: 'deadline',
  QUEUE_FULL: 'queue_full',
  INSUFFICIENT_BUDGET: 'budget',
  BUDGET_UNKNOWN: 'budget',
  CANCELLED: 'cancelled',
  INVALID_ARGUMENT: 'argument',
};

/**
 * Every error the library throws or rejects with. `code` is stable across releases and bindings
 * (Node, Bun, wasm, Python): branch on it, not on the message.
 *
 * ```ts
 * try { await tc.fetch(url, undefined, { maxWait: 2_000 }) }
 * catch (e) { if (e instanceof TrafficControlError && e.kind === 'budget') return reply(503) }
 * ```
 */
export class TrafficControlError extends Error {
  /** The stable code, such as `QUEUE_FULL`. */
  readonly code: ErrorCode;
  /** The family: `config`, `never_succeeds`, `deadline`, `queue_full`, `cancelled`, `budget`. */
  readonly kind: ErrorKind;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TrafficControlError';
    this.code = code;
    this.kind = KINDS[code] ?? 'argument';
  }
}

/** Turns what the native side threw (an `Error` with a `code`) into a `TrafficControlError`. */
export function fromNative(e: unknown): unknown {
  if (e instanceof TrafficControlError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in KINDS) {
    return new TrafficControlError(code as ErrorCode, (e as Error).message);
  }
  return e;
}
