// Node and Bun entry: the wasm module read from the package's files, compiled synchronously.
import { readFileSync } from 'node:fs';
import * as native from './native/traffic_control_wasm.js';
import { setHost } from './dist/esm/host.js';

native.initSync({ module: readFileSync(new URL('./native/traffic_control_wasm_bg.wasm', import.meta.url)) });
setHost({ native, now: () => performance.now(), env: () => process.env });

export * from './dist/esm/index.js';
