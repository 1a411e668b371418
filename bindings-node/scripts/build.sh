#!/usr/bin/env bash
# Builds the npm package `traffic-control` in place: the napi addon for this machine (native/), the
# WebAssembly fallback for platforms without an addon (fallback/, scripts/fallback.sh), and the
# shared scheduler compiled from js/src to ES modules, CommonJS and type declarations (dist/).
# The packages for every platform come from scripts/package.sh at the repository's root.
set -euo pipefail
cd "$(dirname "$0")/.."

# `npm install`, not `npm ci`: the lock omits other platforms' optional packages (this machine's
# npm config), which `npm ci` refuses as out of sync. The versions are pinned in package.json.
if [ ! -x node_modules/.bin/napi ] || [ package.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund
fi
npx napi build --platform --release --output-dir native --js index.js --dts index.d.ts -- --locked
bash scripts/fallback.sh
rm -rf dist
npx tsc -p tsconfig.json
npx tsc -p tsconfig.cjs.json
echo '{"type":"module"}' > dist/esm/package.json
echo '{"type":"commonjs"}' > dist/cjs/package.json
