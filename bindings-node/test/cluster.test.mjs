// The shared store on a Redis Cluster (3 masters, a replica each, started here), through ioredis'
// `Cluster` client, under node --test and bun test: every key of an account carries its hash tag,
// so each script call runs on the one node serving the account's slot. Two controllers never
// exceed the window together, wake-ups reach them across nodes (PUBLISH is cluster-wide), and a
// planned failover of the account's master in the middle of the run loses no admission and
// admits nothing over the limit: the promoted replica had every write. node-redis's `createCluster`
// client works the same (its `evalSha`, `duplicate` and `subscribe`).
import assert from 'node:assert/strict';
import Redis from 'ioredis';
import { createCluster } from 'redis';
import { SharedTrafficControl } from 'traffic-control';
import { slowTest } from '../../js/test/harness.mjs';
import { startRedisCluster } from '../../js/test/redis-server.mjs';

let cluster;
const clients = [];

function client() {
  const c = new Redis.Cluster(cluster.nodes, { redisOptions: { maxRetriesPerRequest: 2 }, clusterRetryStrategy: () => 100 });
  c.on('error', () => {});
  clients.push(c);
  return c;
}

const PER = 300;
const MAX = 5;

/** The most goes within any `span` ms. */
function peak(times, span) {
  const t = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (t[i] - t[j] >= span) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

slowTest('a Redis Cluster: two controllers share one window, wake each other, and ride a failover of the account\'s master', async () => {
  // Started here rather than in a hook: six nodes take longer than Bun's hook timeout.
  cluster = await startRedisCluster({ masters: 3, replicas: 1 });
  try {
    await run();
    await nodeRedis();
  } finally {
    for (const c of clients) c.disconnect();
    await cluster.stop();
  }
}, 120_000);

async function run() {
  const account = 'cluster-acct';
  const slot = cluster.keySlot(`tc:{${account}}:meta`);
  // The default hold (the go until the completion plus per): then the instants the requests were
  // sent, as the API counts them, hold the window exactly, whatever the latency (a reply slowed by
  // the failover included), and the check needs no slack.
  const cfg = { limits: { api: { kind: 'window', max: MAX, per: PER } }, global: ['api'] };
  const [a, b] = [client(), client()].map((redis) => new SharedTrafficControl(cfg, { redis, account, unavailableMaxWait: 20_000 }));
  const goes = [];
  const one = async (tc, i) => {
    const permit = await tc.acquire({ url: `/x/${i}` });
    goes.push(performance.now());
    await permit.complete({ status: 200 });
  };
  // 60 requests, half from each controller, 5 per 300 ms: about 4 s; the failover at about 1 s.
  const all = Promise.all(Array.from({ length: 60 }, (_, i) => one(i % 2 ? a : b, i)));
  await new Promise((r) => setTimeout(r, 1_000));
  const before = goes.length;
  const old = cluster.owners(slot).master;
  const promoted = await cluster.failover(slot);
  assert.notEqual(promoted, old);
  assert.equal(cluster.owners(slot).master, promoted, 'the account\'s slot moved to the promoted replica');
  await all;
  assert.equal(goes.length, 60, 'every request went');
  assert.ok(before > 0 && before < 60, `${before} went before the failover`);
  assert.ok(peak(goes, PER) <= MAX, `at most ${MAX} in any window, saw ${peak(goes, PER)}`);
  assert.ok(a.wakeups + b.wakeups > 0, 'wake-ups crossed the cluster');
  const snap = await a.snapshot();
  assert.equal(snap.limits[0].name, 'api');
  await Promise.all([a.close(), b.close()]);
}

async function nodeRedis() {
  const connect = async () => {
    const c = createCluster({ rootNodes: cluster.nodes.map((n) => ({ url: `redis://${n.host}:${n.port}` })) });
    c.on('error', () => {});
    await c.connect();
    clients.push({ disconnect: () => c.close().catch(() => {}) });
    return c;
  };
  const cfg = { limits: { api: { kind: 'window', max: 2, per: 200 } }, global: ['api'] };
  const [a, b] = [await connect(), await connect()].map((redis) => new SharedTrafficControl(cfg, { redis, account: 'cluster-node-redis' }));
  const goes = [];
  await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const permit = await (i % 2 ? a : b).acquire({ url: `/y/${i}` });
      goes.push(performance.now());
      await permit.complete({ status: 200 });
    }),
  );
  assert.equal(goes.length, 10);
  assert.ok(peak(goes, 200) <= 2, `node-redis: at most 2 in any window, saw ${peak(goes, 200)}`);
  assert.ok(a.wakeups + b.wakeups > 0, 'node-redis: wake-ups crossed the cluster');
  await Promise.all([a.close(), b.close()]);
}
