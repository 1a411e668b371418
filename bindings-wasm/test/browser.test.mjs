// The browser entry (index.web.mjs) under Node: its top-level `init` fetches the `.wasm` file next
// to it, so `fetch` serves file: URLs here for that one import, the way a web server serves the
// package's files to a browser. Then the same surface tests as the other entries.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from '../../js/test/harness.mjs';
import { surfaceTests } from '../../js/test/surface.mjs';

const served = [];
const networkFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (url.protocol !== 'file:') return networkFetch(input, init);
  served.push(url.pathname);
  return new Response(await readFile(url), { headers: { 'content-type': 'application/wasm' } });
};
const pkg = await import('../index.web.mjs');
globalThis.fetch = networkFetch;

test('browser entry: loads the build without the shared store, and says so when asked for it', () => {
  assert.equal(served.length, 1);
  assert.match(served[0], /\/native-browser\/traffic_control_wasm_bg\.wasm$/);
  const redis = { evalsha: async () => null, eval: async () => null };
  assert.throws(() => new pkg.SharedTrafficControl('backmarket', { redis, account: 'a' }), /no shared store.*browser cannot reach Redis/);
});

// A browser has no environment: the browser build has no environment overrides (a config object
// says what a page needs), and says so when given some.
surfaceTests(pkg, undefined, { readsProcessEnv: false, envOverrides: false, metrics: false });
