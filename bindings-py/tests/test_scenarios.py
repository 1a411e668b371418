"""Replays the shared scenario files (``tests/scenarios/*.json``, format in ``tests/README.md``)
through the native sans-IO controller: the same decisions as the core's replayer
(``core/tests/scenarios.rs``), step for step, event for event."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import SCENARIOS

from traffic_control import Config, FollowUp, Permit, TrafficControlError, Wait
from traffic_control._traffic_control import Event
from traffic_control._traffic_control import TrafficControl as Core

#: Keys whose values are times or durations in milliseconds: compared as whole nanoseconds.
TIME_KEYS = {"at", "until", "waited", "duration", "held", "next_free", "retry_at"}
REQUEST_KEYS = {"method", "url", "route", "limits", "cost", "priority", "deadline", "reserve", "spend", "key", "tenant"}
FOLLOW_UP_KEYS = {"method", "url", "route", "limits", "cost", "ttl"}
COMMON = {"at", "op", "comment", "expect"}


class ScenarioError(AssertionError):
    pass


def nanos(value: Any) -> int | None:
    """A time in ms as whole nanoseconds, rounded like the core (half away from zero, <= 0 is 0)."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ScenarioError(f"{value!r} is not a time")
    if math.isnan(value) or value <= 0:
        return 0
    return math.floor(value * 1e6 + 0.5)


