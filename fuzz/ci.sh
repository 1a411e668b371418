#!/usr/bin/env bash
# CI's fuzz step (scripts/test.sh): builds every cargo-fuzz target once, then runs each for
# FUZZ_SECONDS (15 by default) from its seeds. The corpus and any crash go to a temporary
# directory, so nothing is written into the work tree (the build goes to fuzz/target/, ignored).
# Fails if a target crashes (the others still run), printing the input's path and how to replay and shrink it.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-15}
# The newest cargo-fuzz; builds with the stable toolchain (checked with Rust 1.95).
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
cargo fuzz --version
# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
fi

# cargo fuzz has no --locked: check the lock first rather than let the build rewrite it.
if ! cargo metadata --locked --format-version 1 >/dev/null; then
  echo "fuzz/Cargo.lock is out of date (the core's dependencies changed): run 'cargo metadata --format-version 1 >/dev/null' in fuzz/ and commit fuzz/Cargo.lock" >&2
  exit 1
fi

# libFuzzer needs nightly compiler flags; RUSTC_BOOTSTRAP=1 unlocks them on stable, for these
# builds only. No sanitizer: the core forbids unsafe code, and without AddressSanitizer the targets
# run several times more inputs in the same time. Debug assertions (overflow checks) stay on.
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none)
cargo fuzz build "${flags[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/tc-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0
for target in $(cargo fuzz list); do
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
  dirs=("$work/corpus/$target")
  [ -d "seeds/$target" ] && dirs+=("seeds/$target")
  log="$work/$target.log"
  # -timeout: one input running longer than 10 s is a hang, reported like a crash.
  if cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$target/" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    corpus=$(ls "$work/corpus/$target" | wc -l)
    printf '%-18s %10s runs  %7s/s  %5s new corpus entries\n' "$target" "$runs" "$rate" "$corpus"
  else
    failed=1
    echo "FAILED: $target" >&2
    tail -n 60 "$log" >&2
    for crash in "$work/artifacts/$target"/*; do
      [ -e "$crash" ] || continue
      kept="${TMPDIR:-/tmp}/tc-fuzz-$target-$(basename "$crash")"
      cp "$crash" "$kept"
      echo "crash input: $kept (base64: $(base64 -w0 "$crash"))" >&2
      echo "replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target $kept" >&2
      echo "shrink: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin $target $kept" >&2
    done
  fi
done
exit "$failed"
