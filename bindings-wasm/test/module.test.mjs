// What the wasm module itself must be: small, and sans-IO down to its imports (no `env`
// functions, no clock, no randomness: the host passes time in).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { test } from '../../js/test/harness.mjs';

// Two builds of one crate: native/ (Workers, Node, Bun) with the shared store, native-browser/
// without it.
const builds = ['native', 'native-browser'].map((dir) => {
  const bytes = readFileSync(new URL(`../${dir}/traffic_control_wasm_bg.wasm`, import.meta.url));
  return { dir, bytes, module: new WebAssembly.Module(bytes) };
});

// The target is 150 KB gzipped. The browser build is at about 193 KB: most of it the config's serde
// deserialization (with field paths for errors) and core's formatting. The full build adds about
// 26 KB for the shared store (its Lua script, ~6 KB, and the code that builds its calls and reads
// its replies). These bounds only catch growth.
const bounds = { native: 225, 'native-browser': 200 };
for (const { dir, bytes } of builds) {
  test(`size of ${dir}: reported, and no larger than it has been (target 150 KB gzipped)`, () => {
    const gz = gzipSync(bytes, { level: 9 }).length;
    console.log(`${dir}/traffic_control_wasm_bg.wasm: ${(bytes.length / 1024).toFixed(1)} KB, ${(gz / 1024).toFixed(1)} KB gzipped (target 150 KB)`);
    assert.ok(gz <= bounds[dir] * 1024, `${gz} bytes gzipped`);
  });
}

for (const { dir, module } of builds) {
  test(`${dir}: no env imports; nothing that reads a clock or draws randomness`, () => {
    const imports = WebAssembly.Module.imports(module);
    assert.deepEqual(imports.filter((i) => i.module === 'env'), []);
    const suspicious = imports.filter((i) => /now|date|time|random|crypto|performance/i.test(i.name));
    assert.deepEqual(suspicious, [], 'the core gets time from the host only');
    // Everything imported is wasm-bindgen's own glue.
    for (const i of imports) assert.match(i.module, /^(\.\/traffic_control_wasm_bg\.js|wbg)$/, i.module);
  });
}
