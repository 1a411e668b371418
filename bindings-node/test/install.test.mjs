// Installed as users install it: `npm pack`, then `bun add` of the tarball into a fresh project;
// there, both module systems load it under Node and under Bun and a request goes through.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { slowTest as test } from '../../js/test/harness.mjs';
import { bun, installIntoTempProject } from './support/install.mjs';

test('npm pack + bun add: ESM and CommonJS, Node and Bun, types shipped', () => {
  const dir = installIntoTempProject();
  const pkg = join(dir, 'node_modules', 'traffic-control');
  for (const f of ['index.d.ts', 'dist/types/index.d.ts', 'dist/types/logs.d.ts', 'dist/types/drizzle.d.ts', 'native/index.js']) assert.ok(existsSync(join(pkg, f)), f);
  // drizzle-orm is an optional peer: installing the package does not bring it.
  assert.ok(!existsSync(join(dir, 'node_modules', 'drizzle-orm')), 'drizzle-orm not installed');
  writeFileSync(
    join(dir, 'esm.mjs'),
    `import { TrafficControl, Priority } from 'traffic-control';
import { toLogRow } from 'traffic-control/logs';
const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1, per: 100 } }, global: ['api'] });
const rows = [];
tc.on((e) => rows.push(toLogRow(e, 0)?.status));
const t0 = performance.now();
const r = await Promise.all([1, 2].map((i) => tc.schedule({ priority: Priority.HIGH }, () => i)));
console.log(JSON.stringify({ r, waited: performance.now() - t0 >= 99, rows: rows.filter(Boolean) }));`,
  );
  writeFileSync(
    join(dir, 'cjs.cjs'),
    `const { TrafficControl } = require('traffic-control');
const { LogSink } = require('traffic-control/logs');
new TrafficControl('backmarket').schedule({ method: 'GET', url: '/ws/orders' }, () => 'ok').then((r) => console.log(JSON.stringify({ r, sink: typeof LogSink })));`,
  );
  // The task returns no Response: its completion has no status (ERROR); the second one waited (QUEUED).
  const expect = { esm: '{"r":[1,2],"waited":true,"rows":["QUEUED","ERROR","ERROR"]}', cjs: '{"r":"ok","sink":"function"}' };
  for (const runtime of [process.execPath, bun]) {
    for (const [file, want] of [['esm.mjs', expect.esm], ['cjs.cjs', expect.cjs]]) {
      const out = execFileSync(runtime, [file], { cwd: dir, encoding: 'utf8' }).trim();
      assert.equal(out, want, `${runtime} ${file}`);
    }
  }
});
