#!/usr/bin/env bash
# Builds every package of a release from this checkout into one folder, then installs each one the
# way a user would and tests it where this machine can run it (scripts/test-packages.sh).
#
#   bash scripts/package.sh           # everything (about 8 minutes on 2 cores)
#   bash scripts/package.sh --quick   # what CI runs: the npm packages for this machine and one
#                                     # cross-build (linux-x64-musl), the WebAssembly fallback
#   OUT=dir bash scripts/package.sh   # another output folder (default: target/package)
#
# What it writes (OUT):
#   npm/traffic-control-<v>.tgz                  the main package: the scheduler, the loader, the
#                                                WebAssembly fallback; no addon of its own
#   npm/traffic-control-<platform>-<v>.tgz       one napi addon each (optionalDependencies of the
#                                                main package): linux-x64-gnu, linux-x64-musl,
#                                                linux-arm64-gnu, linux-arm64-musl
#   npm/traffic-control-wasm-<v>.tgz             browsers and Workers
#   python/traffic_control-<v>-cp310-abi3-*.whl  manylinux2014 x86_64 and aarch64, musllinux_1_2
#                                                x86_64; and the sdist (.tar.gz)
#   SIZES.txt                                    every artifact with its size
#
# Tools it installs itself, pinned: the Rust targets (rustup), and in a venv from PyPI maturin, zig
# (the `ziglang` wheel: one linker for every target, glibc 2.17 and musl) and cargo-zigbuild.
# Nothing comes from outside the registries: no Docker, no downloaded toolchain.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
OUT="${OUT:-$root/target/package}"
TOOLS="$root/target/package-tools"
MATURIN_VERSION="1.16.0"
ZIG_VERSION="0.17.1"
ZIGBUILD_VERSION="0.24.1"

step() { printf '\n==> %s\n' "$*"; }

# The napi targets and their npm platform names (napi-rs's naming). A `.2.17` suffix asks
# cargo-zigbuild to link against glibc 2.17's symbols: the addon then loads on any glibc >= 2.17
# (CentOS 7, Debian 8 and later), as the manylinux2014 wheel does.
declare -A NAPI_TARGET=(
  [linux-x64-gnu]=x86_64-unknown-linux-gnu.2.17
  [linux-x64-musl]=x86_64-unknown-linux-musl
  [linux-arm64-gnu]=aarch64-unknown-linux-gnu.2.17
  [linux-arm64-musl]=aarch64-unknown-linux-musl
)
if [[ $QUICK == 1 ]]; then
  PLATFORMS=(linux-x64-gnu linux-x64-musl)
else
  PLATFORMS=(linux-x64-gnu linux-x64-musl linux-arm64-gnu linux-arm64-musl)
fi

step "tools: Rust targets; maturin $MATURIN_VERSION, zig $ZIG_VERSION, cargo-zigbuild $ZIGBUILD_VERSION in $TOOLS"
targets=()
for p in "${PLATFORMS[@]}"; do targets+=("${NAPI_TARGET[$p]%.2.17}"); done
rustup target add "${targets[@]}" >/dev/null
if [[ ! -x "$TOOLS/bin/zig" ]] || ! "$TOOLS/bin/zig" version | grep -qx "$ZIG_VERSION" \
  || ! "$TOOLS/bin/maturin" --version | grep -q " $MATURIN_VERSION$"; then
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --disable-pip-version-check -q \
    "maturin==$MATURIN_VERSION" "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
  # cargo-zigbuild and napi look for `zig` on PATH; the wheel keeps it in site-packages.
  ln -sf "$("$TOOLS/bin/python" -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')/zig" "$TOOLS/bin/zig"
fi
export PATH="$TOOLS/bin:$PATH"
zig version

rm -rf "$OUT"
mkdir -p "$OUT/npm" "$OUT/python"
stage="$OUT/stage"
mkdir -p "$stage/artifacts"

step "npm: the main package's scheduler, loader and WebAssembly fallback (bindings-node/scripts/build.sh)"
bash bindings-node/scripts/build.sh

step "npm: one napi addon per platform (cargo zigbuild)"
for p in "${PLATFORMS[@]}"; do
  t="${NAPI_TARGET[$p]}"
  echo "--- $p ($t)"
  # A musl cdylib links musl dynamically (the host process's own libc), not statically.
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=-crt-static" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=-crt-static" \
    cargo zigbuild --locked --release -q -p traffic-control-node --target "$t"
  cp "target/${t%.2.17}/release/libtraffic_control_node.so" "$stage/artifacts/traffic-control.$p.node"
done

step "npm: the platform packages (napi create-npm-dirs, napi artifacts) and the main package"
node scripts/package-npm.mjs "$stage" "${PLATFORMS[@]}"
for d in "$stage"/npm/*/ "$stage/"; do
  (cd "$d" && npm pack --silent --pack-destination "$OUT/npm" >/dev/null)
done

if [[ $QUICK == 0 ]]; then
  step "npm: the wasm package (bindings-wasm/scripts/build.sh)"
  bash bindings-wasm/scripts/build.sh
  (cd bindings-wasm && npm pack --silent --pack-destination "$OUT/npm" >/dev/null)

  step "python: abi3 wheels (maturin --zig): manylinux2014 x86_64 and aarch64, musllinux_1_2 x86_64; the sdist"
  (
    cd bindings-py
    maturin build --release --locked --zig --compatibility manylinux2014 --target x86_64-unknown-linux-gnu -o "$OUT/python"
    maturin build --release --locked --zig --compatibility manylinux2014 --target aarch64-unknown-linux-gnu -o "$OUT/python"
    maturin build --release --locked --zig --compatibility musllinux_1_2 --target x86_64-unknown-linux-musl -o "$OUT/python"
    maturin sdist -o "$OUT/python"
  )
fi

rm -rf "$stage"
sizes="$(cd "$OUT" && find . -type f -printf '%P\t%s\n' | sort | awk -F'\t' '{ printf "%-72s %8.1f KB\n", $1, $2 / 1024 }')"
echo "$sizes" > "$OUT/SIZES.txt"
step "artifacts ($OUT)"
cat "$OUT/SIZES.txt"

bash scripts/test-packages.sh "$OUT"
