// The README's demo: the Back Market scenario with a live progress view and a final report per
// limit. A mock Back Market API on 127.0.0.1, the Elysia example app under Bun on the installed
// package, 60 price probes, LOW scans of GET /ws/listings (catalog, like every method there) and
// CRITICAL reverts; the mock counts each request after 10-150 ms of latency. Time runs 5x faster
// than the real API's windows (2 s instead of 10 s) so the demo takes about 40 s.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { simulate } from '../index.mjs';
import { runBackMarketScenario } from './backmarket-load.mjs';

const scale = Number(process.env.DEMO_SCALE ?? 5);
const tty = process.stdout.isTTY;
const bar = (used, cap, width = 20) => {
  const n = Math.round((Math.min(used, cap) / cap) * width);
  return '#'.repeat(n) + '.'.repeat(width - n);
};
let lastPrint = 0;

console.log(`traffic-control demo: Back Market repricing through the Elysia example (time x${scale})\n`);
const r = await runBackMarketScenario({
  scale,
  probes: 60,
  scans: 100,
  reverts: 10,
  onProgress: ({ elapsedMs, counts, status, mock, probes, scans, reverts }) => {
    if (!tty && elapsedMs - lastPrint < 2000) return;
    lastPrint = elapsedMs;
    const limits = (status?.limits ?? [])
      .filter((l) => l.name !== 'care')
      .map((l) => `${l.name} [${bar(l.used + l.reserved, l.capacity, 12)}] ${l.used}+${l.reserved}r/${l.capacity}`)
      .join('  ');
    const w = status?.waiting ?? {};
    const line =
      `${(elapsedMs / 1000).toFixed(1).padStart(5)} s  probes ${String(counts.probes).padStart(2)}/${probes}  ` +
      `scans ${String(counts.scans).padStart(3)}/${scans}  reverts ${counts.reverts}/${reverts}  429s ${mock.tooMany}  ` +
      `waiting c${w.critical ?? 0} h${w.high ?? 0} n${w.normal ?? 0} l${w.low ?? 0}  ${limits}`;
    process.stdout.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
  },
});
if (tty) process.stdout.write('\n');

const pad = (s, n) => String(s).padEnd(n);
console.log(`\n== Report per limit (server side: the most requests the mock counted in any window) ==`);
console.log(`  ${pad('limit', 11)} ${pad('real API', 14)} ${pad('preset', 14)} ${pad('peak seen', 10)} 429s`);
for (const name of ['global', 'catalog', 'competitor']) {
  const real = r.real[name];
  const preset = r.preset[name];
  console.log(
    `  ${pad(name, 11)} ${pad(`${real.max}/${real.per / 1000}s`, 14)} ${pad(`${preset.max}/${preset.per / 1000}s`, 14)} ${pad(r.peak[name], 10)} ${r.byScope[name]}`,
  );
}
console.log(`  (windows ${scale}x shorter in this run)`);
console.log(`\n== Work ==`);
console.log(`  probes    ${r.counts.probes}/${r.probes} ok; throughput ${r.probeThroughput.toFixed(2)}/s against a ceiling of ${r.probeCeiling.toFixed(2)}/s (${((100 * r.probeThroughput) / r.probeCeiling).toFixed(0)}%)`);
console.log(`  scans     ${r.counts.scans} ok (LOW, on catalog: they filled the room the probes left)`);
console.log(`  reverts   ${r.counts.reverts} ok (CRITICAL), longest ${r.revertMaxMs.toFixed(0)} ms`);
console.log(`  listings at the probe price now: ${r.atProbePrice.length}; longest time one spent there: ${r.probeMaxMs.toFixed(0)} ms`);
console.log(`  requests the API saw: ${r.serverRequests}, answered 429: ${r.tooMany}`);

// What the app exposes on GET /metrics (Prometheus text); the histograms' buckets are left out here.
console.log(`\n== Metrics (GET /metrics on the app: ${r.metrics.split('\n').filter((l) => l.startsWith('# TYPE')).length} families; buckets left out here) ==`);
for (const line of r.metrics.split('\n')) {
  if (line && !line.startsWith('#') && !line.includes('_bucket{')) console.log(`  ${line}`);
}

// The same workload in the simulator, on a virtual clock at the real API's time scale (the
// `demo` workload preset), against a model of Back Market counting at arrival.
const sim = simulate({ config: 'backmarket', workload: 'demo', server: 'backmarket', html: true, title: 'traffic-control demo: what the simulator predicts' });
const [predicted] = sim.reports;
const page = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'demo', 'simulation.html');
mkdirSync(dirname(page), { recursive: true });
writeFileSync(page, sim.html);
console.log(`\n== The simulator on the same workload (real time scale, virtual clock) ==`);
console.log(`  predicted 429s: ${predicted.server.refused}; admissions ${predicted.went}; refusals ${JSON.stringify(predicted.rejections)}`);
for (const p of predicted.priorities) console.log(`  ${pad(p.name, 9)} wait p50 ${p.p50_ms.toFixed(0)} ms, p95 ${p.p95_ms.toFixed(0)} ms, max ${p.max_ms.toFixed(0)} ms`);
console.log(`  charts: ${page}`);

const ok = r.tooMany === 0 && r.atProbePrice.length === 0 && r.counts.probes === r.probes && r.counts.scans === 100 && predicted.server.refused === 0;
console.log(`\nverdict: ${ok ? 'OK' : 'FAILED'}`);
process.exit(ok ? 0 : 1);
