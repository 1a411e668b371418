"""The shared store: limit state of one account in Redis, for every process calling with it.

The core builds each script call and reads its reply (sans-IO); this module runs the calls with the
application's asyncio Redis client (``redis.asyncio.Redis`` or anything with ``evalsha``/``eval``),
waits, and keeps the process's own waiters in priority order::

    import redis.asyncio as redis
    from traffic_control.shared import SharedTrafficControl

    tc = SharedTrafficControl("backmarket", redis=redis.Redis(), account="seller-42")
    permit = await tc.acquire("/ws/listings/42", method="POST", priority="high")
    try:
        response = await client.post(...)
    finally:
        await permit.complete(response.status_code, list(response.headers.items()))

Redis unreachable: fail closed. With ``on_unavailable="wait"`` (the default) a request retries with
backoff and fails with :class:`StoreUnavailableError` once its ``max_wait`` (or
``unavailable_max_wait``) is spent; with ``"fail"`` it fails at once. Never unlimited.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, Protocol

from ._traffic_control import SharedStore, TrafficControlError

__all__ = ["RedisClient", "SharedPermit", "SharedReservation", "SharedTrafficControl", "StoreUnavailableError"]


class RedisClient(Protocol):
    """What the store needs of a Redis client (``redis.asyncio.Redis`` has it)."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Awaitable[Any]: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Awaitable[Any]: ...


class StoreUnavailableError(TrafficControlError):
    """Redis could not be reached within the request's maximum wait (code STORE_UNAVAILABLE)."""

    code = "STORE_UNAVAILABLE"
    kind = "store"


def _now() -> float:
    return time.monotonic() * 1000.0


async def run_script(
    client: RedisClient, sha: str, script: str, keys: Sequence[str], args: Sequence[str], counter: list[int] | None = None
) -> Any:
    """EVALSHA, and EVAL (which loads the script) when Redis answers NOSCRIPT."""
    if counter is not None:
        counter[0] += 1
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except Exception as e:
        # redis-py raises NoScriptError ("No matching script"); others keep the NOSCRIPT prefix.
        if "NOSCRIPT" not in str(e) and "No matching script" not in str(e) and type(e).__name__ != "NoScriptError":
            raise
        if counter is not None:
            counter[0] += 1
        return await client.eval(script, len(keys), *keys, *args)


class SharedReservation:
    """Capacity reserved in Redis for a follow-up; every process counts it."""

    def __init__(self, tc: SharedTrafficControl, follow_up: dict[str, Any]) -> None:
        self._tc = tc
        self.follow_up = follow_up
        self.id: int | None = None

    async def release(self) -> bool:
        """Gives the capacity back now; False when already spent, released or expired."""
        return False if self.id is None else await self._tc._release(self.id)


class SharedPermit:
    """The right to send one request now; ``complete()`` it once."""

    def __init__(self, tc: SharedTrafficControl, request: int, reservations: Sequence[SharedReservation]) -> None:
        self._tc = tc
        self.request = request
        self.reservations = list(reservations)

    async def complete(
        self, status: int | None = None, headers: Sequence[tuple[str, str]] | None = None, body: str | None = None
    ) -> None:
        """Reports the outcome: only a lease, a 429 or a budget report costs a round trip."""
        await self._tc._complete(self.request, status, headers, body)


def _target(url: str | None, method: str | None, route: str | None) -> Any:
    if route is not None:
        return {"route": route}
    if url is not None:
        return {"http": {"method": (method or "GET").upper(), "url": url}}
    return "none"


class _Waiter:
    def __init__(self, wid: str, request_json: str, max_wait_at: float | None, reserve: Sequence[SharedReservation]):
        self.id = wid
        self.json = request_json
        self.max_wait_at = max_wait_at
        self.reserve = reserve
        self.store_down_at: float | None = None
        self.future: asyncio.Future[SharedPermit] = asyncio.get_running_loop().create_future()


