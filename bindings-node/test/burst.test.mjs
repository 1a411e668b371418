// A burst of 429s the limits did not cause (the mock answers the next 20 requests 429 without
// Retry-After) among 40 requests sent before the first answer, while a probe's Peak waits on its
// reservation:
// the pause never exceeds max_block (jitter included), the snapshot shows it with its reason, a
// CRITICAL revert goes as soon as the server's own block ends, the Peak's reservation outlives its
// ttl while the pause holds it back, and everything ends with 200 and no real 429.
import assert from 'node:assert/strict';
import { slowTest as test } from '../../js/test/harness.mjs';
import { TrafficControl } from '../index.mjs';
import { startMockBackMarket } from './support/mock-backmarket.mjs';

const SCALE = 10;
const BLOCK = 10_000 / SCALE; // the feedback block (Back Market's 10 s), scaled
const MAX_BLOCK = 30_000 / SCALE;

test('a burst of 429s: pauses stay within max_block, CRITICAL goes when the server allows, no reservation lapses', async () => {
  const mock = await startMockBackMarket({ scale: SCALE, listings: 200, latency: [10, 150] });
  const env = {
    BM_RATE_LIMIT_GLOBAL_PER_MS: String(10_000 / SCALE),
    BM_RATE_LIMIT_CATALOG_PER_MS: String(10_000 / SCALE),
    BM_RATE_LIMIT_COMPETITOR_PER_MS: String(1_000 / SCALE),
    BM_RATE_LIMIT_FEEDBACK_BLOCK_MS: String(BLOCK),
    BM_RATE_LIMIT_FEEDBACK_MAX_BLOCK_MS: String(MAX_BLOCK),
    BM_RATE_LIMIT_FEEDBACK_MAX_RETRIES: '10',
    // Shorter than one block: only the pause rule keeps the Peak's reservation alive.
    BM_RATE_LIMIT_RESERVATION_TTL_MS: String(BLOCK / 2),
  };
  const tc = new TrafficControl('backmarket', { env });
  const events = [];
  tc.on((e) => events.push(e));
  const post = (id, price, options = {}) =>
    tc.fetch(`${mock.url}/ws/listings/${id}`, { method: 'POST', body: JSON.stringify({ price }), headers: { 'content-type': 'application/json' } }, options);
  const t0 = performance.now();
  let worstPause = 0;
  let sawPause = null;
  const watch = setInterval(() => {
    for (const l of tc.snapshot().limits) {
      if (!l.pause) continue;
      sawPause ??= { limit: l.name, ...l.pause };
      worstPause = Math.max(worstPause, l.pause.until - tc.now());
    }
  }, 5);
  try {
    // A probe's Dip, its Peak reserved, before the burst.
    const peak = tc.reservation({ method: 'POST', url: `${mock.url}/ws/listings/1` });
    assert.equal((await post(1, 1, { reserve: [peak] })).status, 200);
    // 40 requests sent before the first answer (global only: 150 per window), 20 of them 429.
    mock.force(20);
    const burst = Array.from({ length: 40 }, (_, i) => tc.fetch(`${mock.url}/ws/orders?page=${i}`));
    // The Peak, held back by the pause, and a CRITICAL revert, both sent while the burst answers.
    await new Promise((r) => setTimeout(r, 200));
    const peakDone = post(1, 500, { priority: 'high', spend: peak });
    const revertSent = performance.now();
    const revert = post(150, 499, { priority: 'critical' }).then((res) => ({ res, ms: performance.now() - revertSent }));
    const results = await Promise.all(burst);
    const [peakRes, reverted] = await Promise.all([peakDone, revert]);
    clearInterval(watch);
    const elapsed = performance.now() - t0;
    const count = (s) => events.filter((e) => e.status === s).length;
    console.log(
      `burst: ${mock.stats.forced} forced 429s, ${count('rate_limited')} rate_limited events, worst pause ${worstPause.toFixed(0)} ms ` +
        `(max_block ${MAX_BLOCK}), first pause ${JSON.stringify(sawPause)}, CRITICAL in ${reverted.ms.toFixed(0)} ms, ` +
        `all done in ${elapsed.toFixed(0)} ms`,
    );
    assert.equal(mock.stats.forced, 20);
    assert.ok(results.every((r) => r.status === 200), `statuses ${results.map((r) => r.status)}`);
    assert.equal(peakRes.status, 200);
    assert.equal(reverted.res.status, 200);
    assert.equal(mock.stats.tooMany, 0, `a real limit was exceeded: ${JSON.stringify(mock.stats.byScope)}`);
    assert.ok(sawPause && ['block', 'backoff'].includes(sawPause.reason), `the snapshot showed the pause: ${JSON.stringify(sawPause)}`);
    assert.ok(worstPause <= MAX_BLOCK + 1, `a pause of ${worstPause} ms, past max_block`);
    // The burst counted once: far from the 20 doublings that stalled everything.
    assert.ok(elapsed < 4 * MAX_BLOCK, `the burst took ${elapsed} ms`);
    // CRITICAL waits only for the server's block (one block from the last 429 of the burst), not
    // for any escalation.
    assert.ok(reverted.ms <= BLOCK + 600, `CRITICAL waited ${reverted.ms} ms`);
    assert.equal(count('reservation_expired'), 0, 'the Peak lost its reservation during the pause');
    assert.deepEqual(mock.atProbePrice(), []);
  } finally {
    clearInterval(watch);
    await mock.close();
  }
});
