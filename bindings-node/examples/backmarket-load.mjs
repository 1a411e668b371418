// The Back Market scenario: a mock Back Market API, the Elysia example app under Bun (installed from
// the packed package), and a load of 60 price probes, a flood of LOW watchdog scans and CRITICAL
// reverts. Used by the test (test/backmarket.test.mjs) and the README's demo (demo.mjs).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { startMockBackMarket } from '../test/support/mock-backmarket.mjs';
import { bun, copyElysiaExample, installIntoTempProject } from '../test/support/install.mjs';

import { REAL } from '../test/support/mock-backmarket.mjs';

// The backmarket preset's windows (core/src/presets/backmarket.json): the API's own, with the
// seed's count margins.
const PRESET = { global: { max: 150, per: 10_000 }, catalog: { max: 15, per: 10_000 }, competitor: { max: 2, per: 1_000 }, care: { max: 300, per: 60_000 } };

/**
 * Runs the scenario with every window and block `scale` times shorter than the real API's.
 * `onProgress(state)` is called every `progressMs` while it runs.
 */
export async function runBackMarketScenario({ scale = 10, probes = 60, scans = 100, reverts = 10, onProgress, progressMs = 250 } = {}) {
  // Latency before the API counts a request: 10-150 ms, not scaled with the windows.
  const mock = await startMockBackMarket({ scale, listings: probes + reverts, latency: [10, 150] });
  const project = installIntoTempProject(['elysia@1.4.30']);
  const env = { ...process.env, PORT: '0', BACKMARKET_URL: mock.url, BACKMARKET_TOKEN: 'demo' };
  for (const [name, l] of Object.entries(PRESET)) env[`BM_RATE_LIMIT_${name.toUpperCase()}_INTERVAL_MS`] = String(Math.round(l.per / scale));
  const child = spawn(bun, [copyElysiaExample(project)], { cwd: project, env, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const base = await new Promise((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the Elysia app exited (${code})`)));
      createInterface({ input: child.stdout }).once('line', (line) => resolve(JSON.parse(line).listening));
    });
    const counts = { probes: 0, probeErrors: 0, scans: 0, scanErrors: 0, reverts: 0, revertErrors: 0 };
    const probeEnds = [];
    const revertWaits = [];
    const t0 = performance.now();
    const call = async (method, path, body) => {
      const res = await fetch(`${base}${path}`, { method, body: body && JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      return { ok: res.ok, body: await res.json() };
    };
    let progress;
    let status = null;
    if (onProgress) {
      progress = setInterval(async () => {
        status = await fetch(`${base}/backmarket/status`).then((r) => r.json(), () => status);
        onProgress({ elapsedMs: performance.now() - t0, counts, status, mock: mock.stats, probes, scans, reverts });
      }, progressMs);
    }
    const work = [];
    for (let i = 1; i <= probes; i++) {
      work.push(
        call('POST', `/backmarket/probe/${i}`).then((r) => {
          if (r.ok) {
            counts.probes++;
            probeEnds.push(performance.now() - t0);
          } else counts.probeErrors++;
        }),
      );
    }
    for (let p = 1; p <= scans; p++) {
      work.push(call('GET', `/backmarket/scan/${(p % 7) + 1}`).then((r) => (r.ok ? counts.scans++ : counts.scanErrors++)));
    }
    // Emergency reverts arrive while the probes and scans queue: they go first.
    for (let k = 1; k <= reverts; k++) {
      const at = (k * 1000) / scale;
      work.push(
        new Promise((r) => setTimeout(r, at)).then(async () => {
          const sent = performance.now();
          const r = await call('POST', `/backmarket/recover/${probes + k}`, { price: 499 });
          revertWaits.push(performance.now() - sent);
          r.ok ? counts.reverts++ : counts.revertErrors++;
        }),
      );
    }
    await Promise.all(work);
    const elapsedMs = performance.now() - t0;
    clearInterval(progress);
    status = await fetch(`${base}/backmarket/status`).then((r) => r.json());
    const metrics = await fetch(`${base}/metrics`).then((r) => r.text());
    const catalogWindow = PRESET.catalog.per / scale;
    // Each probe takes catalog three times (the read, the Dip, the Peak: every method on
    // /ws/listings counts): the ceiling is max/3 probes per window.
    const ceiling = PRESET.catalog.max / 3 / (catalogWindow / 1000);
    const lastProbeS = Math.max(...probeEnds) / 1000;
    return {
      scale,
      elapsedMs,
      counts,
      probes,
      probeThroughput: counts.probes / lastProbeS,
      probeCeiling: ceiling,
      revertMaxMs: Math.max(...revertWaits),
      tooMany: mock.stats.tooMany,
      byScope: { ...mock.stats.byScope },
      peak: { ...mock.stats.peak },
      real: REAL,
      preset: PRESET,
      atProbePrice: mock.atProbePrice(),
      probeMaxMs: mock.stats.probeMaxMs,
      catalogWindowMs: catalogWindow,
      serverRequests: mock.stats.requests,
      status,
      metrics,
    };
  } finally {
    child.kill();
    await mock.close();
  }
}
