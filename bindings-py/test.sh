#!/usr/bin/env bash
# The Python binding's tests, as users install it: build the abi3 wheel with maturin in one fresh
# virtualenv, pip install it into a second fresh one, and test the installed package from a
# directory where the source tree is not importable. Self-installing: needs only cargo and
# python3 (>= 3.10) with venv and pip, and PyPI / crates.io.
#
#   bash bindings-py/test.sh            # build, stubtest, mypy, pytest, bench --quick
#   KEEP=1 bash bindings-py/test.sh     # keep the work directory (printed) for a look afterwards
#   WHEEL=path.whl bash bindings-py/test.sh   # test a wheel built elsewhere (scripts/package.sh)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
MATURIN_VERSION="1.16.0"
ZIG_VERSION="0.17.1"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/traffic-control-py.XXXXXX")"
if [[ "${KEEP:-0}" != 1 ]]; then trap 'rm -rf "$WORK"' EXIT; fi

step() { printf '\n==> %s\n' "$*"; }
quiet_pip() { "$1" -m pip install --disable-pip-version-check -q "${@:2}"; }

if [[ -n "${WHEEL:-}" ]]; then
    # A wheel built elsewhere (scripts/package.sh): test it as it is.
    WHEEL="$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")"
    step "testing the given wheel $(basename "$WHEEL")"
else
    step "build venv ($WORK/build), maturin $MATURIN_VERSION, zig $ZIG_VERSION (the linker for the old glibc)"
    "$PYTHON" -m venv "$WORK/build"
    quiet_pip "$WORK/build/bin/python" "maturin==$MATURIN_VERSION" "ziglang==$ZIG_VERSION"

    # The wheel users of older distributions install: manylinux2014 (glibc 2.17), linked by zig
    # against glibc 2.17's symbols; the same wheel scripts/package.sh releases for x86_64.
    step "build the wheel (release, abi3, manylinux2014; Cargo.lock as committed)"
    (cd "$HERE" && PATH="$WORK/build/bin:$PATH" "$WORK/build/bin/maturin" build --release --locked \
        --zig --compatibility manylinux2014 --target x86_64-unknown-linux-gnu -o "$WORK/dist")
    WHEEL="$(ls "$WORK"/dist/traffic_control-*.whl)"
fi

step "test venv ($WORK/test): the wheel and the test dependencies"
"$PYTHON" -m venv "$WORK/test"
PY="$WORK/test/bin/python"
quiet_pip "$PY" "$WHEEL" -r "$HERE/tests/requirements.txt"

# From here on, run from an empty directory: only the installed package is importable.
mkdir -p "$WORK/run"
cd "$WORK/run"
"$PY" -c 'import traffic_control, sys; print("testing", traffic_control.__file__); sys.exit("site-packages" not in traffic_control.__file__)'

passed=0
failed=0
check() { # name, command...: runs a check, counts it, never stops the script
    local name="$1"
    shift
    step "$name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

check "stubs match the module (mypy.stubtest)" "$PY" -m mypy.stubtest traffic_control
check "the package type-checks (mypy --strict)" "$PY" -m mypy --strict --no-incremental -p traffic_control

step "pytest (installed package)"
set +e
"$PY" -m pytest -p no:cacheprovider --junitxml="$WORK/junit.xml" -q "$HERE/tests"
pytest_status=$?
set -e
read -r tests failures <<<"$("$PY" - "$WORK/junit.xml" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 1)
    raise SystemExit
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
print(total, bad)
PYEOF
)"
passed=$((passed + tests - failures))
failed=$((failed + failures))
if [[ $pytest_status -ne 0 && $failures -eq 0 ]]; then failed=$((failed + 1)); fi

check "bench (quick: the uncontended path against aiolimiter, PyrateLimiter, limits)" \
    "$PY" "$HERE/bench/bench.py" --quick

echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
