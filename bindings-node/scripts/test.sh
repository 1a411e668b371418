#!/usr/bin/env bash
# Builds the Node/Bun package and runs its tests under Node (node --test) and under Bun (bun test,
# Bun installed from npm by `npm ci`), then the bench once in quick mode. Prints "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
BUN=node_modules/.bin/bun
out=$(mktemp -d)
status=0

echo "--- node $(node --version): node --test"
node --test --test-concurrency=1 test/*.test.mjs > "$out/node.txt" 2>&1 || status=1
grep -E "^# (tests|pass|fail)" "$out/node.txt" || true
[ $status -eq 0 ] || cat "$out/node.txt"
node_pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out/node.txt")
node_fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out/node.txt")

echo "--- bun $($BUN --version): bun test"
bun_status=0
$BUN test ./test > "$out/bun.txt" 2>&1 || bun_status=1
tail -4 "$out/bun.txt"
[ $bun_status -eq 0 ] || { cat "$out/bun.txt"; status=1; }
bun_pass=$(sed -n 's/^ *\([0-9]*\) pass$/\1/p' "$out/bun.txt")
bun_fail=$(sed -n 's/^ *\([0-9]*\) fail$/\1/p' "$out/bun.txt")

echo "--- bench (quick; the figures come from 'npm run bench')"
node --expose-gc bench/bench.mjs --quick
$BUN bench/bench.mjs --quick
node bench/shared-bench.mjs --quick
node bench/shared-growth.mjs --quick
node bench/script-floor.mjs --calls 1000

passed=$(( ${node_pass:-0} + ${bun_pass:-0} ))
failed=$(( ${node_fail:-0} + ${bun_fail:-0} ))
echo "node/bun package: $passed passed, $failed failed"
exit $status
