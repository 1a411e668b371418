#!/usr/bin/env bash
# Builds the wasm package from scratch and runs its tests under Node: the shared surface tests, the
# shared scenario files, the module's size and imports, and workerd (the package installed from
# its tarball, bundled with the `workerd` condition, served by Cloudflare's runtime on 127.0.0.1).
# Prints "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
out=$(mktemp -d)
status=0
echo "--- node $(node --version), workerd $(node_modules/.bin/workerd --version 2>/dev/null | head -1): node --test"
node --test --test-concurrency=1 test/*.test.mjs > "$out/node.txt" 2>&1 || status=1
grep -E "^# (tests|pass|fail)|KB gzipped|requests, " "$out/node.txt" || true
[ $status -eq 0 ] || cat "$out/node.txt"
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out/node.txt")
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out/node.txt")
echo "wasm package: ${passed:-0} passed, ${failed:-0} failed"
exit $status