class SharedTrafficControl:
    """A traffic controller whose limit state lives in Redis (asyncio).

    One script call per admission on the fast path. A request that must wait asks again at the
    instant the script names; meanwhile its claim keeps lower priorities, of every process, off the
    room it needs. Only the head of each local class (priority, limits) asks Redis.
    """

    def __init__(
        self,
        config: str | Mapping[str, Any],
        *,
        redis: RedisClient,
        account: str,
        on_unavailable: Literal["wait", "fail"] = "wait",
        unavailable_max_wait: float = 30.0,
        waiter_ttl: float = 2.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        self._store = SharedStore(text, account, dict(os.environ if env is None else env), waiter_ttl * 1000.0)
        self._script, self._sha = SharedStore.script()
        self._redis = redis
        self._on_unavailable = on_unavailable
        self._unavailable_max_wait_ms = unavailable_max_wait * 1000.0
        self._waiter_ttl_ms = waiter_ttl * 1000.0
        self._classes: dict[str, list[_Waiter]] = {}
        self._kick = asyncio.Event()
        self._tag = uuid.uuid4().hex[:12]
        self._seq = 0
        #: Round trips to Redis so far (for benchmarks).
        self.round_trips = [0]

    def reservation(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        cost: int | None = None,
        ttl: float | None = None,
    ) -> SharedReservation:
        """A reservation to name in a request's ``reserve`` and a follow-up's ``spend``."""
        return SharedReservation(
            self,
            {"target": _target(url, method, route), "limits": [], "cost": cost, "ttl": None if ttl is None else ttl * 1000},
        )

    async def acquire(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        priority: str = "normal",
        cost: int | None = None,
        limits: Sequence[str] = (),
        reserve: Sequence[SharedReservation] = (),
        spend: SharedReservation | None = None,
        max_wait: float | None = None,
    ) -> SharedPermit:
        """Waits until the request may go; raises the error of its kind when it never can."""
        if spend is not None and spend.id is None:
            raise ValueError("spend: the reservation was not made yet (its request was not admitted)")
        request = {
            "target": _target(url, method, route),
            "limits": list(limits),
            "cost": cost,
            "priority": priority.lower(),
            "deadline": None,
            "reserve": [r.follow_up for r in reserve],
            "spend": None if spend is None else spend.id,
        }
        text = json.dumps(request)
        now = _now()
        token, keys, _ = self._store.admit(now, text)
        self._store.forget(token)
        self._seq += 1
        wid = f"{self._tag}-{self._seq}"
        klass = f"{priority}|{'spend ' + wid if spend is not None else ''}|{' '.join(keys)}"
        waiter = _Waiter(wid, text, None if max_wait is None else now + max_wait * 1000.0, reserve)
        queue = self._classes.setdefault(klass, [])
        queue.append(waiter)
        if len(queue) == 1:
            asyncio.get_running_loop().create_task(self._drive(klass, queue))
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if waiter in queue:
                queue.remove(waiter)
                await self._withdraw(waiter)
            raise

    async def sync_budget(self, limit: str, tokens_left: int, refill_in: float | None = None) -> None:
        """Sets a budget to the server's balance (Keepa's ``tokensLeft``; ``refill_in`` seconds)."""
        keys, args = self._store.sync_budget(_now(), limit, tokens_left, None if refill_in is None else refill_in * 1000)
        self._store.observe(_now(), await self._run(keys, args))
        self._wake()

    async def snapshot(self) -> list[tuple[str, int, int, int]]:
        """Every limit's shared state: ``(name, used, capacity, reserved)``."""
        keys, args = self._store.snapshot_call(_now())
        return self._store.snapshot(_now(), await self._run(keys, args))

    @property
    def waiting(self) -> int:
        """Requests of this process waiting."""
        return sum(len(q) for q in self._classes.values())

    async def _run(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        return await run_script(self._redis, self._sha, self._script, keys, args, self.round_trips)

    def _wake(self) -> None:
        self._kick.set()
        self._kick = asyncio.Event()

    async def _complete(
        self, request: int, status: int | None, headers: Sequence[tuple[str, str]] | None, body: str | None
    ) -> None:
        call = self._store.complete(_now(), request, status, None if headers is None else list(headers), body)
        if call is not None:
            self._store.observe(_now(), await self._run(*call))
        self._wake()

    async def _release(self, reservation: int) -> bool:
        keys, args = self._store.release(_now(), reservation)
        live = self._store.observe(_now(), await self._run(keys, args))
        self._wake()
        return live

    async def _withdraw(self, w: _Waiter) -> None:
        try:
            keys, args = self._store.withdraw(_now(), w.id, w.json)
            self._store.observe(_now(), await self._run(keys, args))
        except Exception:
            pass  # its claims lapse with the waiter TTL anyway

    async def _sleep(self, ms: float) -> None:
        kick = self._kick
        try:
            await asyncio.wait_for(kick.wait(), timeout=max(0.0, ms) / 1000.0)
        except asyncio.TimeoutError:
            pass

    async def _drive(self, klass: str, queue: list[_Waiter]) -> None:
        """Serves one class: its head asks Redis until it goes or fails; then the next."""
        backoff = 50.0
        while queue:
            w = queue[0]
            if w.future.done():
                queue.pop(0)
                continue
            now = _now()
            left = None if w.max_wait_at is None else w.max_wait_at - now

            def finish(result: SharedPermit | BaseException, withdraw: bool, w: _Waiter = w) -> None:
                queue.pop(0)
                if withdraw:
                    asyncio.get_running_loop().create_task(self._withdraw(w))
                if w.future.done():
                    return
                if isinstance(result, BaseException):
                    w.future.set_exception(result)
                else:
                    w.future.set_result(result)

            if left is not None and left < 0:
                finish(_deadline_error(), True)
                continue
            try:
                token, keys, args = self._store.admit(now, w.json, w.id, left)
            except Exception as e:
                finish(e, False)
                continue
            # The client's own retries must not outlast the request's maximum wait.
            down_since = w.store_down_at if w.store_down_at is not None else now
            bound = left if left is not None else down_since + self._unavailable_max_wait_ms - now
            try:
                reply = await asyncio.wait_for(self._run(keys, args), timeout=max(bound, 50.0) / 1000.0)
            except Exception as e:  # Redis unreachable (or restarting): fail closed
                self._store.forget(token)
                if w.store_down_at is None:
                    w.store_down_at = now
                limit = w.max_wait_at if w.max_wait_at is not None else w.store_down_at + self._unavailable_max_wait_ms
                if self._on_unavailable == "fail" or _now() + backoff > limit:
                    finish(StoreUnavailableError(f"the shared store is unavailable: {e}"), False)
                    continue
                await self._sleep(backoff)
                backoff = min(backoff * 2, 1000.0)
                continue
            backoff = 50.0
            w.store_down_at = None
            try:
                decision, request_id, reservations, wait_ms, error = self._store.decide(_now(), token, reply)
            except Exception as e:
                finish(e, True)
                continue
            if decision == "go":
                for r, rid in zip(w.reserve, reservations):
                    r.id = rid
                finish(SharedPermit(self, request_id or 0, w.reserve), False)
                continue
            if decision == "reject":
                finish(error if error is not None else TrafficControlError("rejected"), True)
                continue
            sleep = self._waiter_ttl_ms / 2 if wait_ms is None else wait_ms
            sleep = min(sleep, 10_000.0)
            if left is not None:
                sleep = min(sleep, left + 1)
            await self._sleep(sleep)
        if self._classes.get(klass) is queue:
            del self._classes[klass]


def _deadline_error() -> BaseException:
    from ._traffic_control import DeadlineError

    e = DeadlineError("the request could not go within its maximum wait")
    e.code = "DEADLINE_EXCEEDED"
    return e
