"""Token budgets and server feedback through the Python layer: syncing, waiting for refill,
insufficient budget, 429 with Retry-After, retries."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from traffic_control import Event, InsufficientBudgetError, TrafficControl

KEEPA_FAST = {
    "KEEPA_RATE_LIMIT_TOKENS_PER": "100ms",
    "KEEPA_RATE_LIMIT_TOKENS_REFILL": "20",
    "KEEPA_RATE_LIMIT_TOKENS_FLOOR": "10",
}


async def test_budget_unknown_until_synced_then_checked_before_each_request() -> None:
    tc = TrafficControl("keepa", env=KEEPA_FAST)
    with pytest.raises(InsufficientBudgetError) as unknown:
        await tc.acquire("https://api.keepa.com/product?key=k&asin=A")
    assert unknown.value.code == "BUDGET_UNKNOWN" and unknown.value.limit == "tokens"
    async with tc.acquire("https://api.keepa.com/token?key=k"):  # /token costs nothing: it goes
        pass
    tc.sync_budget("tokens", 40, refill_in=0.1)
    assert tc.snapshot()["limits"]["tokens"]["balance"] == 40
    async with tc.acquire("https://api.keepa.com/product?key=k&asin=A,B,C"):  # 3 tokens
        pass
    assert tc.snapshot()["limits"]["tokens"]["balance"] == 37


async def test_insufficient_budget_names_the_need_and_when_enough_is_there() -> None:
    tc = TrafficControl("keepa", env=KEEPA_FAST)
    tc.sync_budget("tokens", 30, refill_in=0.1)
    with pytest.raises(InsufficientBudgetError) as info:
        await tc.acquire("https://api.keepa.com/bestsellers?key=k&category=1", timeout=0.05)
    e = info.value
    assert (e.code, e.limit, e.needed, e.available) == ("INSUFFICIENT_BUDGET", "tokens", 50, 20)
    assert e.enough_at is not None and e.retry_after is not None and 0.1 < e.retry_after <= 0.25
    assert "needs 50, 20 available above the floor" in str(e)


async def test_a_request_waits_for_refill_within_its_timeout() -> None:
    tc = TrafficControl("keepa", env=KEEPA_FAST)
    tc.sync_budget("tokens", 30, refill_in=0.05)
    t0 = time.monotonic()
    async with tc.acquire("https://api.keepa.com/bestsellers?key=k&category=1", timeout=1.0):
        pass
    assert 0.1 < time.monotonic() - t0 < 0.4  # 20 + 20 refilled at 50 and 150 ms


async def test_token_fields_in_the_body_reconcile_the_balance() -> None:
    tc = TrafficControl("keepa", env=KEEPA_FAST)
    tc.sync_budget("tokens", 100, refill_in=0.1)
    async with tc.acquire("https://api.keepa.com/product?key=k&asin=A") as permit:
        body = json.dumps({"tokensLeft": 42, "refillIn": 80, "refillRate": 20, "tokensConsumed": 1})
        assert permit.report(200, {"content-type": "application/json"}, body.encode()).kind == "done"
    assert tc.snapshot()["limits"]["tokens"]["balance"] == 42


async def test_429_with_retry_after_pauses_the_limits_and_report_says_when(events: list[Event]) -> None:
    tc = TrafficControl(
        {"limits": {"api": {"kind": "window", "max": 10, "per": "1s"}}, "global": ["api"]}, listener=events.append
    )
    async with tc.acquire("/items") as permit:
        completion = permit.report(429, [("Retry-After", "0.05")])
    assert completion.kind == "retry" and completion.at is not None
    assert 45 <= completion.at - permit.at <= 55
    assert tc.waiting == 0  # report() does not retry by itself: the retry left the queue
    kinds = [e.type for e in events]
    assert "rate_limited" in kinds and "retried" in kinds and kinds[-1] == "cancelled"
    t0 = time.monotonic()
    async with tc.acquire("/items"):  # paused until the server's time
        pass
    assert time.monotonic() - t0 >= 0.03


class FakeResponse:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


async def test_run_retries_when_the_core_says_so() -> None:
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 10, "per": "1s"}}, "global": ["api"]})
    answers = [FakeResponse(429, {"Retry-After": "0.03"}), FakeResponse(200, {})]
    times: list[float] = []

    async def call() -> FakeResponse:
        times.append(time.monotonic())
        return answers.pop(0)

    response = await tc.run(call, "/items")
    assert response.status_code == 200 and len(times) == 2
    assert times[1] - times[0] >= 0.025


async def test_run_gives_up_after_max_retries() -> None:
    tc = TrafficControl(
        {
            "limits": {"api": {"kind": "window", "max": 10, "per": "1s"}},
            "global": ["api"],
            "feedback": {"max_retries": 1},
        }
    )
    calls = 0

    async def call() -> FakeResponse:
        nonlocal calls
        calls += 1
        return FakeResponse(429, {"Retry-After": "0.01"})

    response = await tc.run(call, "/items")
    assert response.status_code == 429 and calls == 2


def test_run_sync_retries_too() -> None:
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 10, "per": "1s"}}, "global": ["api"]})
    answers = [FakeResponse(429, {"Retry-After": "0.02"}), FakeResponse(200, {})]
    assert tc.run_sync(lambda: answers.pop(0), "/items").status_code == 200


async def test_sync_budget_of_an_unknown_limit_is_an_error() -> None:
    tc = TrafficControl("keepa", env=KEEPA_FAST)
    with pytest.raises(Exception) as info:
        tc.sync_budget("nope", 5)
    assert info.value.code == "UNKNOWN_LIMIT"  # type: ignore[attr-defined]
    await asyncio.sleep(0)
