import { theHost } from './host.js';

/** The family of an error, the same in every binding (the core's `ErrorKind`). */
export type ErrorKind = 'config' | 'never_succeeds' | 'deadline' | 'queue_full' | 'cancelled' | 'budget' | 'store' | 'argument';

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
  | 'STORE_UNAVAILABLE'
  | 'STORE_REPLY'
  | 'INVALID_ARGUMENT';


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
    // The families are the core's (ErrorKind::of_code); a code it does not have is a call made wrong.
    this.kind = (theHost().native.errorKind(code) ?? 'argument') as ErrorKind;
  }
}

/** Turns what the native side threw (an `Error` with a `code`) into a `TrafficControlError`. */
export function fromNative(e: unknown): unknown {
  if (e instanceof TrafficControlError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (code === 'INVALID_ARGUMENT' || theHost().native.errorKind(code))) {
    return new TrafficControlError(code as ErrorCode, (e as Error).message);
  }
  return e;
}
