// A mariadbd of a test's own, from Debian's mariadb-server (scripts/test.sh installs it): a
// temporary datadir made by mariadb-install-db (root without a password, no test database), a free
// TCP port on 127.0.0.1, its socket in the same directory; SIGKILLed on `kill()` and at exit.
// Without mariadbd the tests that need it are skipped, and fail when TC_REQUIRE_MARIADB=1.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { freePort } from '../../../js/test/redis-server.mjs';

/** A program from PATH, or from the sbin directories Debian puts mariadbd in (not on a user's PATH). */
function which(name) {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/usr/bin'];
  for (const d of dirs) if (d && existsSync(path.join(d, name))) return path.join(d, name);
  return null;
}

/** Why the MariaDB tests cannot run here, or null when they can. */
export function mariadbMissing() {
  if (which('mariadbd') && which('mariadb-install-db') && which('mariadb-admin')) return null;
  return 'mariadbd not found (apt-get install -y mariadb-server)';
}

/** True when a missing mariadbd must fail the tests instead of skipping them (scripts/test.sh sets it). */
export const mariadbRequired = process.env.TC_REQUIRE_MARIADB === '1';

async function waitUntil(check, what, ms = 30_000) {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`mariadbd: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a mariadbd. `timeZone` is the server's time zone (the tests use one other than UTC to
 * show that the rows do not depend on it). Returns `{ port, host, user, dir, kill(), start(), stop() }`:
 * `kill()` is SIGKILL (a dead database), `start()` brings it back on the same port and datadir.
 */
export async function startMariaDB({ timeZone = '+00:00' } = {}) {
  const missing = mariadbMissing();
  if (missing) throw new Error(missing);
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'tc-mariadb-'));
  // `id -un`: Bun's os.userInfo() names no user here.
  const user = spawnSync('id', ['-un'], { encoding: 'utf8' }).stdout.trim() || userInfo().username;
  const init = spawnSync(
    which('mariadb-install-db'),
    ['--no-defaults', `--datadir=${dir}/data`, `--user=${user}`, '--auth-root-authentication-method=normal', '--skip-test-db'],
    { encoding: 'utf8' },
  );
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`mariadb-install-db failed: ${init.stdout}\n${init.stderr}`);
  }
  const alive = () =>
    spawnSync(which('mariadb-admin'), ['--no-defaults', '--protocol=tcp', '-h127.0.0.1', `-P${port}`, '-uroot', '--connect-timeout=1', 'ping'], {
      encoding: 'utf8',
    }).status === 0;
  let child;
  const onExit = () => child?.kill('SIGKILL');
  process.once('exit', onExit);
  const server = {
    host: '127.0.0.1',
    port,
    user: 'root',
    dir,
    async start() {
      child = spawn(
        which('mariadbd'),
        [
          '--no-defaults',
          `--datadir=${dir}/data`,
          `--port=${port}`,
          '--bind-address=127.0.0.1',
          `--socket=${dir}/mysqld.sock`,
          `--pid-file=${dir}/mysqld.pid`,
          `--log-error=${dir}/error.log`,
          `--user=${user}`,
          '--skip-name-resolve',
          `--default-time-zone=${timeZone}`,
          '--innodb-buffer-pool-size=32M',
        ],
        { stdio: 'ignore' },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      let gone = false;
      exited.then(() => (gone = true));
      await waitUntil(() => {
        if (gone) throw new Error(`mariadbd exited at start (see ${dir}/error.log)`);
        return alive();
      }, 'did not accept connections');
      server.exited = exited;
    },
    /** SIGKILL: the database dies at once, as in a crash. */
    async kill() {
      child.kill('SIGKILL');
      await server.exited;
    },
    /** Stops it for good and removes its files. */
    async stop() {
      process.removeListener('exit', onExit);
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await server.exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
