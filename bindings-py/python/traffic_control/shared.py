"""The shared store: limit state of one account in Redis, for every process calling with it.

The core builds each script call and reads its reply (sans-IO); this module runs the calls with the
application's Redis client, waits, and keeps the process's own waiters in priority order. Two hosts
share one base (the calls and the reading of replies); only the I/O and the waiting differ:

* :class:`SharedTrafficControl` over ``redis.asyncio.Redis`` (asyncio)::

    import redis.asyncio as redis
    from traffic_control.shared import SharedTrafficControl

    tc = SharedTrafficControl("backmarket", redis=redis.Redis(), account="seller-42")
    permit = await tc.acquire("/ws/listings/42", method="POST", priority="high")
    try:
        response = await client.post(...)
    finally:
        await permit.complete(response.status_code, list(response.headers.items()))

* :class:`SyncSharedTrafficControl` over ``redis.Redis`` (threads; one instance may be shared by
  any number of them)::

    import redis
    from traffic_control.shared import SyncSharedTrafficControl

    tc = SyncSharedTrafficControl("backmarket", redis=redis.Redis(), account="seller-42")
    permit = tc.acquire("/ws/listings/42", method="POST", priority="high")  # blocks this thread
    try:
        response = session.post(...)
    finally:
        permit.complete(response.status_code, list(response.headers.items()))

Redis unreachable: fail closed. With ``on_unavailable="wait"`` (the default) a request retries with
backoff and fails with :class:`StoreUnavailableError` once its ``max_wait`` (or
``unavailable_max_wait``) is spent; with ``"fail"`` it fails at once. Never unlimited. A completion,
a release or a budget sync retries the same way (up to ``unavailable_max_wait``), then raises
:class:`StoreUnavailableError`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, Protocol, cast

from ._traffic_control import SharedStore, TrafficControlError

__all__ = [
    "RedisClient",
    "SharedPermit",
    "SharedReservation",
    "SharedTrafficControl",
    "StoreUnavailableError",
    "SyncRedisClient",
    "SyncSharedPermit",
    "SyncSharedReservation",
    "SyncSharedTrafficControl",
]


class RedisClient(Protocol):
    """What the store needs of an asyncio Redis client (``redis.asyncio.Redis`` has it)."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Awaitable[Any]: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Awaitable[Any]: ...


class SyncRedisClient(Protocol):
    """What the store needs of a blocking Redis client (``redis.Redis`` has it)."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: str) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any: ...


class StoreUnavailableError(TrafficControlError):
    """Redis could not be reached within the request's maximum wait (code STORE_UNAVAILABLE)."""

    code = "STORE_UNAVAILABLE"
    kind = "store"


def _now() -> float:
    return time.monotonic() * 1000.0


def _is_noscript(e: Exception) -> bool:
    # redis-py raises NoScriptError ("No matching script"); others keep the NOSCRIPT prefix.
    return "NOSCRIPT" in str(e) or "No matching script" in str(e) or type(e).__name__ == "NoScriptError"


async def run_script(
    client: RedisClient, sha: str, script: str, keys: Sequence[str], args: Sequence[str], counter: list[int] | None = None
) -> Any:
    """EVALSHA, and EVAL (which loads the script) when Redis answers NOSCRIPT."""
    if counter is not None:
        counter[0] += 1
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except Exception as e:
        if not _is_noscript(e):
            raise
        if counter is not None:
            counter[0] += 1
        return await client.eval(script, len(keys), *keys, *args)


def run_script_sync(
    client: SyncRedisClient,
    sha: str,
    script: str,
    keys: Sequence[str],
    args: Sequence[str],
    counter: list[int] | None = None,
) -> Any:
    """:func:`run_script` with a blocking client."""
    if counter is not None:
        counter[0] += 1
    try:
        return client.evalsha(sha, len(keys), *keys, *args)
    except Exception as e:
        if not _is_noscript(e):
            raise
        if counter is not None:
            counter[0] += 1
        return client.eval(script, len(keys), *keys, *args)


