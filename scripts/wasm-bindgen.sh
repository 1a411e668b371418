#!/usr/bin/env bash
# Makes sure the wasm32 target and wasm-bindgen-cli at exactly the wasm-bindgen version in
# Cargo.lock are installed (the glue format changes between versions). An installed CLI at that
# version is reused. No `--locked`: the CLI's own lockfile pins a crate version this registry does
# not serve. Used by the wasm package's build and by the Node package's WebAssembly fallback.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown

version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")"
if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$version" ]; then
  echo "installing wasm-bindgen-cli $version"
  cargo install wasm-bindgen-cli --version "$version" --force
fi
