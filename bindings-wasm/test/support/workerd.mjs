// Runs a worker in Cloudflare's real runtime: the package installed from its tarball into a fresh
// project, the worker bundled the way wrangler bundles it (esbuild with the `workerd` export
// condition, `.wasm` imports kept as wasm modules), and `workerd serve` on 127.0.0.1.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const packageDir = fileURLToPath(new URL('../../', import.meta.url));
const workerdBin = join(packageDir, 'node_modules', '.bin', 'workerd');

/** A fresh project with `traffic-control-wasm` installed from `npm pack`'s tarball. */
export function installIntoTempProject() {
  const dir = mkdtempSync(join(tmpdir(), 'traffic-control-wasm-user-'));
  execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: packageDir, stdio: ['ignore', 'ignore', 'inherit'] });
  const tgz = readdirSync(dir).find((f) => /^traffic-control-wasm-.*\.tgz$/.test(f));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'user-worker', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--silent', `./${tgz}`], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

/** Bundles `entry` (copied into `dir`) to `dir/out/worker.mjs` plus its `.wasm` modules, as wrangler would. */
async function bundle(dir, entry) {
  const source = join(dir, basename(entry));
  copyFileSync(entry, source);
  rmSync(join(dir, 'out'), { recursive: true, force: true });
  mkdirSync(join(dir, 'out'));
  const wasm = [];
  await esbuild.build({
    entryPoints: [source],
    outfile: join(dir, 'out', 'worker.mjs'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['module', 'main'],
    // What an example imports besides the package (redis-on-workers) comes from this package's
    // devDependencies.
    nodePaths: [join(packageDir, 'node_modules')],
    // redis-on-workers falls back to a Node socket package (node:net) when `cloudflare:sockets` is
    // missing, by a dynamic import that never runs in workerd: left out, as the runtime's own.
    external: ['cloudflare:*', '@arrowood.dev/socket'],
    logLevel: 'error',
    plugins: [
      {
        name: 'wasm-modules',
        setup(build) {
          build.onResolve({ filter: /\.wasm$/ }, (args) => {
            const name = basename(args.path);
            wasm.push(name);
            copyFileSync(resolve(args.resolveDir, args.path), join(dir, 'out', name));
            return { path: `./${name}`, external: true };
          });
        },
      },
    ],
  });
  return wasm;
}

async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

const text = (s) => JSON.stringify(s);

/**
 * Starts `workerd serve` with the worker `entry` and `bindings` (name → string for text, anything
 * else as json); `durableObject` names a class to bind as a namespace of the same name in
 * upper snake case. Returns its URL and `stop()`.
 */
export async function startWorker(dir, entry, { bindings = {}, durableObject } = {}) {
  const wasm = await bundle(dir, entry);
  const port = await freePort();
  const lines = Object.entries(bindings).map(([name, value]) =>
    typeof value === 'string'
      ? `(name = ${text(name)}, text = ${text(value)})`
      : `(name = ${text(name)}, json = ${text(JSON.stringify(value))})`,
  );
  let objects = '';
  if (durableObject) {
    lines.push(`(name = "ACCOUNT_LIMITS", durableObjectNamespace = ${text(durableObject)})`);
    objects = `durableObjectNamespaces = [(className = ${text(durableObject)}, uniqueKey = "traffic-control-test")],
  durableObjectStorage = (inMemory = void),`;
  }
  const config = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    # The mock API listens on loopback, which the default outbound network refuses.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "worker.mjs", esModule = embed "worker.mjs"),
${wasm.map((w) => `    (name = ${text(w)}, wasm = embed ${text(w)}),`).join('\n')}
  ],
  compatibilityDate = "2025-09-01",
  bindings = [${lines.join(', ')}],
  ${objects}
);
`;
  writeFileSync(join(dir, 'out', 'config.capnp'), config);
  const child = spawn(workerdBin, ['serve', 'config.capnp'], { cwd: join(dir, 'out'), stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r(`workerd exited (${code ?? signal})`)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const up = await Promise.race([
      fetch(`${url}/__traffic-control`).then((r) => r.ok, () => false),
      exited,
    ]);
    if (typeof up === 'string') throw new Error(up);
    if (up) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('workerd did not answer within 30 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