class _Reservation:
    def __init__(self, follow_up: dict[str, Any]) -> None:
        self.follow_up = follow_up
        self.id: int | None = None


class SharedReservation(_Reservation):
    """Capacity reserved in Redis for a follow-up; every process counts it."""

    def __init__(self, tc: SharedTrafficControl, follow_up: dict[str, Any]) -> None:
        super().__init__(follow_up)
        self._tc = tc

    async def release(self) -> bool:
        """Gives the capacity back now; False when already spent, released or expired."""
        return False if self.id is None else await self._tc._release(self.id)


class SyncSharedReservation(_Reservation):
    """:class:`SharedReservation` of a :class:`SyncSharedTrafficControl`."""

    def __init__(self, tc: SyncSharedTrafficControl, follow_up: dict[str, Any]) -> None:
        super().__init__(follow_up)
        self._tc = tc

    def release(self) -> bool:
        """Gives the capacity back now; False when already spent, released or expired."""
        return False if self.id is None else self._tc._release(self.id)


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


class SyncSharedPermit:
    """:class:`SharedPermit` of a :class:`SyncSharedTrafficControl`; ``complete()`` it once."""

    def __init__(
        self, tc: SyncSharedTrafficControl, request: int, reservations: Sequence[SyncSharedReservation]
    ) -> None:
        self._tc = tc
        self.request = request
        self.reservations = list(reservations)

    def complete(
        self, status: int | None = None, headers: Sequence[tuple[str, str]] | None = None, body: str | None = None
    ) -> None:
        """Reports the outcome: only a lease, a 429 or a budget report costs a round trip."""
        self._tc._complete(self.request, status, headers, body)


def _target(url: str | None, method: str | None, route: str | None) -> Any:
    if route is not None:
        return {"route": route}
    if url is not None:
        return {"http": {"method": (method or "GET").upper(), "url": url}}
    return "none"


class _Waiter:
    def __init__(self, wid: str, request_json: str, max_wait_at: float | None, reserve: Sequence[_Reservation]):
        self.id = wid
        self.json = request_json
        self.max_wait_at = max_wait_at
        self.reserve = reserve
        self.store_down_at: float | None = None


class _AsyncWaiter(_Waiter):
    def __init__(self, wid: str, request_json: str, max_wait_at: float | None, reserve: Sequence[_Reservation]):
        super().__init__(wid, request_json, max_wait_at, reserve)
        self.future: asyncio.Future[SharedPermit] = asyncio.get_running_loop().create_future()


class _Call:
    """One script call of a waiter's turn: what to send, and how long the client may take."""

    __slots__ = ("token", "keys", "args", "bound_ms")

    def __init__(self, token: int, keys: list[str], args: list[str], bound_ms: float) -> None:
        self.token = token
        self.keys = keys
        self.args = args
        self.bound_ms = bound_ms


class _Turn:
    """What became of a waiter's turn: it goes (``request``), fails (``error``), or sleeps ``sleep_ms``."""

    __slots__ = ("done", "request", "error", "withdraw", "sleep_ms")

    def __init__(
        self,
        done: bool,
        request: int = 0,
        error: BaseException | None = None,
        withdraw: bool = False,
        sleep_ms: float = 0.0,
    ) -> None:
        self.done = done
        self.request = request
        self.error = error
        self.withdraw = withdraw
        self.sleep_ms = sleep_ms


