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
  for (const f of ['index.d.ts', 'dist/types/index.d.ts', 'native/index.js']) assert.ok(existsSync(join(pkg, f)), f);
  writeFileSync(
    join(dir, 'esm.mjs'),
    `import { TrafficControl, Priority } from 'traffic-control';
const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1, per: 100 } }, global: ['api'] });
const t0 = performance.now();
const r = await Promise.all([1, 2].map((i) => tc.schedule({ priority: Priority.HIGH }, () => i)));
console.log(JSON.stringify({ r, waited: performance.now() - t0 >= 99 }));`,
  );
  writeFileSync(
    join(dir, 'cjs.cjs'),
    `const { TrafficControl } = require('traffic-control');
new TrafficControl('backmarket').schedule({ method: 'GET', url: '/ws/orders' }, () => 'ok').then((r) => console.log(JSON.stringify({ r })));`,
  );
  const expect = { esm: '{"r":[1,2],"waited":true}', cjs: '{"r":"ok"}' };
  for (const runtime of [process.execPath, bun]) {
    for (const [file, want] of [['esm.mjs', expect.esm], ['cjs.cjs', expect.cjs]]) {
      const out = execFileSync(runtime, [file], { cwd: dir, encoding: 'utf8' }).trim();
      assert.equal(out, want, `${runtime} ${file}`);
    }
  }
});
