// One worker process of the cross-process run (crossprocess.mjs): price probes (Dip reserving the
// Peak, Peek, Peak spending the reservation), LOW scans and CRITICAL reverts against the mock Back
// Market API, through the shared store. Prints one JSON line with its results.
//
// TC_REDIS_CLUSTER (comma-separated ports) connects through ioredis' Cluster client instead of one
// server. TC_DEADLINE_MS: a request still unresolved then is reported (`unresolved`) and the
// process ends. TC_MEMORY=n: instead, n requests through the in-memory controller, reporting the
// resident memory at the start, halfway and at the end (a leak shows as growth over the second half).
// TC_RETRIES=n: the config's `feedback.max_retries` (default 3): a request answered 429 is sent
// again on the retry permit `complete()` gives (the driver queued it again behind the store's
// pause); its reservation is made, or spent, once.
import Redis from 'ioredis';
import { SharedTrafficControl, TrafficControl } from '../../index.mjs';

const env = process.env;
const id = Number(env.TC_WORKER);
const runtime = typeof Bun !== 'undefined' ? 'bun' : 'node';
const rss = () => process.memoryUsage().rss;

if (env.TC_MEMORY) {
  const n = Number(env.TC_MEMORY);
  const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1_000_000_000, per: 1000 } }, global: ['api'] });
  const start = rss();
  let half = 0;
  for (let i = 0; i < n; i++) {
    const d = tc.tryAcquire({ method: 'GET', url: `/items/${i % 1000}` });
    if (d.decision !== 'go') throw new Error(`in-memory request ${i}: ${d.decision}`);
    await d.permit.complete({ status: 200 });
    if (i === Math.floor(n / 2)) half = rss();
  }
  console.log(JSON.stringify({ worker: id, runtime, requests: n, rssStart: start, rssHalf: half, rssEnd: rss() }));
  process.exit(0);
}

const ports = env.TC_REDIS_CLUSTER ? env.TC_REDIS_CLUSTER.split(',').map(Number) : null;
const redis = ports
  ? new Redis.Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { redisOptions: { maxRetriesPerRequest: 1 }, clusterRetryStrategy: () => 100 })
  : new Redis({ port: Number(env.TC_REDIS_PORT), host: '127.0.0.1', maxRetriesPerRequest: 1, retryStrategy: () => 100 });
redis.on('error', () => {});
const config = JSON.parse(env.TC_CONFIG);
if (env.TC_RETRIES) config.feedback = { ...config.feedback, max_retries: Number(env.TC_RETRIES) };
const tc = new SharedTrafficControl(config, { redis, account: env.TC_ACCOUNT, unavailableMaxWait: 60_000 });
const base = env.TC_MOCK_URL;
const out = { worker: id, runtime, probes: 0, scans: 0, reverts: 0, errors: [], probeEnds: [], status: {}, started: 0, settled: 0, rssStart: rss() };
const t0 = performance.now();

async function call(method, path, options = {}, body) {
  out.started++;
  try {
    let permit = await tc.acquire({ method, url: path, ...options });
    for (;;) {
      let res;
      let completion;
      try {
        res = await fetch(base + path, { method, body: body && JSON.stringify(body), headers: { 'content-type': 'application/json' } });
        await res.arrayBuffer();
      } finally {
        completion = await permit.complete(res ? { status: res.status, headers: res.headers } : {});
      }
      out.status[res.status] = (out.status[res.status] ?? 0) + 1;
      if (completion.kind === 'retry') {
        permit = completion.permit;
        continue;
      }
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status}`);
      return;
    }
  } finally {
    out.settled++;
  }
}

function report() {
  out.elapsedMs = performance.now() - t0;
  out.unresolved = out.started - out.settled;
  out.rssEnd = rss();
  console.log(JSON.stringify(out));
}
if (env.TC_DEADLINE_MS) {
  setTimeout(() => {
    report();
    process.exit(0);
  }, Number(env.TC_DEADLINE_MS)).unref();
}

async function probe(listing) {
  const peak = tc.reservation({ method: 'POST', url: `/ws/listings/${listing}` });
  await call('POST', `/ws/listings/${listing}`, { reserve: [peak] }, { price: 1 });
  try {
    await call('GET', `/ws/backbox/v1/competitors/${listing}`, { priority: 'high' });
  } finally {
    await call('POST', `/ws/listings/${listing}`, { priority: 'high', spend: peak }, { price: 500 });
  }
  out.probes++;
  out.probeEnds.push(performance.now() - t0);
}

const hold = env.TC_HOLD === '1';
if (hold) {
  // The process to kill: it takes reservations and then hangs, as a crashed caller would.
  for (let i = 0; i < Number(env.TC_PROBES); i++) {
    const peak = tc.reservation({ method: 'POST', url: `/ws/listings/${id * 1000 + i}` });
    // Admitted and sent, never completed: the lease stays with this process until it dies.
    await tc.acquire({ method: 'POST', url: `/ws/listings/${id * 1000 + i}`, reserve: [peak] });
    await fetch(`${base}/ws/listings/${id * 1000 + i}`, { method: 'POST', body: '{"price":1}' }).then((r) => r.arrayBuffer());
  }
  console.log(JSON.stringify({ worker: id, holding: true }));
  setInterval(() => {}, 1 << 30);
} else {
  const work = [];
  for (let i = 0; i < Number(env.TC_PROBES); i++) work.push(probe(id * 1000 + i).catch((e) => out.errors.push(String(e.code ?? e.message))));
  for (let i = 0; i < Number(env.TC_SCANS); i++) {
    work.push(call('GET', `/ws/listings?page=${(i % 7) + 1}`, { priority: 'low' }).then(() => out.scans++, (e) => out.errors.push(String(e.code ?? e.message))));
  }
  for (let k = 0; k < Number(env.TC_REVERTS ?? 0); k++) {
    work.push(
      new Promise((r) => setTimeout(r, 300 * (k + 1))).then(() =>
        call('POST', `/ws/listings/${id * 1000 + 900 + k}`, { priority: 'critical' }, { price: 499 }).then(() => out.reverts++, (e) => out.errors.push(String(e.code ?? e.message))),
      ),
    );
  }
  await Promise.all(work);
  report();
  redis.disconnect();
}
