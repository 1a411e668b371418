// The fault campaign (scripts/soak.sh runs it): 4 Node/Bun workers and 2 Python workers share one
// Back Market account through Redis, against the mock Back Market API (windows counted at arrival
// after 10-150 ms of latency, 429 on excess). Phases, each on an account of its own:
//   run      a full run with one extra process killed with SIGKILL mid-run, holding leases and
//            reservations;
//   restart  a run during which redis-server restarts empty;
//   proxy    a run through a TCP proxy that delays every chunk, cuts a random connection every
//            150-400 ms and cuts them all for 800 ms once (fault-proxy.mjs);
//   burst    a run during which the API answers two bursts of 429s the limits did not cause (8
//            answers each, Retry-After 1 s): workers send a rate-limited request again, and no
//            request may reach a scope while a Retry-After runs on it (once the answer has had
//            250 ms to reach its client and be recorded);
//   cluster  a run on a 3-master Redis Cluster (a replica each) with a failover of the account's
//            master mid-run;
//   kill     a process killed on a quiet account, timing how soon its leases and reservations
//            come back;
//   memory   1M requests (--memory) through the in-memory controller in Node, Bun and Python,
//            resident memory at the start, halfway and at the end.
// After the last run, once a lease TTL has passed, every run's account is read back: capacity still
// held then was never returned. `--rounds n` repeats the five runs n times. Prints one JSON report
// on stdout and a summary on stderr.
//
//   node test/support/crossprocess.mjs --python /path/to/venv/bin/python [--probes 10] [--scans 40]
//     [--phases run,restart,proxy,burst,cluster,kill,memory] [--rounds 1] [--memory 1000000]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Redis from 'ioredis';
import { SharedTrafficControl } from '../../index.mjs';
import { startMockBackMarket } from './mock-backmarket.mjs';
import { startRedis, startRedisCluster } from '../../../js/test/redis-server.mjs';
import { startFaultProxy } from './fault-proxy.mjs';

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
const phases = arg('phases', 'run,restart,proxy,burst,cluster,kill,memory').split(',');
const rounds = Number(arg('rounds', 1));
const memoryRequests = Number(arg('memory', 1_000_000));
// A request still unresolved this long after its worker started is reported as never resolved.
const deadlineMs = Number(arg('deadline-ms', 300_000));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
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
// How long a forced 429 may take to stop traffic on its scope: its answer reaching the client and
// the pause being recorded, plus the mock's largest latency before a request already sent counts.
const PAUSE_GRACE_MS = 250;

async function phase({ connection, account, mock, restart, killAt, faults, extraEnv = {} }) {
  const env = { ...connection, ...extraEnv, TC_MOCK_URL: mock.url, TC_ACCOUNT: account, TC_CONFIG: JSON.stringify(config), TC_PROBES: String(probes), TC_SCANS: String(scans), TC_REVERTS: '2', TC_DEADLINE_MS: String(deadlineMs) };
  const t0 = performance.now();
  const workers = RUNTIMES.map((rt, i) => worker(i + 1, rt, env));
  const events = {};
  let done = false;
  const all = Promise.all(workers.map((w) => w.first)).finally(() => {
    done = true;
  });
  const injected = (async () => {
    if (killAt !== undefined) {
      const holder = worker(99, 'node', env, { TC_HOLD: '1', TC_PROBES: '3' });
      await holder.first;
      await sleep(killAt);
      holder.child.kill('SIGKILL');
      events.killedAtMs = performance.now() - t0;
    }
    if (restart) {
      await sleep(restart.at);
      events.restartAtMs = performance.now() - t0;
      await restart.run();
      events.backAtMs = performance.now() - t0;
    }
    if (faults) await faults(() => done, events, t0);
  })();
  const results = await all;
  await injected;
  const elapsedMs = performance.now() - t0;
  await Promise.all(workers.map((w) => new Promise((r) => (w.child.exitCode !== null ? r() : w.child.once('exit', r)))));
  const probed = results.reduce((n, r) => n + r.probes, 0);
  const lastProbe = Math.max(...results.flatMap((r) => r.probeEnds));
  return { elapsedMs, endedAt: performance.now(), events, results: results.map(({ probeEnds, ...r }) => r), probes: probed, probeThroughput: probed / (lastProbe / 1000) };
}

/** Drops a random connection every 150-400 ms and cuts them all for 800 ms once, until the run ends. */
function proxyFaults(proxy) {
  return async (ended, events) => {
    let cut = false;
    const t0 = performance.now();
    while (!ended()) {
      await sleep(150 + Math.random() * 250);
      if (!cut && performance.now() - t0 > 1500) {
        proxy.cut(800);
        cut = true;
      } else {
        proxy.drop();
      }
    }
    events.proxy = { ...proxy.stats };
  };
}

