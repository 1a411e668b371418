'use strict';
// CommonJS entry: the napi addon (or its WebAssembly fallback, see native.cjs) behind the shared scheduler.
const { native, backend } = require('./native.cjs');
const { setHost } = require('./dist/cjs/host.js');
setHost({ native, now: () => performance.now(), env: () => process.env });
module.exports = require('./dist/cjs/index.js');
module.exports.backend = backend;
