"""The shared store (Redis) from Python: a real redis-server started for this module.
Windows here count from the go ("hold": "go"): these tests are about the store's mechanics; the
default hold (until completion plus per) is tested in core/tests/shared_store.rs and test_guarantee.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from traffic_control import Config, Event, TrafficControlError
from traffic_control.shared import SharedTrafficControl, StoreUnavailableError
from redis_server import RedisServer

WINDOW: Config = {"limits": {"api": {"kind": "window", "max": 4, "per": 300, "hold": "go"}}, "global": ["api"]}
_n = [0]


def account(tag: str) -> str:
    _n[0] += 1
    return f"py-{tag}-{_n[0]}"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer.start()
    yield s
    s.stop()


def client(port: int) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=1)


async def test_one_round_trip_per_admission_after_the_script_is_loaded(server: RedisServer) -> None:
    server.cli("script", "flush")
    tc = SharedTrafficControl({"limits": {"api": {"kind": "window", "max": 100, "per": "1s", "hold": "go"}}, "global": ["api"]},
                              redis=client(server.port), account=account("rt"))
    permit = await tc.acquire("/a")
    assert tc.round_trips[0] == 2  # NOSCRIPT, then EVAL
    await permit.complete(200)
    assert tc.round_trips[0] == 2  # nothing to tell the store
    for _ in range(10):
        await tc.acquire("/a")
    assert tc.round_trips[0] == 12


async def test_two_controllers_never_exceed_a_window_together(server: RedisServer) -> None:
    acct = account("win")
    a = SharedTrafficControl(WINDOW, redis=client(server.port), account=acct)
    b = SharedTrafficControl(WINDOW, redis=client(server.port), account=acct)
    times: list[float] = []
    t0 = time.monotonic()

    async def one(tc: SharedTrafficControl) -> None:
        await tc.acquire("/x")
        times.append((time.monotonic() - t0) * 1000)

    await asyncio.gather(*(one(a if i % 2 else b) for i in range(12)))
    times.sort()
    for i in range(4, len(times)):
        assert times[i] - times[i - 4] >= 300 - 15, times


async def test_a_waiting_high_goes_before_a_low_flood_of_another_controller(server: RedisServer) -> None:
    acct = account("prio")
    cfg: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 300, "hold": "go"}}, "global": ["api"]}
    a = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    await a.acquire("/x")
    await a.acquire("/x")
    order: list[str] = []

    async def low(i: int) -> None:
        await a.acquire("/x", priority="low")
        order.append(f"low{i}")

    async def high() -> None:
        await asyncio.sleep(0.02)
        await b.acquire("/x", priority="high")
        order.append("high")

    await asyncio.gather(*(low(i) for i in range(6)), high())
    assert order.index("high") <= 1, order


async def test_tenants_are_served_by_weight_across_controllers(server: RedisServer) -> None:
    """At weights 3 : 1, with both floods waiting, 24 goes split 18 : 6 within the bound the core's
    property test checks across processes (2 (1/3 + 1) in served / weight) and one request of each
    more (a real clock: goes are seen as their tasks resume); a newcomer goes after at most twice the
    requests whose start tags come first (3 of big's, 1 of small's)."""
    acct = account("tenants")
    cfg: Config = {
        "limits": {"api": {"kind": "window", "max": 2, "per": 100, "hold": "go"}}, "global": ["api"],
        "tenants": {"big": {"weight": 3}, "small": {"weight": 1}, "late": {"weight": 1}},
    }
    a = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    order: list[str] = []

    async def one(tc: SharedTrafficControl, tenant: str) -> None:
        permit = await tc.acquire("/x", tenant=tenant)
        order.append(tenant)
        await permit.complete(200)

    floods = [asyncio.ensure_future(one(a, "big")) for _ in range(30)]
    floods += [asyncio.ensure_future(one(b, "small")) for _ in range(30)]
    await asyncio.sleep(0.45)
    late_at = len(order)
    await asyncio.gather(*floods, one(b, "late"))
    split = [t for t in order[2:26] if t != "late"]
    big, small = split.count("big"), split.count("small")
    assert abs(big / 3 - small) <= 3 * (1 / 3 + 1), (big, small, order)
    assert order.index("late") - late_at <= 8, order
    await a.aclose()
    await b.aclose()


async def test_a_reservation_of_one_controller_holds_against_another(server: RedisServer) -> None:
    acct = account("res")
    cfg: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 500, "hold": "go"}}, "global": ["api"]}
    a = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    peak = a.reservation("/x")
    await a.acquire("/x", reserve=[peak])
    with pytest.raises(TrafficControlError) as e:
        await b.acquire("/x", max_wait=0.1)
    assert e.value.code in ("DEADLINE_UNREACHABLE", "DEADLINE_EXCEEDED")
    t0 = time.monotonic()
    await a.acquire("/x", priority="high", spend=peak)
    assert time.monotonic() - t0 < 0.05
    assert not await peak.release()


async def test_unreachable_redis_fails_closed(server: RedisServer) -> None:
    dead = client(1)
    events: list[Event] = []
    fail = SharedTrafficControl(WINDOW, redis=dead, account=account("dead"), on_unavailable="fail", listener=events.append)
    with pytest.raises(StoreUnavailableError) as e:
        await fail.acquire("/x")
    assert e.value.code == "STORE_UNAVAILABLE"
    # Its event says why, under id 0: the store never drew one.
    assert [(ev.type, ev.request, ev.log()["error"]) for ev in events] == [("rejected", 0, "STORE_UNAVAILABLE")]
    wait = SharedTrafficControl(WINDOW, redis=dead, account=account("dead"))
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await wait.acquire("/x", max_wait=0.3)
    assert 0.15 <= time.monotonic() - t0 < 1.0


class _Flaky:
    """A client whose calls fail while ``down``, as while its redis-server restarts."""

    def __init__(self, real: aioredis.Redis) -> None:
        self.real, self.down = real, False

    async def evalsha(self, *args: Any) -> Any:
        if self.down:
            raise ConnectionError("connection lost")
        return await self.real.evalsha(*args)

    async def eval(self, *args: Any) -> Any:
        if self.down:
            raise ConnectionError("connection lost")
        return await self.real.eval(*args)


async def test_a_completion_while_redis_is_unreachable_waits_under_the_policy(server: RedisServer) -> None:
    flaky = _Flaky(client(server.port))
    slots: Config = {"limits": {"slots": {"kind": "concurrency", "max": 1}}, "global": ["slots"]}
    tc = SharedTrafficControl(slots, redis=flaky, account=account("flaky"))
    permit = await tc.acquire("/x")
    flaky.down = True
    asyncio.get_running_loop().call_later(0.2, setattr, flaky, "down", False)
    await permit.complete(200)  # retried until Redis answered
    await tc.acquire("/x", max_wait=0.1)  # so the slot came back
    failing = SharedTrafficControl(slots, redis=flaky, account=account("flaky"), on_unavailable="fail")
    p2 = await failing.acquire("/x")
    flaky.down = True
    with pytest.raises(StoreUnavailableError) as e:
        await p2.complete(200)
    flaky.down = False
    assert e.value.code == "STORE_UNAVAILABLE"


async def test_events_name_one_id_per_request_from_queued_to_completed(server: RedisServer) -> None:
    acct = account("events")
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    no_retries: Config = {**WINDOW, "feedback": {"max_retries": 0}}
    a = SharedTrafficControl(no_retries, redis=client(server.port), account=acct, listener=seen_a.append)
    b = SharedTrafficControl(no_retries, redis=client(server.port), account=acct)
    off = b.on(seen_b.append)
    first = [await a.acquire("/x") for _ in range(4)]
    late = await b.acquire("https://api.example.com/x?key=SECRET", priority="low")  # waits for the window
    await late.complete(429, [("retry-after", "0")])
    for p in first:
        await p.complete(200)
    assert [e.type for e in seen_a] == ["go"] * 4 + ["completed"] * 4
    assert [e.type for e in seen_b] == ["queued", "go", "completed", "rate_limited"], seen_b
    assert len({e.request for e in seen_b}) == 1 and seen_b[0].request == late.request
    assert seen_b[0].endpoint == "GET /x" and seen_b[0].priority == "low"
    assert seen_b[2].status == 429 and (seen_b[1].waited or 0) > 100
    assert len({e.request for e in seen_a} | {late.request}) == 5, "ids unique across the two controllers"
    assert off() is True and off() is False
    await (await b.acquire("/y")).complete(200)
    assert len(seen_b) == 4, "no listener: no events"
    assert 0 <= a.now() - seen_a[-1].at < 5_000
    await a.aclose()
    await b.aclose()


async def test_requests_that_can_never_go_raise_their_kind(server: RedisServer) -> None:
    tc = SharedTrafficControl(WINDOW, redis=client(server.port), account=account("bad"))
    with pytest.raises(TrafficControlError) as e:
        await tc.acquire("/x", cost=5)
    assert e.value.code == "COST_EXCEEDS_CAPACITY"
    with pytest.raises(TrafficControlError) as e2:
        SharedTrafficControl(WINDOW, redis=client(server.port), account="a{b}")
    assert e2.value.code == "CONFIG"
    assert (await tc.snapshot())[0][0] == "api"


async def test_a_completion_wakes_a_waiter_of_another_controller_at_once(server: RedisServer) -> None:
    """The default window holds a request until its completion plus per; the completion publishes
    on the account's wake channel, and the waiter of another controller asks again at once instead
    of after half its waiter TTL (2 s here)."""
    acct = account("wake")
    cfg: Config = {"limits": {"api": {"kind": "window", "max": 1, "per": 200}}, "global": ["api"]}
    a = SharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SharedTrafficControl(cfg, redis=client(server.port), account=acct, waiter_ttl=4.0)
    permit = await a.acquire("/x")
    t0 = time.monotonic()
    waiter = asyncio.create_task(b.acquire("/x"))
    await asyncio.sleep(0.1)
    completed = time.monotonic() - t0
    await permit.complete(200)
    second = await waiter
    went = time.monotonic() - t0
    assert went >= completed + 0.19, (went, completed)
    assert went < completed + 1.0, f"went {went:.3f} s after start: the completion did not wake it"
    assert b.wakeups > 0
    await second.complete(200)
    await b.aclose()
    await a.aclose()


async def test_acquire_learns_an_unknown_keepa_balance_with_the_free_token_request(server: RedisServer) -> None:
    from mock_servers import MockKeepa

    with MockKeepa(tokens=300, refill=20, period=60.0) as keepa:
        tc = SharedTrafficControl("keepa", redis=client(server.port), account=account("learn"), env={})
        permits = await asyncio.gather(*(tc.acquire(f"{keepa.url}/bestsellers?key=K&category={c}") for c in (1, 2)))
        assert len(permits) == 2
        assert keepa.requests == 1, "one /token request for both"
        for p in permits:
            await p.complete(200)
        await tc.aclose()


async def test_a_rate_limited_request_is_retried_on_the_permit_complete_gives(server: RedisServer) -> None:
    config: Config = {**WINDOW, "feedback": {"max_retries": 1}}
    acct = account("retry")
    a = SharedTrafficControl(config, redis=client(server.port), account=acct)
    b = SharedTrafficControl(config, redis=client(server.port), account=acct)
    first = await a.acquire("/x", priority="high")
    t0 = time.monotonic()
    retried = asyncio.ensure_future(first.complete(429, [("Retry-After", "0.3")]))
    await asyncio.sleep(0.05)
    assert not retried.done(), "the retry waits for the store's pause"
    other = asyncio.ensure_future(b.acquire("/y", priority="low"))
    completion = await retried
    assert completion.kind == "retry" and completion.permit.request == first.request
    assert time.monotonic() - t0 >= 0.28
    # One retry allowed: the next 429 gives up.
    assert (await completion.permit.complete(429, [("Retry-After", "0.05")])).kind == "give_up"
    await (await other).complete(200)
    # Cancelling the task that waits for a retry withdraws it.
    again = await a.acquire("/x")
    waiting = asyncio.ensure_future(again.complete(429, [("Retry-After", "5")]))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert a.waiting == 0
    await a.aclose()
    await b.aclose()


def test_the_thread_host_returns_the_retry_permit_too(server: RedisServer) -> None:
    import redis

    from traffic_control.shared import SyncSharedTrafficControl

    tc = SyncSharedTrafficControl({**WINDOW, "feedback": {"max_retries": 1}}, redis=redis.Redis(port=server.port),
                                  account=account("retry-sync"))
    permit = tc.acquire("/x")
    t0 = time.monotonic()
    completion = permit.complete(429, [("Retry-After", "0.2")])
    assert completion.kind == "retry" and completion.permit.request == permit.request
    assert time.monotonic() - t0 >= 0.18
    assert completion.permit.complete(200).kind == "done"
    tc.close()


async def test_the_snapshot_shows_a_pause_with_its_reason_and_end(server: RedisServer) -> None:
    tc = SharedTrafficControl({**WINDOW, "feedback": {"max_retries": 0}}, redis=client(server.port), account=account("pause"))
    permit = await tc.acquire("/x")
    assert (await permit.complete(429, [("Retry-After", "5")])).kind == "give_up"
    name, _, _, _, pause = (await tc.snapshot())[0]
    assert name == "api" and pause is not None
    until, reason = pause
    assert reason == "retry_after"
    assert until > 0
