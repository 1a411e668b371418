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

function canBind(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
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

/**
 * Starts a Redis Cluster of `masters` masters with `replicas` replicas each (redis-server in
 * cluster mode, joined by `redis-cli --cluster create`), all on 127.0.0.1. `nodes` lists every
 * node's port; `cli(port, ...)` runs a command on one; `failover(slot)` promotes the replica of the
 * master serving `slot` (`CLUSTER FAILOVER` on the replica: the handover waits for the replica to
 * catch up, as an operator's planned failover does) and resolves when the cluster is ok again.
 */
export async function startRedisCluster({ masters = 3, replicas = 1 } = {}) {
  if (spawnSync('redis-server', ['--version']).error) throw new Error('redis-server not found (apt-get install -y redis-server)');
  const dir = mkdtempSync(path.join(tmpdir(), 'tc-cluster-'));
  // Distinct free ports whose cluster bus port (the port + 10,000) is free too: a cluster node
  // refuses a port above 55,535.
  const ports = [];
  while (ports.length < masters * (1 + replicas)) {
    const port = 20_000 + Math.floor(Math.random() * 25_000);
    if (!ports.includes(port) && (await canBind(port)) && (await canBind(port + 10_000))) ports.push(port);
  }
  for (const port of ports) {
    execFileSync('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'yes', '--save', '', '--appendonly', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '2000',
      '--dir', dir, '--pidfile', path.join(dir, `${port}.pid`), '--logfile', path.join(dir, `${port}.log`)]);
  }
  const stop = async () => {
    for (const port of ports) cli(port, 'shutdown', 'nosave');
    await waitUntil(() => ports.every((p) => cli(p, 'ping').stdout?.trim() !== 'PONG'), 'the cluster did not stop');
    rmSync(dir, { recursive: true, force: true });
  };
  const ok = () => ports.every((p) => /cluster_state:ok/.test(cli(p, 'cluster', 'info').stdout ?? ''));
  // Replicas show in CLUSTER SLOTS once their replication link is up.
  const linked = () => {
    const shards = parseSlots(cli(ports[0], '--json', 'cluster', 'slots').stdout || '[]');
    return shards.length > 0 && shards.every((s) => s.replicas.length >= replicas);
  };
  try {
    for (const port of ports) await waitUntil(() => cli(port, 'ping').stdout?.trim() === 'PONG', `node ${port} did not start`);
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { encoding: 'utf8' });
    if (created.status !== 0) throw new Error(`redis-cli --cluster create: ${created.stdout}${created.stderr}`);
    await waitUntil(ok, 'the cluster did not become ok', 30_000);
    await waitUntil(linked, 'the replicas did not link', 30_000);
  } catch (e) {
    await stop();
    throw e;
  }
  const role = (port) => (cli(port, 'role').stdout ?? '').split('\n')[0].trim();
  /** The master serving `slot` now, and its replicas. */
  const owners = (slot) => {
    const shards = parseSlots(cli(ports[0], '--json', 'cluster', 'slots').stdout);
    return shards.find((s) => slot >= s.from && slot <= s.to);
  };
  return {
    nodes: ports.map((port) => ({ host: '127.0.0.1', port })),
    cli: (port, ...args) => cli(port, ...args).stdout.trim(),
    keySlot: (key) => Number(cli(ports[0], 'cluster', 'keyslot', key).stdout.trim()),
    owners,
    async failover(slot) {
      const { replicas: [replica] } = owners(slot);
      const out = cli(replica, 'cluster', 'failover').stdout.trim();
      if (out !== 'OK') throw new Error(`CLUSTER FAILOVER: ${out}`);
      await waitUntil(() => role(replica) === 'master', 'the replica was not promoted', 30_000);
      await waitUntil(ok, 'the cluster did not become ok after the failover', 30_000);
      // The node `owners` asks learns of the promotion by gossip: wait until it has.
      await waitUntil(() => owners(slot).master === replica, 'the cluster did not show the new master', 30_000);
      return replica;
    },
    stop,
  };
}

/** `CLUSTER SLOTS` as redis-cli --json prints it: [[from, to, [host, port, id], [host, port, id]...]...]. */
function parseSlots(json) {
  return JSON.parse(json).map(([from, to, master, ...reps]) => ({ from, to, master: master[1], replicas: reps.map((r) => r[1]) }));
}