/** What the account still holds: leases in flight and reserved cost, per limit. */
async function held(client, account) {
  const tc = new SharedTrafficControl(config, { redis: client, account, wake: false });
  const s = await tc.snapshot();
  const leases = s.limits.find((l) => l.name === 'inflight').used;
  const reserved = s.limits.reduce((n, l) => n + l.reserved, 0);
  return { leases, reserved };
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
const report = { scale, config, workers: RUNTIMES, phases, rounds, runs: [] };
const accounts = [];
const cleanup = [];
try {
  for (let round = 1; round <= rounds; round++) {
    for (const name of phases.filter((p) => ['run', 'restart', 'proxy', 'burst', 'cluster'].includes(p))) {
      const account = `bm-${name}-${round}-${process.pid}`;
      const mock = await startMockBackMarket({ scale, listings: 100_000, latency: [10, 150] });
      let opts = { connection: { TC_REDIS_PORT: String(redis.port) } };
      let check = () => new Redis({ port: redis.port, host: '127.0.0.1' });
      let proxy;
      let cluster;
      if (name === 'run') opts.killAt = 500;
      if (name === 'restart') opts.restart = { at: 1500, run: () => redis.restart(300) };
      if (name === 'proxy') {
        proxy = await startFaultProxy({ port: redis.port, delayMs: 8, seed: round });
        opts = { connection: { TC_REDIS_PORT: String(proxy.port) }, faults: proxyFaults(proxy) };
      }
      if (name === 'burst') {
        opts.extraEnv = { TC_RETRIES: '10' };
        opts.faults = async (ended, events, t0) => {
          events.bursts = [];
          for (const at of [1200, 3200]) {
            await sleep(Math.max(0, at - (performance.now() - t0)));
            if (ended()) break;
            mock.force(8, 1);
            events.bursts.push(Math.round(performance.now() - t0));
          }
        };
      }
      if (name === 'cluster') {
        cluster = await startRedisCluster({ masters: 3, replicas: 1 });
        cleanup.push(() => cluster.stop());
        const nodes = cluster.nodes;
        check = () => new Redis.Cluster(nodes, { redisOptions: { maxRetriesPerRequest: 2 }, clusterRetryStrategy: () => 100 });
        opts = {
          connection: { TC_REDIS_CLUSTER: nodes.map((n) => n.port).join(',') },
          faults: async (_, events, t0) => {
            await sleep(1500);
            events.failoverAtMs = performance.now() - t0;
            events.promoted = await cluster.failover(cluster.keySlot(`tc:{${account}}:meta`));
            events.failoverDoneMs = performance.now() - t0;
          },
        };
      }
      try {
        const r = await phase({ account, mock, ...opts });
        Object.assign(r, { phase: name, round, tooMany: mock.stats.tooMany, byScope: { ...mock.stats.byScope }, peak: { ...mock.stats.peak }, probeMaxMs: mock.stats.probeMaxMs, atProbePrice: mock.atProbePrice().length, injected: mock.stats.forced, injectedPauses: mock.forcedPauses(), sentIntoPause: mock.arrivedDuringPauses(PAUSE_GRACE_MS) });
        report.runs.push(r);
        accounts.push({ run: r, account, check });
      } finally {
        await mock.close();
        if (proxy) await proxy.close();
      }
    }
  }
  if (accounts.length > 0) {
    // Capacity not returned: what every run's account still holds once a lease TTL has passed
    // since the run ended (a killed process's leases and reservations, admissions whose reply a
    // cut connection lost, included).
    const last = Math.max(...accounts.map((a) => a.run.endedAt));
    await sleep(Math.max(0, last + Math.max(config.lease_ttl, config.reservation_ttl) + 500 - performance.now()));
    for (const { run, account, check } of accounts) {
      const client = check();
      try {
        run.heldAfterTtl = await held(client, account);
      } finally {
        client.disconnect();
      }
    }
  }
  if (phases.includes('kill')) {
    const mock = await startMockBackMarket({ scale, listings: 100_000, latency: [10, 150] });
    try {
      report.kill = await leaseReturn({ redis, account: `bm-kill-${process.pid}`, mock });
    } finally {
      await mock.close();
    }
  }
  if (phases.includes('memory')) {
    report.memory = [];
    for (const rt of ['node', 'bun', 'python']) {
      const w = worker(200, rt, { TC_MEMORY: String(memoryRequests) });
      report.memory.push(await w.first);
    }
  }
  report.real = { global: { max: 200, perMs: 10_000 / scale }, catalog: { max: 20, perMs: 10_000 / scale }, competitor: { max: 2, perMs: 1_000 / scale } };
  report.probeCeiling = config.limits.catalog.max / 2 / (config.limits.catalog.per / 1000);
} finally {
  for (const stop of cleanup) await stop().catch(() => {});
  await redis.stop();
}
for (const r of report.runs) {
  const admissions = r.results.reduce((n, w) => n + Object.values(w.status).reduce((a, b) => a + b, 0), 0);
  const over = Object.keys(report.real).filter((k) => r.peak[k] > config.limits[k].max);
  const rss = r.results.map((w) => `${w.runtime} ${(w.rssStart / 2 ** 20).toFixed(0)}->${(w.rssEnd / 2 ** 20).toFixed(0)}`).join(', ');
  console.error(
    `${r.phase} (round ${r.round}): ${admissions} admissions in ${(r.elapsedMs / 1000).toFixed(1)} s, violations ${over.length} (peak ${JSON.stringify(r.peak)}), 429s ${r.tooMany}` +
      (r.injected ? ` (and ${r.injected} injected, requests sent into their pauses ${r.sentIntoPause})` : '') + ', ' +
      `unresolved ${r.results.reduce((n, w) => n + w.unresolved, 0)}, errors ${r.results.reduce((n, w) => n + w.errors.length, 0)}, ` +
      `held after the TTL ${JSON.stringify(r.heldAfterTtl)}, events ${JSON.stringify(r.events)}; resident MB ${rss}`,
  );
}
if (report.kill) console.error(`kill: ${JSON.stringify(report.kill)}`);
for (const m of report.memory ?? []) {
  console.error(`memory ${m.runtime}: ${m.requests} in-memory requests, resident MB ${(m.rssStart / 2 ** 20).toFixed(1)} -> ${(m.rssHalf / 2 ** 20).toFixed(1)} (halfway) -> ${(m.rssEnd / 2 ** 20).toFixed(1)}`);
}
// The verdict: anything here fails the campaign.
const failures = [];
for (const r of report.runs) {
  const at = `${r.phase} (round ${r.round})`;
  if (r.tooMany > 0) failures.push(`${at}: the API answered 429 ${r.tooMany} times ${JSON.stringify(r.byScope)}`);
  for (const k of Object.keys(report.real)) if (r.peak[k] > config.limits[k].max) failures.push(`${at}: ${r.peak[k]} on ${k} in one window (max ${config.limits[k].max})`);
  for (const w of r.results) {
    if (w.unresolved > 0) failures.push(`${at}: worker ${w.worker} (${w.runtime}) left ${w.unresolved} requests unresolved`);
    if (w.errors.length > 0) failures.push(`${at}: worker ${w.worker} (${w.runtime}) failed: ${w.errors.join(', ')}`);
  }
  if (r.sentIntoPause > 0) failures.push(`${at}: ${r.sentIntoPause} requests reached a scope while a Retry-After ran on it`);
  if (r.phase === 'burst' && r.injectedPauses === 0) failures.push(`${at}: no 429 was injected (the run ended before the first burst)`);
  if (r.probes !== RUNTIMES.length * probes) failures.push(`${at}: ${r.probes} of ${RUNTIMES.length * probes} probes`);
  if (r.heldAfterTtl && (r.heldAfterTtl.leases > 0 || r.heldAfterTtl.reserved > 0)) failures.push(`${at}: still held a lease TTL after the run: ${JSON.stringify(r.heldAfterTtl)}`);
}
if (report.kill && (report.kill.after.leases > 0 || report.kill.after.reservations > 0 || report.kill.returnedMs > report.kill.ttlMs + 500)) {
  failures.push(`kill: capacity not back within the TTL: ${JSON.stringify(report.kill)}`);
}
// No growth beyond noise: over the second half of the requests, at most 16 MB (a leak of 32 bytes a
// request over 500k would show).
for (const m of report.memory ?? []) {
  if (m.rssEnd - m.rssHalf > 16 * 2 ** 20) failures.push(`memory ${m.runtime}: resident memory grew ${((m.rssEnd - m.rssHalf) / 2 ** 20).toFixed(1)} MB over the second half`);
}
report.failures = failures;
console.error(failures.length === 0 ? 'campaign: every check passed' : `campaign FAILED:\n  ${failures.join('\n  ')}`);
console.log(JSON.stringify(report));
process.exitCode = failures.length === 0 ? 0 : 1;
