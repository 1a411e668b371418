"""The guarantee under real conditions, from Python: the Back Market preset against the project's
mock Back Market API (bindings-node/test/support/mock-backmarket.mjs, run by node), which counts
each request when it arrives 10-150 ms after it leaves, in exact sliding windows, every method on
/ws/listings on catalog, and answers 429 past a real limit. Windows scaled 10x (latency is not).

asyncio (httpx.AsyncClient) and 16 threads (httpx.Client): price probes (read, Dip reserving the
Peak, Peek, Peak on the reservation) alongside LOW scans of GET /ws/listings. Asserted: no 429, the
API never counts more than the preset's max in any window, no listing left at the probe price."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from traffic_control import (
    AsyncTrafficControlTransport,
    FollowUp,
    Priority,
    TrafficControl,
    TrafficControlTransport,
)

MOCK = Path(__file__).resolve().parents[2] / "bindings-node" / "test" / "support" / "mock-backmarket.mjs"
SCALE = 10
ENV = {
    "BM_RATE_LIMIT_GLOBAL_PER_MS": str(10_000 // SCALE),
    "BM_RATE_LIMIT_CATALOG_PER_MS": str(10_000 // SCALE),
    "BM_RATE_LIMIT_COMPETITOR_PER_MS": str(1_000 // SCALE),
    "BM_RATE_LIMIT_FEEDBACK_BLOCK_MS": str(10_000 // SCALE),
}
PRESET_MAX = {"global": 150, "catalog": 15, "competitor": 2}


@pytest.fixture
def mock() -> Iterator[str]:
    if shutil.which("node") is None:
        pytest.skip("node is needed for the mock Back Market API")
    proc = subprocess.Popen(["node", str(MOCK), str(SCALE)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["url"]
    finally:
        proc.kill()
        proc.wait()


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/__mock/stats") as r:
        return json.loads(r.read())


def check(url: str, probes: int, scans: int) -> dict[str, Any]:
    s = stats(url)
    print(f"mock: {s['requests']} requests, {s['tooMany']} x 429, peaks {s['peak']}, longest at 1 EUR {s['probeMaxMs']:.0f} ms")
    assert s["tooMany"] == 0, s["byScope"]
    for name, top in PRESET_MAX.items():
        assert s["peak"][name] <= top, (name, s["peak"])
    assert s["atProbePrice"] == []
    assert s["probeMaxMs"] <= 10_000 / SCALE, "a listing stayed at 1 EUR longer than one catalog window"
    assert s["byMethod"].get("GET", 0) >= scans + 2 * probes
    return s


async def test_asyncio_probes_and_scans_never_draw_a_429(mock: str) -> None:
    tc = TrafficControl("backmarket", env=ENV)
    probes, scans = 12, 30
    async with httpx.AsyncClient(base_url=mock) as raw, httpx.AsyncClient(
        base_url=mock, transport=AsyncTrafficControlTransport(tc, timeout=60.0)
    ) as client:

        async def probe(i: int) -> None:
            listing = f"/ws/listings/{i}"
            original = (await client.get(listing)).json()["price"]
            async with tc.acquire(mock + listing, method="POST", reserve=[FollowUp(mock + listing, method="POST")]) as dip:
                r = await raw.post(listing, json={"price": 1})
                dip.report(r.status_code, list(r.headers.items()))
            try:
                peek = await client.get(f"/ws/backbox/v1/competitors/{i}", extensions={"traffic_control": {"priority": "high"}})
                assert peek.status_code == 200
            finally:
                async with tc.acquire(mock + listing, method="POST", priority=Priority.HIGH, spend=dip.reservations[0]) as peak:
                    r = await raw.post(listing, json={"price": original})
                    peak.report(r.status_code, list(r.headers.items()))

        async def scan(p: int) -> int:
            r = await client.get("/ws/listings", params={"page": p % 7 + 1}, extensions={"traffic_control": {"priority": "low"}})
            return r.status_code

        results = await asyncio.gather(*(probe(i) for i in range(1, probes + 1)), *(scan(p) for p in range(scans)))
    assert [r for r in results if r is not None] == [200] * scans
    check(mock, probes, scans)


def test_sixteen_threads_never_draw_a_429(mock: str) -> None:
    tc = TrafficControl("backmarket", env=ENV)
    probes, scans = 16, 32
    errors: list[BaseException] = []
    with httpx.Client(base_url=mock) as raw, httpx.Client(
        base_url=mock, transport=TrafficControlTransport(tc, timeout=60.0)
    ) as client:

        def worker(t: int) -> None:
            try:
                listing = f"/ws/listings/{100 + t}"
                original = client.get(listing).json()["price"]
                dip = tc.acquire_sync(mock + listing, method="POST", reserve=[FollowUp(mock + listing, method="POST")])
                r = raw.post(listing, json={"price": 1})
                dip.report(r.status_code, list(r.headers.items()))
                try:
                    assert client.get(f"/ws/backbox/v1/competitors/{t}", extensions={"traffic_control": {"priority": "high"}}).status_code == 200
                finally:
                    peak = tc.acquire_sync(mock + listing, method="POST", priority=Priority.HIGH, spend=dip.reservations[0])
                    r = raw.post(listing, json={"price": original})
                    peak.report(r.status_code, list(r.headers.items()))
                for p in range(2):
                    r = client.get("/ws/listings", params={"page": p + 1}, extensions={"traffic_control": {"priority": "low"}})
                    assert r.status_code == 200
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    check(mock, probes, scans)
