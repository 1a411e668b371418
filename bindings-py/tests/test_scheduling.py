"""Waiting in asyncio and in threads: the direct path, the queue, priorities, cancellation,
deadlines, events. Windows are short (tens of ms) so the suite stays quick."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from conftest import window
from mock_servers import busiest

from traffic_control import (
    AsyncPermit,
    DeadlineError,
    Event,
    Priority,
    RequestCancelledError,
    SyncPermit,
    TrafficControl,
)


async def test_async_with_goes_at_once_when_there_is_room() -> None:
    tc = TrafficControl(window(2, "1s"))
    async with tc.acquire("https://api.example.com/items/1?key=secret") as permit:
        assert isinstance(permit, AsyncPermit)
        assert permit.request >= 1 and permit.reservations == []
        assert abs(permit.at - time.monotonic() * 1000) < 1000
    assert permit.completion is not None and permit.completion.kind == "done"
    assert tc.snapshot()["limits"]["api"]["used"] == 1


async def test_await_returns_the_permit_to_report_yourself() -> None:
    tc = TrafficControl(
        {"limits": {"slots": {"kind": "concurrency", "max": 1}}, "global": ["slots"]}, timeout=1.0
    )
    permit = await tc.acquire("/items/1")
    assert tc.snapshot()["in_flight"] == 1
    assert permit.report(200).kind == "done"
    assert permit.report(200).kind == "unknown"  # reported twice
    assert tc.snapshot()["in_flight"] == 0


async def test_the_window_is_never_exceeded_and_waiters_go_in_time() -> None:
    tc = TrafficControl(window(5, "100ms"))
    ats: list[float] = []

    async def one(i: int) -> None:
        async with tc.acquire(f"/items/{i}") as permit:
            ats.append(permit.at)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(20)))
    elapsed = time.monotonic() - t0
    assert busiest(ats, 100.0) == 5
    assert 0.29 < elapsed < 1.5, elapsed  # 20 at 5 per 100 ms: the last four windows start at 300 ms


async def test_priorities_then_fifo_within_a_level() -> None:
    tc = TrafficControl(window(1, "50ms"))
    order: list[str] = []
    blocker = await tc.acquire("/block")

    async def one(name: str, priority: Priority) -> None:
        async with tc.acquire("/x", priority=priority):
            order.append(name)

    tasks = []
    for name, priority in [("low1", Priority.LOW), ("n1", Priority.NORMAL), ("low2", Priority.LOW),
                           ("crit", Priority.CRITICAL), ("high", Priority.HIGH), ("n2", Priority.NORMAL)]:
        tasks.append(asyncio.create_task(one(name, priority)))
        await asyncio.sleep(0.001)
    blocker.report(200)
    await asyncio.gather(*tasks)
    assert order == ["crit", "high", "n1", "n2", "low1", "low2"]


async def test_priority_names_and_ints_are_accepted() -> None:
    tc = TrafficControl(window(10, "1s"))
    for p in (Priority.HIGH, 1, "high", "LOW", None):
        async with tc.acquire("/x", priority=p):
            pass


async def test_cancelling_a_waiting_task_removes_it_from_the_queue(events: list[Event]) -> None:
    tc = TrafficControl(window(1, "10s"), listener=events.append)
    await tc.acquire("/first")
    task = asyncio.create_task(tc.acquire("/second").__aenter__())
    await asyncio.sleep(0.01)
    assert tc.waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tc.waiting == 0
    assert [e.type for e in events if e.endpoint == "GET /second"] == ["queued", "cancelled"]


async def test_wait_for_timeout_cancels_the_waiter() -> None:
    tc = TrafficControl(window(1, "10s"))
    await tc.acquire("/first")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(tc.acquire("/second").__aenter__(), 0.02)
    assert tc.waiting == 0


async def test_a_waiter_expires_at_its_deadline() -> None:
    # Two slots held: a third request could go when one is completed, so it may wait; nobody
    # completes, so its deadline passes.
    tc = TrafficControl({"limits": {"slots": {"kind": "concurrency", "max": 1}}, "global": ["slots"]})
    held = await tc.acquire("/held")
    t0 = time.monotonic()
    with pytest.raises(DeadlineError) as info:
        await tc.acquire("/late", timeout=0.05)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert 0.04 < time.monotonic() - t0 < 0.5
    assert tc.waiting == 0
    held.report(200)


async def test_a_request_that_cannot_go_in_time_fails_at_once() -> None:
    tc = TrafficControl(window(1, "10s"), timeout=0.05)
    # Completed: the window counts it down for 10 s from now (in flight, only its completion could
    # say when room comes, so the deadline could not be judged at once).
    (await tc.acquire("/first")).report(200)
    t0 = time.monotonic()
    with pytest.raises(DeadlineError) as info:
        await tc.acquire("/second")
    assert info.value.code == "DEADLINE_UNREACHABLE"
    assert time.monotonic() - t0 < 0.5  # at once, not after the 10 s window
    assert info.value.retry_after is not None and 9 < info.value.retry_after <= 10


async def test_close_fails_every_waiter() -> None:
    tc = TrafficControl(window(1, "10s"))
    await tc.acquire("/first")
    task = asyncio.create_task(tc.acquire("/second").__aenter__())
    await asyncio.sleep(0.01)
    tc.close()
    with pytest.raises(RequestCancelledError) as info:
        await task
    assert info.value.code == "CANCELLED"
    assert tc.waiting == 0


async def test_run_awaits_work_when_it_may_go() -> None:
    tc = TrafficControl(window(2, "50ms"))
    calls: list[float] = []

    async def work() -> str:
        calls.append(time.monotonic())
        return "ok"

    results = await asyncio.gather(*(tc.run(work, "/x") for _ in range(4)))
    assert results == ["ok"] * 4
    assert calls[3] - calls[0] >= 0.045
    assert await tc.run(work(), "/y") == "ok"  # a coroutine object too


async def test_listener_gets_every_event_with_its_log_row(events: list[Event]) -> None:
    tc = TrafficControl(window(1, "30ms"), listener=events.append)
    async with tc.acquire("https://api.example.com/items?key=secret") as first:
        first.report(200)
    async with tc.acquire("https://api.example.com/items?key=secret", priority=Priority.HIGH):
        pass
    kinds = [e.type for e in events]
    assert kinds == ["go", "completed", "queued", "go", "completed"]
    row = events[3].log()
    assert row["endpoint"] == "GET /items" and "secret" not in str(row)
    assert row["status"] == "go" and row["priority"] == "high"
    assert row["duration_ms"] is not None and 10 < row["duration_ms"] < 100  # waited for the window
    assert events[1].log()["response_status"] == 200


async def test_a_failing_listener_does_not_break_requests(caplog: pytest.LogCaptureFixture) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("listener bug")

    tc = TrafficControl(window(5, "1s"), listener=boom)
    async with tc.acquire("/x"):
        pass
    assert "listener failed" in caplog.text


def test_sync_acquire_from_many_threads_never_exceeds_the_window() -> None:
    tc = TrafficControl(window(4, "50ms"))
    ats: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(3):
            with tc.acquire_sync("/x") as permit:
                assert isinstance(permit, SyncPermit)
                with lock:
                    ats.append(permit.at)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ats) == 24
    assert busiest(ats, 50.0) == 4


def test_run_sync_and_a_sync_deadline() -> None:
    tc = TrafficControl({"limits": {"slots": {"kind": "concurrency", "max": 1}}, "global": ["slots"]})
    assert tc.run_sync(lambda: 42, "/x") == 42
    held = tc.acquire_sync("/held")
    with pytest.raises(DeadlineError):
        tc.acquire_sync("/late", timeout=0.03)
    held.report(None)
    with tc.acquire_sync("/now", timeout=0.03):
        pass


def test_a_thread_waiting_is_woken_by_a_completion_in_another_thread() -> None:
    tc = TrafficControl({"limits": {"slots": {"kind": "concurrency", "max": 1}}, "global": ["slots"]})
    held = tc.acquire_sync("/held")
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(tc.acquire_sync("/next", timeout=5)))
    t.start()
    time.sleep(0.02)
    assert tc.waiting == 1
    t0 = time.monotonic()
    held.report(200)
    t.join(2)
    assert got and time.monotonic() - t0 < 1.0
    got[0].report(200)


async def test_async_and_threads_share_one_controller() -> None:
    tc = TrafficControl(window(3, "40ms"))
    ats: list[float] = []

    def worker() -> None:
        for _ in range(3):
            with tc.acquire_sync("/t") as p:
                ats.append(p.at)

    async def task() -> None:
        for _ in range(3):
            async with tc.acquire("/a") as p:
                ats.append(p.at)

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.gather(task(), task())
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert len(ats) == 9
    assert busiest(ats, 40.0) == 3
