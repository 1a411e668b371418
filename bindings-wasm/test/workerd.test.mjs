// The package in Cloudflare's real runtime (workerd from npm), installed from its tarball and
// bundled with the `workerd` export condition: a worker limiting its outgoing fetches keeps its
// state across requests and never exceeds the API's limit; a Durable Object coordinates one
// account's limits for every request of a worker.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, before, after, slowTest as test } from '../../js/test/harness.mjs';
import { startRedis } from '../../js/test/redis-server.mjs';
import { startMockApi } from './support/mock-api.mjs';
import { installIntoTempProject, startWorker } from './support/workerd.mjs';

const example = (name) => fileURLToPath(new URL(`../examples/workers/${name}`, import.meta.url));

// The API allows 5 requests in any 400 ms, counted at arrival; the worker's limit keeps a time
// margin for the spread between admission and arrival.
const API = { max: 5, perMs: 400 };
const CONFIG = { limits: { api: { kind: 'window', max: 5, per: 450 } }, global: ['api'] };
const N = 30;

let dir;
before(() => {
  dir = installIntoTempProject();
});

/** Sends `N` requests at once through the worker; returns the statuses and the time taken. */
async function flood(url) {
  const t0 = performance.now();
  const statuses = await Promise.all(
    Array.from({ length: N }, (_, i) => fetch(`${url}/items/${i}?key=secret`).then(async (r) => (await r.text(), r.status))),
  );
  return { statuses, ms: performance.now() - t0 };
}

/** Two floods through the worker: every request answered 200, the API never over its limit, and each flood slowed by the limit. */
async function twoFloods(url, api) {
  const first = await flood(url);
  const second = await flood(url);
  assert.deepEqual([...first.statuses, ...second.statuses], Array(2 * N).fill(200));
  assert.equal(api.stats.violations, 0, 'the API never answered 429');
  assert.ok(api.stats.peak <= API.max, `peak ${api.stats.peak} in ${API.perMs} ms`);
  // N requests at 5 per 450 ms take at least (N/5 - 1) windows: the limit binds.
  assert.ok(first.ms >= (N / 5 - 1) * 450 - 5, `${first.ms} ms`);
  return { first, second };
}

for (const [name, file, durableObject] of [
  ['a worker limits its outgoing fetches; state lives across requests in its isolate', 'limited-fetch.mjs', undefined],
  ['a Durable Object coordinates one account\'s limits for all requests of a worker', 'durable-object.mjs', 'AccountLimits'],
]) {
  describe(file, () => {
    let api;
    let worker;
    before(async () => {
      api = await startMockApi(API);
      worker = await startWorker(dir, example(file), {
        bindings: { API_URL: api.url, TRAFFIC_CONTROL_CONFIG: CONFIG },
        durableObject,
      });
    });
    after(async () => {
      await worker?.stop();
      await api?.close();
    });

    test(name, async () => {
      const { first, second } = await twoFloods(worker.url, api);
      // One controller saw every request of both floods, and the second flood's first requests
      // waited for the window the first one filled (a fresh controller would send 5 at once).
      const state = await (await fetch(`${worker.url}/__traffic-control`)).json();
      assert.equal(state.requests, 2 * N);
      assert.equal(state.snapshot.limits[0].name, 'api');
      assert.ok(second.ms >= (N / 5 - 1) * 450 + 100, `${second.ms} ms`);
      const ceiling = (2 * N) / ((2 * N / 5 - 1) * 0.45);
      console.log(`${file}: ${2 * N} requests, ${(first.ms / 1000).toFixed(2)} s + ${(second.ms / 1000).toFixed(2)} s, ` +
        `${((2 * N * 1000) / (first.ms + second.ms)).toFixed(1)}/s (limit's ceiling ${ceiling.toFixed(1)}/s), API peak ${api.stats.peak}/${API.max}, 0 × 429`);
    });
  });
}

describe('shared-store.mjs', () => {
  let api;
  let redis;
  let worker;
  before(async () => {
    api = await startMockApi(API);
    redis = await startRedis();
    worker = await startWorker(dir, example('shared-store.mjs'), {
      bindings: { API_URL: api.url, REDIS_URL: redis.url, TRAFFIC_CONTROL_ACCOUNT: 'worker-test', TRAFFIC_CONTROL_CONFIG: CONFIG },
    });
  });
  after(async () => {
    await worker?.stop();
    await redis?.stop();
    await api?.close();
  });

  test('a worker shares its limits through Redis over cloudflare:sockets: every request its own connection and controller', async () => {
    const { first, second } = await twoFloods(worker.url, api);
    // No controller outlives its request: the window in Redis made the second flood wait too.
    assert.ok(second.ms >= (N / 5 - 1) * 450 - 5, `${second.ms} ms`);
    const { snapshot } = await (await fetch(`${worker.url}/__traffic-control`)).json();
    assert.equal(snapshot.limits[0].name, 'api');
    assert.ok(redis.cli('--scan', '--pattern', 'tc:{worker-test}:*').length > 0, 'the state is in Redis under the account');
    const ceiling = (2 * N) / ((2 * N / 5 - 2) * 0.45);
    console.log(`shared-store.mjs: ${2 * N} requests, ${(first.ms / 1000).toFixed(2)} s + ${(second.ms / 1000).toFixed(2)} s, ` +
      `${((2 * N * 1000) / (first.ms + second.ms)).toFixed(1)}/s (limit's ceiling ${ceiling.toFixed(1)}/s), API peak ${api.stats.peak}/${API.max}, 0 × 429`);
  });
});
