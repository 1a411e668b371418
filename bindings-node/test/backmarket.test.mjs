// The first user's workload, end to end: the package installed from its tarball into a fresh
// project with Bun, the Elysia example app on it, a mock Back Market API that answers 429 and blocks
// like the real one. Time runs ten times faster than the real API's windows.
import assert from 'node:assert/strict';
import { slowTest as test } from '../../js/test/harness.mjs';
import { runBackMarketScenario } from '../examples/backmarket-load.mjs';

test('60 probes, a flood of LOW scans, CRITICAL reverts: no 429, no listing left at 1 EUR', async () => {
  const r = await runBackMarketScenario({ scale: 10, probes: 60, scans: 400, reverts: 10 });
  console.log(
    `probe throughput ${r.probeThroughput.toFixed(2)}/s of a ${r.probeCeiling.toFixed(2)}/s ceiling ` +
      `(${((100 * r.probeThroughput) / r.probeCeiling).toFixed(0)}%), ${r.serverRequests} requests in ${(r.elapsedMs / 1000).toFixed(1)} s, ` +
      `peaks per window ${JSON.stringify(r.peak)}, revert max ${r.revertMaxMs.toFixed(0)} ms, longest at 1 EUR ${r.probeMaxMs.toFixed(0)} ms`,
  );
  assert.equal(r.tooMany, 0, `the mock answered 429: ${JSON.stringify(r.byScope)}`);
  assert.deepEqual(r.atProbePrice, [], 'listings left at the probe price');
  assert.equal(r.counts.probes, 60);
  assert.equal(r.counts.scans, 400);
  assert.equal(r.counts.reverts, 10);
  // Peaks are counted at arrival, in the real API's windows. The preset admits 150 per 11 s (15
  // for the catalog): more can arrive within 10 s when sends lag their admission (a busy event
  // loop), which is what the preset's margins absorb. The 10x time scale shrinks the one-second
  // margin to 100 ms, within the scheduling noise of a loaded 2-core machine (one CI run saw 151,
  // three runs side by side up to 194), so the bound asserted is the API's own: 200 and 20. The
  // admissions themselves are checked exactly by core's property tests, on a fake clock.
  assert.ok(r.peak.catalog <= 20 && r.peak.global <= 200, `the API's limits held at arrival: ${JSON.stringify(r.peak)}`);
  assert.ok(r.probeThroughput >= 0.7 * r.probeCeiling, `probe throughput ${r.probeThroughput} near the ceiling ${r.probeCeiling}`);
});
