"""The shared store's driver scenarios (tests/driver/*.json) replayed through the public host
layers: :class:`SharedTrafficControl` (asyncio) and :class:`SyncSharedTrafficControl` (threads),
each with a scripted Redis client whose every script call the scenario answers (a reply or a
failure). The JavaScript packages replay the same files (js/test/driver-scenarios.mjs)."""

from __future__ import annotations

import asyncio
import json
import pathlib
import queue
import threading
import time
from typing import Any

import pytest

from traffic_control import TrafficControlError
from traffic_control.shared import SharedCompletion, SharedTrafficControl, SyncSharedTrafficControl

DIR = pathlib.Path(__file__).parents[2] / "tests" / "driver"
FILES = sorted(DIR.glob("*.json"))
OPTION_NAMES = {"onUnavailable": "on_unavailable", "unavailableMaxWait": "unavailable_max_wait"}


def options(scenario: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"wake": False}
    for k, v in scenario["options"].items():
        out[OPTION_NAMES[k]] = v / 1000.0 if k == "unavailableMaxWait" else v
    return out


def request(r: dict[str, Any], max_wait: float | None) -> dict[str, Any]:
    return {"url": r.get("url"), "method": r.get("method"), "route": r.get("route"), "cost": r.get("cost"),
            "priority": r.get("priority", "normal"), "max_wait": None if max_wait is None else max_wait / 1000.0}


class _Call:
    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.answer: tuple[str, Any] | None = None
        self.ready = threading.Event()


