// Replays the shared scenario files (tests/scenarios/*.json, format in tests/README.md) through a
// package's native functions (napi or wasm: the `Native` interface of js/src/types.ts). The Rust
// core replays the same files; every binding must reach the same decisions.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const TIME_KEYS = new Set(['at', 'until', 'waited', 'duration', 'held', 'next_free', 'retry_at']);
const COMMON = ['at', 'op', 'comment', 'expect'];
const nanos = (v) => (v === null ? null : Math.round(v * 1e6));

/** Every scenario file of `dir`, sorted by name. */
export function scenarioFiles(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => join(dir, f));
}

/** Replays one file; throws an Error naming the step and expected versus observed. */
export function replayFile(native, path) {
  const scenario = JSON.parse(readFileSync(path, 'utf8'));
  allowKeys(scenario, ['name', 'description', 'config', 'steps'], 'scenario');
  const r = new Replay(native, native.create(JSON.stringify(scenario.config)));
  scenario.steps.forEach((step, i) => {
    try {
      r.step(step);
    } catch (e) {
      throw new Error(`step ${i} ${JSON.stringify(step).slice(0, 160)}: ${e.message}`);
    }
  });
}

function allowKeys(obj, keys, what) {
  for (const k of Object.keys(obj)) if (!keys.includes(k)) throw new Error(`${what}: unknown field ${JSON.stringify(k)}`);
}

function withTarget(friendly, keys) {
  allowKeys(friendly, keys, 'request');
  const { method, url, route, ...rest } = friendly;
  let target;
  if (method !== undefined && url !== undefined && route === undefined) target = { http: { method, url } };
  else if (method === undefined && url === undefined && route !== undefined) target = { route };
  else if (method === undefined && url === undefined && route === undefined) target = 'none';
  else throw new Error(`request ${JSON.stringify(friendly)}: give "method" and "url", or "route", or neither`);
  return { ...rest, target };
}

class Replay {
  constructor(native, h) {
    this.n = native;
    this.h = h;
    this.ids = new Map(); // label -> id | null
    this.labels = new Map(); // id -> label
    this.reservations = new Map(); // name -> id
    this.reservationNames = new Map(); // id -> name
    this.lastAt = 0;
  }

  toRequest(friendly) {
    const core = withTarget(friendly, ['method', 'url', 'route', 'limits', 'cost', 'priority', 'deadline', 'reserve', 'spend', 'key', 'tenant']);
    if (core.deadline !== undefined) core.deadline = nanos(core.deadline);
    if (core.spend !== undefined) {
      if (!this.reservations.has(core.spend)) throw new Error(`request.spend: no permit has shown ${core.spend}`);
      core.spend = this.reservations.get(core.spend);
    }
    if (core.reserve !== undefined) core.reserve = core.reserve.map((f) => withTarget(f, ['method', 'url', 'route', 'limits', 'cost', 'ttl']));
    return JSON.stringify(core);
  }

  newLabel(s) {
    const label = s.label;
    if (typeof label !== 'string' || !label || label.includes('#')) throw new Error(`label ${label}: must be non-empty, without '#'`);
    if (this.ids.has(label)) throw new Error(`label ${label} is used twice`);
    return label;
  }

  bind(label, id) {
    if (id !== null) this.labels.set(id, label);
    this.ids.set(label, id);
  }

  idOf(s) {
    const id = this.ids.get(s.label);
    if (id === undefined) throw new Error(`unknown label ${s.label}`);
    if (id === null) throw new Error(`label ${s.label} never got a request id`);
    return id;
  }

  learn(label, reservations) {
    reservations.forEach((rid, i) => {
      this.reservations.set(`${label}#${i}`, rid);
      this.reservationNames.set(rid, `${label}#${i}`);
    });
  }

