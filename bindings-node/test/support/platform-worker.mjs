// One process of the multi-tenant platform sharing a BaseLinker token through Redis (driven by
// bindings-py/tests/test_shared_platform.py, which runs the other process in Python): shops flood
// the mock BaseLinker through a SharedTrafficControl, each with `concurrency` requests always
// waiting; a new shop may send one request after `newAt` ms. Prints, as one JSON line, every send
// (shop, ms since `start`, a wall clock both processes share) and the new shop's wait.
//
//   node platform-worker.mjs '{"redisPort": 6379, "account": "...", "config": {...}, "url": "...",
//     "token": "...", "shops": ["shop-b", "noisy"], "concurrency": 30, "start": <epoch ms>,
//     "seconds": 8, "newShop": "shop-new", "newAt": 4000}'
import Redis from 'ioredis';
import { SharedTrafficControl } from '../../index.mjs';

const o = JSON.parse(process.argv[2]);
const redis = new Redis({ port: o.redisPort, host: '127.0.0.1' });
const tc = new SharedTrafficControl(o.config, { redis, account: o.account });
const sends = [];
const failures = [];
const end = o.start + o.seconds * 1000;

async function send(shop) {
  const permit = await tc.acquire({ method: 'POST', url: '/connector.php', tenant: shop });
  sends.push([shop, Date.now() - o.start]);
  try {
    const res = await fetch(o.url, {
      method: 'POST',
      headers: { 'X-BLToken': o.token, 'content-type': 'application/x-www-form-urlencoded' },
      body: `method=getOrders&shop=${shop}`,
    });
    const body = await res.text();
    if (body.includes('ERROR')) failures.push(`${shop}: ${body}`);
    await permit.complete({ status: res.status, headers: [...res.headers], body });
  } catch (e) {
    failures.push(`${shop}: ${e}`);
    await permit.complete();
  }
}

async function loop(shop) {
  while (Date.now() < end) await send(shop);
}

await new Promise((r) => setTimeout(r, Math.max(0, o.start - Date.now())));
const loops = o.shops.flatMap((shop) => Array.from({ length: o.concurrency }, () => loop(shop)));
let newWait = null;
if (o.newShop) {
  loops.push(
    (async () => {
      await new Promise((r) => setTimeout(r, o.start + o.newAt - Date.now()));
      const asked = Date.now();
      await send(o.newShop);
      newWait = sends.find(([s]) => s === o.newShop)[1] - (asked - o.start);
    })(),
  );
}
await Promise.all(loops);
await tc.close();
redis.disconnect();
process.stdout.write(`${JSON.stringify({ sends, failures, newWait })}\n`);
