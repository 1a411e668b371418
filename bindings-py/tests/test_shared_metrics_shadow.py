"""Metrics and shadow mode of the shared controllers, against a real redis-server started for this
module. Metrics: each process counts its own requests (by route, priority and result; waits;
refusals; the pauses its answers caused) and reads the account's limits from Redis in one round
trip; the threaded controller is scraped over HTTP through prometheus_client's exposition server
and parsed with prometheus_client's own parser. Shadow: a config run in memory beside the
process's traffic reports what it would have decided."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import asyncio

from traffic_control import Config, ConfigError, TrafficControlError
from traffic_control.prometheus import TrafficControlCollector
from traffic_control.shared import SharedTrafficControl, SyncSharedTrafficControl
from redis_server import RedisServer

CONFIG: Config = {
    "limits": {"api": {"kind": "window", "max": 2, "per": 300, "hold": "go"}},
    "global": ["api"],
    "routes": [{"name": "catalog", "path": "^/catalog"}],
    "feedback": {"max_retries": 0},
}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer.start()
    yield s
    s.stop()


def count(metrics: dict[str, Any], route: str, priority: str, result: str) -> int:
    return sum(r["count"] for r in metrics["requests"] if (r["route"], r["priority"], r["result"]) == (route, priority, result))


async def test_each_process_counts_its_own_requests_and_reads_the_accounts_limits(server: RedisServer) -> None:
    a = SharedTrafficControl(CONFIG, redis=aioredis.Redis(port=server.port), account="metrics-async")
    b = SharedTrafficControl(CONFIG, redis=aioredis.Redis(port=server.port), account="metrics-async")
    await a.acquire("/catalog/1")
    await b.acquire("/catalog/2")
    t0 = time.monotonic()
    late = await a.acquire("https://api.example.com/catalog/3?key=secret", priority="high")
    waited = time.monotonic() - t0
    await late.complete(429, [("retry-after", "0.05")])
    with pytest.raises(TrafficControlError) as e:
        await a.acquire("/catalog/4", cost=3)
    assert e.value.code == "COST_EXCEEDS_CAPACITY"

    m = await a.metrics()
    assert count(m, "catalog", "normal", "went_at_once") == 1  # A's own, not B's
    assert count(m, "catalog", "high", "went_after_wait") == 1
    assert count(m, "catalog", "high", "rate_limited") == 1
    high = next(h for h in m["wait"] if h["priority"] == "high")
    assert high["count"] == 1 and abs(high["sum_seconds"] - waited) < 0.1
    assert any(p["limit"] == "api" and p["reason"] == "retry_after" for p in m["pauses"])
    api = next(limit for limit in m["snapshot"]["limits"] if limit["name"] == "api")
    assert api["capacity"] == 2 and 1 <= api["used"] <= 2
    text = await a.metrics_text()
    assert 'traffic_control_requests_total{route="catalog",priority="high",result="went_after_wait"} 1' in text
    assert "secret" not in text and "example.com" not in text
    assert sum(r["count"] for r in (await b.metrics())["requests"]) == 1
    await a.aclose()
    await b.aclose()


def test_the_threaded_controller_is_scraped_through_prometheus_client(server: RedisServer) -> None:
    tc = SyncSharedTrafficControl(CONFIG, redis=redis.Redis(port=server.port), account="metrics-sync")
    for i in range(2):
        tc.acquire(f"/catalog/{i}").complete(200)
    registry = CollectorRegistry()
    registry.register(TrafficControlCollector(tc))
    http, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        before = tc.round_trips[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{http.server_address[1]}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert tc.round_trips[0] == before + 1  # one round trip per scrape
    finally:
        http.shutdown()
        thread.join()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("traffic_control_requests_total", (("priority", "normal"), ("result", "went_at_once"), ("route", "catalog")))] == 2
    assert values[("traffic_control_limit_used", (("limit", "api"),))] == 2
    assert values[("traffic_control_limit_capacity", (("limit", "api"),))] == 2
    assert values[("traffic_control_queue_depth", (("priority", "normal"),))] == 0
    tc.close()


async def test_a_stricter_shadow_beside_the_shared_store_reports_the_waits_it_would_have_imposed(server: RedisServer) -> None:
    loose: Config = {"limits": {"api": {"kind": "window", "max": 10, "per": "1s", "hold": "go"}}, "global": ["api"]}
    strict: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 200, "hold": "go"}}, "global": ["api"]}
    tc = SharedTrafficControl(loose, redis=aioredis.Redis(port=server.port), account="shadow-async")
    assert tc.shadow_report() is None
    with pytest.raises(ConfigError) as e:
        tc.set_shadow({"limits": {"api": {"kind": "window", "max": 0, "per": "1s"}}})
    assert "limits.api.max" in str(e.value)
    tc.set_shadow(strict)
    for i in range(4):
        await (await tc.acquire(f"/x/{i}")).complete(200)
    await asyncio.sleep(0.45)
    r = tc.shadow_report()
    assert r is not None
    assert (r["enforced"]["requests"], r["enforced"]["went_at_once"]) == (4, 4)
    assert (r["shadow"]["went_at_once"], r["shadow"]["went_after_wait"]) == (2, 2)
    assert 0.15 <= r["shadow"]["wait_seconds"]["max"] <= 0.45
    tc.set_shadow(None)
    assert tc.shadow_report() is None
    await tc.aclose()


def test_the_threaded_shared_controller_takes_a_preset_as_its_shadow(server: RedisServer) -> None:
    tc = SyncSharedTrafficControl(CONFIG, redis=redis.Redis(port=server.port), account="shadow-sync")
    tc.set_shadow("backmarket", env={})
    tc.acquire("/catalog/1").complete(200)
    r = tc.shadow_report()
    assert r is not None and r["enforced"]["requests"] == 1 and r["shadow"]["requests"] == 1
    tc.close()
