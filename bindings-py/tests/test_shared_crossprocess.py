"""The cross-process run (bindings-node/test/support/crossprocess.mjs): 4 Node/Bun and 2 Python
processes share the Back Market limits through one redis-server against the mock Back Market API;
one process is killed mid-run, redis-server restarts mid-run. Needs the Node package built
(bindings-node/scripts/build.sh, which the repository's test command runs first)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_PKG = Path(__file__).resolve().parents[2] / "bindings-node"


def test_processes_sharing_an_account_never_exceed_its_limits() -> None:
    if shutil.which("node") is None or not list((NODE_PKG / "native").glob("*.node")) or not (NODE_PKG / "dist").exists():
        pytest.skip("the Node package is not built (bash bindings-node/scripts/build.sh)")
    # The Back Market preset's limits with windows 5x shorter, the mock counting each request 10-150
    # ms after it leaves (latency not scaled). No margin in time: windows hold each request until
    # its completion plus per, so the arrival jitter of seven processes on two cores cannot push a
    # window of the API's past the preset's max.
    run = subprocess.run(
        ["node", "test/support/crossprocess.mjs", "--python", sys.executable, "--scale", "5"],
        cwd=NODE_PKG, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for phase in ("run", "restart"):
        p = report[phase]
        print(f"{phase}: {p['probes']} probes in {p['elapsedMs']:.0f} ms, {p['probeThroughput']:.2f}/s "
              f"(ceiling {report['probeCeiling']:.2f}/s), 429s {p['tooMany']} {p['byScope']}, peak {p['peak']}, events {p['events']}")
        assert p["tooMany"] == 0
        for name in report["real"]:
            # At arrival, within the preset's own max (150, 15, 2), not only the API's.
            assert p["peak"][name] <= report["config"]["limits"][name]["max"], (phase, name, p["peak"])
        for w in p["results"]:
            assert w["errors"] == [], w
        # Every probe went, including each Peak on the capacity its Dip reserved.
        assert p["probes"] == 6 * 10
        assert p["atProbePrice"] <= 3  # only the killed process's Dips stay at the probe price
    assert report["run"]["probeThroughput"] >= 0.6 * report["probeCeiling"]
    k = report["kill"]
    print(f"kill: {k}")
    assert k["heldLeases"] == 3 and k["heldReservations"] == 3
    assert k["after"] == {"leases": 0, "reservations": 0}
    assert k["returnedMs"] <= k["ttlMs"] + 500
