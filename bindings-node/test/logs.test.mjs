// The seed's rate_limit_logs table, for real: events mapped by the table in tests/log_rows.json, and
// LogSink writing them through Drizzle (mysql2) into a MariaDB of the test's own
// (test/support/mariadb.mjs), under node --test and bun test alike. A slow database (its table
// locked) and a dead one (mariadbd killed, then restarted) never delay or lose an admission.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { drizzle } from 'drizzle-orm/mysql2';
import { asc } from 'drizzle-orm';
import { getTableConfig } from 'drizzle-orm/mysql-core';
import mysql from 'mysql2/promise';
import Redis from 'ioredis';
import { SharedTrafficControl, TrafficControl } from 'traffic-control';
import { LogSink, toLogRow } from 'traffic-control/logs';
import { drizzleWriter, rateLimitLogs } from 'traffic-control/drizzle';
import { after, before, slowTest, test } from '../../js/test/harness.mjs';
import { freePort, startRedis } from '../../js/test/redis-server.mjs';
import { mariadbMissing, mariadbRequired, startMariaDB } from './support/mariadb.mjs';

const table = JSON.parse(readFileSync(new URL('../../tests/log_rows.json', import.meta.url), 'utf8'));
const DDL = readFileSync(new URL('../../bindings-py/python/traffic_control/rate_limit_logs.sql', import.meta.url), 'utf8');
const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(check, what, ms = 10_000) {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out: ${what}`);
    await sleep(10);
  }
}

// ---- the mapping, against the shared table ----------------------------------------------------

test('toLogRow: every case of tests/log_rows.json', () => {
  assert.ok(table.cases.length >= 20);
  for (const c of table.cases) {
    // An event as the controller gives it: camelCase, absent fields left out.
    const event = Object.fromEntries(Object.entries(c.event).filter(([, v]) => v !== null).map(([k, v]) => [camel(k), v]));
    const row = toLogRow(event, table.wall_offset_ms);
    if (c.row === null) {
      assert.equal(row, null, c.name);
      continue;
    }
    const want = Object.fromEntries(Object.entries(c.row).map(([k, v]) => [camel(k), v]));
    assert.deepEqual({ ...row, timestamp: row.timestamp.getTime() }, want, c.name);
  }
});

// ---- the sink's own guarantees, with a writer of the test's ---------------------------------

/** A controller stand-in: the test emits events by hand. */
function fakeSource() {
  const listeners = new Set();
  return {
    now: () => 1000,
    on(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    emit(e) {
      for (const l of listeners) l(e);
    },
    listening: () => listeners.size,
  };
}
const queued = (i) => ({ type: 'queued', timestampMs: 1000 + i, requestId: i, endpoint: `GET /q/${i}`, priority: 'normal' });

test('LogSink: the listener only buffers; the oldest rows are dropped when full; one report per failure streak', async () => {
  const source = fakeSource();
  let fail = true;
  const writes = [];
  const errors = [];
  let release;
  const sink = new LogSink(
    source,
    async (rows) => {
      writes.push(rows.map((r) => r.endpoint));
      if (fail) throw new Error('database down');
      await new Promise((r) => (release = r));
    },
    { batchSize: 3, flushIntervalMs: 10_000, maxBuffered: 5, onError: (e) => errors.push(e.message) },
  );
  for (let i = 0; i < 8; i++) source.emit(queued(i));
  source.emit({ ...queued(99), type: 'go' }); // no row
  // Nothing was written inside the listener, even with full batches: writing waits for a task.
  assert.equal(writes.length, 0);
  assert.deepEqual(sink.stats, { written: 0, dropped: 3, lost: 0, failedBatches: 0, pending: 5, inFlight: 0 });
  await sleep(5);
  // The full batch went on a task of its own, failed, and the sink waits for its next tick.
  assert.deepEqual(writes, [['GET /q/3', 'GET /q/4', 'GET /q/5']]);
  assert.deepEqual(sink.stats, { written: 0, dropped: 3, lost: 3, failedBatches: 1, pending: 2, inFlight: 0 });
  await sink.flush();
  assert.deepEqual(sink.stats, { written: 0, dropped: 3, lost: 5, failedBatches: 2, pending: 0, inFlight: 0 });
  source.emit(queued(8));
  await sink.flush();
  assert.equal(sink.stats.failedBatches, 3);
  assert.deepEqual(errors, ['database down'], 'one report for the streak');
  // A success ends the streak; the next failure is reported again.
  // While failing, a full batch waits for the next tick (one attempt per interval): here, flush().
  fail = false;
  for (let i = 10; i < 13; i++) source.emit(queued(i));
  await sleep(5);
  assert.equal(writes.length, 3, 'no write before the tick');
  const flushed = sink.flush();
  await until(() => sink.stats.inFlight === 3, 'a write in flight');
  release();
  await flushed;
  assert.equal(sink.stats.written, 3);
  // Working again: a full batch goes at once.
  for (let i = 13; i < 16; i++) source.emit(queued(i));
  await until(() => sink.stats.inFlight === 3, 'a write in flight');
  release();
  await until(() => sink.stats.written === 6, 'written');
  fail = true;
  source.emit(queued(20));
  await sink.flush();
  assert.deepEqual(errors, ['database down', 'database down']);
  // Close: stops listening, writes what is left.
  fail = false;
  source.emit(queued(21));
  const closing = sink.close(1000);
  await until(() => sink.stats.inFlight === 1, 'the last write');
  release();
  const stats = await closing;
  assert.equal(source.listening(), 0);
  assert.deepEqual(stats, { written: 7, dropped: 3, lost: 7, failedBatches: 4, pending: 0, inFlight: 0 });
  source.emit(queued(30));
  assert.equal(sink.stats.pending, 0, 'closed: no more rows');
});

test('LogSink: a source without events is refused with a clear error', () => {
  assert.throws(() => new LogSink({ acquire() {} }, async () => {}), /no events/);
});

// ---- against a real MariaDB ---------------------------------------------------------------------

const missing = mariadbMissing();
if (missing && mariadbRequired) throw new Error(`${missing} and TC_REQUIRE_MARIADB=1`);
const dbTest = missing ? (name) => test.skip(`${name} (skipped: ${missing})`, () => {}) : (name, fn) => slowTest(name, fn, 30_000);

let server;
before(async () => {
  // A server whose own time zone is not UTC: the rows must not depend on it.
  if (!missing) server = await startMariaDB({ timeZone: '+02:00' });
});
after(async () => {
  await server?.stop();
});

/** A fresh database with the table made from the shipped DDL; a pool and Drizzle over it. */
async function database(name) {
  const admin = await mysql.createConnection({ host: server.host, port: server.port, user: server.user });
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const pool = mysql.createPool({ host: server.host, port: server.port, user: server.user, database: name, connectionLimit: 2, connectTimeout: 2000 });
  await pool.query(DDL);
  return { pool, db: drizzle(pool) };
}

/** The HTTP API the requests go to: 200, 429, a WAF's 403, by path. */
async function api() {
  const server = http.createServer((req, res) => {
    setTimeout(() => {
      if (req.url.includes('limited')) res.writeHead(429, { 'retry-after': '0' }).end();
      else if (req.url.includes('waf')) res.writeHead(403, { 'cf-mitigated': 'challenge', 'content-type': 'text/html' }).end('<html>blocked</html>');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    }, 5);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

dbTest('rows arrive: a workload through fetch and schedule is in rate_limit_logs as its events say', async () => {
  const { pool, db } = await database('tc_rows');
  // The shipped DDL is the Drizzle schema: same columns, types, nullability, keys.
  const [cols] = await pool.query(
    "SELECT COLUMN_NAME name, COLUMN_TYPE type, IS_NULLABLE nullable, EXTRA extra FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'tc_rows' AND TABLE_NAME = 'rate_limit_logs' ORDER BY ORDINAL_POSITION",
  );
  const config = getTableConfig(rateLimitLogs);
  const norm = (t) => t.toLowerCase().replace(/^(tinyint|smallint|int|bigint)\(\d+\)/, '$1').replace(/"/g, "'");
  assert.deepEqual(
    cols.map((c) => [c.name, norm(c.type), c.nullable === 'NO', c.extra.includes('auto_increment')]),
    config.columns.map((c) => [c.name, norm(c.getSQLType()), c.notNull, c.autoIncrement === true]),
  );
  const [keys] = await pool.query("SELECT INDEX_NAME name, COLUMN_NAME col FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'tc_rows' ORDER BY INDEX_NAME");
  assert.deepEqual(keys.map((k) => [k.name, k.col]), [['PRIMARY', 'id'], ...config.indexes.map((i) => [i.config.name, i.config.columns[0].name])]);

  const web = await api();
  const tc = new TrafficControl({
    limits: { api: { kind: 'window', max: 3, per: 150 } },
    global: ['api'],
    routes: [{ name: 'listings', path: '^/ws/listings' }],
    feedback: { max_retries: 0, block: 20, cooldown: 20 },
  });
  const events = [];
  tc.on((e) => events.push(e));
  const sink = new LogSink(tc, drizzleWriter(db), { batchSize: 4, flushIntervalMs: 50 });
  const t0 = Date.now();
  const fetches = [1, 2, 3].map((i) => tc.fetch(`${web.url}/ws/listings/${i}?key=SECRET`));
  // These wait for the window (QUEUED), then go.
  fetches.push(tc.fetch(`${web.url}/ws/listings/4`, undefined, { priority: 'low' }));
  fetches.push(tc.schedule({ route: 'listings', priority: 'high' }, () => new Response(null, { status: 204 })));
  const statuses = (await Promise.all(fetches)).map((r) => r.status);
  assert.deepEqual(statuses, [200, 200, 200, 200, 204]);
  // Refused at once (cost above the capacity) and a network failure: ERROR rows.
  await assert.rejects(tc.schedule({ url: `${web.url}/ws/listings/x`, cost: 9 }, () => 0), { code: 'COST_EXCEEDS_CAPACITY' });
  const closedPort = await freePort();
  await assert.rejects(tc.fetch(`http://127.0.0.1:${closedPort}/ws/listings/gone`));
  // A 429 (429_HIT), then a WAF block at 403 (ERROR, and 429_HIT for the block).
  assert.equal((await tc.fetch(`${web.url}/ws/listings/limited`, undefined, { priority: 'critical' })).status, 429);
  assert.equal((await tc.fetch(`${web.url}/ws/listings/waf`, undefined, { priority: 'critical' })).status, 403);
  const t1 = Date.now();

  const stats = await sink.close();
  const expected = events.map((e) => toLogRow(e, 0)).filter((r) => r !== null);
  assert.deepEqual(stats, { written: expected.length, dropped: 0, lost: 0, failedBatches: 0, pending: 0, inFlight: 0 });
  const rows = await db.select().from(rateLimitLogs).orderBy(asc(rateLimitLogs.id));
  const strip = ({ priority, status, endpoint, responseStatus, duration }) => ({ priority, status, endpoint, responseStatus, duration });
  assert.deepEqual(rows.map(strip), expected.map(strip));
  const seen = new Set(rows.map((r) => `${r.status} ${r.responseStatus}`));
  for (const want of ['QUEUED null', 'EXECUTED 200', 'EXECUTED 204', '429_HIT 429', 'ERROR 403', '429_HIT 403', 'ERROR null']) assert.ok(seen.has(want), want);
  assert.ok(rows.some((r) => r.status === 'QUEUED' && r.priority === 3 && r.endpoint === 'GET /ws/listings/4'));
  assert.ok(!rows.some((r) => r.endpoint.includes('SECRET')), 'no secret in the table');
  // Timestamps: the events' instants on the wall clock, to the millisecond, whatever the server's zone.
  const offset = Date.now() - tc.now();
  rows.forEach((r, i) => {
    assert.ok(Math.abs(r.timestamp.getTime() - expected[i].timestamp.getTime() - offset) <= 5, `row ${i}: ${r.timestamp.toISOString()}`);
    assert.ok(r.timestamp.getTime() >= t0 - 5 && r.timestamp.getTime() <= t1 + 5);
  });
  const [[{ ago }]] = await pool.query('SELECT TIMESTAMPDIFF(SECOND, MAX(`timestamp`), UTC_TIMESTAMP(3)) AS ago FROM rate_limit_logs');
  assert.ok(ago >= 0 && ago < 30, `UTC: ${ago} s ago`);
  await web.close();
  await pool.end();
});