class _SharedBase:
    """The host-independent half: builds every script call and reads every reply. The asyncio and
    the threaded hosts only run the calls, sleep, and hand out permits."""

    def __init__(
        self,
        config: str | Mapping[str, Any],
        account: str,
        on_unavailable: Literal["wait", "fail"],
        unavailable_max_wait: float,
        waiter_ttl: float,
        env: Mapping[str, str] | None,
    ) -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        self._store = SharedStore(text, account, dict(os.environ if env is None else env), waiter_ttl * 1000.0)
        self._script, self._sha = SharedStore.script()
        self._on_unavailable = on_unavailable
        self._unavailable_max_wait_ms = unavailable_max_wait * 1000.0
        self._waiter_ttl_ms = waiter_ttl * 1000.0
        self.wake_channel = "tc:{%s}:wake" % account
        """The channel the store publishes freed room on."""
        self.wakeups = 0
        """Wake-up messages received (for tests and benchmarks)."""
        self._tag = uuid.uuid4().hex[:12]
        self._seq = 0
        # The native store is one mutable object; threads take turns on it.
        self._store_lock = threading.Lock()
        #: Round trips to Redis so far (for benchmarks).
        self.round_trips = [0]

    def _follow_up(
        self, url: str | None, method: str | None, route: str | None, cost: int | None, ttl: float | None
    ) -> dict[str, Any]:
        return {"target": _target(url, method, route), "limits": [], "cost": cost, "ttl": None if ttl is None else ttl * 1000}

    def _request(
        self,
        url: str | None,
        method: str | None,
        route: str | None,
        priority: str,
        cost: int | None,
        limits: Sequence[str],
        reserve: Sequence[_Reservation],
        spend: _Reservation | None,
        max_wait: float | None,
    ) -> tuple[str, str, str, float | None]:
        """The waiter's id, its local class (priority, spend, limits), the request's JSON, and its
        max-wait instant."""
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
        with self._store_lock:
            token, keys, _ = self._store.admit(now, text)
            self._store.forget(token)
            self._seq += 1
            wid = f"{self._tag}-{self._seq}"
        klass = f"{priority}|{'spend ' + wid if spend is not None else ''}|{' '.join(keys)}"
        return wid, klass, text, None if max_wait is None else now + max_wait * 1000.0

    def _begin(self, w: _Waiter) -> _Call | _Turn:
        """The head of a class asks Redis: the call to run, or the end of its turn."""
        now = _now()
        left = None if w.max_wait_at is None else w.max_wait_at - now
        if left is not None and left < 0:
            return _Turn(True, error=_deadline_error(), withdraw=True)
        try:
            with self._store_lock:
                token, keys, args = self._store.admit(now, w.json, w.id, left)
        except Exception as e:
            return _Turn(True, error=e)
        # The client's own retries must not outlast the request's maximum wait.
        down_since = w.store_down_at if w.store_down_at is not None else now
        bound = left if left is not None else down_since + self._unavailable_max_wait_ms - now
        return _Call(token, keys, args, max(bound, 50.0))

    def _unreachable(self, w: _Waiter, call: _Call, e: BaseException, backoff: float) -> _Turn:
        """Redis unreachable (or restarting): fail closed, or sleep ``backoff`` and ask again."""
        now = _now()
        with self._store_lock:
            self._store.forget(call.token)
        if w.store_down_at is None:
            w.store_down_at = now
        limit = w.max_wait_at if w.max_wait_at is not None else w.store_down_at + self._unavailable_max_wait_ms
        error = self._give_up(limit, backoff, e)
        if error is not None:
            return _Turn(True, error=error)
        return _Turn(False, sleep_ms=backoff)

    def _give_up(self, limit: float, backoff: float, e: BaseException) -> StoreUnavailableError | None:
        """The unavailability policy, for admissions and reports alike: the error to fail with when
        ``"fail"`` or when waiting ``backoff`` ms more would pass ``limit``; None to retry."""
        if self._on_unavailable == "fail" or _now() + backoff > limit:
            error = StoreUnavailableError(f"the shared store is unavailable: {e}")
            error.__cause__ = e
            return error
        return None

    def _replied(self, w: _Waiter, call: _Call, reply: Any) -> _Turn:
        """Reads the script's reply: go (the reservations get their ids), reject, or wait."""
        w.store_down_at = None
        try:
            with self._store_lock:
                decision, request_id, reservations, wait_ms, error = self._store.decide(_now(), call.token, reply)
        except Exception as e:
            return _Turn(True, error=e, withdraw=True)
        if decision == "go":
            for r, rid in zip(w.reserve, reservations):
                r.id = rid
            return _Turn(True, request=request_id or 0)
        if decision == "reject":
            return _Turn(True, error=error if error is not None else TrafficControlError("rejected"), withdraw=True)
        sleep = self._waiter_ttl_ms / 2 if wait_ms is None else wait_ms
        sleep = min(sleep, 10_000.0)
        if w.max_wait_at is not None:
            sleep = min(sleep, w.max_wait_at - _now() + 1)
        return _Turn(False, sleep_ms=sleep)

    # Calls outside admission: each returns (keys, args), its reply goes to _observe.

    def _report_retry(self, started: float, backoff: float, e: Exception) -> None:
        """A report (completion, release, budget) that did not reach Redis: raises
        :class:`StoreUnavailableError` when the unavailability policy says stop, else returns and
        the caller retries after ``backoff`` ms."""
        error = self._give_up(started + self._unavailable_max_wait_ms, backoff, e)
        if error is not None:
            raise error

    def _observe(self, reply: Any) -> bool:
        with self._store_lock:
            return self._store.observe(_now(), reply)

    def _sync_budget_call(self, limit: str, tokens_left: int, refill_in: float | None) -> tuple[list[str], list[str]]:
        with self._store_lock:
            return self._store.sync_budget(_now(), limit, tokens_left, None if refill_in is None else refill_in * 1000)

    def _snapshot_call(self) -> tuple[list[str], list[str]]:
        with self._store_lock:
            return self._store.snapshot_call(_now())

    def _snapshot_reply(self, reply: Any) -> list[tuple[str, int, int, int, tuple[float, str] | None]]:
        with self._store_lock:
            return self._store.snapshot(_now(), reply)

    def _complete_call(
        self, request: int, status: int | None, headers: Sequence[tuple[str, str]] | None, body: str | None
    ) -> tuple[list[str], list[str]] | None:
        with self._store_lock:
            return self._store.complete(_now(), request, status, None if headers is None else list(headers), body)

    def _release_call(self, reservation: int) -> tuple[list[str], list[str]]:
        with self._store_lock:
            return self._store.release(_now(), reservation)

    def _withdraw_call(self, w: _Waiter) -> tuple[list[str], list[str]]:
        with self._store_lock:
            return self._store.withdraw(_now(), w.id, w.json)


