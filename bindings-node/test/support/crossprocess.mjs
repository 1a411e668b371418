// The cross-process run: 4 Node/Bun workers and 2 Python workers share one Back Market account
// through one redis-server, against the mock Back Market API (windows counted at arrival, 429 on
// excess). Phases: (1) a full run with one extra process killed mid-run while it holds leases and
// reservations; (2) a run during which redis-server restarts (empty); (3) a process killed on a
// quiet account, timing how soon its leases and reservations come back. Prints one JSON report.
//
//   node test/support/crossprocess.mjs --python /path/to/venv/bin/python [--probes 10] [--scans 40]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Redis from 'ioredis';
import { SharedTrafficControl } from '../../index.mjs';
import { startMockBackMarket } from './mock-backmarket.mjs';
import { startRedis } from '../../../js/test/redis-server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const python = arg('python', process.env.TC_PYTHON);
if (!python) throw new Error('--python <interpreter with traffic_control, redis and httpx installed> is required');
// Scale 5: windows five times shorter than the API's. No margin in time: every window holds a
// request until its completion plus per, which covers the mock's 10-150 ms before counting.
const scale = Number(arg('scale', 5));
const probes = Number(arg('probes', 10));
const scans = Number(arg('scans', 40));
const bun = path.join(pkg, 'node_modules/.bin/bun');

// The Back Market preset's limits, every window `scale` times shorter (as the mock's), plus a
// concurrency limit so leases are exercised; TTLs scaled too.
const per = (ms) => Math.round(ms / scale);
const config = {
  limits: {
    global: { kind: 'window', max: 150, per: per(10_000) },
    catalog: { kind: 'window', max: 15, per: per(10_000) },
    competitor: { kind: 'window', max: 2, per: per(Number(arg('competitor-ms', 1_000))) },
    care: { kind: 'window', max: 300, per: per(60_000) },
    inflight: { kind: 'concurrency', max: 24 },
  },
  global: ['global', 'inflight'],
  routes: [
    { name: 'competitors', path: '^/ws/backbox/v1/competitors', limits: ['competitor'] },
    { name: 'listings', path: '^/ws/listings', limits: ['catalog'] },
    { name: 'care', path: '^/ws/sav', limits: ['care'] },
  ],
  reservation_ttl: per(30_000),
  lease_ttl: per(30_000),
};

function worker(id, runtime, env, extra = {}) {
  const file = runtime === 'python' ? path.resolve(pkg, '../bindings-py/tests/shared_worker.py') : path.join(here, 'shared-worker.mjs');
  const cmd = runtime === 'python' ? python : runtime === 'bun' ? bun : process.execPath;
  const child = spawn(cmd, [file], { cwd: pkg, env: { ...process.env, ...env, TC_WORKER: String(id), ...extra }, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const first = new Promise((resolve, reject) => {
    lines.once('line', (l) => resolve(JSON.parse(l)));
    child.once('exit', (code) => reject(new Error(`worker ${id} (${runtime}) exited with ${code} before reporting`)));
  });
  return { child, first };
}

const RUNTIMES = ['node', 'node', 'bun', 'bun', 'python', 'python'];

async function phase({ redis, account, mock, restartAt, killAt }) {
  const env = { TC_REDIS_PORT: String(redis.port), TC_MOCK_URL: mock.url, TC_ACCOUNT: account, TC_CONFIG: JSON.stringify(config), TC_PROBES: String(probes), TC_SCANS: String(scans), TC_REVERTS: '2' };
  const t0 = performance.now();
  const workers = RUNTIMES.map((rt, i) => worker(i + 1, rt, env));
  const events = {};
  let holder;
  if (killAt !== undefined) {
    holder = worker(99, 'node', env, { TC_HOLD: '1', TC_PROBES: '3' });
    await holder.first;
    await new Promise((r) => setTimeout(r, killAt));
    holder.child.kill('SIGKILL');
    events.killedAtMs = performance.now() - t0;
  }
  if (restartAt !== undefined) {
    await new Promise((r) => setTimeout(r, restartAt));
    events.restartAtMs = performance.now() - t0;
    await redis.restart(300);
    events.backAtMs = performance.now() - t0;
  }
  const results = await Promise.all(workers.map((w) => w.first));
  const elapsedMs = performance.now() - t0;
  await Promise.all(workers.map((w) => new Promise((r) => (w.child.exitCode !== null ? r() : w.child.once('exit', r)))));
  const done = results.reduce((n, r) => n + r.probes, 0);
  const lastProbe = Math.max(...results.flatMap((r) => r.probeEnds));
  return { elapsedMs, events, results: results.map(({ probeEnds, ...r }) => r), probes: done, probeThroughput: done / (lastProbe / 1000) };
}

async function leaseReturn({ redis, account, mock }) {
  // A process takes 3 leases and 3 reservations, then dies: time until the account has them back.
  const env = { TC_REDIS_PORT: String(redis.port), TC_MOCK_URL: mock.url, TC_ACCOUNT: account, TC_CONFIG: JSON.stringify(config), TC_PROBES: '3', TC_SCANS: '0', TC_HOLD: '1' };
  const client = new Redis({ port: redis.port, host: '127.0.0.1' });
  const tc = new SharedTrafficControl(config, { redis: client, account });
  const holder = worker(98, 'node', env);
  await holder.first;
  const held = await tc.snapshot();
  holder.child.kill('SIGKILL');
  const t0 = performance.now();
  const limit = (s, n) => s.limits.find((l) => l.name === n);
  let s = held;
  while (limit(s, 'inflight').used > 0 || limit(s, 'catalog').reserved > 0) {
    // Give up a little after the TTLs: by then they have failed to come back.
    if (performance.now() - t0 > Math.max(config.lease_ttl, config.reservation_ttl) + 5_000) break;
    await new Promise((r) => setTimeout(r, 25));
    s = await tc.snapshot();
  }
  const returnedMs = performance.now() - t0;
  client.disconnect();
  return { heldLeases: limit(held, 'inflight').used, heldReservations: limit(held, 'catalog').reserved, returnedMs, ttlMs: config.lease_ttl, after: { leases: limit(s, 'inflight').used, reservations: limit(s, 'catalog').reserved } };
}

const redis = await startRedis();
const report = { scale, config, workers: RUNTIMES };
try {
  for (const [name, opts] of [
    ['run', { killAt: 500 }],
    ['restart', { restartAt: 1500 }],
  ]) {
    const mock = await startMockBackMarket({ scale, listings: 100_000, latency: [10, 150] });
    try {
      report[name] = await phase({ redis, account: `bm-${name}-${process.pid}`, mock, ...opts });
      report[name].tooMany = mock.stats.tooMany;
      report[name].byScope = { ...mock.stats.byScope };
      report[name].peak = { ...mock.stats.peak };
      report[name].probeMaxMs = mock.stats.probeMaxMs;
      report[name].atProbePrice = mock.atProbePrice().length;
    } finally {
      await mock.close();
    }
  }
  const mock = await startMockBackMarket({ scale, listings: 100_000, latency: [10, 150] });
  try {
    report.kill = await leaseReturn({ redis, account: `bm-kill-${process.pid}`, mock });
  } finally {
    await mock.close();
  }
  report.real = { global: { max: 200, perMs: 10_000 / scale }, catalog: { max: 20, perMs: 10_000 / scale }, competitor: { max: 2, perMs: 1_000 / scale } };
  report.probeCeiling = config.limits.catalog.max / 2 / (config.limits.catalog.per / 1000);
} finally {
  await redis.stop();
}
console.log(JSON.stringify(report));
