// The cross-process wake-up measurement: 5 processes share one account's limit through one
// redis-server, each taking it in turn, holding it, completing and asking again. For every turn,
// the latency is the time from the moment room freed (a completion for a concurrency slot; a
// completion plus `per` for a window) to the next holder's go in whichever process it waits.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../..');

const CONFIGS = {
  concurrency: { limits: { slot: { kind: 'concurrency', max: 1 } }, global: ['slot'] },
  window: { limits: { api: { kind: 'window', max: 1, per: 100 } }, global: ['api'] },
};

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

/** Runs `processes` workers for `rounds` turns each; returns the latencies (ms) and percentiles. */
export async function measureWakeups({ redisPort, kind = 'concurrency', processes = 5, rounds = 20, holdMs = 15, wake = true }) {
  const config = CONFIGS[kind];
  const account = `wake-${kind}-${wake ? 'on' : 'off'}-${process.pid}-${Date.now()}`;
  const startAt = performance.timeOrigin + performance.now() + 1_500;
  const workers = Array.from({ length: processes }, (_, i) => {
    const child = spawn(process.execPath, [path.join(here, 'wakeup-worker.mjs')], {
      cwd: pkg,
      env: {
        ...process.env,
        TC_WORKER: String(i),
        TC_REDIS_PORT: String(redisPort),
        TC_CONFIG: JSON.stringify(config),
        TC_ACCOUNT: account,
        TC_ROUNDS: String(rounds),
        TC_HOLD_MS: String(holdMs),
        TC_START_AT: String(startAt),
        TC_WAKE: wake ? '1' : '0',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout.on('data', (c) => (text += c));
    return new Promise((resolve, reject) =>
      child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(text.trim().split('\n').pop())) : reject(new Error(`worker ${i} exited ${code}`)))),
    );
  });
  const results = await Promise.all(workers);
  const turns = results.flatMap((r) => r.turns.map((t) => ({ ...t, worker: r.worker }))).sort((a, b) => a.go - b.go);
  const per = kind === 'window' ? config.limits.api.per : 0;
  const latencies = [];
  for (let i = 1; i < turns.length; i++) {
    // Room came back when the previous holder completed (plus per for a window).
    latencies.push(turns[i].go - (turns[i - 1].done + per));
  }
  const overlaps = latencies.filter((l) => l < -1).length;
  return {
    kind,
    wake,
    processes,
    turns: turns.length,
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: Math.max(...latencies),
    overlaps,
    wakeups: results.reduce((n, r) => n + r.wakeups, 0),
  };
}