class ScriptedAsync:
    """A redis.asyncio-shaped client whose calls wait for the scenario's answer."""

    def __init__(self) -> None:
        self.pending: asyncio.Queue[tuple[_Call, asyncio.Future[Any]]] = asyncio.Queue()

    async def evalsha(self, _sha: str, n: int, *ka: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.pending.put((_Call(list(ka[n:])), future))
        return await future

    eval = evalsha


class ScriptedSync:
    """A redis.Redis-shaped client whose calls block until the scenario answers."""

    def __init__(self) -> None:
        self.pending: queue.Queue[_Call] = queue.Queue()

    def evalsha(self, _sha: str, n: int, *ka: str) -> Any:
        call = _Call(list(ka[n:]))
        self.pending.put(call)
        if not call.ready.wait(5):
            raise TimeoutError("no answer")
        assert call.answer is not None
        kind, value = call.answer
        if kind == "error":
            raise ConnectionError(value)
        return value

    eval = evalsha


def check_args(where: str, step: dict[str, Any], args: list[str]) -> None:
    wanted = step.get("args_include", [])
    for arg in [wanted] if isinstance(wanted, str) else wanted:
        assert arg in args, f"{where}: {arg} not in {args}"


def permit_of(value: Any) -> Any:
    """The permit of an acquire, or of a completion's retry."""
    return value.permit if isinstance(value, SharedCompletion) else value


def completion_args(step: dict[str, Any]) -> tuple[Any, ...]:
    headers = [tuple(h) for h in step["headers"]] if "headers" in step else None
    return (step.get("status"), headers, step.get("body"))


def check_completion(where: str, step: dict[str, Any], value: Any, elapsed_ms: float) -> None:
    assert isinstance(value, SharedCompletion), f"{where}: {value!r}"
    assert value.kind == step.get("kind", "done"), f"{where}: {value!r}"
    if "go" in step:
        assert value.permit.request == step["go"], where
    if "after" in step:
        assert elapsed_ms >= step["after"], f"{where}: settled after {elapsed_ms:.0f} ms"


def check(where: str, step: dict[str, Any], outcome: tuple[str, Any], elapsed_ms: float) -> None:
    kind, value = outcome
    if "go" in step:
        assert kind == "go", f"{where}: {value!r}"
        assert value.request == step["go"], where
    else:
        assert kind == "error" and isinstance(value, TrafficControlError), f"{where}: {value!r}"
        assert value.code == step["code"], f"{where}: {value}"
    if "after" in step:
        assert elapsed_ms >= step["after"], f"{where}: settled after {elapsed_ms:.0f} ms"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_asyncio_host(path: pathlib.Path) -> None:
    scenario = json.loads(path.read_text())
    store = ScriptedAsync()
    tc = SharedTrafficControl(scenario["config"], redis=store, account=f"s-{scenario['name']}", **options(scenario))
    runs: dict[str, tuple[asyncio.Task[Any], float]] = {}
    for i, step in enumerate(scenario["steps"]):
        where = f"{scenario['name']} step {i} ({step['op']})"
        op = step["op"]
        if op == "acquire":
            runs[step["label"]] = (asyncio.ensure_future(tc.acquire(**request(step["request"], step.get("maxWait")))), time.monotonic())
            await asyncio.sleep(0)
        elif op == "complete":
            permit = permit_of(await runs[step["label"]][0])
            runs[step["label"] + "/complete"] = (asyncio.ensure_future(permit.complete(*completion_args(step))), time.monotonic())
        elif op == "store":
            while True:
                call, future = await asyncio.wait_for(store.pending.get(), 3)
                assert call.args[0] == step["call"], f"{where}: {call.args[0]}"
                check_args(where, step, call.args)
                if "error" in step:
                    future.set_exception(ConnectionError(step["error"]))
                else:
                    future.set_result(step["reply"])
                await asyncio.sleep(0.001)
                if "until" not in step or runs[step["until"]][0].done():
                    break
        elif op in ("expect", "expect_done", "expect_completion"):
            key = step["label"] + ("/complete" if op != "expect" else "")
            task, started = runs[key]
            await asyncio.wait([task], timeout=3)
            assert task.done(), f"{where}: did not settle"
            if op != "expect":
                assert task.exception() is None, f"{where}: {task.exception()!r}"
                check_completion(where, step, task.result(), (time.monotonic() - started) * 1000)
                continue
            outcome = ("error", task.exception()) if task.exception() else ("go", task.result())
            check(where, step, outcome, (time.monotonic() - started) * 1000)
    await asyncio.sleep(0.02)
    assert store.pending.empty(), "calls left unanswered"
    await tc.aclose()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_thread_host(path: pathlib.Path) -> None:
    scenario = json.loads(path.read_text())
    store = ScriptedSync()
    tc = SyncSharedTrafficControl(scenario["config"], redis=store, account=f"t-{scenario['name']}", **options(scenario))
    runs: dict[str, dict[str, Any]] = {}

    def start(label: str, work: Any) -> None:
        run: dict[str, Any] = {"started": time.monotonic()}

        def body() -> None:
            try:
                run["outcome"] = ("go", work())
            except BaseException as e:  # noqa: BLE001 - the scenario checks it
                run["outcome"] = ("error", e)
            run["at"] = time.monotonic()

        run["thread"] = threading.Thread(target=body, daemon=True)
        runs[label] = run
        run["thread"].start()

    for i, step in enumerate(scenario["steps"]):
        where = f"{scenario['name']} step {i} ({step['op']})"
        op = step["op"]
        if op == "acquire":
            args = request(step["request"], step.get("maxWait"))
            start(step["label"], lambda args=args: tc.acquire(**args))
            time.sleep(0.005)
        elif op == "complete":
            run = runs[step["label"]]
            run["thread"].join(3)
            permit = permit_of(run["outcome"][1])
            args = completion_args(step)
            start(step["label"] + "/complete", lambda permit=permit, args=args: permit.complete(*args))
        elif op == "store":
            while True:
                call = store.pending.get(timeout=3)
                assert call.args[0] == step["call"], f"{where}: {call.args[0]}"
                check_args(where, step, call.args)
                call.answer = ("error", step["error"]) if "error" in step else ("reply", step["reply"])
                call.ready.set()
                time.sleep(0.002)
                if "until" not in step:
                    break
                runs[step["until"]]["thread"].join(0.2)
                if "outcome" in runs[step["until"]]:
                    break
        elif op in ("expect", "expect_done", "expect_completion"):
            run = runs[step["label"] + ("/complete" if op != "expect" else "")]
            run["thread"].join(3)
            assert "outcome" in run, f"{where}: did not settle"
            if op != "expect":
                assert run["outcome"][0] == "go", f"{where}: {run['outcome'][1]!r}"
                check_completion(where, step, run["outcome"][1], (run["at"] - run["started"]) * 1000)
                continue
            check(where, step, run["outcome"], (run["at"] - run["started"]) * 1000)
    time.sleep(0.05)
    assert store.pending.empty(), "calls left unanswered"
    tc.close()
