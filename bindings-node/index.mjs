// ES module entry: the napi addon behind the shared scheduler.
import { createRequire } from 'node:module';
import { setHost } from './dist/esm/host.js';

const require = createRequire(import.meta.url);
setHost({ native: require('./native/index.js'), now: () => performance.now(), env: () => process.env });

export * from './dist/esm/index.js';
