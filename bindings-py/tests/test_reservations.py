"""Reservations: the Dip reserves the Peak's room in its own admission; the Peak spends it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from traffic_control import Config, DeadlineError, Event, FollowUp, Priority, TrafficControl

CATALOG: Config = {
    "limits": {"catalog": {"kind": "window", "max": 2, "per": "10s"}},
    "routes": [{"name": "listings", "method": "POST", "path": "^/ws/listings", "limits": ["catalog"]}],
}


async def test_the_peak_goes_at_once_on_its_reservation_even_when_the_window_is_full() -> None:
    tc = TrafficControl(CATALOG)
    async with tc.acquire(
        "/ws/listings/42", method="POST", reserve=[FollowUp("/ws/listings/42", method="POST")]
    ) as dip:
        dip.report(200)
    [reservation] = dip.reservations
    snapshot = tc.snapshot()["limits"]["catalog"]
    assert (snapshot["used"], snapshot["reserved"], snapshot["available"]) == (1, 1, 0)

    # Nobody else takes the reserved room, not even HIGH: it waits (the reservation might be
    # released) and its deadline passes.
    with pytest.raises(DeadlineError) as info:
        await tc.acquire("/ws/listings/7", method="POST", priority=Priority.HIGH, timeout=0.02)
    assert info.value.code == "DEADLINE_EXCEEDED"

    async with tc.acquire("/ws/listings/42", method="POST", priority=Priority.HIGH, spend=reservation, timeout=0):
        pass
    assert tc.snapshot()["limits"]["catalog"]["used"] == 2
    assert tc.snapshot()["reservations"] == 0


def test_release_frees_the_room_for_a_waiter(events: list[Event]) -> None:
    tc = TrafficControl(CATALOG, listener=events.append)
    dip = tc.acquire_sync("/ws/listings/1", method="POST", reserve=[FollowUp("/ws/listings/1", method="POST")])
    dip.report(200)
    assert tc.snapshot()["limits"]["catalog"]["available"] == 0
    went: list[float] = []
    waiter = threading.Thread(target=lambda: went.append(tc.acquire_sync("/ws/listings/2", method="POST").at))
    waiter.start()
    time.sleep(0.02)
    assert tc.waiting == 1 and not went
    t0 = time.monotonic()
    assert tc.release(dip.reservations[0]) is True
    waiter.join(2)
    assert went and time.monotonic() - t0 < 1.0
    assert tc.release(dip.reservations[0]) is False
    assert "reservation_released" in [e.type for e in events]


async def test_a_reservation_expires_after_its_ttl(events: list[Event]) -> None:
    tc = TrafficControl(CATALOG, listener=events.append)
    async with tc.acquire(
        "/ws/listings/1", method="POST", reserve=[FollowUp("/ws/listings/1", method="POST", ttl_ms=20)]
    ):
        pass
    assert tc.snapshot()["reservations"] == 1
    await asyncio.sleep(0.03)
    assert tc.snapshot()["reservations"] == 0
    expired = [e for e in events if e.type == "reservation_expired"]
    assert len(expired) == 1 and expired[0].reservation is not None


async def test_follow_ups_by_route_and_limits() -> None:
    tc = TrafficControl(CATALOG)
    async with tc.acquire(route="listings", reserve=[FollowUp(route="listings", cost=1)]) as dip:
        assert len(dip.reservations) == 1
    with pytest.raises(ValueError):
        FollowUp("/x", route="listings")
    with pytest.raises(ValueError, match="ttl_ms"):
        FollowUp("/x", ttl_ms=-5)