class SharedTrafficControl(_SharedBase):
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
        wake: bool = True,
        http: Any = None,
    ) -> None:
        super().__init__(config, account, on_unavailable, unavailable_max_wait, waiter_ttl, env)
        self._redis = redis
        self._http = http
        self._learning: dict[str, asyncio.Future[bool]] = {}
        self._classes: dict[str, list[_AsyncWaiter]] = {}
        self._kick = asyncio.Event()
        self._wake_enabled = wake
        self._listener: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None

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
        return SharedReservation(self, self._follow_up(url, method, route, cost, ttl))

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
        """Waits until the request may go; raises the error of its kind when it never can. A budget
        whose balance nobody reported yet is learnt first with the free status request (Keepa's
        ``/token``, made from ``url``; sent with ``http=``, an ``httpx.AsyncClient``, or a new one)."""
        args = (url, method, route, priority, cost, limits, reserve, spend, max_wait)
        try:
            return await self._acquire_once(*args)
        except TrafficControlError as e:
            if e.code != "BUDGET_UNKNOWN" or url is None or not await self._learn_budget(url):
                raise
            return await self._acquire_once(*args)

    async def _learn_budget(self, url: str) -> bool:
        """Sends the status request made from ``url`` (one at a time per status URL)."""
        status = self._store.status_url(url)
        if status is None:
            return False
        pending = self._learning.get(status)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._learning[status] = future
        try:
            permit = await self._acquire_once(status, "GET", None, "high", None, (), (), None, None)
            code: int | None = None
            headers: list[tuple[str, str]] | None = None
            body: str | None = None
            try:
                if self._http is not None:
                    response = await self._http.get(status)
                else:
                    import httpx

                    async with httpx.AsyncClient() as client:
                        response = await client.get(status)
                code, headers, body = response.status_code, list(response.headers.multi_items()), response.text
            finally:
                await permit.complete(code, headers, body)
            future.set_result(code is not None and code < 400)
        except Exception:
            if not future.done():
                future.set_result(False)
        finally:
            del self._learning[status]
        return future.result()

    async def _acquire_once(
        self,
        url: str | None,
        method: str | None,
        route: str | None,
        priority: str,
        cost: int | None,
        limits: Sequence[str],
        reserve: Sequence[SharedReservation],
        spend: SharedReservation | None,
        max_wait: float | None,
    ) -> SharedPermit:
        wid, klass, text, max_wait_at = self._request(
            url, method, route, priority, cost, limits, reserve, spend, max_wait
        )
        waiter = _AsyncWaiter(wid, text, max_wait_at, reserve)
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
        self._observe(await self._run_or_wait(*self._sync_budget_call(limit, tokens_left, refill_in)))
        self._wake()

    async def snapshot(self) -> list[tuple[str, int, int, int, tuple[float, str] | None]]:
        """Every limit's shared state: ``(name, used, capacity, reserved, pause)``; ``pause`` is
        ``(until_ms, reason)`` in Redis server time while a 429 or a block pauses the limit."""
        return self._snapshot_reply(await self._run(*self._snapshot_call()))

    @property
    def waiting(self) -> int:
        """Requests of this process waiting."""
        return sum(len(q) for q in self._classes.values())

    async def _run(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        return await run_script(self._redis, self._sha, self._script, keys, args, self.round_trips)

    async def _run_or_wait(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Runs a report while Redis is unreachable (a restart): retries under the unavailability
        policy, as admissions do, then raises :class:`StoreUnavailableError` rather than the
        client's own error. What the request held comes back by its TTL even if the report never
        lands, but a 429's pause should reach every process."""
        started, backoff = _now(), 50.0
        while True:
            try:
                return await self._run(keys, args)
            except Exception as e:
                self._report_retry(started, backoff, e)
            await asyncio.sleep(backoff / 1000.0)
            backoff = min(backoff * 2, 1000.0)

    def _wake(self) -> None:
        self._kick.set()
        self._kick = asyncio.Event()

    async def _complete(
        self, request: int, status: int | None, headers: Sequence[tuple[str, str]] | None, body: str | None
    ) -> None:
        call = self._complete_call(request, status, headers, body)
        if call is not None:
            self._observe(await self._run_or_wait(*call))
        self._wake()

    async def _release(self, reservation: int) -> bool:
        live = self._observe(await self._run_or_wait(*self._release_call(reservation)))
        self._wake()
        return live

    async def _withdraw(self, w: _Waiter) -> None:
        try:
            self._observe(await self._run(*self._withdraw_call(w)))
        except Exception:
            pass  # its claims lapse with the waiter TTL anyway

    def _ensure_wake(self) -> None:
        """While requests wait, listens on the wake channel (a pubsub of the client): room freed in
        any process wakes the waiters at once. Failures leave the polling in charge."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._wake_enabled or self._listener is not None:
            return
        factory = getattr(self._redis, "pubsub", None)
        if factory is None:
            return
        self._listener = asyncio.get_running_loop().create_task(self._listen(factory))

    async def _listen(self, factory: Any) -> None:
        pubsub = factory()
        try:
            await pubsub.subscribe(self.wake_channel)
            self._wake()  # room may have freed while subscribing: ask again
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.wakeups += 1
                    self._wake()
        except asyncio.CancelledError:
            raise
        except Exception:
            pass
        finally:
            if self._listener is asyncio.current_task():
                self._listener = None
            try:
                await pubsub.unsubscribe()
            except Exception:
                pass
            close = getattr(pubsub, "aclose", None) or getattr(pubsub, "close", None)
            try:
                if close is not None:
                    closed = close()
                    if inspect.isawaitable(closed):
                        await closed
            except Exception:
                pass

    def _idle(self) -> None:
        """No request waits: stop listening a second later, unless one comes."""
        if self._listener is None or self._linger is not None:
            return

        def stop() -> None:
            self._linger = None
            if self.waiting == 0 and self._listener is not None:
                self._listener.cancel()
                self._listener = None

        self._linger = asyncio.get_running_loop().call_later(1.0, stop)

    async def aclose(self) -> None:
        """Stops listening for wake-ups now (waiting requests fall back to polling)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except (asyncio.CancelledError, Exception):
                pass

    async def _sleep(self, ms: float, kick: asyncio.Event) -> None:
        """Sleeps ``ms`` or until ``kick`` (the event in force when the question went out, so a
        wake-up that came while it was out is not lost)."""
        self._ensure_wake()
        if self._listener is None:
            # Without wake-ups, room freed elsewhere is seen only by asking: every half TTL.
            ms = min(ms, self._waiter_ttl_ms / 2)
        try:
            await asyncio.wait_for(kick.wait(), timeout=max(0.0, ms) / 1000.0)
        except asyncio.TimeoutError:
            pass

    async def _drive(self, klass: str, queue: list[_AsyncWaiter]) -> None:
        """Serves one class: its head asks Redis until it goes or fails; then the next."""
        backoff = 50.0
        while queue:
            w = queue[0]
            if w.future.done():
                queue.pop(0)
                continue
            kick = self._kick
            call = self._begin(w)
            if isinstance(call, _Call):
                try:
                    reply = await asyncio.wait_for(self._run(call.keys, call.args), timeout=call.bound_ms / 1000.0)
                except Exception as e:
                    turn = self._unreachable(w, call, e, backoff)
                    backoff = min(backoff * 2, 1000.0)
                else:
                    backoff = 50.0
                    turn = self._replied(w, call, reply)
            else:
                turn = call
            if not turn.done:
                await self._sleep(turn.sleep_ms, kick)
                continue
            queue.pop(0)
            if turn.withdraw:
                asyncio.get_running_loop().create_task(self._withdraw(w))
            if w.future.done():
                continue
            if turn.error is not None:
                w.future.set_exception(turn.error)
            else:
                w.future.set_result(SharedPermit(self, turn.request, cast("Sequence[SharedReservation]", w.reserve)))
        if self._classes.get(klass) is queue:
            del self._classes[klass]
        if self.waiting == 0:
            self._idle()


class SyncSharedTrafficControl(_SharedBase):
    """:class:`SharedTrafficControl` for threads, over a blocking client (``redis.Redis``).

    ``acquire`` blocks the calling thread until the request may go. One instance may be shared by
    any number of threads: within a local class (priority, limits) they queue in arrival order and
    only the head asks Redis; it sleeps (``time.sleep``-like, on a condition) until the instant the
    script names, or until another thread of this instance completes, releases or syncs a budget.
    Redis unreachable fails closed as for asyncio, but a blocking call cannot be cut short: a
    request may overrun its wait by one call, so keep the client's socket timeouts short and its
    own retries few (``retry=Retry(NoBackoff(), 0)`` leaves retrying to the controller).
    """

    def __init__(
        self,
        config: str | Mapping[str, Any],
        *,
        redis: SyncRedisClient,
        account: str,
        on_unavailable: Literal["wait", "fail"] = "wait",
        unavailable_max_wait: float = 30.0,
        waiter_ttl: float = 2.0,
        env: Mapping[str, str] | None = None,
        wake: bool = True,
        http: Any = None,
    ) -> None:
        super().__init__(config, account, on_unavailable, unavailable_max_wait, waiter_ttl, env)
        self._redis = redis
        self._http = http
        self._learning = threading.Lock()
        self._learnt = 0
        self._classes: dict[str, list[_Waiter]] = {}
        self._cond = threading.Condition()
        self._kicks = 0
        self._wake_enabled = wake
        self._pubsub: Any = None
        self._wake_thread: Any = None
        self._linger: threading.Timer | None = None

    def reservation(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        cost: int | None = None,
        ttl: float | None = None,
    ) -> SyncSharedReservation:
        """A reservation to name in a request's ``reserve`` and a follow-up's ``spend``."""
        return SyncSharedReservation(self, self._follow_up(url, method, route, cost, ttl))

    def acquire(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        priority: str = "normal",
        cost: int | None = None,
        limits: Sequence[str] = (),
        reserve: Sequence[SyncSharedReservation] = (),
        spend: SyncSharedReservation | None = None,
        max_wait: float | None = None,
    ) -> SyncSharedPermit:
        """Blocks until the request may go; raises the error of its kind when it never can. A
        budget whose balance nobody reported yet is learnt first with the free status request
        (Keepa's ``/token``, made from ``url``; sent with ``http=``, an ``httpx.Client``, or a new
        one)."""
        args = (url, method, route, priority, cost, limits, reserve, spend, max_wait)
        try:
            return self._acquire_once(*args)
        except TrafficControlError as e:
            if e.code != "BUDGET_UNKNOWN" or url is None or not self._learn_budget(url):
                raise
            return self._acquire_once(*args)

    def _learn_budget(self, url: str) -> bool:
        """Sends the status request made from ``url`` (one thread at a time)."""
        status = self._store.status_url(url)
        if status is None:
            return False
        generation = self._learnt
        with self._learning:
            if self._learnt != generation:
                return True  # another thread learnt it while this one waited for the lock
            try:
                permit = self._acquire_once(status, "GET", None, "high", None, (), (), None, None)
            except Exception:
                return False
            code: int | None = None
            headers: list[tuple[str, str]] | None = None
            body: str | None = None
            try:
                if self._http is not None:
                    response = self._http.get(status)
                else:
                    import httpx

                    with httpx.Client() as client:
                        response = client.get(status)
                code, headers, body = response.status_code, list(response.headers.multi_items()), response.text
            except Exception:
                return False
            finally:
                permit.complete(code, headers, body)
            self._learnt += 1
            return code is not None and code < 400

    def _acquire_once(
        self,
        url: str | None,
        method: str | None,
        route: str | None,
        priority: str,
        cost: int | None,
        limits: Sequence[str],
        reserve: Sequence[SyncSharedReservation],
        spend: SyncSharedReservation | None,
        max_wait: float | None,
    ) -> SyncSharedPermit:
        wid, klass, text, max_wait_at = self._request(
            url, method, route, priority, cost, limits, reserve, spend, max_wait
        )
        w = _Waiter(wid, text, max_wait_at, reserve)
        with self._cond:
            queue = self._classes.setdefault(klass, [])
            queue.append(w)
        try:
            turn = self._serve(queue, w)
        except BaseException:  # KeyboardInterrupt and the like: leave the queue, drop the claim
            self._leave(klass, queue, w)
            self._withdraw(w)
            raise
        self._leave(klass, queue, w)
        if turn.withdraw:
            self._withdraw(w)
        if turn.error is not None:
            raise turn.error
        return SyncSharedPermit(self, turn.request, reserve)

    def sync_budget(self, limit: str, tokens_left: int, refill_in: float | None = None) -> None:
        """Sets a budget to the server's balance (Keepa's ``tokensLeft``; ``refill_in`` seconds)."""
        self._observe(self._run_or_wait(*self._sync_budget_call(limit, tokens_left, refill_in)))
        self._wake()

    def snapshot(self) -> list[tuple[str, int, int, int, tuple[float, str] | None]]:
        """Every limit's shared state: ``(name, used, capacity, reserved, pause)``; ``pause`` is
        ``(until_ms, reason)`` in Redis server time while a 429 or a block pauses the limit."""
        return self._snapshot_reply(self._run(*self._snapshot_call()))

    @property
    def waiting(self) -> int:
        """Requests of this process waiting."""
        with self._cond:
            return sum(len(q) for q in self._classes.values())

    def _run(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        return run_script_sync(self._redis, self._sha, self._script, keys, args, self.round_trips)

    def _run_or_wait(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """:meth:`SharedTrafficControl._run_or_wait`, blocking."""
        started, backoff = _now(), 50.0
        while True:
            try:
                return self._run(keys, args)
            except Exception as e:
                self._report_retry(started, backoff, e)
            time.sleep(backoff / 1000.0)
            backoff = min(backoff * 2, 1000.0)

    def _wake(self) -> None:
        with self._cond:
            self._kicks += 1
            self._cond.notify_all()

    def _leave(self, klass: str, queue: list[_Waiter], w: _Waiter) -> None:
        with self._cond:
            if w in queue:
                queue.remove(w)
            if not queue and self._classes.get(klass) is queue:
                del self._classes[klass]
            self._cond.notify_all()  # the next of the class is head now
            idle = not self._classes and self._wake_thread is not None and self._linger is None
            if idle:
                self._linger = threading.Timer(1.0, self._stop_if_idle)
                self._linger.daemon = True
                self._linger.start()

    def _on_wake(self, _message: Any) -> None:
        self.wakeups += 1
        self._wake()

    def _ensure_wake(self) -> None:
        """While requests wait, a pubsub thread of the client listens on the wake channel: room
        freed in any process wakes the waiters at once. Failures leave the polling in charge."""
        with self._cond:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            if not self._wake_enabled or self._wake_thread is not None:
                return
            factory = getattr(self._redis, "pubsub", None)
            if factory is None:
                return
            try:
                pubsub = factory(ignore_subscribe_messages=True)
                pubsub.subscribe(**{self.wake_channel: self._on_wake})
                self._wake_thread = pubsub.run_in_thread(sleep_time=0.01, daemon=True)
                self._pubsub = pubsub
            except Exception:
                return
        self._wake()  # room may have freed while subscribing: ask again

    def _stop_if_idle(self) -> None:
        with self._cond:
            self._linger = None
            if self._classes:
                return
        self.close()

    def close(self) -> None:
        """Stops listening for wake-ups now (waiting requests fall back to polling)."""
        with self._cond:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            thread, pubsub = self._wake_thread, self._pubsub
            self._wake_thread = self._pubsub = None
        try:
            if thread is not None:
                thread.stop()
                # Its loop reads with a short timeout: let it end before its connection closes.
                if thread is not threading.current_thread():
                    thread.join(timeout=1.0)
            if pubsub is not None:
                pubsub.close()
        except Exception:
            pass

    def _serve(self, queue: list[_Waiter], w: _Waiter) -> _Turn:
        """Waits to be the head of its class, then asks Redis until it goes or fails."""
        with self._cond:
            while queue[0] is not w:
                if w.max_wait_at is not None and _now() > w.max_wait_at:
                    return _Turn(True, error=_deadline_error())  # never asked: no claim to withdraw
                self._cond.wait(None if w.max_wait_at is None else (w.max_wait_at - _now()) / 1000.0 + 0.001)
        backoff = 50.0
        while True:
            with self._cond:
                kicks = self._kicks
            call = self._begin(w)
            if isinstance(call, _Turn):
                return call
            try:
                reply = self._run(call.keys, call.args)
            except Exception as e:
                turn = self._unreachable(w, call, e, backoff)
                backoff = min(backoff * 2, 1000.0)
            else:
                backoff = 50.0
                turn = self._replied(w, call, reply)
            if turn.done:
                return turn
            # Sleep until the instant the core names, or until this instance's state changes or a
            # wake-up comes from another process.
            self._ensure_wake()
            sleep_ms = turn.sleep_ms if self._wake_thread is not None else min(turn.sleep_ms, self._waiter_ttl_ms / 2)
            until = time.monotonic() + max(0.0, sleep_ms) / 1000.0
            with self._cond:
                while self._kicks == kicks:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)

    def _complete(
        self, request: int, status: int | None, headers: Sequence[tuple[str, str]] | None, body: str | None
    ) -> None:
        call = self._complete_call(request, status, headers, body)
        if call is not None:
            self._observe(self._run_or_wait(*call))
        self._wake()

    def _release(self, reservation: int) -> bool:
        live = self._observe(self._run_or_wait(*self._release_call(reservation)))
        self._wake()
        return live

    def _withdraw(self, w: _Waiter) -> None:
        try:
            self._observe(self._run(*self._withdraw_call(w)))
        except Exception:
            pass  # its claims lapse with the waiter TTL anyway


def _deadline_error() -> BaseException:
    from ._traffic_control import DeadlineError

    e = DeadlineError("the request could not go within its maximum wait")
    e.code = "DEADLINE_EXCEEDED"
    return e
