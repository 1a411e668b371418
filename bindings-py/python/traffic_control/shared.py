"""The shared store: limit state of one account in Redis, for every process calling with it.

The core's driver decides every step (sans-IO: which script call to run, when to ask again, the
unavailable policy, budget learning, wake-ups); this module runs its Redis and HTTP calls and its
timer. Two hosts share one base; only the I/O and the waiting differ:

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

A rate-limited answer (a 429, a block) is retried as in memory: ``complete()`` returns a
:class:`SharedCompletion` whose ``kind`` is ``"retry"`` with the retry's ``permit`` once the store's
pause lets it go (send the request again with it), ``"give_up"`` past ``feedback.max_retries`` or
the request's ``max_wait``, else ``"done"``.

Redis unreachable: fail closed. With ``on_unavailable="wait"`` (the default) a request retries with
backoff and fails with :class:`StoreUnavailableError` once its ``max_wait`` (or
``unavailable_max_wait``) is spent; with ``"fail"`` it fails at once. Never unlimited. A completion,
a release or a budget sync retries the same way (up to ``unavailable_max_wait``), then raises
:class:`StoreUnavailableError`.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import inspect
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from ._config_types import Config
from ._types import ShadowReport
from ._controller import metrics_of, shadow_arguments, shadow_report_of, tell, without
from ._traffic_control import Event, SharedDriver, StoreError, StoreReplyError, StoreUnavailableError

__all__ = [
    "RedisClient",
    "SharedCompletion",
    "SharedPermit",
    "SharedReservation",
    "SharedTrafficControl",
    "StoreError",
    "StoreReplyError",
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
    client: SyncRedisClient, sha: str, script: str, keys: Sequence[str], args: Sequence[str], counter: list[int] | None = None
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


def _target(url: str | None, method: str | None, route: str | None) -> Any:
    if route is not None:
        return {"route": route}
    if url is not None:
        return {"http": {"method": (method or "GET").upper(), "url": url}}
    return "none"


class _Reservation:
    def __init__(self, tc: Any, follow_up: dict[str, Any]) -> None:
        self._tc = tc
        self.follow_up = follow_up
        self.id: int | None = None


class SharedReservation(_Reservation):
    """Capacity reserved in Redis for a follow-up; every process counts it."""

    async def release(self) -> bool:
        """Gives the capacity back now; False when already spent, released or expired."""
        return False if self.id is None else bool(await self._tc._operation({"input": "release", "reservation": self.id}))


class SyncSharedReservation(_Reservation):
    """:class:`SharedReservation` of a :class:`SyncSharedTrafficControl`."""

    def release(self) -> bool:
        """Gives the capacity back now; False when already spent, released or expired."""
        return False if self.id is None else bool(self._tc._operation({"input": "release", "reservation": self.id}))


def _complete(request: int, status: int | None, headers: Sequence[tuple[str, str]] | None, body: str | None) -> dict[str, Any]:
    flat = None if headers is None else [x for pair in headers for x in pair]
    return {"input": "complete", "request": request, "status": status, "headers": flat, "body": body,
            "unixTime": time.time() * 1000.0}


class _Permit:
    def __init__(self, tc: Any, request: int, reservations: Sequence[_Reservation]) -> None:
        self._tc = tc
        self.request = request
        self.reservations = list(reservations)


@dataclasses.dataclass(frozen=True)
class SharedCompletion:
    """What to do after ``complete()``: ``kind`` is ``"done"``; ``"retry"`` (the answer was rate
    limited: the store paused the limits, the request waited again at its priority, and
    ``permit`` may go now: send it again and complete that permit); or ``"give_up"`` (rate
    limited, and its retries are spent or the pause ends past its ``max_wait``)."""

    kind: Literal["done", "retry", "give_up"]
    permit: Any = None


class SharedPermit(_Permit):
    """The right to send one request now; ``complete()`` it once."""

    async def complete(
        self, status: int | None = None, headers: Sequence[tuple[str, str]] | None = None, body: str | None = None
    ) -> SharedCompletion:
        """Reports the outcome: only a lease, a 429 or a budget report costs a round trip; a
        rate-limited answer waits for its retry (cancelling the task cancels that wait)."""
        return await self._tc._completion(_complete(self.request, status, headers, body))  # type: ignore[no-any-return]


class SyncSharedPermit(_Permit):
    """:class:`SharedPermit` of a :class:`SyncSharedTrafficControl`; ``complete()`` it once."""

    def complete(
        self, status: int | None = None, headers: Sequence[tuple[str, str]] | None = None, body: str | None = None
    ) -> SharedCompletion:
        """Reports the outcome: only a lease, a 429 or a budget report costs a round trip; a
        rate-limited answer blocks until its retry may go."""
        return self._tc._completion(_complete(self.request, status, headers, body))  # type: ignore[no-any-return]


Output = tuple[Any, ...]


def _completion_of(kind: str) -> SharedCompletion:
    return SharedCompletion("give_up") if kind == "giveUp" else SharedCompletion("done")


class _SharedBase(abc.ABC):
    """What both hosts share: the driver, and handing it inputs under a lock."""

    _permit: type[_Permit]

    def __init__(
        self,
        config: Config | str,
        account: str,
        on_unavailable: Literal["wait", "fail"],
        unavailable_max_wait: float,
        waiter_ttl: float,
        env: Mapping[str, str] | None,
        wake: bool,
    ) -> None:
        options = {
            "account": account,
            "processTag": uuid.uuid4().hex[:12],
            "waiterTtl": waiter_ttl * 1000.0,
            "onUnavailable": on_unavailable,
            "unavailableMaxWait": unavailable_max_wait * 1000.0,
            "wake": wake,
        }
        text = config if isinstance(config, str) else json.dumps(config)
        self._driver = SharedDriver(text, json.dumps(options), dict(os.environ if env is None else env))
        self._script, self._sha = SharedDriver.script()
        self._lock = threading.Lock()
        self._steps = 0
        self._waiting = 0
        self.wake_channel = "tc:{%s}:wake" % account
        """The channel the store publishes freed room on."""
        #: Round trips to Redis so far (for benchmarks).
        self.round_trips = [0]
        self._listeners: tuple[Callable[[Event], object], ...] = ()

    def now(self) -> float:
        """The clock of this process's events, in milliseconds (monotonic): what
        :class:`traffic_control.logs.LogSink` converts their times from."""
        return _now()

    def on(self, listener: Callable[[Event], object]) -> Callable[[], bool]:
        """Calls ``listener`` with every event of this process's requests from now on (``queued``,
        ``go``, ``completed``, ``rate_limited``, ``rejected``, ``expired``, ``cancelled``), as
        ``TrafficControl.on`` does; returns the function that stops it (``True`` when it was
        listening). A request's events carry the id the store drew for it, unique across the
        account's processes (0 when the store was never reached), so a
        :class:`traffic_control.logs.LogSink` in every process fills one ``rate_limit_logs`` table.
        Listeners run in the thread or task that stepped the driver: keep them short."""
        with self._lock:
            first = not self._listeners
            self._listeners = (*self._listeners, listener)
        if first:
            self._feed({"input": "events", "on": True})

        def off() -> bool:
            with self._lock:
                rest = without(self._listeners, listener)
                if rest is None:
                    return False
                self._listeners = rest
            if not rest:
                self._feed({"input": "events", "on": False})
            return True

        return off

    @property
    def waiting(self) -> int:
        """Requests of this process waiting."""
        return self._waiting

    @property
    def wakeups(self) -> int:
        """Wake-up messages received (the driver counts them; for tests and benchmarks)."""
        return self._driver.wakeups()

    def set_shadow(
        self,
        config: Config | str | None,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
    ) -> None:
        """Runs ``config`` in memory beside this process's traffic as a shadow: it sees every
        acquire, go, refusal, cancel, completion (with its response), release and budget sync of
        this controller and decides on them, and nothing it decides is acted on;
        :meth:`shadow_report` compares the two. ``config`` is read as ``TrafficControl.set_shadow``
        reads it (a dict, or a preset name with overrides from ``env``, default ``os.environ``).
        The shadow sees this process only: on an account shared by several processes its limits
        stand for this process's share (or try it in the process that carries the traffic).
        ``None`` stops it; an invalid config raises :class:`ConfigError` naming the field and
        leaves the running shadow."""
        args, kwargs = shadow_arguments(config, env, env_prefix)
        with self._lock:
            self._driver.set_shadow(_now(), *args, **kwargs)

    def shadow_report(self) -> ShadowReport | None:
        """What the shadow config would have decided beside what the store decided, for this
        process's requests since the shadow started; ``None`` without a shadow."""
        with self._lock:
            text = self._driver.shadow_report_json(_now())
        return None if text is None else shadow_report_of(text)

    def _follow_up(self, url: str | None, method: str | None, route: str | None, cost: int | None, ttl: float | None) -> dict[str, Any]:
        return {"target": _target(url, method, route), "limits": [], "cost": cost, "ttl": None if ttl is None else ttl * 1000}

    @staticmethod
    def _acquire_input(
        url: str | None, method: str | None, route: str | None, priority: str, cost: int | None, limits: Sequence[str],
        reserve: Sequence[_Reservation], spend: _Reservation | None, max_wait: float | None, tenant: str | None,
    ) -> dict[str, Any]:
        if spend is not None and spend.id is None:
            raise ValueError("spend: the reservation was not made yet (its request was not admitted)")
        request = {
            "target": _target(url, method, route), "limits": list(limits), "cost": cost, "priority": priority.lower(),
            "deadline": None, "reserve": [r.follow_up for r in reserve], "spend": None if spend is None else spend.id,
        }
        if tenant is not None:
            request["tenant"] = tenant
        return {"input": "acquire", "request": request, "maxWait": None if max_wait is None else max_wait * 1000.0}

    def _feed(self, input: dict[str, Any] | None, reply: tuple[int, Any] | None = None,
              started: Callable[[int], None] | None = None) -> Any:
        """One input to the driver (or one reply); acts on what it asks; returns its result."""
        with self._lock:
            if reply is not None:
                result, outputs, timeout, self._waiting = self._driver.reply(_now(), reply[0], reply[1])
            else:
                result, outputs, timeout, self._waiting = self._driver.step(_now(), json.dumps(input))
            if result is not None and started is not None:
                started(result)
            self._steps += 1
            step = self._steps
        for o in outputs:
            self._act(o)
        if step == self._steps:  # else a later step (nested, or another thread's) knows the time better
            self._arm(timeout)
        return result

    @abc.abstractmethod
    def _settled(self, o: Output, value: Any) -> None:
        """Hands an operation's result (a permit's ids, an error, a release's liveness, a
        snapshot) to whoever waits for it: a future (asyncio) or a waiting thread."""

    def _act(self, o: Output) -> None:
        kind = o[0]
        if kind == "go":
            self._settled(o, o[3])
        elif kind in ("fail", "done", "giveUp", "snapshot"):
            self._settled(o, o[2])
        elif kind == "metrics":
            self._settled(o, (metrics_of(o[2][0]), o[2][1]))
        elif kind == "run":
            self._run(o[1], o[2], o[3])
        elif kind == "status":
            self._status(o[1], o[2])
        elif kind == "subscribe":
            self._subscribe(o[1])
        elif kind == "unsubscribe":
            self._unsubscribe()
        elif kind == "event":
            tell(self._listeners, o[1])

    @abc.abstractmethod
    def _run(self, call: int, keys: list[str], args: list[str]) -> None:
        """Runs a script call with the host's client; its reply or failure goes back to the driver."""

    @abc.abstractmethod
    def _status(self, handle: int, url: str) -> None:
        """Sends the status request (``GET url``) with the host's HTTP client and reports it."""

    @abc.abstractmethod
    def _subscribe(self, channel: str) -> None:
        """Listens for wake-ups on ``channel`` and says whether it worked."""

    @abc.abstractmethod
    def _unsubscribe(self) -> None:
        """Stops listening for wake-ups."""

    @abc.abstractmethod
    def _arm(self, timeout: float | None) -> None:
        """Sets the host's one timer to feed the driver a timeout at ``timeout`` (ms)."""

    def _on_message(self, *_: Any) -> None:
        self._feed({"input": "woken"})

    @staticmethod
    def _status_input(handle: int, response: Any) -> dict[str, Any]:
        if response is None:
            return {"input": "statusDone", "handle": handle}
        headers = [x for pair in response.headers.multi_items() for x in pair]
        return {"input": "statusDone", "handle": handle, "status": response.status_code, "headers": headers, "body": response.text}


