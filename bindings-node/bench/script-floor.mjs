// Where the shared store's Redis CPU goes on an uncontended admission, against the floor any Lua
// script pays: one redis-server (started here), calls pipelined 100 at a time so that scheduling
// noise stays out, Redis CPU (INFO cpu, user + sys) per call, each script alone in the script cache.
//
//   node bench/script-floor.mjs [--calls 20000]
//
// Rows: rate-limiter-flexible's `consume` script (taken from the package); an empty script called
// with the keys and arguments our admission sends (what an EVALSHA of that size costs before any
// work); our admission (one window, hold "go", the call a host sends, captured from the package);
// then Lua operations inside Redis, per operation (1,000 per call): a redis.call, a number passed
// to redis.call, string.format('%d'), tonumber of a 16-digit string.
import { createRequire } from 'node:module';
import Redis from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { SharedTrafficControl } from '../index.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const calls = arg('calls', 20_000);
const server = await startRedis();
const redis = new Redis({ port: server.port, host: '127.0.0.1' });

async function cpu() {
  const info = await redis.info('cpu');
  return Number(info.match(/used_cpu_user:([\d.]+)/)[1]) + Number(info.match(/used_cpu_sys:([\d.]+)/)[1]);
}

/** Redis CPU µs per call of `script`, called with `args(i)` (numKeys, keys..., args...). */
async function measure(script, args, n = calls) {
  await redis.script('FLUSH');
  const sha = await redis.script('LOAD', script);
  await redis.evalsha(sha, ...args(0));
  const c0 = await cpu();
  for (let b = 0; b < n / 100; b++) {
    const p = redis.pipeline();
    for (let i = 0; i < 100; i++) p.evalsha(sha, ...args(b * 100 + i + 1));
    await p.exec();
  }
  return ((await cpu()) - c0) * 1e6 / n;
}

try {
  // The call a host sends for an uncontended admission: captured from the package's own client.
  let captured;
  const recorder = {
    evalsha: (sha, n, ...rest) => {
      captured ??= [n, ...rest];
      return redis.evalsha(sha, n, ...rest);
    },
    eval: (script, n, ...rest) => redis.eval(script, n, ...rest),
  };
  const config = { limits: { api: { kind: 'window', max: 1_000_000_000, per: 3_600_000, hold: 'go' } }, global: ['api'] };
  const tc = new SharedTrafficControl(config, { redis: recorder, account: 'floor', wake: false });
  await (await tc.acquire({ url: '/x' })).complete({ status: 200 });
  captured = undefined;
  await (await tc.acquire({ url: '/x' })).complete({ status: 200 });
  const ours = createRequire(import.meta.url)('../native.cjs').native.sharedScript()[0];

  const rlf = new RateLimiterRedis({ storeClient: redis, points: 1_000_000_000, duration: 3600, keyPrefix: 'floor-rlf' });
  const rows = [];
  const rlfUs = await measure(rlf._incrTtlLuaScript, () => [1, 'floor-rlf:api', 1, 3600, 1_000_000_000, 3600]);
  rows.push(["rate-limiter-flexible's consume (3 commands)", rlfUs]);
  rows.push(['an empty script, our keys and arguments', await measure("return {1, 1, '1', 1}", () => captured)]);
  const oursUs = await measure(ours, () => captured);
  rows.push(['ours: an uncontended admission (8 commands)', oursUs]);
  const loop = (body) => `for i = 1, 1000 do ${body} end return 1`;
  const base = await measure(loop('local x = i'), () => [0], calls / 10);
  const perOp = async (body) => ((await measure(loop(body), () => [0], calls / 10)) - base) / 1000;
  const ops = [
    ["redis.call('ECHO', 'x')", "redis.call('ECHO', 'x')"],
    ['a number passed to redis.call', "redis.call('ECHO', 1796617609265804 + i)"],
    ["string.format('%d', n)", "local s = string.format('%d', 1796617609265804 + i)"],
    ["string.format('%.0f', n)", "local s = string.format('%.0f', 1796617609265804 + i)"],
    ['tonumber of a 16-digit string', "local s = tonumber('1796617609265804')"],
  ];
  console.log(`Redis CPU per call, ${calls} calls pipelined 100 at a time, redis-server on loopback`);
  for (const [what, us] of rows) console.log(`  ${what.padEnd(48)} ${us.toFixed(1).padStart(7)} us`);
  console.log(`  ours / rate-limiter-flexible's: ${(oursUs / rlfUs).toFixed(1)}x`);
  console.log('Lua inside Redis, per operation');
  for (const [what, body] of ops) console.log(`  ${what.padEnd(48)} ${(await perOp(body)).toFixed(2).padStart(7)} us`);
} finally {
  redis.disconnect();
  await server.stop();
}
