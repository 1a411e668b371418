// The first user's workload, end to end: the package installed from its tarball into a fresh
// project with Bun, the Elysia example app on it, a mock Back Market API that answers 429 and blocks
// like the real one. Time runs ten times faster than the real API's windows.
import assert from 'node:assert/strict';
import { slowTest as test } from '../../js/test/harness.mjs';
import { runBackMarketScenario } from '../examples/backmarket-load.mjs';

test('60 probes, LOW scans of GET /ws/listings, CRITICAL reverts, 10-150 ms before the API counts: no 429, no listing left at 1 EUR', async () => {
  const r = await runBackMarketScenario({ scale: 10, probes: 60, scans: 100, reverts: 10 });
  console.log(
    `probe throughput ${r.probeThroughput.toFixed(2)}/s of a ${r.probeCeiling.toFixed(2)}/s ceiling ` +
      `(${((100 * r.probeThroughput) / r.probeCeiling).toFixed(0)}%), ${r.serverRequests} requests in ${(r.elapsedMs / 1000).toFixed(1)} s, ` +
      `peaks per window ${JSON.stringify(r.peak)}, revert max ${r.revertMaxMs.toFixed(0)} ms, longest at 1 EUR ${r.probeMaxMs.toFixed(0)} ms`,
  );
  assert.equal(r.tooMany, 0, `the mock answered 429: ${JSON.stringify(r.byScope)}`);
  assert.deepEqual(r.atProbePrice, [], 'listings left at the probe price');
  assert.equal(r.counts.probes, 60);
  assert.equal(r.counts.scans, 100);
  assert.equal(r.counts.reverts, 10);
  // Counted at arrival, after the latency, in the API's windows: a window holds each request until
  // its completion plus per, so the API never counts more than the preset's max, whatever the
  // latency (the margins in count are the seed's, none in time).
  assert.ok(
    r.peak.global <= r.preset.global.max && r.peak.catalog <= r.preset.catalog.max && r.peak.competitor <= r.preset.competitor.max,
    `the preset's limits held at arrival: ${JSON.stringify(r.peak)}`,
  );
  assert.ok(r.probeMaxMs <= r.catalogWindowMs, `a listing stayed at 1 EUR ${r.probeMaxMs} ms, more than one catalog window`);
  assert.ok(r.probeThroughput >= 0.6 * r.probeCeiling, `probe throughput ${r.probeThroughput} near the ceiling ${r.probeCeiling}`);
});
