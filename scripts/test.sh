#!/usr/bin/env bash
# Runs every test of the project. This is the README's test command and what CI runs.
# It installs what it needs itself, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it starts (minutes:seconds into the run): where the time goes, from the log.
step() { printf '\n==> [%d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

step "toolchain components"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

step "servers and tools the tests start or call: redis-server and mariadb-server (the shared store's and the rate_limit_logs tests start their own), chromium (the simulator's page), promtool (Debian's prometheus)"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian puts mariadbd in /usr/sbin, which a user's PATH may lack (the tests look there too).
PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
redis-server --version
PATH="$PATH:/usr/sbin:/usr/local/sbin" mariadbd --version
chromium --version
# The prometheus package starts a server as a service; the tests need only its promtool.
{ command -v systemctl >/dev/null 2>&1 && systemctl stop prometheus 2>/dev/null; } || true
# The Redis, MariaDB and Chromium tests fail instead of skipping when what they need is missing.
export TC_REQUIRE_REDIS=1 TC_REQUIRE_MARIADB=1 TC_REQUIRE_CHROMIUM=1

step "the example Prometheus alerting rules: promtool check rules, promtool test rules"
promtool check rules examples/prometheus/alerts.yml
(cd examples/prometheus && promtool test rules alerts.test.yml)

step "format"
cargo fmt --all -- --check

step "lint (warnings denied; the core's clippy.toml forbids reading a clock)"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "core: unit, behaviour, property and scenario tests; the shared store against redis-server"
cargo test --locked --workspace --profile test-release

# The benches and the demo are checked here under the tests' profile (built once with them); the
# figures come from 'cargo bench' under the bench profile, the demo from the README's command.
step "core: benchmarks compile and run once (figures come from 'cargo bench')"
cargo bench --locked --profile test-release -p traffic-control-core --bench admission -- --test
cargo bench --locked --profile test-release -p traffic-control-sim --bench simulate -- --test

step "core: the simulated Back Market demo runs"
cargo run --locked --profile test-release -q -p traffic-control-core --example demo > /dev/null

step "fuzz: the cargo-fuzz targets built once on stable (RUSTC_BOOTSTRAP=1), then 15 s each; a crash fails (fuzz/README.md)"
bash fuzz/ci.sh

step "node and bun package: build, node --test, bun test, install from the tarball, bench once"
bash bindings-node/scripts/test.sh

step "wasm package: built from scratch (wasm32 target, wasm-bindgen-cli at the locked version), node --test, workerd"
bash bindings-wasm/scripts/test.sh

step "python package: manylinux2014 wheel built by maturin (zig links glibc 2.17), installed into a fresh venv, stubtest, pytest, bench once"
bash bindings-py/test.sh

step "packages (scripts/package.sh --quick): the npm packages in napi-rs's layout with one cross-build (linux-x64-musl), installed by bun add; the WebAssembly fallback with the addon removed"
bash scripts/package.sh --quick

echo
echo "all tests passed in $((SECONDS / 60)) min $((SECONDS % 60)) s"
