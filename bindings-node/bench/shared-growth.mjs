// The shared store against its peers and against its own fleet, on one redis-server on loopback
// (started here), in one run:
//
// 1. Uncontended admissions: ours (acquire + complete, one window), rate-limiter-flexible's
//    `consume` and Bottleneck's clustering (its Redis datastore), from 1 and from 4 processes:
//    admissions per second, and Redis CPU per admission from `INFO commandstats` (the scripts'
//    usec, over the admissions made: all three send only scripts).
// 2. Growth: the cost of one admission while 10 / 1,000 / 10,000 waiters are registered on a full
//    limit, and while as many reservations are live: a waiter asking on the full limit, and a
//    request on a free limit (every request also takes the global limit, as every preset has one).
//    Redis usec per call (commandstats) and the client's median latency.
//
//   node bench/shared-growth.mjs [--quick]
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import Bottleneck from 'bottleneck';
import Redis from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { SharedTrafficControl } from '../index.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';

const { native } = createRequire(import.meta.url)('../native.cjs');
const quick = process.argv.includes('--quick');
const N = quick ? 300 : 3_000;
const SIZES = quick ? [10, 1_000] : [10, 1_000, 10_000];
const HOUR = 3_600_000;
const window = (max) => ({ kind: 'window', max, per: HOUR, hold: 'go' });

const peerConfig = { limits: { api: window(1_000_000_000) }, global: ['api'] };

/** One process's uncontended admissions with `who`; returns admissions per second. */
async function admissions(who, port, account) {
  const redis = new Redis({ port, host: '127.0.0.1' });
  let one;
  let close = async () => {};
  if (who === 'traffic-control') {
    const tc = new SharedTrafficControl(peerConfig, { redis, account, wake: false });
    one = async () => (await tc.acquire({ url: '/x' })).complete({ status: 200 });
  } else if (who === 'rate-limiter-flexible') {
    const limiter = new RateLimiterRedis({ storeClient: redis, points: 1_000_000_000, duration: 3600, keyPrefix: account });
    one = () => limiter.consume('api', 1);
  } else {
    const limiter = new Bottleneck({ id: account, datastore: 'ioredis', clientOptions: { host: '127.0.0.1', port }, reservoir: 1_000_000_000 });
    one = () => limiter.schedule(async () => 0);
    close = () => limiter.disconnect();
  }
  await one(); // scripts loaded, connections made
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await one();
  const perSecond = N / ((performance.now() - t0) / 1000);
  await close();
  redis.disconnect();
  return perSecond;
}

if (process.env.TC_GROWTH_CHILD) {
  const perSecond = await admissions(process.env.TC_GROWTH_WHO, Number(process.env.TC_GROWTH_PORT), process.env.TC_GROWTH_ACCOUNT);
  process.send({ perSecond });
  process.exit(0);
}

/**
 * Redis usec spent in scripts since the last reset: EVALSHA / EVAL (/ FCALL), which is all that
 * every contender here sends (the commands a script calls are listed again on their own lines, and
 * included in the script's time, so they are not added).
 */
async function redisUsec(redis) {
  const info = await redis.info('commandstats');
  let usec = 0;
  for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval|fcall):calls=\d+,usec=(\d+)/gm)) usec += Number(m[1]);
  return usec;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

