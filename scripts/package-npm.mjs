// Lays out the npm packages of a release in the napi-rs layout (called by scripts/package.sh):
//   <stage>/                   the main package: bindings-node's files without any addon, with one
//                              optional dependency per platform package (napi's commands want the
//                              platform folders inside the package's folder; `files` leaves them out)
//   <stage>/npm/<platform>/    one package per platform with its addon (napi create-npm-dirs and
//                              napi artifacts write these from <stage>/artifacts/*.node)
//
//   node scripts/package-npm.mjs <stage> <platform>...
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [stage, ...platforms] = process.argv.slice(2);
if (!stage || platforms.length === 0) throw new Error('usage: package-npm.mjs <stage> <platform>...');
const nodePkg = fileURLToPath(new URL('../bindings-node/', import.meta.url));
const napi = join(nodePkg, 'node_modules', '.bin', 'napi');
const source = JSON.parse(readFileSync(join(nodePkg, 'package.json'), 'utf8'));

/** napi-rs's platform name of each target triple the package lists. */
const platformOf = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
};
const targets = source.napi.targets.filter((t) => platforms.includes(platformOf[t]));
if (targets.length !== platforms.length) throw new Error(`unknown platform in ${platforms.join(', ')}`);

// The main package: the files bindings-node ships, except its own addon.
const main = stage;
mkdirSync(main, { recursive: true });
for (const f of ['index.cjs', 'index.mjs', 'index.d.ts', 'native.cjs', 'dist', 'fallback', 'native/index.js', 'native/index.d.ts', 'README.md']) {
  if (!existsSync(join(nodePkg, f))) throw new Error(`bindings-node/${f} is missing: build the package first`);
  cpSync(join(nodePkg, f), join(main, f), { recursive: true });
}
const pkg = { ...source };
pkg.files = source.files.filter((f) => !f.endsWith('.node'));
pkg.napi = { ...source.napi, targets };
pkg.optionalDependencies = Object.fromEntries(platforms.map((p) => [`${source.napi.binaryName}-${p}`, source.version]));
delete pkg.devDependencies;
delete pkg.scripts;
writeFileSync(join(main, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);

// The platform packages, by napi-rs's own commands (names, os/cpu/libc fields, README).
execFileSync(napi, ['create-npm-dirs', '--cwd', stage, '--npm-dir', 'npm'], { stdio: 'inherit' });
execFileSync(napi, ['artifacts', '--cwd', stage, '--output-dir', 'artifacts', '--npm-dir', 'npm'], {
  stdio: 'inherit',
});
for (const p of platforms) {
  const f = join(stage, 'npm', p, `${source.napi.binaryName}.${p}.node`);
  if (!existsSync(f)) throw new Error(`${f} was not placed by napi artifacts`);
}
