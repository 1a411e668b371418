// Metrics through prom-client: a real /metrics endpoint on 127.0.0.1 serving a prom-client
// registry with the controller's families registered; what it serves is what the core writes, and
// Prometheus's own parser and linter (`promtool check metrics`, Debian's prometheus package, which
// scripts/test.sh installs) accepts it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { Registry } from 'prom-client';
import { test } from '../../js/test/harness.mjs';
import Redis from 'ioredis';
import { startRedis } from '../../js/test/redis-server.mjs';
import { SharedTrafficControl, TrafficControl, Priority, registerMetrics } from '../index.mjs';

/** Prometheus's own reading of an exposition: `promtool check metrics` (parse errors and lint). */
function promtoolAccepts(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.ok(!r.error, `promtool: ${r.error?.message} (scripts/test.sh installs Debian's prometheus package)`);
  assert.equal(r.status, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
}

/** Families whose value moves with the clock between two readings. */
const MOVING = /^traffic_control_limit_(next_free|pause_remaining)_seconds/;

test('prom-client: a scrape of a real endpoint serves the core families and values', async () => {
  const tc = new TrafficControl({
    limits: { global: { kind: 'window', max: 2, per: 100 } },
    global: ['global'],
    routes: [{ name: 'catalog', path: '^/catalog' }],
  });
  await Promise.all([1, 2, 3].map((i) => tc.schedule({ url: `https://api.example.com/catalog/${i}`, priority: Priority.HIGH }, () => i)));
  await assert.rejects(tc.schedule({ url: 'https://api.example.com/catalog/x', cost: 3 }, () => 0), { code: 'COST_EXCEEDS_CAPACITY' });

  const registry = new Registry();
  registerMetrics(tc, registry);
  const server = http.createServer(async (_req, res) => {
    res.setHeader('content-type', registry.contentType);
    res.end(await registry.metrics());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const res = await fetch(`http://127.0.0.1:${server.address().port}/metrics`);
    assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    const served = body.split('\n').filter((l) => l && !MOVING.test(l));
    const core = tc.metricsText().split('\n').filter((l) => l && !MOVING.test(l));
    promtoolAccepts(body);
    assert.deepEqual(new Set(served), new Set(core));
    assert.ok(served.includes('traffic_control_requests_total{route="catalog",priority="high",result="went_after_wait"} 1'));
    assert.ok(served.includes('traffic_control_rejected_total{route="catalog",priority="normal",code="COST_EXCEEDS_CAPACITY"} 1'));
  } finally {
    server.close();
  }
});

test('prom-client: a shared controller registers with a promise and each scrape reads Redis once', async () => {
  const redisServer = await startRedis();
  const redis = new Redis({ port: redisServer.port, host: '127.0.0.1' });
  let trips = 0;
  try {
    const tc = new SharedTrafficControl(
      { limits: { global: { kind: 'window', max: 5, per: '1s', hold: 'go' } }, global: ['global'], routes: [{ name: 'catalog', path: '^/catalog' }] },
      { redis, account: 'prom', onRoundTrip: () => trips++ },
    );
    await Promise.all([1, 2, 3].map((i) => tc.schedule({ url: `/catalog/${i}` }, () => i)));
    const registry = new Registry();
    await registerMetrics(tc, registry);
    const before = trips;
    const body = await registry.metrics();
    promtoolAccepts(body);
    const served = body.split('\n');
    assert.equal(trips, before + 1, 'one round trip for the whole scrape');
    assert.ok(served.includes('traffic_control_requests_total{route="catalog",priority="normal",result="went_at_once"} 3'), served.join('\n'));
    assert.ok(served.includes('traffic_control_limit_used{limit="global"} 3'));
    assert.ok(served.includes('traffic_control_queue_depth{priority="normal"} 0'));
    await tc.close();
  } finally {
    redis.disconnect();
    await redisServer.stop();
  }
});
