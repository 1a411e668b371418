"""Circuit breakers (``{"kind": "breaker"}``) through the Python host layers, against a real HTTP
server on 127.0.0.1 that answers 503 while it is down: the httpx transports' answers open the
breaker, requests wait for its half-open (or are refused at once when their longest wait ends
before), the probe's success closes it, every change is an event; the shared store refuses a
breaker rather than ignoring it."""

from __future__ import annotations

import time

import httpx
import pytest
from mock_servers import MockFlakyApi

from traffic_control import (
    AsyncTrafficControlTransport,
    Config,
    ConfigError,
    Event,
    TrafficControl,
    TrafficControlError,
    TrafficControlTransport,
)
from traffic_control.shared import SharedTrafficControl

CONFIG: Config = {
    "limits": {"key": {"kind": "breaker", "failures": 2, "open_for": "200ms", "close_after": 1}},
    "global": ["key"],
}


async def test_asyncio_a_breaker_opens_holds_then_closes() -> None:
    events: list[Event] = []
    tc = TrafficControl(CONFIG, listener=events.append)
    with MockFlakyApi() as api:
        async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc), base_url=api.url) as c:
            api.down = True
            assert (await c.get("/a")).status_code == 503
            assert (await c.get("/b")).status_code == 503
            opened = [e for e in events if e.type == "breaker_opened"]
            assert [(e.limit, e.reason) for e in opened] == [("key", "failures")]
            assert tc.snapshot()["limits"]["key"]["kind"] == "breaker"
            api.down = False
            t0 = time.monotonic()
            assert (await c.get("/c")).status_code == 200
            assert time.monotonic() - t0 >= 0.15
        # Nothing reached the server while the breaker was open.
        assert len(api.arrivals) == 3
    assert [e.type for e in events if e.type.startswith("breaker_")] == [
        "breaker_opened",
        "breaker_half_open",
        "breaker_closed",
    ]


def test_threads_refuse_at_once_what_the_half_open_comes_too_late_for() -> None:
    tc = TrafficControl(CONFIG)
    with MockFlakyApi() as api:
        api.down = True
        with httpx.Client(transport=TrafficControlTransport(tc), base_url=api.url) as c:
            assert c.get("/a").status_code == 503
            assert c.get("/b").status_code == 503
            with httpx.Client(transport=TrafficControlTransport(tc, max_wait=0.01), base_url=api.url) as hurried:
                t0 = time.monotonic()
                with pytest.raises(TrafficControlError) as e:
                    hurried.get("/c")
                assert e.value.code == "DEADLINE_UNREACHABLE"
                assert time.monotonic() - t0 < 0.1, "refused at once, not after waiting"
            api.down = False
            assert c.get("/d").status_code == 200
        assert len(api.arrivals) == 3


def test_a_bad_breaker_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        TrafficControl({"limits": {"key": {"kind": "breaker", "probes": 0}}, "global": ["key"]})
    assert e.value.field == "limits.key.probes"


def test_the_shared_store_refuses_breakers() -> None:
    with pytest.raises(ConfigError) as e:
        SharedTrafficControl(CONFIG, redis=object(), account="a")  # type: ignore[arg-type]  # never called
    assert e.value.field == "limits.key.kind"
