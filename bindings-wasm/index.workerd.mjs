// Cloudflare Workers (workerd) entry: the runtime hands over the `.wasm` import as a compiled
// WebAssembly.Module (wrangler does the same for every `.wasm` import). Workers have no
// `process.env`: pass preset overrides from the worker's `env` with the `env` option.
import wasm from './native/traffic_control_wasm_bg.wasm';
import * as native from './native/traffic_control_wasm.js';
import { setHost } from './dist/esm/host.js';

native.initSync({ module: wasm });
// Each waiting request keeps a timer of its own request context (see Host.timers).
setHost({ native, now: () => performance.now(), env: () => ({}), timers: 'per-request' });

export * from './dist/esm/index.js';
