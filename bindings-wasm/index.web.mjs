// Browser and bundler entry: the `.wasm` file fetched next to this module (top-level await). It is
// the build without the shared store (a browser cannot reach Redis), which keeps it smaller.
import init, * as native from './native-browser/traffic_control_wasm.js';
import { setHost } from './dist/esm/host.js';

await init({ module_or_path: new URL('./native-browser/traffic_control_wasm_bg.wasm', import.meta.url) });
setHost({ native, now: () => performance.now(), env: () => ({}) });

export * from './dist/esm/index.js';
