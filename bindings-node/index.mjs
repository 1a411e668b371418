// ES module entry: the napi addon (or its WebAssembly fallback, see native.cjs) behind the shared scheduler.
import { createRequire } from 'node:module';
import { setHost } from './dist/esm/host.js';

const require = createRequire(import.meta.url);
const loaded = require('./native.cjs');
setHost({ native: loaded.native, now: () => performance.now(), env: () => process.env });

/** Which core this process loaded: 'native' (the napi addon) or 'wasm' (the WebAssembly fallback). */
export const backend = loaded.backend;

export * from './dist/esm/index.js';
