// Installs the package the way users do: `npm pack` the built package, then `bun add` the tarball
// (and Elysia) into a fresh temporary project.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageDir = fileURLToPath(new URL('../../', import.meta.url));
export const bun = join(packageDir, 'node_modules', '.bin', 'bun');

/** A fresh project with `traffic-control` (from its tarball) and `extra` packages installed by Bun. */
export function installIntoTempProject(extra = []) {
  const dir = mkdtempSync(join(tmpdir(), 'traffic-control-user-'));
  execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: packageDir, stdio: ['ignore', 'ignore', 'inherit'] });
  const tgz = readdirSync(dir).find((f) => /^traffic-control-.*\.tgz$/.test(f));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
  execFileSync(bun, ['add', `./${tgz}`, ...extra], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

/** Copies the Elysia example into `dir`, where it imports the installed package. */
export function copyElysiaExample(dir) {
  copyFileSync(join(packageDir, 'examples', 'elysia', 'app.ts'), join(dir, 'app.ts'));
  return join(dir, 'app.ts');
}
