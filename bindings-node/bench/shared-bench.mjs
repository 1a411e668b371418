// Bench of the shared store on loopback: admissions per second per process and round trips per
// admission, with 1 and 4 processes on one account (a window wide enough never to make anyone wait:
// this measures the store, not the limit), and with 10 and 1,000 tenants served by weight (each
// admission for the next tenant in turn). Starts its own redis-server.
//
//   node bench/shared-bench.mjs [--quick]
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Redis from 'ioredis';
import { SharedTrafficControl } from '../index.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';

const quick = process.argv.includes('--quick');
const N = quick ? 500 : 5_000;
const base = { limits: { api: { kind: 'window', max: 1_000_000_000, per: '1s', hold: 'go' }, slots: { kind: 'concurrency', max: 1000 } }, global: ['api'], routes: [{ name: 'leased', path: '^/leased', limits: ['slots'] }] };
const tenantsOf = (n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`t${i}`, { weight: 1 + (i % 3) }]));
const configOf = (tenants) => (tenants ? { ...base, tenants: tenantsOf(tenants) } : base);

if (process.env.TC_BENCH_CHILD) {
  const redis = new Redis({ port: Number(process.env.TC_BENCH_PORT), host: '127.0.0.1' });
  let trips = 0;
  const tenants = Number(process.env.TC_BENCH_TENANTS);
  const tc = new SharedTrafficControl(configOf(tenants), { redis, account: process.env.TC_BENCH_ACCOUNT, onRoundTrip: () => trips++ });
  const url = process.env.TC_BENCH_URL;
  const tenant = (i) => (tenants ? { tenant: `t${i % tenants}` } : {});
  await (await tc.acquire({ url })).complete({ status: 200 }); // load the script
  trips = 0;
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await (await tc.acquire({ url, ...tenant(i) })).complete({ status: 200 });
  const s = (performance.now() - t0) / 1000;
  process.send({ perSecond: N / s, tripsPerAdmission: trips / N });
  redis.disconnect();
} else {
  const redis = await startRedis();
  try {
    console.log(`shared store bench, ${N} sequential admissions (acquire + complete) per process, redis-server on loopback`);
    const runs = [['/plain', 0], ['/leased', 0], ['/plain', 10], ['/plain', 1000]];
    for (const [url, tenants] of runs) {
      for (const procs of [1, 4]) {
        const account = `bench-${url.slice(1)}-${tenants}-${procs}-${process.pid}`;
        const results = await Promise.all(
          Array.from({ length: procs }, () => {
            const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, TC_BENCH_CHILD: '1', TC_BENCH_PORT: String(redis.port), TC_BENCH_ACCOUNT: account, TC_BENCH_URL: url, TC_BENCH_TENANTS: String(tenants) } });
            return new Promise((resolve, reject) => {
              child.once('message', resolve);
              child.once('exit', (code) => code && reject(new Error(`bench child exited ${code}`)));
            });
          }),
        );
        const per = results.map((r) => r.perSecond);
        const label = tenants
          ? `window, ${tenants.toLocaleString('en')} tenants by weight`
          : url === '/plain'
            ? 'window only (complete costs nothing)'
            : 'window + concurrency lease (complete releases it)';
        console.log(
          `  ${label.padEnd(48)} ${procs} process(es): ${per.map((p) => Math.round(p).toLocaleString('en')).join(', ')} admissions/s per process, total ${Math.round(per.reduce((a, b) => a + b)).toLocaleString('en')}/s, ${results[0].tripsPerAdmission.toFixed(2)} round trips per admission`,
        );
      }
    }
  } finally {
    await redis.stop();
  }
}