def allow(obj: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ScenarioError(f"{what}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def target(friendly: dict[str, Any]) -> dict[str, Any]:
    """`method` + `url`, or `route`, or neither → keyword arguments."""
    has_http = "method" in friendly or "url" in friendly
    if has_http and "route" in friendly:
        raise ScenarioError(f"request {friendly}: give method and url, or route, or neither")
    if has_http:
        if "method" not in friendly or "url" not in friendly:
            raise ScenarioError(f"request {friendly}: method and url go together")
        return {"url": friendly["url"], "method": friendly["method"]}
    if "route" in friendly:
        return {"route": friendly["route"]}
    return {}


class Replay:
    def __init__(self, config: Config) -> None:
        self.core = Core(config)
        self.ids: dict[str, int | None] = {}
        self.labels: dict[int, str] = {}
        self.reservations: dict[str, int] = {}
        self.reservation_names: dict[int, str] = {}
        self.last_at = 0.0

    def request(self, friendly: dict[str, Any]) -> dict[str, Any]:
        allow(friendly, REQUEST_KEYS, "request")
        kw = target(friendly)
        for key in ("limits", "cost", "priority", "deadline", "key", "tenant"):
            if key in friendly:
                kw[key] = friendly[key]
        if "spend" in friendly:
            name = friendly["spend"]
            if name not in self.reservations:
                raise ScenarioError(f"request.spend: no permit has shown {name!r}")
            kw["spend"] = self.reservations[name]
        if "reserve" in friendly:
            follow_ups = []
            for f in friendly["reserve"]:
                allow(f, FOLLOW_UP_KEYS, "reserve")
                follow_ups.append(
                    FollowUp(**target(f), limits=f.get("limits"), cost=f.get("cost"), ttl_ms=f.get("ttl"))
                )
            kw["reserve"] = follow_ups
        return kw

    def new_label(self, step: dict[str, Any]) -> str:
        label = step.get("label")
        if not isinstance(label, str) or not label or "#" in label:
            raise ScenarioError(f"label {label!r}: must be a non-empty string without '#'")
        if label in self.ids:
            raise ScenarioError(f"label {label!r} is used twice")
        return label

    def bind(self, label: str, rid: int | None) -> None:
        if rid is not None:
            self.labels[rid] = label
        self.ids[label] = rid

    def id_of(self, step: dict[str, Any]) -> int:
        label = step.get("label")
        if label not in self.ids:
            raise ScenarioError(f"unknown label {label!r}")
        rid = self.ids[label]
        if rid is None:
            raise ScenarioError(f"label {label!r} never got a request id")
        return rid

    def learn(self, label: str, permit: Permit) -> None:
        for i, rid in enumerate(permit.reservations):
            name = f"{label}#{i}"
            self.reservations[name] = rid
            self.reservation_names[rid] = name

    def observe(self, event: Event) -> dict[str, Any]:
        label = self.labels.get(event.request)
        v: dict[str, Any] = {
            "type": event.type,
            "label": label,
            "at": event.at,
            "endpoint": event.endpoint,
            "route": event.route,
            "priority": event.priority,
        }
        kind = event.type
        if kind == "go":
            permit = event.permit
            assert permit is not None
            if label is not None:
                self.learn(label, permit)
            v["waited"] = event.waited
            v["reservations"] = [self.reservation_names.get(r) for r in permit.reservations]
            v["key"] = permit.key
        elif kind == "completed":
            v["status"] = event.status
            v["duration"] = event.duration
        elif kind in ("rejected", "expired"):
            v["code"] = event.code
        elif kind == "rate_limited":
            v["status"] = event.status
            v["until"] = event.until
        elif kind == "retried":
            v["attempt"] = event.attempt
            v["retry_at"] = event.retry_at
        elif kind == "lease_expired":
            v["held"] = event.held
        elif kind in ("reservation_expired", "reservation_released"):
            v["reservation"] = self.reservation_names.get(event.reservation)  # type: ignore[arg-type]
        elif kind == "breaker_opened":
            v["limit"] = event.limit
            v["reason"] = event.reason
            v["until"] = event.until
        elif kind in ("breaker_half_open", "breaker_closed"):
            v["limit"] = event.limit
        return v

    def step(self, step: dict[str, Any]) -> None:
        op = step.get("op")
        at = step.get("at")
        if not isinstance(op, str):
            raise ScenarioError('"op" (a string) is required')
        if not isinstance(at, (int, float)):
            raise ScenarioError('"at" (milliseconds) is required')
        if at < self.last_at:
            raise ScenarioError(f'"at" goes backwards ({at} after {self.last_at})')
        self.last_at = at
        now = float(at)
        expect = step.get("expect")

        def keys(*extra: str) -> None:
            allow(step, COMMON | set(extra), "step")

        core = self.core
        if op == "submit":
            keys("label", "request")
            label = self.new_label(step)
            kw = self.request(step["request"])
            try:
                rid: int | None = core.submit(now, **kw)
                actual: dict[str, Any] = {}
            except TrafficControlError as e:
                rid, actual = None, {"error": e.code}
            self.bind(label, rid)
            compare_all({} if expect is None else expect, actual, "submit")
        elif op == "try_acquire":
            keys("label", "request")
            label = self.new_label(step)
            kw = self.request(step["request"])
            permit = None
            try:
                decision = core.try_acquire(now, **kw)
                if isinstance(decision, Permit):
                    permit, actual = decision, {"decision": "go"}
                else:
                    assert isinstance(decision, Wait)
                    actual = {"decision": "wait", "until": decision.until}
            except TrafficControlError as e:
                actual = {"decision": "reject", "code": e.code}
            self.bind(label, permit.request if permit else None)
            if permit is not None:
                self.learn(label, permit)
            if expect is None:
                raise ScenarioError('"expect" is required')
            compare_all(expect, actual, "try_acquire")
        elif op == "poll":
            keys()
            events = []
            while (event := core.poll(now)) is not None:
                events.append(self.observe(event))
            if not isinstance(expect, dict) or not isinstance(expect.get("events"), list):
                raise ScenarioError('"expect": {"events": [...]} is required')
            allow(expect, {"events"}, "expect")
            compare_events(expect["events"], events)
        elif op == "poll_timeout":
            keys()
            if expect is None:
                raise ScenarioError('"expect": {"at": ms or null} is required')
            compare_all(expect, {"at": core.poll_timeout()}, "poll_timeout")
        elif op == "complete":
            keys("label", "status", "headers", "body")
            rid = self.id_of(step)
            if "status" not in step:
                raise ScenarioError('"status" (an HTTP status or null) is required')
            headers = [tuple(pair) for pair in step.get("headers", [])]
            completion = core.complete(now, rid, step["status"], headers or None, step.get("body"))
            actual = {"completion": completion.kind}
            if completion.kind == "retry":
                actual["at"] = completion.at
            compare_all({"completion": "done"} if expect is None else expect, actual, "complete")
        elif op == "cancel":
            keys("label")
            ok = core.cancel(now, self.id_of(step))
            compare_all({"ok": True} if expect is None else expect, {"ok": ok}, "cancel")
        elif op == "sync_budget":
            keys("limit", "tokens_left", "refill_in")
            try:
                core.sync_budget(now, step["limit"], step["tokens_left"], step.get("refill_in"))
                actual = {"ok": True}
            except TrafficControlError as e:
                actual = {"ok": False, "code": e.code}
            compare_all({"ok": True} if expect is None else expect, actual, "sync_budget")
        elif op == "release":
            keys("reservation")
            name = step.get("reservation")
            if name not in self.reservations:
                raise ScenarioError(f"no permit has shown {name!r}")
            ok = core.release(now, self.reservations[name])
            compare_all({"ok": True} if expect is None else expect, {"ok": ok}, "release")
        elif op == "snapshot":
            keys()
            if expect is None:
                raise ScenarioError('"expect" is required')
            compare(expect, dict(core.snapshot(now)), "snapshot")
        else:
            raise ScenarioError(f"unknown op {op!r}")


def compare_events(expected: list[Any], actual: list[dict[str, Any]]) -> None:
    def fail(why: str) -> None:
        show = lambda events: "".join(f"\n    {json.dumps(e)}" for e in events)  # noqa: E731
        raise ScenarioError(f"{why}\n  expected events:{show(expected)}\n  actual events:{show(actual)}")

    for i, e in enumerate(expected):
        if not isinstance(e, dict):
            fail(f"expected event {i} is not an object")
        if "type" not in e or "label" not in e:
            fail(f'expected event {i} needs "type" and "label" (null for no id)')
        if i >= len(actual):
            fail(f"event {i} missing")
        try:
            compare(e, actual[i], f"event {i}")
        except ScenarioError as why:
            fail(str(why))
    if len(actual) > len(expected):
        fail(f"{len(actual) - len(expected)} unexpected event(s) after the expected ones")


def compare_all(expected: Any, actual: dict[str, Any], path: str) -> None:
    """Exactly the same fields, equal."""
    if not isinstance(expected, dict) or set(expected) != set(actual):
        raise ScenarioError(f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}")
    compare(expected, actual, path)


def compare(expected: Any, actual: Any, path: str) -> None:
    """Every field of `expected` is in `actual` and equal (times as whole nanoseconds)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise ScenarioError(f"{path}: expected {json.dumps(expected)}, got {actual!r}")
        for k, ev in expected.items():
            p = f"{path}.{k}"
            if k not in actual:
                raise ScenarioError(f"{p}: no such field (got {json.dumps(actual)})")
            av = actual[k]
            if k in TIME_KEYS and not isinstance(ev, dict):
                if nanos(ev) != nanos(av):
                    raise ScenarioError(f"{p}: expected {ev}, got {av}")
            else:
                compare(ev, av, p)
        return
    if type(expected) is not type(actual) and not (
        isinstance(expected, (int, float))
        and isinstance(actual, (int, float))
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        raise ScenarioError(f"{path}: expected {json.dumps(expected)}, got {actual!r}")
    if expected != actual:
        raise ScenarioError(f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}")


def replay_file(path: Path) -> None:
    scenario = json.loads(path.read_text())
    if not isinstance(scenario, dict):
        raise ScenarioError("a scenario must be an object")
    allow(scenario, {"name", "description", "config", "steps"}, "scenario")
    if not isinstance(scenario.get("name"), str):
        raise ScenarioError('scenario: "name" (a string) is required')
    replay = Replay(scenario["config"])
    for i, step in enumerate(scenario["steps"]):
        try:
            replay.step(step)
        except ScenarioError as why:
            short = {k: v for k, v in step.items() if k not in ("expect", "comment")}
            raise ScenarioError(f"{path.name}: step {i} {json.dumps(short)}: {why}") from None


FILES = sorted(SCENARIOS.glob("*.json"))


def test_the_scenario_files_are_there() -> None:
    assert len(FILES) >= 17, f"scenario files expected in {SCENARIOS}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path) -> None:
    replay_file(path)


def test_the_replayer_catches_a_wrong_expectation(tmp_path: Path) -> None:
    bad = {
        "name": "bad",
        "description": "the second request must wait, not go",
        "config": {"limits": {"api": {"kind": "window", "max": 1, "per": "1s"}}, "global": ["api"]},
        "steps": [
            {"at": 0, "op": "try_acquire", "label": "a", "request": {}, "expect": {"decision": "go"}},
            {"at": 1, "op": "try_acquire", "label": "b", "request": {}, "expect": {"decision": "go"}},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ScenarioError, match=r"bad.json: step 1 .*expected \{\"decision\": \"go\"\}"):
        replay_file(path)