class SharedTrafficControl(_SharedBase):
    """A traffic controller whose limit state lives in Redis (asyncio).

    One script call per admission on the fast path. A request that must wait asks again at the
    instant the script names; meanwhile its claim keeps lower priorities, of every process, off the
    room it needs. Only the head of each local class (priority, limits) asks Redis. A budget whose
    balance nobody reported yet is learnt first with the free status request (Keepa's ``/token``),
    sent with ``http=`` (an ``httpx.AsyncClient``) or a new client.
    """

    def __init__(
        self, config: Config | str, *, redis: RedisClient, account: str,
        on_unavailable: Literal["wait", "fail"] = "wait", unavailable_max_wait: float = 30.0, waiter_ttl: float = 2.0,
        env: Mapping[str, str] | None = None, wake: bool = True, http: Any = None,
        listener: Callable[[Event], object] | None = None,
    ) -> None:
        super().__init__(config, account, on_unavailable, unavailable_max_wait, waiter_ttl, env,
                         wake and getattr(redis, "pubsub", None) is not None)
        self._redis = redis
        self._http = http
        self._pending: dict[int, tuple[asyncio.Future[Any], Sequence[_Reservation] | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        if listener is not None:
            self.on(listener)

    def reservation(self, url: str | None = None, *, method: str | None = None, route: str | None = None,
                    cost: int | None = None, ttl: float | None = None) -> SharedReservation:
        """A reservation to name in a request's ``reserve`` and a follow-up's ``spend``."""
        return SharedReservation(self, self._follow_up(url, method, route, cost, ttl))

    async def acquire(
        self, url: str | None = None, *, method: str | None = None, route: str | None = None, priority: str = "normal",
        cost: int | None = None, limits: Sequence[str] = (), reserve: Sequence[SharedReservation] = (),
        spend: SharedReservation | None = None, max_wait: float | None = None, tenant: str | None = None,
    ) -> SharedPermit:
        """Waits until the request may go (``max_wait`` seconds at most, store outages included);
        raises the error of its kind when it never can."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        input = self._acquire_input(url, method, route, priority, cost, limits, reserve, spend, max_wait, tenant)
        handle = self._feed(input, started=lambda h: self._pending.__setitem__(h, (future, reserve)))
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            self._feed({"input": "cancel", "handle": handle})
            raise

    async def sync_budget(self, limit: str, tokens_left: int, refill_in: float | None = None) -> None:
        """Sets a budget to the server's balance (Keepa's ``tokensLeft``; ``refill_in`` seconds)."""
        refill = None if refill_in is None else refill_in * 1000.0
        await self._operation({"input": "syncBudget", "limit": limit, "tokensLeft": tokens_left, "refillIn": refill})

    async def snapshot(self) -> list[tuple[str, int, int, int, tuple[float, str] | None]]:
        """Every limit's shared state: ``(name, used, capacity, reserved, pause)``; ``pause`` is
        ``(until_ms, reason)`` in Redis server time while a 429 or a block pauses the limit."""
        return await self._operation({"input": "snapshot"})  # type: ignore[no-any-return]

    async def metrics(self) -> dict[str, Any]:
        """The metrics: this process's counters (requests by route, priority and result, refusals
        by code, time waited, the pauses its answers caused) and queue (``snapshot.waiting``), with
        the account's limits as Redis holds them (every process reports the same gauges: aggregate
        them with ``max``, the counters with ``sum``). The same dict as ``TrafficControl.metrics()``;
        one round trip."""
        metrics, _ = await self._operation({"input": "metrics"})
        return metrics  # type: ignore[no-any-return]

    async def metrics_text(self) -> str:
        """The metrics in Prometheus's text exposition format (version 0.0.4); one round trip."""
        _, text = await self._operation({"input": "metrics"})
        return text  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stops listening for wake-ups now (waiting requests fall back to polling)."""
        self._feed({"input": "close"})
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            try:
                await listener
            except (asyncio.CancelledError, Exception):
                pass

    def _operation(self, input: dict[str, Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._feed(input, started=lambda h: self._pending.__setitem__(h, (future, ())))
        return future

    async def _completion(self, input: dict[str, Any]) -> SharedCompletion:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        handle = self._feed(input, started=lambda h: self._pending.__setitem__(h, (future, None)))
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            self._feed({"input": "cancel", "handle": handle})
            raise

    def _settled(self, o: Output, value: Any) -> None:
        future, reserve = self._pending.pop(o[1], (None, ()))
        if o[0] == "go":
            if future is None or future.done():  # cancelled meanwhile: give its room back
                self._feed({"input": "complete", "request": o[2]})
                return
            if reserve is None:  # a completion's retry
                future.set_result(SharedCompletion("retry", SharedPermit(self, o[2], ())))
                return
            for r, rid in zip(reserve, value):
                r.id = rid
            future.set_result(SharedPermit(self, o[2], reserve))
        elif future is not None and not future.done():
            if o[0] == "fail":
                future.set_exception(value)
            else:
                future.set_result(_completion_of(o[0]) if reserve is None else value)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _run(self, call: int, keys: list[str], args: list[str]) -> None:
        async def run() -> None:
            try:
                reply = await run_script(self._redis, self._sha, self._script, keys, args, self.round_trips)
            except Exception as e:
                self._feed({"input": "storeError", "call": call, "reason": str(e) or type(e).__name__})
            else:
                self._feed(None, reply=(call, reply))

        self._spawn(run())

    def _status(self, handle: int, url: str) -> None:
        async def send() -> None:
            response = None
            try:
                if self._http is not None:
                    response = await self._http.get(url)
                else:
                    import httpx

                    async with httpx.AsyncClient() as client:
                        response = await client.get(url)
                        await response.aread()
            except Exception:
                response = None
            self._feed(self._status_input(handle, response))

        self._spawn(send())

    def _subscribe(self, channel: str) -> None:
        self._listener = self._spawn(self._listen(channel))

    def _unsubscribe(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()

    async def _listen(self, channel: str) -> None:
        pubsub = self._redis.pubsub()  # type: ignore[attr-defined]
        try:
            try:
                await pubsub.subscribe(channel)
            except Exception:
                self._feed({"input": "subscribed", "ok": False})
                return
            self._feed({"input": "subscribed", "ok": True})
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._on_message()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._feed({"input": "subscribed", "ok": False})  # lost: poll, subscribe again later
        finally:
            for step in ("unsubscribe", "aclose" if hasattr(pubsub, "aclose") else "close"):
                try:
                    done = getattr(pubsub, step)()
                    if inspect.isawaitable(done):
                        await done
                except Exception:
                    pass

    def _arm(self, timeout: float | None) -> None:
        if timeout == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, timeout
        if timeout is not None:
            def fire() -> None:
                self._timer, self._timer_at = None, None
                self._feed({"input": "timeout"})

            delay = max(0.0, timeout - _now()) / 1000.0
            self._timer = asyncio.get_running_loop().call_later(delay, fire)


class SyncSharedTrafficControl(_SharedBase):
    """:class:`SharedTrafficControl` for threads, over a blocking client (``redis.Redis``).

    ``acquire`` blocks the calling thread until the request may go. One instance may be shared by
    any number of threads; the thread that starts a script call runs it. A blocking call cannot be
    cut short: a request may overrun its wait by one call, so keep the client's socket timeouts
    short and its own retries few (``retry=Retry(NoBackoff(), 0)`` leaves retrying to the driver).
    """

    def __init__(
        self, config: Config | str, *, redis: SyncRedisClient, account: str,
        on_unavailable: Literal["wait", "fail"] = "wait", unavailable_max_wait: float = 30.0, waiter_ttl: float = 2.0,
        env: Mapping[str, str] | None = None, wake: bool = True, http: Any = None,
        listener: Callable[[Event], object] | None = None,
    ) -> None:
        super().__init__(config, account, on_unavailable, unavailable_max_wait, waiter_ttl, env,
                         wake and getattr(redis, "pubsub", None) is not None)
        self._redis = redis
        self._http = http
        self._cond = threading.Condition()
        self._results: dict[int, tuple[str, Any, Any]] = {}
        self._reserve: dict[int, Sequence[_Reservation] | None] = {}
        self._timeout: float | None = None
        self._idle_timer: threading.Timer | None = None
        self._jobs = threading.local()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pubsub: Any = None
        self._wake_thread: Any = None
        if listener is not None:
            self.on(listener)

    def reservation(self, url: str | None = None, *, method: str | None = None, route: str | None = None,
                    cost: int | None = None, ttl: float | None = None) -> SyncSharedReservation:
        """A reservation to name in a request's ``reserve`` and a follow-up's ``spend``."""
        return SyncSharedReservation(self, self._follow_up(url, method, route, cost, ttl))

    def acquire(
        self, url: str | None = None, *, method: str | None = None, route: str | None = None, priority: str = "normal",
        cost: int | None = None, limits: Sequence[str] = (), reserve: Sequence[SyncSharedReservation] = (),
        spend: SyncSharedReservation | None = None, max_wait: float | None = None, tenant: str | None = None,
    ) -> SyncSharedPermit:
        """Blocks until the request may go (``max_wait`` seconds at most, store outages included);
        raises the error of its kind when it never can."""
        input = self._acquire_input(url, method, route, priority, cost, limits, reserve, spend, max_wait, tenant)
        handle = self._pump(input, started=lambda h: self._reserve.__setitem__(h, reserve))
        try:
            return self._wait(handle)  # type: ignore[no-any-return]
        except BaseException:  # KeyboardInterrupt and the like: drop the claim
            self._pump({"input": "cancel", "handle": handle})
            raise

    def sync_budget(self, limit: str, tokens_left: int, refill_in: float | None = None) -> None:
        """Sets a budget to the server's balance (Keepa's ``tokensLeft``; ``refill_in`` seconds)."""
        refill = None if refill_in is None else refill_in * 1000.0
        self._operation({"input": "syncBudget", "limit": limit, "tokensLeft": tokens_left, "refillIn": refill})

    def snapshot(self) -> list[tuple[str, int, int, int, tuple[float, str] | None]]:
        """Every limit's shared state: ``(name, used, capacity, reserved, pause)``; ``pause`` is
        ``(until_ms, reason)`` in Redis server time while a 429 or a block pauses the limit."""
        return self._operation({"input": "snapshot"})  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, Any]:
        """The metrics: this process's counters (requests by route, priority and result, refusals
        by code, time waited, the pauses its answers caused) and queue (``snapshot.waiting``), with
        the account's limits as Redis holds them (every process reports the same gauges: aggregate
        them with ``max``, the counters with ``sum``). The same dict as ``TrafficControl.metrics()``;
        one round trip.
        ``traffic_control.prometheus.TrafficControlCollector`` and ``MultiProcessPublisher`` take
        this controller as they take ``TrafficControl``."""
        metrics, _ = self._operation({"input": "metrics"})
        return metrics  # type: ignore[no-any-return]

    def metrics_text(self) -> str:
        """The metrics in Prometheus's text exposition format (version 0.0.4); one round trip."""
        _, text = self._operation({"input": "metrics"})
        return text  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops listening for wake-ups now (waiting requests fall back to polling)."""
        self._pump({"input": "close"})

    def _operation(self, input: dict[str, Any]) -> Any:
        return self._wait(self._pump(input))

    def _completion(self, input: dict[str, Any]) -> SharedCompletion:
        handle = self._pump(input, started=lambda h: self._reserve.__setitem__(h, None))
        try:
            return self._wait(handle)  # type: ignore[no-any-return]
        except BaseException:  # KeyboardInterrupt and the like: drop the retry's claim
            self._pump({"input": "cancel", "handle": handle})
            raise

    def _pump(self, input: dict[str, Any] | None, started: Callable[[int], None] | None = None,
              waiting_for: int | None = None) -> Any:
        """Feeds the driver, then runs (in this thread) the calls it asks for until this thread's
        own operation is settled; calls left then (the next waiter's question, a withdraw) go to a
        small pool, so that no thread returns late for running another's call."""
        if getattr(self._jobs, "queue", None) is not None:  # inside a pump of this thread
            return self._feed(input, started=started)
        own = [waiting_for] if waiting_for is not None else []

        def track(h: int) -> None:
            own.append(h)
            if started is not None:
                started(h)

        self._jobs.queue = queue = []  # type: ignore[var-annotated]
        try:
            result = self._feed(input, started=track)
            while queue:
                if own and self._is_settled(own[0]):
                    for job in queue:
                        self._executor().submit(self._run_jobs, job)
                    queue.clear()
                    break
                queue.pop(0)()
            return result
        finally:
            self._jobs.queue = None

    def _run_jobs(self, job: Callable[[], None]) -> None:
        self._jobs.queue = queue = [job]
        try:
            while queue:
                queue.pop(0)()
        finally:
            self._jobs.queue = None

    def _is_settled(self, handle: int) -> bool:
        with self._cond:
            return handle in self._results

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._cond:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="traffic-control")
            return self._pool

    def _wait(self, handle: int) -> Any:
        while True:
            with self._cond:
                if handle in self._results:
                    kind, value, request = self._results.pop(handle)
                    break
                at = self._timeout
                if at is None or at > _now():
                    self._cond.wait(None if at is None else (at - _now()) / 1000.0)
                    continue
            self._pump({"input": "timeout"}, waiting_for=handle)
        reserve = self._reserve.pop(handle, ())
        if kind == "fail":
            raise value
        if reserve is None:  # a completion
            return SharedCompletion("retry", SyncSharedPermit(self, request, ())) if kind == "go" else _completion_of(kind)
        if kind == "go":
            for r, rid in zip(reserve, value):
                r.id = rid
            return SyncSharedPermit(self, request, reserve)
        return value

    def _settled(self, o: Output, value: Any) -> None:
        with self._cond:
            self._results[o[1]] = (o[0], value, o[2])
            self._cond.notify_all()

    def _later(self, job: Callable[[], None]) -> None:
        queue = getattr(self._jobs, "queue", None)
        if queue is None:
            job()
        else:
            queue.append(job)

    def _run(self, call: int, keys: list[str], args: list[str]) -> None:
        def run() -> None:
            try:
                reply = run_script_sync(self._redis, self._sha, self._script, keys, args, self.round_trips)
            except Exception as e:
                self._feed({"input": "storeError", "call": call, "reason": str(e) or type(e).__name__})
            else:
                self._feed(None, reply=(call, reply))

        self._later(run)

    def _status(self, handle: int, url: str) -> None:
        def send() -> None:
            response = None
            try:
                if self._http is not None:
                    response = self._http.get(url)
                else:
                    import httpx

                    with httpx.Client() as client:
                        response = client.get(url)
            except Exception:
                response = None
            self._feed(self._status_input(handle, response))

        self._later(send)

    def _subscribe(self, channel: str) -> None:
        def subscribe() -> None:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[attr-defined]
                pubsub.subscribe(**{channel: lambda _message: self._woken()})
                self._wake_thread = pubsub.run_in_thread(sleep_time=0.01, daemon=True, exception_handler=self._lost)
                self._pubsub = pubsub
            except Exception:
                self._feed({"input": "subscribed", "ok": False})
                return
            self._feed({"input": "subscribed", "ok": True})

        self._later(subscribe)

    def _lost(self, _error: BaseException, _pubsub: Any, thread: Any) -> None:
        """The subscription's connection dropped (Redis restarting): poll, subscribe again later."""
        thread.stop()
        if self._wake_thread is thread:
            self._wake_thread = None
            self._pump({"input": "subscribed", "ok": False})

    def _woken(self) -> None:
        self._pump({"input": "woken"})

    def _unsubscribe(self) -> None:
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

    def _arm(self, timeout: float | None) -> None:
        with self._cond:
            self._timeout = timeout
            self._cond.notify_all()
        # With no thread waiting, a timer thread keeps the driver's time (a subscription's end).
        if timeout is not None and self._waiting == 0 and not self._results:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._idle_timer = threading.Timer(max(0.0, timeout - _now()) / 1000.0 + 0.001, self._pump, ({"input": "timeout"},))
            self._idle_timer.daemon = True
            self._idle_timer.start()
