#!/usr/bin/env bash
# The shared store's fault campaign: Node, Bun and Python processes on one account against the mock
# Back Market API, through a SIGKILL mid-probe, a redis-server restart, a TCP proxy that delays,
# drops and cuts connections, two bursts of 429s the limits did not cause, and a Redis Cluster
# failover; then a killed process's capacity coming back, and 1M in-memory requests per runtime for
# memory growth. The phases and what each checks: bindings-node/test/support/crossprocess.mjs. Exits
# non-zero on any violation, 429 not injected, request sent into an injected pause, unresolved
# request, capacity not returned after its TTL, worker error or memory growth.
#
#   bash scripts/soak.sh                       # about 2 minutes: what CI runs (through pytest)
#   bash scripts/soak.sh --minutes 10          # the five runs repeated for about that long
#   bash scripts/soak.sh --python venv/bin/python   # a Python with traffic_control, redis, httpx
#
# Without --python (or TC_PYTHON) it builds the Python package into a fresh venv with pip, as a
# user installing from source would. It builds the Node package if it is not built.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=2
python="${TC_PYTHON:-}"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --report) out="$2"; shift 2 ;;
    *) echo "soak.sh: unknown argument $1 (--minutes N, --python PATH, --report FILE)" >&2; exit 2 ;;
  esac
done
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
  echo "soak.sh: --minutes must be a whole number of minutes, at least 1 (got '$minutes')" >&2
  exit 2
fi

command -v redis-server >/dev/null || { echo "soak.sh: redis-server is needed (apt-get install -y redis-server)" >&2; exit 2; }
if [ ! -d bindings-node/node_modules ]; then (cd bindings-node && npm ci --no-audit --no-fund --silent); fi
if ! ls bindings-node/native/*.node >/dev/null 2>&1 || [ ! -d bindings-node/dist ]; then bash bindings-node/scripts/build.sh; fi
if [ -z "$python" ]; then
  venv="$(mktemp -d)/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q ./bindings-py redis httpx
  python="$venv/bin/python"
fi

# One round of the five runs takes about a minute here (2 cores); the short campaign is one round
# with the kill and memory phases.
rounds=$(( minutes <= 2 ? 1 : (minutes * 2 + 2) / 3 ))
report="${out:-$(mktemp)}"
echo "==> fault campaign: $rounds round(s) of run, restart, proxy, burst, cluster; then kill, memory (1M in-memory requests per runtime)"
(cd bindings-node && node test/support/crossprocess.mjs --python "$python" --scale 5 --probes 3 --scans 6 \
  --rounds "$rounds" --memory 1000000) > "$report"
echo "==> report: $report"
