// What the wasm module itself must be: small, and sans-IO down to its imports (no `env`
// functions, no clock, no randomness: the host passes time in).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { test } from '../../js/test/harness.mjs';

const bytes = readFileSync(new URL('../native/traffic_control_wasm_bg.wasm', import.meta.url));
const module = new WebAssembly.Module(bytes);

// The target is 150 KB gzipped; the module is at about 220 KB (most of it the config's serde
// deserialization, with field paths for errors, and core's formatting; about 26 KB the shared
// store: its Lua script, ~6 KB, and the code that builds its calls and reads its replies). This
// bound only catches growth.
test('size: reported, and no larger than it has been (target 150 KB gzipped)', () => {
  const gz = gzipSync(bytes, { level: 9 }).length;
  console.log(`traffic_control_wasm_bg.wasm: ${(bytes.length / 1024).toFixed(1)} KB, ${(gz / 1024).toFixed(1)} KB gzipped (target 150 KB)`);
  assert.ok(gz <= 225 * 1024, `${gz} bytes gzipped`);
});

test('no env imports; nothing that reads a clock or draws randomness', () => {
  const imports = WebAssembly.Module.imports(module);
  assert.deepEqual(imports.filter((i) => i.module === 'env'), []);
  const suspicious = imports.filter((i) => /now|date|time|random|crypto|performance/i.test(i.name));
  assert.deepEqual(suspicious, [], 'the core gets time from the host only');
  // Everything imported is wasm-bindgen's own glue.
  for (const i of imports) assert.match(i.module, /^(\.\/traffic_control_wasm_bg\.js|wbg)$/, i.module);
});
