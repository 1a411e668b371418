"""Metrics: scraped over HTTP from prometheus_client's own exposition server, parsed with
prometheus_client's own parser; and the core's text, parsed the same way."""

from __future__ import annotations

import asyncio
import math
import urllib.request

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from traffic_control import Config, Priority, TrafficControl
from traffic_control.prometheus import TrafficControlCollector

CONFIG: Config = {
    "limits": {"global": {"kind": "window", "max": 2, "per": "200ms"}},
    "global": ["global"],
    "routes": [{"name": "catalog", "path": "^/catalog"}],
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def workload(tc: TrafficControl) -> None:
    async def one(i: int) -> None:
        async with tc.acquire(f"https://api.example.com/catalog/{i}?key=secret", priority=Priority.HIGH):
            pass

    await asyncio.gather(*(one(i) for i in range(3)))


async def test_a_scrape_of_a_real_endpoint_parses_with_prometheus_clients_parser() -> None:
    tc = TrafficControl(CONFIG)
    await workload(tc)
    registry = CollectorRegistry()
    registry.register(TrafficControlCollector(tc))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
    finally:
        server.shutdown()
        thread.join()
    got = samples(text)
    high_catalog = (("priority", "high"), ("result", "{}"), ("route", "catalog"))
    key = lambda result: ("traffic_control_requests_total", tuple(sorted(dict(high_catalog, result=result).items())))  # noqa: E731
    assert got[key("went_at_once")] == 2
    assert got[key("went_after_wait")] == 1
    assert got[("traffic_control_wait_seconds_count", (("priority", "high"),))] == 3
    assert got[("traffic_control_wait_seconds_bucket", (("le", "+Inf"), ("priority", "high")))] == 3
    # The one that waited waited for the window, about 200 ms.
    assert 0.15 < got[("traffic_control_wait_seconds_sum", (("priority", "high"),))] < 1.0
    assert got[("traffic_control_limit_capacity", (("limit", "global"),))] == 2
    assert "secret" not in text and "/catalog" not in text


def test_the_cores_text_is_what_prometheus_reads() -> None:
    tc = TrafficControl("backmarket")
    families = {f.name: f for f in text_string_to_metric_families(tc.metrics_text())}
    # prometheus_client names a counter's family without `_total`.
    assert families["traffic_control_requests"].type == "counter"
    assert families["traffic_control_wait_seconds"].type == "histogram"
    capacity = {s.labels["limit"]: s.value for s in families["traffic_control_limit_capacity"].samples}
    limits = tc.config["limits"]
    assert capacity == {name: limit["max"] for name, limit in limits.items() if "max" in limit}
    depth = {s.labels["priority"]: s.value for s in families["traffic_control_queue_depth"].samples}
    assert depth == {"critical": 0, "high": 0, "normal": 0, "low": 0}


def test_metrics_as_data() -> None:
    tc = TrafficControl(CONFIG)
    m = tc.metrics()
    assert m["requests"] == [] and m["rejected"] == []
    assert [h["priority"] for h in m["wait"]] == ["critical", "high", "normal", "low"]
    assert m["wait"][0]["buckets"][-1] == (math.inf, 0)
    assert {f["name"] for f in m["families"]} >= {"traffic_control_requests_total", "traffic_control_queue_depth"}
    assert m["snapshot"]["in_flight"] == 0