dbTest('rows arrive from every process of a shared account: two shared controllers, one table', async () => {
  const { pool, db } = await database('tc_shared');
  const redis = await startRedis();
  const clients = [];
  const client = () => {
    const c = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };
  try {
    const web = await api();
    const cfg = {
      limits: { api: { kind: 'window', max: 2, per: 200, hold: 'go' } },
      global: ['api'],
      routes: [{ name: 'listings', path: '^/ws/listings' }],
      feedback: { block: 20, cooldown: 20 },
    };
    // Two processes of one account, as two workers would be: each its own sink, one table.
    const procs = ['a', 'b'].map(() => new SharedTrafficControl(cfg, { redis: client(), account: 'logs' }));
    const events = [];
    for (const tc of procs) tc.on((e) => events.push(e));
    const sinks = procs.map((tc) => new LogSink(tc, drizzleWriter(db), { batchSize: 3, flushIntervalMs: 30 }));
    const call = async (tc, path, priority = 'normal') => {
      const permit = await tc.acquire({ method: 'GET', url: `${web.url}${path}`, priority });
      const res = await fetch(`${web.url}${path}`);
      await permit.complete({ status: res.status, headers: res.headers });
      return res.status;
    };
    // Six calls over a window of 2 per 200 ms: four wait (QUEUED), one meets a 429.
    const statuses = await Promise.all([
      call(procs[0], '/ws/listings/1?key=SECRET'),
      call(procs[1], '/ws/listings/2'),
      call(procs[0], '/ws/listings/limited', 'high'),
      call(procs[1], '/ws/listings/4', 'low'),
      call(procs[0], '/ws/listings/5'),
      call(procs[1], '/ws/listings/6'),
    ]);
    assert.deepEqual(statuses.sort(), [200, 200, 200, 200, 200, 429]);
    // Once the window is empty, two fill it at once; one that cannot wait ~200 ms for it is
    // refused: an ERROR row.
    await sleep(250);
    const held = await Promise.all([8, 9].map((i) => procs[1].acquire({ url: `/ws/listings/${i}` })));
    await assert.rejects(procs[1].acquire({ url: '/ws/listings/10', maxWait: 1 }));
    await Promise.all(held.map((p) => p.complete({ status: 200 })));
    const stats = await Promise.all(sinks.map((s) => s.close()));
    const expected = events.map((e) => toLogRow(e, 0)).filter((r) => r !== null);
    assert.equal(stats[0].written + stats[1].written, expected.length);
    assert.ok(stats.every((s) => s.lost === 0 && s.dropped === 0));
    const rows = await db.select().from(rateLimitLogs).orderBy(asc(rateLimitLogs.id));
    const key = ({ priority, status, endpoint, responseStatus, duration }) => JSON.stringify([status, endpoint, priority, responseStatus, duration]);
    assert.deepEqual(rows.map(key).sort(), expected.map(key).sort(), 'every event row, from both processes');
    const count = (status, code) => rows.filter((r) => r.status === status && (code === undefined || r.responseStatus === code)).length;
    assert.ok(count('QUEUED') >= 2, `${count('QUEUED')} QUEUED rows`);
    assert.equal(count('EXECUTED', 200), 7);
    assert.equal(count('429_HIT', 429), 1);
    assert.ok(count('ERROR') >= 1);
    assert.ok(!rows.some((r) => r.endpoint.includes('SECRET')), 'no secret in the table');
    // One id per request from its queued row to its completion, distinct across the processes.
    const byId = new Map();
    for (const e of events) byId.set(e.requestId, [...(byId.get(e.requestId) ?? []), e.type]);
    assert.equal([...byId.keys()].filter((id) => byId.get(id).includes('go')).length, 8, JSON.stringify([...byId]));
    for (const [id, types] of byId) {
      if (types.includes('queued')) assert.deepEqual(types.slice(0, 2), ['queued', 'go'], `request ${id}: ${types}`);
    }
    await Promise.all(procs.map((tc) => tc.close()));
    await web.close();
  } finally {
    for (const c of clients) c.disconnect();
    await redis.stop();
    await pool.end();
  }
});

