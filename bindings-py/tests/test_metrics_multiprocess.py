"""Metrics from several processes (workers with a controller each) served by one: the families
each process publishes in a directory, merged by TrafficControlMultiProcessCollector, scraped from
prometheus_client's own exposition server and parsed with its own parser."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from traffic_control.prometheus import TrafficControlMultiProcessCollector

WORKER = textwrap.dedent(
    """
    import sys
    from traffic_control import TrafficControl
    from traffic_control.prometheus import MultiProcessPublisher

    n, stay = int(sys.argv[1]), sys.argv[2] == "stay"
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 100, "per": "1s"}}, "global": ["api"],
                         "routes": [{"name": "items", "path": "^/items"}]})
    for i in range(n):
        with tc.acquire_sync(f"https://api.example.com/items/{i}"):
            pass
    MultiProcessPublisher(tc, interval=0.05).start()
    print("ready", flush=True)
    if stay:
        sys.stdin.read()  # until the test closes it
    """
)

REQUESTS = ("traffic_control_requests_total", (("priority", "normal"), ("result", "went_at_once"), ("route", "items")))


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
        thread.join()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_are_summed_over_every_process_and_gauges_kept_per_live_process(tmp_path: Path) -> None:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", WORKER, "3", "exit"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 0, gone.stderr
    live = subprocess.Popen([sys.executable, "-c", WORKER, "5", "stay"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline() == "ready\n"
        registry = CollectorRegistry()
        TrafficControlMultiProcessCollector(registry, path=str(tmp_path))
        got = scrape(registry)
        assert got[REQUESTS] == 8
        assert got[("traffic_control_wait_seconds_count", (("priority", "normal"),))] == 8
        assert got[("traffic_control_wait_seconds_bucket", (("le", "+Inf"), ("priority", "normal")))] == 8
        # Gauges: the live process's only, under its pid.
        capacity = {labels: v for (name, labels), v in got.items() if name == "traffic_control_limit_capacity"}
        assert capacity == {(("limit", "api"), ("pid", str(live.pid))): 100}
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=60)
    assert live.returncode == 0
    got = scrape(registry)
    assert got[REQUESTS] == 8, "a dead process's counters stay summed"
    assert not [k for k in got if k[0] == "traffic_control_limit_capacity"], "a dead process's gauges are dropped"
    assert not list(tmp_path.glob("*.tmp"))


def test_without_a_directory_it_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        TrafficControlMultiProcessCollector()
