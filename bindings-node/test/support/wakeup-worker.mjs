// One process of the wake-up test (wakeup.mjs): takes the account's one slot (or window) in turn
// with the other processes, holds it briefly, completes, and asks again. Prints one JSON line: the
// instant of every go and every completion, on the machine's clock (performance.timeOrigin + now),
// so the parent can measure how soon a waiter in another process went once room freed.
import Redis from 'ioredis';
import { SharedTrafficControl } from '../../index.mjs';

const env = process.env;
const redis = new Redis({ port: Number(env.TC_REDIS_PORT), host: '127.0.0.1' });
redis.on('error', () => {});
const tc = new SharedTrafficControl(JSON.parse(env.TC_CONFIG), {
  redis,
  account: env.TC_ACCOUNT,
  waiterTtl: 2_000,
  wake: env.TC_WAKE !== '0',
});
const clock = () => performance.timeOrigin + performance.now();
const rounds = Number(env.TC_ROUNDS);
const holdMs = Number(env.TC_HOLD_MS);
const out = { worker: Number(env.TC_WORKER), turns: [], wakeups: 0 };
// Start together: the parent names the instant.
await new Promise((r) => setTimeout(r, Math.max(0, Number(env.TC_START_AT) - clock())));
for (let i = 0; i < rounds; i++) {
  const permit = await tc.acquire({ method: 'GET', url: '/work' });
  const go = clock();
  await new Promise((r) => setTimeout(r, holdMs));
  const done = clock();
  await permit.complete({ status: 200 });
  out.turns.push({ go, done });
}
out.wakeups = tc.wakeups;
await tc.close();
redis.disconnect();
console.log(JSON.stringify(out));
