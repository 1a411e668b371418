// Browser and bundler entry: the `.wasm` file fetched next to this module (top-level await).
import init, * as native from './native/traffic_control_wasm.js';
import { setHost } from './dist/esm/host.js';

await init({ module_or_path: new URL('./native/traffic_control_wasm_bg.wasm', import.meta.url) });
setHost({ native, now: () => performance.now(), env: () => ({}) });

export * from './dist/esm/index.js';
