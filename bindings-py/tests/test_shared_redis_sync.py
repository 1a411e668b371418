"""The shared store from threads: SyncSharedTrafficControl over the blocking ``redis.Redis``,
against a real redis-server started for this module. Windows here count from the go ("hold":
"go"): these tests are about the store's mechanics; the default hold (until completion plus per)
is tested in core/tests/shared_store.rs and test_guarantee.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from traffic_control import Config, TrafficControlError
from traffic_control.shared import StoreUnavailableError, SyncSharedTrafficControl
from redis_server import RedisServer

WINDOW: Config = {"limits": {"api": {"kind": "window", "max": 4, "per": 300, "hold": "go"}}, "global": ["api"]}
_n = [0]


def account(tag: str) -> str:
    _n[0] += 1
    return f"py-sync-{tag}-{_n[0]}"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer.start()
    yield s
    s.stop()


def client(port: int, **options: Any) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=1, **options)


def test_evalsha_then_eval_on_noscript_and_one_round_trip_per_admission(server: RedisServer) -> None:
    server.cli("script", "flush")
    tc = SyncSharedTrafficControl({"limits": {"api": {"kind": "window", "max": 100, "per": "1s", "hold": "go"}}, "global": ["api"]},
                                  redis=client(server.port), account=account("rt"))
    permit = tc.acquire("/a")
    assert tc.round_trips[0] == 2  # NOSCRIPT, then EVAL
    permit.complete(200)
    assert tc.round_trips[0] == 2  # nothing to tell the store
    for _ in range(10):
        tc.acquire("/a")
    assert tc.round_trips[0] == 12
    assert tc.waiting == 0


def test_two_sync_controllers_in_threads_never_exceed_a_window_together(server: RedisServer) -> None:
    acct = account("win")
    a = SyncSharedTrafficControl(WINDOW, redis=client(server.port), account=acct)
    b = SyncSharedTrafficControl(WINDOW, redis=client(server.port), account=acct)
    times: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)
    t0 = time.monotonic()

    def one(tc: SyncSharedTrafficControl) -> None:
        try:
            barrier.wait()
            tc.acquire("/x").complete(200)
            with lock:
                times.append((time.monotonic() - t0) * 1000)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(a if i % 2 else b,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert len(times) == 12
    times.sort()
    for i in range(4, len(times)):
        assert times[i] - times[i - 4] >= 300 - 15, times
    assert times[-1] < 900 + 300, times  # three windows' worth, not much more
    assert a.waiting == 0 and b.waiting == 0


def test_threads_of_two_tenants_are_served_by_weight(server: RedisServer) -> None:
    """Weights 3 : 1 over threads of two sync controllers: with both tenants waiting, 16 goes after
    the first window split 12 : 4 within the cross-process bound and one request of each more."""
    cfg: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 100, "hold": "go"}}, "global": ["api"],
                   "tenants": {"big": {"weight": 3}, "small": {"weight": 1}}}
    acct = account("tenants")
    a = SyncSharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SyncSharedTrafficControl(cfg, redis=client(server.port), account=acct)
    order: list[str] = []
    lock = threading.Lock()

    def one(tc: SyncSharedTrafficControl, tenant: str) -> None:
        permit = tc.acquire("/x", tenant=tenant)
        with lock:
            order.append(tenant)
        permit.complete(200)

    threads = [threading.Thread(target=one, args=(a, "big")) for _ in range(20)]
    threads += [threading.Thread(target=one, args=(b, "small")) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    split = order[2:18]
    big, small = split.count("big"), split.count("small")
    assert abs(big / 3 - small) <= 3 * (1 / 3 + 1), (big, small, order)


def test_a_reservation_made_through_one_is_spent_through_the_other(server: RedisServer) -> None:
    acct = account("res")
    cfg: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 500, "hold": "go"}}, "global": ["api"]}
    a = SyncSharedTrafficControl(cfg, redis=client(server.port), account=acct)
    b = SyncSharedTrafficControl(cfg, redis=client(server.port), account=acct)
    peak = a.reservation("/x")
    dip = a.acquire("/x", reserve=[peak])
    assert dip.reservations == [peak] and peak.id is not None
    assert a.snapshot()[0][3] == 1  # one reserved, every process counts it
    with pytest.raises(TrafficControlError) as e:
        b.acquire("/x", max_wait=0.1)  # the last room is the Peak's
    assert e.value.code in ("DEADLINE_UNREACHABLE", "DEADLINE_EXCEEDED")
    # The Peak's id travels to the other controller (as it would to another process).
    spent = b.reservation("/x")
    spent.id = peak.id
    t0 = time.monotonic()
    b.acquire("/x", priority="high", spend=spent).complete(200)
    assert time.monotonic() - t0 < 0.05
    assert b.snapshot()[0][1:4] == (2, 2, 0)
    assert not peak.release()  # already spent
    with pytest.raises(ValueError):
        b.acquire("/x", spend=b.reservation("/x"))  # never made


def test_unreachable_redis_fails_closed_after_max_wait(server: RedisServer) -> None:
    # A blocking call cannot be cut short: the client's own retries (redis-py: 3, with backoff by
    # default) would outlast a short max_wait, so this one fails each call at once.
    dead = client(1, retry=Retry(NoBackoff(), 0))
    fail = SyncSharedTrafficControl(WINDOW, redis=dead, account=account("dead"), on_unavailable="fail")
    with pytest.raises(StoreUnavailableError) as e:
        fail.acquire("/x")
    assert e.value.code == "STORE_UNAVAILABLE"
    wait = SyncSharedTrafficControl(WINDOW, redis=dead, account=account("dead"))
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as e2:
        wait.acquire("/x", max_wait=0.3)
    assert e2.value.code == "STORE_UNAVAILABLE"
    assert 0.15 <= time.monotonic() - t0 < 1.0
    short = SyncSharedTrafficControl(WINDOW, redis=dead, account=account("dead"), unavailable_max_wait=0.2)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        short.acquire("/x")
    assert 0.1 <= time.monotonic() - t0 < 1.0
    assert wait.waiting == 0 and short.waiting == 0


class _Flaky:
    """A client whose calls fail while ``down``, as while its redis-server restarts."""

    def __init__(self, real: redis.Redis) -> None:
        self.real, self.down = real, False

    def evalsha(self, *args: Any) -> Any:
        if self.down:
            raise redis.ConnectionError("connection lost")
        return self.real.evalsha(*args)

    def eval(self, *args: Any) -> Any:
        if self.down:
            raise redis.ConnectionError("connection lost")
        return self.real.eval(*args)


def test_a_release_while_redis_is_unreachable_waits_under_the_policy(server: RedisServer) -> None:
    flaky = _Flaky(client(server.port))
    tc = SyncSharedTrafficControl(WINDOW, redis=flaky, account=account("flaky"))
    follow_up = tc.reservation("/x")
    tc.acquire("/x", reserve=[follow_up])
    assert tc.snapshot()[0][3] == 1
    flaky.down = True
    threading.Timer(0.2, setattr, (flaky, "down", False)).start()
    assert follow_up.release()  # retried until Redis answered
    assert tc.snapshot()[0][3] == 0
    short = SyncSharedTrafficControl(WINDOW, redis=flaky, account=account("flaky"), unavailable_max_wait=0.2)
    failing = SyncSharedTrafficControl(WINDOW, redis=flaky, account=account("flaky"), on_unavailable="fail")
    held = [short.reservation("/x"), failing.reservation("/x")]
    short.acquire("/x", reserve=[held[0]])
    failing.acquire("/x", reserve=[held[1]])
    flaky.down = True
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as e:
        held[0].release()
    assert 0.1 <= time.monotonic() - t0 < 1.0
    with pytest.raises(StoreUnavailableError):
        held[1].release()
    flaky.down = False
    assert e.value.code == "STORE_UNAVAILABLE"


def test_requests_that_can_never_go_raise_their_kind(server: RedisServer) -> None:
    tc = SyncSharedTrafficControl(WINDOW, redis=client(server.port), account=account("bad"))
    with pytest.raises(TrafficControlError) as e:
        tc.acquire("/x", cost=5)
    assert e.value.code == "COST_EXCEEDS_CAPACITY"
    assert tc.snapshot()[0][0] == "api"


def test_acquire_learns_an_unknown_keepa_balance_with_the_free_token_request(server: RedisServer) -> None:
    from mock_servers import MockKeepa

    with MockKeepa(tokens=300, refill=20, period=60.0) as keepa:
        tc = SyncSharedTrafficControl("keepa", redis=client(server.port), account=account("learn"), env={})
        permits: list[Any] = []
        threads = [
            threading.Thread(target=lambda c=c: permits.append(tc.acquire(f"{keepa.url}/bestsellers?key=K&category={c}")))
            for c in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(permits) == 3
        assert keepa.requests == 1, "one /token request for all three threads"
        for p in permits:
            p.complete(200)
        tc.close()