/** `n` jobs through `tc.schedule`, each answering 200; resolves with how long they all took (ms). */
async function workload(tc, n) {
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: n }, () => tc.schedule({ priority: 'normal' }, () => new Response(null, { status: 200 }))));
  assert.equal(results.length, n);
  assert.ok(results.every((r) => r.status === 200));
  return performance.now() - t0;
}

const WINDOW = { limits: { api: { kind: 'window', max: 200, per: 100 } }, global: ['api'] };

dbTest('a slow database (its table locked) never delays admissions; the rows arrive once it is unlocked', async () => {
  const { pool, db } = await database('tc_slow');
  // The same workload without a sink: how long the limits alone make it take (1000 jobs at 200 per 100 ms).
  const baseline = await workload(new TrafficControl(WINDOW), 1000);

  const locker = await mysql.createConnection({ host: server.host, port: server.port, user: server.user, database: 'tc_slow' });
  await locker.query('LOCK TABLES rate_limit_logs WRITE');
  const tc = new TrafficControl(WINDOW);
  let produced = 0;
  tc.on((e) => (produced += toLogRow(e, 0) ? 1 : 0));
  const sink = new LogSink(tc, drizzleWriter(db), { batchSize: 100, flushIntervalMs: 20 });
  // A first wave: its rows' INSERT blocks on the lock.
  await workload(tc, 150);
  await until(() => sink.stats.inFlight === 100, 'an INSERT in flight');
  // The client has sent it; the server shows it waiting on the lock a moment later (under load,
  // after this process saw it in flight: asked once, it was not there yet).
  const waiting = async () => {
    const [blocked] = await locker.query("SELECT COUNT(*) n FROM information_schema.PROCESSLIST WHERE STATE LIKE '%metadata lock%'");
    return blocked[0].n === 1;
  };
  await until(waiting, 'the INSERT waits for the lock');
  await sleep(150); // the first wave's window ends: the same free limits as the baseline's

  const locked = await workload(tc, 1000);
  assert.ok(locked < baseline + 300, `1000 admissions took ${locked.toFixed(0)} ms with the table locked, ${baseline.toFixed(0)} ms without a sink`);
  assert.equal(sink.stats.written, 0, 'nothing written while locked');
  assert.equal(sink.stats.inFlight, 100);
  assert.equal(sink.stats.dropped, 0);

  await locker.query('UNLOCK TABLES');
  await until(() => sink.stats.written === produced, 'the rows written after the unlock');
  const [[{ n }]] = await pool.query('SELECT COUNT(*) n FROM rate_limit_logs');
  assert.equal(n, produced);
  assert.ok(produced >= 1150 + 700, `${produced} rows: every completion and every wait`);
  assert.deepEqual(await sink.close(), { written: produced, dropped: 0, lost: 0, failedBatches: 0, pending: 0, inFlight: 0 });
  await locker.end();
  await pool.end();
});

