"""The one vocabulary (tests/vocabulary.json) in the Python package: parameter names of the public
signatures, the names events and errors carry, the priorities, and each unit where it shows."""

from __future__ import annotations

import inspect
import json
import pathlib
from typing import Any

import pytest

from traffic_control import DeadlineError, Event, Priority, TrafficControl, TrafficControlError
from traffic_control.shared import SharedTrafficControl, SyncSharedTrafficControl
from traffic_control.transport import AsyncTrafficControlTransport, TrafficControlTransport

VOCABULARY = json.loads((pathlib.Path(__file__).parents[2] / "tests" / "vocabulary.json").read_text())


def name(concept: str) -> str:
    return str(next(r for r in VOCABULARY["rows"] if r["id"] == concept)["python"])


def params(f: Any) -> set[str]:
    return set(inspect.signature(f).parameters)


def test_the_longest_wait_is_named_alike_everywhere() -> None:
    for f in (TrafficControl.acquire, TrafficControl.acquire_sync, SharedTrafficControl.acquire,
              SyncSharedTrafficControl.acquire, TrafficControl.__init__, AsyncTrafficControlTransport.__init__,
              TrafficControlTransport.__init__):
        assert name("max_wait") in params(f), f


def test_budget_reports_and_store_options() -> None:
    for f in (TrafficControl.sync_budget, SharedTrafficControl.sync_budget, SyncSharedTrafficControl.sync_budget):
        assert {name("tokens_left"), name("refill_in")} <= params(f), f
    for f in (SharedTrafficControl.__init__, SyncSharedTrafficControl.__init__):
        assert {name("waiter_ttl"), name("on_unavailable"), name("unavailable_max_wait")} <= params(f), f


def test_refill_in_is_seconds_on_both_controllers() -> None:
    tc = TrafficControl({"limits": {"tokens": {"kind": "budget", "refill": 10, "per": "1m", "max": 100}}, "global": ["tokens"]})
    tc.sync_budget("tokens", 0, **{name("refill_in"): 5.0})
    state = tc.snapshot()["limits"]["tokens"]
    assert state["next_free"] is not None
    assert 4_900 <= state["next_free"] - tc.snapshot()["at"] <= 5_000  # 5 s, in the snapshot's ms


async def test_events_and_errors_carry_the_tables_names() -> None:
    events: list[Event] = []
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 1, "per": "1h"}}, "global": ["api"]},
                        listener=events.append)
    async with tc.acquire("/x") as permit:
        permit.report(200)
    completed = [e for e in events if getattr(e, name("event_kind")) == "completed"]
    assert completed and getattr(completed[0], name("response_status")) == 200
    assert {getattr(e, name("event_kind")) for e in events} <= set(VOCABULARY["event_kinds"])
    with pytest.raises(TrafficControlError) as caught:
        await tc.acquire("/x", **{name("max_wait"): 0.01})
    assert isinstance(caught.value, DeadlineError)
    assert getattr(caught.value, name("error_code")) in VOCABULARY["error_codes"]
    assert getattr(caught.value, name("error_kind")) == "deadline"


def test_priorities() -> None:
    assert [p.name.lower() for p in sorted(Priority)] == name("priorities").split()