const server = await startRedis();
const redis = new Redis({ port: server.port, host: '127.0.0.1' });
try {
  console.log(`shared store bench: ${N} uncontended admissions per process; growth at ${SIZES.join(' / ')} waiters and reservations; redis-server on loopback`);
  console.log('\n1. uncontended admissions (one window, hold "go")');
  console.log('   who                     procs   admissions/s   Redis us/admission');
  const us = {};
  for (const who of ['traffic-control', 'rate-limiter-flexible', 'bottleneck']) {
    for (const procs of [1, 4]) {
      const account = `peer-${who}-${procs}-${process.pid}`;
      await redis.config('RESETSTAT');
      const rates = await Promise.all(
        Array.from({ length: procs }, () => {
          const child = fork(fileURLToPath(import.meta.url), [], {
            env: { ...process.env, TC_GROWTH_CHILD: '1', TC_GROWTH_WHO: who, TC_GROWTH_PORT: String(server.port), TC_GROWTH_ACCOUNT: account },
          });
          return new Promise((resolve, reject) => {
            child.once('message', (m) => resolve(m.perSecond));
            child.once('exit', (code) => code && reject(new Error(`bench child exited ${code}`)));
          });
        }),
      );
      const perAdmission = (await redisUsec(redis)) / ((N + 1) * procs);
      if (procs === 1) us[who] = perAdmission;
      const total = rates.reduce((a, b) => a + b, 0);
      console.log(`   ${who.padEnd(22)}  ${String(procs).padStart(5)}   ${Math.round(total).toLocaleString('en').padStart(12)}   ${perAdmission.toFixed(1).padStart(18)}`);
    }
  }
  const ratio = us['traffic-control'] / us['rate-limiter-flexible'];
  console.log(`   Redis CPU per admission, ours / rate-limiter-flexible's: ${ratio.toFixed(2)}x (target <= 1.5x: ${ratio <= 1.5 ? 'met' : 'not met'})`);

  console.log('\n2. growth: one admission while others wait or hold reservations (every request also takes "global")');
  console.log('   registered   held by        full-limit waiter: us/call  median ms   free-limit request: us/call  median ms');
  const config = {
    limits: { global: window(1_000_000_000), full: window(1), free: window(1_000_000_000), spare: window(1_000_000_000) },
    global: ['global'],
    routes: [
      { name: 'full', path: '^/full', limits: ['full'] },
      { name: 'free', path: '^/free', limits: ['free'] },
      { name: 'spare', path: '^/spare', limits: ['spare'] },
    ],
    reservation_ttl: HOUR,
  };
  const sha = native.sharedScript()[1];
  const rows = {};
  for (const kind of ['waiters', 'reservations']) {
    for (const size of SIZES) {
      const account = `growth-${kind}-${size}-${process.pid}`;
      const options = (tag) => JSON.stringify({ account, processTag: tag, waiterTtl: HOUR, wake: false, learnBudgets: false });
      const driver = native.driverCreate(JSON.stringify(config), options('fill'));
      const tc = new SharedTrafficControl(config, { redis, account, wake: false, waiterTtl: HOUR });
      await (await tc.acquire({ url: '/full' })).complete({ status: 200 }); // the full limit's one slot
      /** The admit call the driver makes for `request` (its claim registered under a new waiter id). */
      const admitCall = (request, d = driver) => {
        const step = (input) => JSON.parse(native.driverStep(d, 0, JSON.stringify(input)));
        const a = step({ input: 'acquire', request });
        const run = a.outputs.find((o) => o.output === 'run');
        step({ input: 'cancel', handle: a.result }); // its withdraw is not run: the claim stays
        return run;
      };
      const target = (url) => ({ http: { method: 'GET', url } });
      const fill = kind === 'waiters' ? { target: target('/full') } : { target: target('/spare'), reserve: [{ target: target('/spare'), limits: [], cost: 1 }] };
      for (let done = 0; done < size; ) {
        const batch = redis.pipeline();
        for (let i = 0; i < Math.min(500, size - done); i++) {
          const run = admitCall(fill);
          batch.evalsha(sha, run.keys.length, ...run.keys, ...run.args);
        }
        const n = Math.min(500, size - done);
        await batch.exec();
        done += n;
      }
      // A waiter asking on the full limit (a claim of its own each time: few beside `size`).
      const M = Math.max(10, Math.min(200, size / 10));
      const probe = native.driverCreate(JSON.stringify(config), options('probe'));
      const waiterMs = [];
      await redis.config('RESETSTAT');
      for (let i = 0; i < M; i++) {
        const run = admitCall({ target: target('/full') }, probe);
        const t0 = performance.now();
        await redis.evalsha(sha, run.keys.length, ...run.keys, ...run.args);
        waiterMs.push(performance.now() - t0);
      }
      const waiterUs = (await redisUsec(redis)) / M;
      // A request on a free limit, through the controller.
      const freeMs = [];
      await redis.config('RESETSTAT');
      for (let i = 0; i < M; i++) {
        const t0 = performance.now();
        await (await tc.acquire({ url: '/free' })).complete({ status: 200 });
        freeMs.push(performance.now() - t0);
      }
      const freeUs = (await redisUsec(redis)) / M;
      rows[`${kind}-${size}`] = { waiterUs, freeUs };
      console.log(
        `   ${size.toLocaleString('en').padStart(10)}   ${kind.padEnd(13)}  ${waiterUs.toFixed(0).padStart(26)}  ${median(waiterMs).toFixed(2).padStart(9)}   ${freeUs.toFixed(0).padStart(27)}  ${median(freeMs).toFixed(2).padStart(9)}`,
      );
      await redis.flushall();
    }
  }
  const lo = SIZES[0];
  const hi = SIZES[SIZES.length - 1];
  for (const kind of ['waiters', 'reservations']) {
    const a = rows[`${kind}-${lo}`];
    const b = rows[`${kind}-${hi}`];
    const g = Math.max(b.waiterUs / a.waiterUs, b.freeUs / a.freeUs);
    console.log(`   growth ${lo} -> ${hi} ${kind}: ${g.toFixed(1)}x (target <= 2x: ${g <= 2 ? 'met' : 'not met'})`);
  }
} finally {
  redis.disconnect();
  await server.stop();
}
