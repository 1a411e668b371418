// The what-if simulator from JavaScript: the same library as the traffic-control-sim command,
// through the addon. Presets, a comparison, a recorded event log, the page, and errors by code.
import assert from 'node:assert/strict';
import { test } from '../../js/test/harness.mjs';
import { TrafficControl, TrafficControlError, simulate } from '../index.mjs';

test('simulate: the backmarket preset against Back Market as it counts: no 429, every priority reported', () => {
  const sim = simulate({ config: 'backmarket', workload: 'backmarket', server: 'backmarket' });
  assert.equal(sim.reports.length, 1);
  const [r] = sim.reports;
  assert.equal(r.label, 'backmarket');
  assert.equal(r.server.refused, 0);
  for (const w of r.server.windows) assert.ok(w.peak <= w.max, `${w.name}: ${w.peak} <= ${w.max}`);
  assert.deepEqual(r.priorities.map((p) => p.name), ['critical', 'high', 'normal', 'low']);
  for (const p of r.priorities) assert.ok(p.p50_ms <= p.p95_ms && p.p95_ms <= p.p99_ms && p.p99_ms <= p.max_ms);
  assert.equal(r.arrived, r.streams.reduce((n, s) => n + s.arrived, 0));
  assert.match(sim.text, /== server \(counted at arrival\) ==/);
  assert.equal(sim.html, undefined);
});

test('simulate: --compare in JavaScript, with overrides and a page', () => {
  const sim = simulate({
    configs: ['baselinker', { preset: 'baselinker', env: { BASELINKER_RATE_LIMIT_REQUESTS_MAX_REQUESTS: '110' }, label: 'loose' }],
    workload: { duration: '3m', streams: [{ name: 'orders', tenant: 'shop-a', rate: 2, request: { method: 'POST', url: 'https://api.baselinker.com/connector.php' } }] },
    server: 'baselinker',
    html: true,
  });
  assert.deepEqual(sim.reports.map((r) => r.label), ['baselinker', 'loose']);
  assert.equal(sim.reports[0].server.refused, 0);
  assert.ok(sim.reports[1].server.refused > 0, '110 a minute against 100 blocks the token');
  assert.equal(sim.reports[0].tenants[0].name, 'shop-a');
  assert.match(sim.html, /^<!doctype html>/);
  assert.match(sim.html, /data-chart="utilisation"/);
});

test('simulate: an event log recorded from a controller replays its requests', async () => {
  const tc = new TrafficControl('backmarket');
  const lines = [];
  tc.on((e) => lines.push(JSON.stringify({ timestamp_ms: e.timestampMs, request_id: e.requestId, endpoint: e.endpoint, priority: e.priority, status: e.type })));
  await Promise.all(Array.from({ length: 12 }, (_, i) => tc.schedule({ url: `https://www.backmarket.fr/ws/listings/${i}?key=SECRET` }, () => i)));
  tc.close();
  const sim = simulate({ config: 'backmarket', workload: { events: lines.join('\n') } });
  assert.equal(sim.reports[0].arrived, 12);
  assert.equal(sim.reports[0].went, 12);
});

test('simulate: bad input names its field, with a code', () => {
  assert.throws(
    () => simulate({ config: 'backmarket', workload: { duration: '1m', streams: [{ name: 's', rate: 0, request: { url: '/a' } }] } }),
    (e) => e instanceof TrafficControlError && e.code === 'INVALID_ARGUMENT' && /workload\.streams\[0\]\.rate/.test(e.message),
  );
  assert.throws(
    () => simulate({ config: 'nope', workload: 'backmarket' }),
    (e) => e instanceof TrafficControlError && e.code === 'CONFIG' && /unknown preset "nope"/.test(e.message),
  );
});
