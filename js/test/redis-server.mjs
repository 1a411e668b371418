// A redis-server of its own for a test (or a cross-process run): a free port on 127.0.0.1, no
// persistence, a temporary directory; stopped with `shutdown nosave`. Fails clearly when
// redis-server is missing (scripts/test.sh installs it).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cli(port, ...args) {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
}

async function waitUntil(check, what, ms = 10_000) {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) throw new Error(`redis-server: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Starts a redis-server; `stop()` shuts it down, `restart()` stops and starts it on the same port. */
export async function startRedis({ port } = {}) {
  if (spawnSync('redis-server', ['--version']).error) throw new Error('redis-server not found (apt-get install -y redis-server)');
  port ??= await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'tc-redis-'));
  const up = () => cli(port, 'ping').stdout?.trim() === 'PONG';
  const start = async () => {
    execFileSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'yes', '--save', '', '--appendonly', 'no', '--dir', dir, '--pidfile', path.join(dir, 'redis.pid'), '--logfile', path.join(dir, 'redis.log')]);
    await waitUntil(up, 'did not start');
  };
  const stop = async () => {
    cli(port, 'shutdown', 'nosave');
    await waitUntil(() => !up(), 'did not stop');
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    cli: (...args) => cli(port, ...args).stdout.trim(),
    stop: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    /** Down for `downMs`, then up again, empty (no persistence). */
    restart: async (downMs = 0) => {
      await stop();
      await new Promise((r) => setTimeout(r, downMs));
      await start();
    },
  };
}
