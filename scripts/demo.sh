#!/usr/bin/env bash
# The README's demo: builds the Node/Bun package (napi addon + scheduler), then runs the Back Market
# scenario through the Elysia example under Bun, on the embedded in-memory default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bindings-node/scripts/build.sh > /dev/null
node bindings-node/examples/demo.mjs
