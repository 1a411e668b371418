#!/usr/bin/env bash
# Builds the npm package `traffic-control-wasm` in place from scratch: the core compiled to
# wasm32-unknown-unknown, wasm-bindgen's `web` glue (native/: it runs in browsers, in workerd via
# initSync and in Node), and the shared scheduler compiled from js/src (dist/).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(cd .. && pwd)"

# The wasm32 target and wasm-bindgen-cli at the version in Cargo.lock.
bash "$root/scripts/wasm-bindgen.sh"

if [ ! -x node_modules/.bin/tsc ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
fi

# Two modules from one crate: native/ with every feature (Workers, Node, Bun), native-browser/
# without the shared store (a browser cannot reach Redis; the module is smaller without it).
rm -rf native native-browser dist
module="$root/target/wasm32-unknown-unknown/wasm/traffic_control_wasm.wasm"
cargo build --locked --profile wasm --target wasm32-unknown-unknown -p traffic-control-wasm
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir native \
  --out-name traffic_control_wasm "$module"
cargo build --locked --profile wasm --target wasm32-unknown-unknown -p traffic-control-wasm --no-default-features
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir native-browser \
  --out-name traffic_control_wasm "$module"
npx tsc -p tsconfig.json
