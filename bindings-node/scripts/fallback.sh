#!/usr/bin/env bash
# Builds the Node package's WebAssembly fallback (fallback/): the same core as the wasm package's
# full module (shared store included), with wasm-bindgen's `nodejs` glue, which loads the module
# synchronously from the package's files under `require`, in Node and in Bun. native.cjs loads it
# on platforms that have no napi addon.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(cd .. && pwd)"

bash "$root/scripts/wasm-bindgen.sh"
cargo build --locked --profile wasm --target wasm32-unknown-unknown -p traffic-control-wasm
rm -rf fallback
wasm-bindgen --target nodejs --remove-name-section --remove-producers-section --out-dir fallback \
  --out-name traffic_control_wasm "$root/target/wasm32-unknown-unknown/wasm/traffic_control_wasm.wasm"
