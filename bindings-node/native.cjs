'use strict';
// Loads the core for this platform, once for both module systems: the napi addon when one was built
// for this platform (the package's own file, or the `traffic-control-<platform>` package that npm
// or Bun installed from optionalDependencies), otherwise the same core compiled to WebAssembly
// (fallback/), behind the same scheduler. The fallback says so once, as a process warning.
//
// TRAFFIC_CONTROL_BACKEND=native makes a missing addon an error instead; =wasm forces the
// WebAssembly core (to compare the two, or to test the fallback).

const choice = process.env.TRAFFIC_CONTROL_BACKEND;
let native;
let backend = 'native';
if (choice === 'wasm') {
  native = require('./fallback/traffic_control_wasm.js');
  backend = 'wasm';
} else {
  try {
    native = require('./native/index.js');
  } catch (e) {
    if (choice === 'native') throw e;
    native = require('./fallback/traffic_control_wasm.js');
    backend = 'wasm';
    const libc = process.platform === 'linux' && process.report?.getReport?.().header?.glibcVersionRuntime === undefined ? '-musl' : '';
    const cause = String((e && e.message) || e).split('\n')[0];
    process.emitWarning(
      `traffic-control: no native addon for ${process.platform}-${process.arch}${libc}; using the WebAssembly core (the same decisions, slower). Cause: ${cause}`,
      { code: 'TRAFFIC_CONTROL_WASM_FALLBACK' },
    );
  }
}
module.exports = { native, backend };