dbTest('a dead database never blocks or loses an admission: the failure is said once per streak, lost rows counted, writing resumes', async () => {
  const { pool, db } = await database('tc_dead');
  const tc = new TrafficControl(WINDOW);
  let produced = 0;
  tc.on((e) => (produced += toLogRow(e, 0) ? 1 : 0));
  const errors = [];
  const sink = new LogSink(tc, drizzleWriter(db), { batchSize: 50, flushIntervalMs: 30, maxBuffered: 300, onError: (e) => errors.push(e) });
  const accounted = () => {
    const s = sink.stats;
    return s.written + s.dropped + s.lost + s.pending + s.inFlight;
  };
  await workload(tc, 60);
  await until(() => sink.stats.written === produced, 'the first rows');

  await server.kill();
  const baseline = await workload(new TrafficControl(WINDOW), 1000);
  const dead = await workload(tc, 1000);
  assert.ok(dead < baseline + 300, `1000 admissions took ${dead.toFixed(0)} ms with the database dead, ${baseline.toFixed(0)} ms without a sink`);
  await until(() => sink.stats.failedBatches >= 3, 'failed writes');
  assert.equal(errors.length, 1, 'one report for the streak');
  const s = sink.stats;
  assert.ok(s.lost > 0 && s.dropped > 0 && s.pending <= 300, JSON.stringify(s));
  assert.equal(accounted(), produced, 'every row written, dropped, lost or pending');

  await server.start();
  const before = sink.stats.written;
  await workload(tc, 100);
  await until(() => sink.stats.written > before && sink.stats.pending === 0 && sink.stats.inFlight === 0, 'writing resumed');
  assert.equal(errors.length, 1, 'no report while it works');

  // A new streak is reported again.
  await server.kill();
  await workload(tc, 100);
  const failed = sink.stats.failedBatches;
  await until(() => sink.stats.failedBatches > failed, 'a new failure');
  assert.equal(errors.length, 2);

  await server.start();
  await until(async () => {
    await sink.flush();
    return sink.stats.pending === 0 && sink.stats.inFlight === 0;
  }, 'the rest written');
  const stats = await sink.close();
  assert.equal(accounted(), produced);
  const [[{ n }]] = await pool.query('SELECT COUNT(*) n FROM rate_limit_logs');
  // A batch whose connection broke may still have committed: it is counted as lost, never retried.
  assert.ok(n >= stats.written && n <= stats.written + stats.lost, `${n} rows in the table, ${JSON.stringify(stats)}`);
  await pool.end();
});
