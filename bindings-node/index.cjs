'use strict';
// CommonJS entry: the napi addon behind the shared scheduler.
const native = require('./native/index.js');
const { setHost } = require('./dist/cjs/host.js');
setHost({ native, now: () => performance.now(), env: () => process.env });
module.exports = require('./dist/cjs/index.js');