  step(s) {
    const keys = (extra) => allowKeys(s, [...COMMON, ...extra], 'step');
    if (s.at < this.lastAt) throw new Error(`"at" goes backwards`);
    this.lastAt = s.at;
    const { n, h } = this;
    const now = s.at;
    switch (s.op) {
      case 'submit': {
        keys(['label', 'request']);
        const label = this.newLabel(s);
        let actual;
        try {
          this.bind(label, Math.abs(n.submitJson(h, now, this.toRequest(s.request))));
          actual = {};
        } catch (e) {
          if (!e.code) throw e;
          this.bind(label, null);
          actual = { error: e.code };
        }
        return compareAll(s.expect ?? {}, actual, 'submit');
      }
      case 'try_acquire': {
        keys(['label', 'request']);
        const label = this.newLabel(s);
        const d = n.tryAcquireJson(h, now, this.toRequest(s.request));
        let actual;
        if (d.decision === 'go') {
          this.bind(label, d.requestId);
          this.learn(label, d.reservations ?? []);
          actual = { decision: 'go' };
        } else {
          this.bind(label, null);
          actual = d.decision === 'wait' ? { decision: 'wait', until: d.until ?? null } : { decision: 'reject', code: d.code };
        }
        return compareAll(s.expect, actual, 'try_acquire');
      }
      case 'poll': {
        keys([]);
        allowKeys(s.expect, ['events'], 'expect');
        const events = n.drain(h, now).map((e) => this.observe(e));
        return compareEvents(s.expect.events, events);
      }
      case 'poll_timeout': {
        keys([]);
        return compareAll(s.expect, { at: n.pollTimeout(h) ?? null }, 'poll_timeout');
      }
      case 'complete': {
        keys(['label', 'status', 'headers', 'body']);
        if (!('status' in s)) throw new Error('"status" (an HTTP status or null) is required');
        const headers = s.headers ? s.headers.flat() : null;
        const code = n.complete(h, now, this.idOf(s), s.status, headers, s.body ?? null, null);
        const actual =
          code >= 0 ? { completion: 'retry', at: code } : { completion: { [-1]: 'done', [-2]: 'give_up', [-3]: 'unknown' }[code] };
        return compareAll(s.expect ?? { completion: 'done' }, actual, 'complete');
      }
      case 'cancel': {
        keys(['label']);
        return compareAll(s.expect ?? { ok: true }, { ok: n.cancel(h, now, this.idOf(s)) }, 'cancel');
      }
      case 'release': {
        keys(['reservation']);
        const rid = this.reservations.get(s.reservation);
        if (rid === undefined) throw new Error(`no permit has shown ${s.reservation}`);
        return compareAll(s.expect ?? { ok: true }, { ok: n.release(h, now, rid) }, 'release');
      }
      case 'sync_budget': {
        keys(['limit', 'tokens_left', 'refill_in']);
        let actual = { ok: true };
        try {
          n.syncBudget(h, now, s.limit, s.tokens_left, s.refill_in ?? null);
        } catch (e) {
          if (!e.code) throw e;
          actual = { ok: false, code: e.code };
        }
        return compareAll(s.expect ?? { ok: true }, actual, 'sync_budget');
      }
      case 'snapshot': {
        keys([]);
        const raw = JSON.parse(n.snapshotJson(h, now));
        const ms = (ns) => (ns === null || ns === undefined ? null : ns / 1e6);
        const limits = Object.fromEntries(
          raw.limits.map((l) => [
            l.name,
            { kind: l.kind, capacity: l.capacity, used: l.used, reserved: l.reserved, available: l.available, next_free: ms(l.next_free), balance: l.balance ?? null },
          ]),
        );
        const [critical, high, normal, low] = raw.waiting;
        const observed = { limits, waiting: { critical, high, normal, low }, in_flight: raw.in_flight, reservations: raw.reservations };
        return compare(s.expect, observed, 'snapshot');
      }
      default:
        throw new Error(`unknown op ${s.op}`);
    }
  }

  observe(e) {
    const label = this.labels.get(e.requestId) ?? null;
    const v = { type: e.status, label, at: e.timestampMs, endpoint: e.endpoint, route: e.route ?? null, priority: e.priority };
    switch (e.status) {
      case 'go':
        if (label !== null) this.learn(label, e.reservations ?? []);
        v.waited = e.durationMs;
        v.reservations = (e.reservations ?? []).map((r) => this.reservationNames.get(r) ?? null);
        v.key = e.key ?? null;
        break;
      case 'completed':
        v.status = e.responseStatus ?? null;
        v.duration = e.durationMs;
        break;
      case 'rejected':
      case 'expired':
        v.code = e.error;
        break;
      case 'rate_limited':
        v.status = e.responseStatus ?? null;
        v.until = e.until;
        break;
      case 'retried':
        v.attempt = e.attempt;
        v.retry_at = e.retryAt;
        break;
      case 'lease_expired':
        v.held = e.durationMs;
        break;
      case 'reservation_expired':
      case 'reservation_released':
        v.reservation = this.reservationNames.get(e.reservation) ?? null;
        break;
      case 'breaker_opened':
        v.limit = e.limit;
        v.reason = e.reason;
        v.until = e.until;
        break;
      case 'breaker_half_open':
      case 'breaker_closed':
        v.limit = e.limit;
        break;
    }
    return v;
  }
}

function compareEvents(expected, actual) {
  const show = (list) => list.map((v) => `\n    ${JSON.stringify(v)}`).join('');
  const fail = (why) => {
    throw new Error(`${why}\n  expected events:${show(expected)}\n  actual events:${show(actual)}`);
  };
  expected.forEach((e, i) => {
    if (!('type' in e) || !('label' in e)) fail(`expected event ${i} needs "type" and "label"`);
    if (i >= actual.length) fail(`event ${i} missing`);
    try {
      compare(e, actual[i], `event ${i}`);
    } catch (err) {
      fail(err.message);
    }
  });
  if (actual.length > expected.length) fail(`${actual.length - expected.length} unexpected event(s) after the expected ones`);
}

function compareAll(expected, actual, path) {
  const keys = (v) => JSON.stringify(Object.keys(v).sort());
  if (keys(expected) !== keys(actual)) throw new Error(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  compare(expected, actual, path);
}

function compare(expected, actual, path) {
  if (expected !== null && typeof expected === 'object' && !Array.isArray(expected)) {
    if (actual === null || typeof actual !== 'object') throw new Error(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
    for (const [k, ev] of Object.entries(expected)) {
      const p = `${path}.${k}`;
      if (!(k in actual)) throw new Error(`${p}: no such field (got ${JSON.stringify(actual)})`);
      const av = actual[k];
      if (TIME_KEYS.has(k) && (ev === null || typeof ev !== 'object')) {
        if (nanos(ev) !== nanos(av ?? null)) throw new Error(`${p}: expected ${ev}, got ${av}`);
      } else compare(ev, av, p);
    }
    return;
  }
  if (JSON.stringify(expected) !== JSON.stringify(actual)) throw new Error(`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}
