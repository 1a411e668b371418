"""The httpx transports against a mock Keepa API on 127.0.0.1 (time scaled: a minute is 100 ms)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import httpx
import pytest
from mock_servers import MockKeepa

from traffic_control import (
    AsyncTrafficControlTransport,
    Event,
    InsufficientBudgetError,
    TrafficControl,
    TrafficControlTransport,
)

PERIOD = 0.1  # Keepa refills every minute; here every 100 ms
FLOOR = 10
ENV = {
    "KEEPA_RATE_LIMIT_TOKENS_PER": f"{int(PERIOD * 1000)}ms",
    "KEEPA_RATE_LIMIT_TOKENS_REFILL": "20",
    "KEEPA_RATE_LIMIT_TOKENS_FLOOR": str(FLOOR),
}


def keepa_controller(**kwargs: object) -> TrafficControl:
    return TrafficControl("keepa", env=ENV, **kwargs)  # type: ignore[arg-type]


async def test_a_burst_of_mixed_costs_never_draws_a_429_nor_goes_below_the_floor() -> None:
    events: list[Event] = []
    tc = keepa_controller(listener=events.append)
    rng = random.Random(7)
    with MockKeepa(tokens=100, refill=20, period=PERIOD) as keepa:
        transport = AsyncTrafficControlTransport(tc, timeout=5.0)
        async with httpx.AsyncClient(transport=transport, base_url=keepa.url) as client:
            token = await client.get("/token", params={"key": "secret"})
            assert token.status_code == 200
            # The balance the server reported (100, or more when a 100 ms refill passed meanwhile).
            assert tc.snapshot()["limits"]["tokens"]["balance"] == token.json()["tokensLeft"] >= 100

            async def call(i: int) -> httpx.Response:
                if i % 6 == 0:
                    return await client.get("/bestsellers", params={"key": "secret", "category": str(i)})
                if i % 6 == 1:
                    return await client.get("/token", params={"key": "secret"})
                asins = ",".join(f"B{i:03d}{n}" for n in range(rng.randint(1, 8)))
                return await client.get("/product", params={"key": "secret", "asin": asins})

            responses = await asyncio.gather(*(call(i) for i in range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    assert keepa.rate_limited == 0, "the server answered 429 NOT_ENOUGH_TOKEN"
    assert keepa.min_balance_after_spend is not None and keepa.min_balance_after_spend >= FLOOR
    assert responses[2].json()["products"][0]["asin"].startswith("B002")
    assert all("secret" not in e.endpoint for e in events)
    assert {"go", "completed", "queued"} <= {e.type for e in events}


async def test_work_that_cannot_be_afforded_within_its_wait_fails_at_once() -> None:
    tc = keepa_controller()
    with MockKeepa(tokens=60, refill=20, period=PERIOD) as keepa:
        async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc), base_url=keepa.url) as client:
            await client.get("/token")
            t0 = time.monotonic()
            with pytest.raises(InsufficientBudgetError) as info:
                asins = ",".join(f"A{n}" for n in range(100))
                await client.get("/product", params={"asin": asins}, extensions={"traffic_control": {"timeout": 0.05}})
            assert time.monotonic() - t0 < 0.5  # at once: it never waited for refill
    e = info.value
    assert (e.code, e.needed, e.available) == ("INSUFFICIENT_BUDGET", 100, 50)
    assert e.retry_after is not None and 0.1 < e.retry_after < 0.4
    assert keepa.by_path.get("/product") is None  # it never reached the server


async def test_a_429_from_the_server_is_retried_after_refill() -> None:
    # The controller believes in more tokens than the server has (another process spent them):
    # the 429 NOT_ENOUGH_TOKEN corrects the balance, pauses, and the transport retries.
    tc = keepa_controller()
    with MockKeepa(tokens=0, refill=20, period=PERIOD) as keepa:
        tc.sync_budget("tokens", 100)
        async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc), base_url=keepa.url) as client:
            response = await client.get("/product", params={"asin": "A,B"})
    assert response.status_code == 200
    assert keepa.rate_limited == 1 and keepa.by_path["/product"] == 2


def test_the_sync_transport_from_threads() -> None:
    tc = keepa_controller()
    with MockKeepa(tokens=60, refill=20, period=PERIOD) as keepa:
        with httpx.Client(transport=TrafficControlTransport(tc, timeout=5.0), base_url=keepa.url) as client:
            client.get("/token")
            statuses: list[int] = []

            def worker(i: int) -> None:
                for j in range(3):
                    statuses.append(client.get("/product", params={"asin": f"T{i}{j},U{i}{j}"}).status_code)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert statuses == [200] * 18
    assert keepa.rate_limited == 0
    assert keepa.min_balance_after_spend is not None and keepa.min_balance_after_spend >= FLOOR


async def test_per_request_options_and_unknown_ones() -> None:
    tc = keepa_controller()
    # No refill during the test (the default period is 0.1 s: a loaded machine took longer than that
    # between the two calls, and the balance checked below grew by a refill).
    with MockKeepa(tokens=100, period=3600.0) as keepa:
        async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc), base_url=keepa.url) as client:
            await client.get("/token")
            r = await client.get("/anything", extensions={"traffic_control": {"cost": 7, "priority": "high"}})
            assert r.status_code == 200
            # The estimate was 7; the server's own count (1 for an unknown path) is what is kept.
            assert tc.snapshot()["limits"]["tokens"]["balance"] == 99
            with pytest.raises(InsufficientBudgetError) as info:
                await client.get("/anything", extensions={"traffic_control": {"cost": 95, "timeout": 0}})
            assert info.value.needed == 95
            with pytest.raises(TypeError, match="colour"):
                await client.get("/token", extensions={"traffic_control": {"colour": "red"}})


async def test_an_unknown_balance_is_learnt_with_the_free_token_request_once() -> None:
    tc = keepa_controller()
    assert tc.snapshot()["limits"]["tokens"]["balance"] is None
    with MockKeepa(tokens=300, refill=20, period=PERIOD) as keepa:
        transport = AsyncTrafficControlTransport(tc, timeout=5.0)
        async with httpx.AsyncClient(transport=transport, base_url=keepa.url) as client:
            # No /token first: the transport sends it by itself, once for both, with the key.
            responses = await asyncio.gather(
                *(client.get("/bestsellers", params={"key": "secret", "category": str(i)}) for i in range(2))
            )
    assert [r.status_code for r in responses] == [200, 200]
    assert keepa.rate_limited == 0
    assert tc.snapshot()["limits"]["tokens"]["balance"] is not None


def test_an_unknown_balance_is_learnt_by_the_blocking_transport_too() -> None:
    tc = keepa_controller()
    with MockKeepa(tokens=300, refill=20, period=PERIOD) as keepa:
        with httpx.Client(transport=TrafficControlTransport(tc, timeout=5.0), base_url=keepa.url) as client:
            results: list[int] = []
            threads = [
                threading.Thread(target=lambda i=i: results.append(client.get("/bestsellers", params={"key": "k", "category": str(i)}).status_code))
                for i in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert results == [200] * 4
    assert keepa.rate_limited == 0
