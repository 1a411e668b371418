"""The host side of the sans-IO core: waiting in asyncio and in threads, the one timer, listeners.

The native base class (``_traffic_control.Driver``) runs the fast path: ``acquire`` /
``acquire_sync`` try the direct path (``try_acquire``: no queue, no coroutine, no event objects
unless someone listens) and leaving the ``with`` block completes the request. A request that must
wait comes here: it is submitted to the core's queue and parked on a future (asyncio) or an event
(threads). Its permit comes out of ``poll`` as a ``go`` event, delivered by whoever drains: the call
that changed the state, or the timer thread that sleeps until ``poll_timeout()``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import json
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, TypeVar, Union

from . import _traffic_control as _native
from ._config_types import Config
from ._traffic_control import AsyncPermit, Completion, Event, RequestCancelledError, SyncPermit
from ._traffic_control import Permit as _NativePermit

if TYPE_CHECKING:
    from ._types import ShadowReport, ShadowSide, Snapshot

__all__ = ["Priority", "TrafficControl"]

_log = logging.getLogger("traffic_control")
_NativeCore = _native.TrafficControl
T = TypeVar("T")

Headers = Union[Mapping[str, str], Iterable["tuple[str, str]"]]
HeldPermit = Union[AsyncPermit, SyncPermit]


class Priority(enum.IntEnum):
    """Priority of a request: FIFO within a level, higher levels first."""

    CRITICAL = 0
    """Emergency work (reverting a price): ahead of everyone, never over a limit."""
    HIGH = 1
    """Follow-ups and reads that must not lag."""
    NORMAL = 2
    """Ordinary work (the default)."""
    LOW = 3
    """Background work (watchdog scans)."""


def _cancelled_error(message: str) -> RequestCancelledError:
    error = RequestCancelledError(message)
    error.code = "CANCELLED"
    return error


class _AsyncWaiter:
    """A request parked on an asyncio future; delivered from any thread."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[_NativePermit] = loop.create_future()

    def deliver(self, tc: TrafficControl, permit: _NativePermit) -> None:
        # Runs with tc._lock held, in any thread.
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            if self.future.done():  # the waiting task gave up meanwhile: the permit goes unused
                tc._core.cancel(tc.now(), permit.request)
            else:
                self.future.set_result(permit)
            return
        try:
            self.loop.call_soon_threadsafe(tc._deliver_async, self.future, permit)
        except RuntimeError:  # the loop is closed: nobody will send it
            tc._core.cancel(tc.now(), permit.request)

    def fail(self, error: BaseException) -> None:
        def _fail() -> None:
            if not self.future.done():
                self.future.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(_fail)
        except RuntimeError:
            pass


class _SyncWaiter:
    """A request parked on a thread event."""

    __slots__ = ("event", "permit", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.permit: _NativePermit | None = None
        self.error: BaseException | None = None

    def deliver(self, tc: TrafficControl, permit: _NativePermit) -> None:
        self.permit = permit
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


_Waiter = Union[_AsyncWaiter, _SyncWaiter]


def _build_core(
    config: Config | str, env: Mapping[str, str] | None, env_prefix: str | None, keep: bool
) -> _native.TrafficControl:
    if isinstance(config, str):
        return _NativeCore.preset(config, env=os.environ if env is None else env, env_prefix=env_prefix, keep_events=keep)
    if env_prefix is not None:
        return _NativeCore(config, env=os.environ if env is None else env, env_prefix=env_prefix, keep_events=keep)
    return _NativeCore(config, keep_events=keep)


class TrafficControl(_native.Driver):
    """A traffic controller for asyncio and threads: decides when each outgoing request may go.

    ``config`` is a dict (the JSON shape of the core's config, typed :class:`Config`) or a preset
    name (``"backmarket"``, ``"keepa"``, ``"baselinker"``). Presets take overrides from the environment (``env``, default
    ``os.environ``) through their prefix (``KEEPA_RATE_LIMIT_TOKENS_REFILL=...``); a dict config takes
    them only when ``env_prefix`` is given. ``listener`` is called with every :class:`Event`;
    ``max_wait`` (seconds; ``timeout`` is its former name) is the default for how long a request may
    wait (``None``: as long as it takes); ``clock`` is the monotonic clock in seconds (default ``time.monotonic``).

    One instance may be shared by any number of tasks and threads. ``acquire`` (asyncio) and
    ``acquire_sync`` (threads) come from the native base class.
    """

    def __new__(
        cls,
        config: Config | str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        listener: Callable[[Event], object] | None = None,
        max_wait: float | None = None,
        clock: Callable[[], float] | None = None,
        timeout: float | None = None,
    ) -> TrafficControl:
        core = _build_core(config, env, env_prefix, listener is not None)
        return super().__new__(cls, core, clock=clock, timeout=max_wait if max_wait is not None else timeout)

    def __init__(
        self,
        config: Config | str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        listener: Callable[[Event], object] | None = None,
        max_wait: float | None = None,
        clock: Callable[[], float] | None = None,
        timeout: float | None = None,
    ) -> None:
        self._init_host(listener)

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        listener: Callable[[Event], object] | None = None,
        max_wait: float | None = None,
        clock: Callable[[], float] | None = None,
        timeout: float | None = None,
    ) -> TrafficControl:
        """A controller from a JSON config (errors name the field)."""
        timeout = max_wait if max_wait is not None else timeout
        env = (os.environ if env is None else env) if env_prefix is not None else None
        core = _NativeCore(text, env=env, env_prefix=env_prefix, keep_events=listener is not None)
        self: TrafficControl = _native.Driver.__new__(cls, core, clock=clock, timeout=timeout)
        self._init_host(listener)
        return self

    @classmethod
    def from_toml(
        cls,
        text: str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        listener: Callable[[Event], object] | None = None,
        max_wait: float | None = None,
        clock: Callable[[], float] | None = None,
        timeout: float | None = None,
    ) -> TrafficControl:
        """A controller from a TOML config (errors name the field, or the line and column)."""
        timeout = max_wait if max_wait is not None else timeout
        env = (os.environ if env is None else env) if env_prefix is not None else None
        core = _NativeCore.from_toml(text, env=env, env_prefix=env_prefix, keep_events=listener is not None)
        self: TrafficControl = _native.Driver.__new__(cls, core, clock=clock, timeout=timeout)
        self._init_host(listener)
        return self

    def _init_host(self, listener: Callable[[Event], object] | None) -> None:
        self._core = self.core
        # Every listener: the constructor's, then those `on()` added (a new tuple on each change,
        # so `_flush` reads one without the lock).
        self._listeners: tuple[Callable[[Event], object], ...] = () if listener is None else (listener,)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters: dict[int, _Waiter] = {}
        self._keep = listener is not None
        self._pending: collections.deque[Event] = collections.deque()
        self._listener_lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._timer_due: float | None = None

    # ---- public surface -------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The config in force (presets and overrides applied), as plain data."""
        config: dict[str, Any] = self._core.config
        return config

    @property
    def waiting(self) -> int:
        """Requests waiting for a permit."""
        return self._core.waiting

    async def run(
        self,
        work: Callable[[], Awaitable[T]] | Awaitable[T],
        url: str | None = None,
        **request: Any,
    ) -> T:
        """Runs ``work`` when the request may go and reports its outcome.

        ``work`` is a coroutine, or a function returning one (then a rate-limited attempt is retried
        when the core says so). A result with ``status_code`` and ``headers`` (an HTTP response) is
        reported as the outcome; any other result as an end whose outcome is not known. The
        keywords are those of :meth:`acquire`.
        """
        permit: AsyncPermit = await self.acquire(url, **request)
        while True:
            try:
                result = await (work() if callable(work) else work)
            except BaseException as e:
                # Cancelled: nothing is known of the server (breakers do not judge it); else no answer.
                self._finish(permit.request, isinstance(e, asyncio.CancelledError))
                raise
            status, headers = _response_outcome(result)
            completion, waiter = self._complete(
                permit.request, status, headers, None, None, _AsyncWaiter if callable(work) else None
            )
            permit.completion = completion
            if waiter is None:
                return result
            assert isinstance(waiter, _AsyncWaiter)
            permit._go(await self._wait_async(permit.request, waiter))

    def run_sync(self, work: Callable[[], T], url: str | None = None, **request: Any) -> T:
        """Calls ``work()`` in this thread when the request may go and reports its outcome;
        retries when the core says so. The keywords are those of :meth:`acquire`."""
        permit = self.acquire_sync(url, **request)
        while True:
            try:
                result = work()
            except BaseException as e:
                # Cancelled: nothing is known of the server (breakers do not judge it); else no answer.
                self._finish(permit.request, isinstance(e, asyncio.CancelledError))
                raise
            status, headers = _response_outcome(result)
            completion, waiter = self._complete(permit.request, status, headers, None, None, _SyncWaiter)
            permit.completion = completion
            if waiter is None:
                return result
            assert isinstance(waiter, _SyncWaiter)
            permit._go(self._wait_sync(permit.request, waiter))

    def complete(
        self,
        permit: HeldPermit | int,
        status: int | None = None,
        headers: Headers | None = None,
        body: str | bytes | None = None,
        *,
        unix_time: float | None = None,
    ) -> Completion:
        """Reports the outcome of a permitted request (see ``AsyncPermit.report``)."""
        if isinstance(permit, (AsyncPermit, SyncPermit)):
            return permit.report(status, headers, body, unix_time=unix_time)
        return self._complete(permit, status, headers, body, unix_time, None)[0]

    def release(self, reservation: int) -> bool:
        """Releases a reservation early (its follow-up will not be sent); returns whether it was
        live."""
        now = self.now()
        with self._lock:
            live = self._core.release(now, reservation)
            if self._keep:
                self._drain_locked(now)
        self._after()
        return live

    def sync_budget(self, limit: str, tokens_left: int, refill_in: float | None = None) -> None:
        """Takes the server's word for a budget's balance (Keepa's ``tokensLeft``, and
        ``refill_in`` seconds until its next refill, as on :class:`SharedTrafficControl`)."""
        now = self.now()
        with self._lock:
            try:
                self._core.sync_budget(now, limit, tokens_left, None if refill_in is None else refill_in * 1000.0)
            finally:
                if self._keep:
                    self._drain_locked(now)
                self._kick_locked()
        self._after()

    def snapshot(self) -> Snapshot:
        """Every limit's state and the queue depths, now: ``{"at", "limits": {name: {"kind",
        "capacity", "used", "reserved", "available", "next_free", "balance"}}, "waiting":
        {"critical", "high", "normal", "low"}, "in_flight", "reservations"}``."""
        return self._read(self._core.snapshot)

    def _read(self, read: Callable[[float], T]) -> T:
        """Calls ``read(now)`` on the core under the lock, then delivers what it woke."""
        now = self.now()
        with self._lock:
            out = read(now)
            if self._keep:
                self._drain_locked(now)
        self._after()
        return out

    def metrics(self) -> dict[str, Any]:
        """The metrics, now: ``{"requests": [{"route", "priority", "result", "count"}], "rejected":
        [{"route", "priority", "code", "count"}], "wait": [{"priority", "buckets": [(upper bound in
        seconds, cumulative count)], "count", "sum_seconds"}], "pauses": [{"limit", "reason",
        "count"}], "families": [...], "snapshot": {...}}``. ``metrics_text()`` gives them in
        Prometheus's text format; ``traffic_control.prometheus.TrafficControlCollector`` hands them
        to prometheus_client."""
        return metrics_of(self._read(self._core.metrics_json))

    def metrics_text(self) -> str:
        """The metrics in Prometheus's text exposition format (version 0.0.4), for a ``/metrics``
        endpoint."""
        return self._read(self._core.metrics_text)

    def set_shadow(
        self,
        config: Config | str | None,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
    ) -> None:
        """Runs ``config`` beside this controller as a shadow: it sees the same requests, outcomes
        and cancellations and decides on them, but nothing it decides is acted on;
        :meth:`shadow_report` compares the two. ``config`` is read as the constructor reads it (a
        dict, or a preset name with overrides from ``env``, default ``os.environ``). ``None``
        stops the shadow; a new config starts a fresh one. An invalid config raises
        :class:`ConfigError` naming the field and leaves the running shadow."""
        core = self._core
        args, kwargs = shadow_arguments(config, env, env_prefix)
        self._read(lambda now: core.set_shadow(now, *args, **kwargs))

    def shadow_report(self) -> ShadowReport | None:
        """What the shadow config would have decided beside what this one decided (requests, went
        at once or after a wait, refused by code, cancelled, retried, waiting, and the waits'
        p50/p95/p99/max/total in seconds); ``None`` without a shadow."""
        text = self._read(self._core.shadow_report_json)
        return None if text is None else shadow_report_of(text)

    def on(self, listener: Callable[[Event], object]) -> Callable[[], bool]:
        """Calls ``listener`` with every event from now on, as ``listener=`` does (both may be
        used, and any number of each); returns the function that stops it (``True`` when it was
        listening). Listeners run outside the controller's lock, in the thread that drained the
        events (a caller's or the timer's): keep them short, as :class:`traffic_control.logs.LogSink`'s is."""
        with self._lock:
            self._listeners = (*self._listeners, listener)
            if not self._keep:
                self._core.keep_events = self._keep = True

        def off() -> bool:
            with self._lock:
                rest = without(self._listeners, listener)
                if rest is None:
                    return False
                self._listeners = rest
                # Events stay on while requests wait; the next drain turns them off otherwise.
            return True

        return off

    def close(self) -> None:
        """Fails every waiting request with :class:`RequestCancelledError` and stops the timer.
        The controller stays usable for new requests."""
        now = self.now()
        with self._lock:
            waiters, self._waiters = self._waiters, {}
            for rid, waiter in waiters.items():
                self._core.cancel(now, rid)
                waiter.fail(_cancelled_error(f"request {rid}: the controller was closed"))
            if self._keep:
                self._drain_locked(now)
            self._cond.notify_all()
        self._after()

    def __enter__(self) -> TrafficControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> TrafficControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ---- called by the native fast path ----------------------------------------------------

    def _drain(self, now: float) -> None:
        """The native fast path left events (someone waits or listens): deliver them. A completion
        may have moved the next instant earlier (a window's hold now counts down): wake the timer."""
        with self._lock:
            self._drain_locked(now)
            self._kick_locked()
        self._after()

    async def _enter_slow(self, permit: AsyncPermit, now: float) -> AsyncPermit:
        """``async with tc.acquire(...)`` when the request must wait."""
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        rid = self._submit_and_park(permit, now, waiter)
        permit._go(await self._wait_async(rid, waiter))
        return permit

    def _wait_slow_sync(self, permit: SyncPermit, now: float) -> None:
        """``tc.acquire_sync(...)`` when the request must wait."""
        waiter = _SyncWaiter()
        rid = self._submit_and_park(permit, now, waiter)
        permit._go(self._wait_sync(rid, waiter))

    # ---- internals ------------------------------------------------------------------------

    def _submit_and_park(self, permit: HeldPermit, now: float, waiter: _Waiter) -> int:
        with self._lock:
            try:
                self._keep = True  # `_submit` keeps events from here on: the go may come at once
                rid = permit._submit(now)
                self._waiters[rid] = waiter
            finally:
                self._drain_locked(now)
            self._kick_locked()
        self._after()
        return rid

    def _complete(
        self,
        rid: int,
        status: int | None,
        headers: Headers | None,
        body: str | bytes | None,
        unix_time: float | None,
        retry_with: type[_AsyncWaiter] | type[_SyncWaiter] | None,
    ) -> tuple[Completion, _Waiter | None]:
        """Completes a request; on a retry, parks a waiter of `retry_with` for its next go (with
        none, takes the request out of the queue: the caller will not send it again)."""
        now = self.now()
        waiter: _Waiter | None = None
        loop = asyncio.get_running_loop() if retry_with is _AsyncWaiter else None
        with self._lock:
            completion = self._core.complete(now, rid, status, headers, body, unix_time)
            if completion.kind == "retry":
                if retry_with is None:
                    self._core.cancel(now, rid)
                else:
                    waiter = _AsyncWaiter(loop) if loop is not None else _SyncWaiter()
                    if not self._keep:
                        self._core.keep_events = self._keep = True
                    self._waiters[rid] = waiter
                    self._kick_locked()
            if self._keep:
                self._drain_locked(now)
            # The completion may have moved the next instant earlier: wake the timer.
            self._kick_locked()
        self._after()
        return completion, waiter

    async def _wait_async(self, rid: int, waiter: _AsyncWaiter) -> _NativePermit:
        try:
            return await waiter.future
        except BaseException:
            self._abandon(rid, waiter)
            raise

    def _wait_sync(self, rid: int, waiter: _SyncWaiter) -> _NativePermit:
        try:
            waiter.event.wait()
        except BaseException:
            self._abandon(rid, waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.permit is not None
        return waiter.permit

    def _abandon(self, rid: int, waiter: _Waiter) -> None:
        """The waiting caller gave up (task cancelled, KeyboardInterrupt): take the request out of
        the queue, or give back the permit it was handed meanwhile."""
        now = self.now()
        with self._lock:
            if self._waiters.get(rid) is waiter:
                del self._waiters[rid]
                self._core.cancel(now, rid)
            else:
                handed = _handed_permit(waiter)
                if handed is not None:
                    self._core.cancel(now, handed.request)
            if self._keep:
                self._drain_locked(now)
        self._after()

    def _deliver_async(self, future: asyncio.Future[_NativePermit], permit: _NativePermit) -> None:
        """In the waiter's loop: hand over the permit, or give it back if the task gave up."""
        if future.done():
            now = self.now()
            with self._lock:
                self._core.cancel(now, permit.request)
                if self._keep:
                    self._drain_locked(now)
            self._after()
        else:
            future.set_result(permit)

    def _drain_locked(self, now: float) -> None:
        """Drains the core's events: go → the waiter's permit, expired → its error; every event to
        the listener (called later, outside the lock)."""
        core = self._core
        waiters = self._waiters
        listening = bool(self._listeners)
        while True:
            event = core.poll(now)
            if event is None:
                break
            if listening:
                self._pending.append(event)
            kind = event.type
            if kind == "go":
                waiter = waiters.pop(event.request, None)
                if waiter is not None:
                    permit = event.permit
                    assert permit is not None
                    waiter.deliver(self, permit)
            elif kind == "expired":
                waiter = waiters.pop(event.request, None)
                if waiter is not None:
                    error = event.error
                    assert error is not None
                    waiter.fail(error)
        keep = bool(waiters) or listening
        if keep != self._keep:
            self._keep = keep
            core.keep_events = keep

    def _kick_locked(self) -> None:
        """Makes sure the timer runs while requests wait, and wakes it if the next instant moved
        earlier than what it sleeps for."""
        if not self._waiters:
            return
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="traffic-control-timer", daemon=True)
            self._timer.start()
            return
        due = self._core.poll_timeout()
        if due is not None and (self._timer_due is None or due < self._timer_due):
            self._cond.notify()

    def _run_timer(self) -> None:
        """The one timer: sleeps until the core's ``poll_timeout()``, then polls (which delivers
        permits and expiries). Runs while requests wait."""
        cond = self._cond
        core = self._core
        with cond:
            try:
                while self._waiters:
                    now = self.now()
                    due = core.poll_timeout()
                    if due is not None and due <= now:
                        self._drain_locked(now)
                        if self._pending:
                            cond.release()
                            try:
                                self._flush()
                            finally:
                                cond.acquire()
                        due = core.poll_timeout()
                        if due is None or due > now:
                            continue
                        # Nothing more to do at this instant: wait a little rather than spin.
                        due = now + 1.0
                    self._timer_due = due
                    cond.wait(None if due is None else max(0.0, due - now) / 1000.0)
                    self._timer_due = None
            finally:
                self._timer = None

    def _after(self) -> None:
        if self._pending:
            self._flush()

    def _flush(self) -> None:
        """Calls the listener with the events drained so far, in order, outside the driver's lock."""
        pending = self._pending
        with self._listener_lock:
            while pending:
                try:
                    event = pending.popleft()
                except IndexError:
                    break
                tell(self._listeners, event)


Listener = Callable[[Event], object]


def without(listeners: tuple[Listener, ...], listener: Listener) -> tuple[Listener, ...] | None:
    """``listeners`` without (one registration of) ``listener``; ``None`` when it is not there."""
    if listener not in listeners:
        return None
    i = listeners.index(listener)
    return listeners[:i] + listeners[i + 1:]


def tell(listeners: tuple[Listener, ...], event: Event) -> None:
    """Calls every listener with ``event``; one that raises is logged and the others still run."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            _log.exception("traffic_control listener failed on %r", event)


def _response_outcome(result: object) -> tuple[int, Headers | None]:
    """An HTTP response's status and headers (httpx, requests, aiohttp style), else status 0: an
    end the host does not know the outcome of (breakers do not judge it)."""
    status = getattr(result, "status_code", None)
    if status is None:
        status = getattr(result, "status", None)
    if not isinstance(status, int) or isinstance(status, bool):
        return 0, None
    headers = getattr(result, "headers", None)
    multi = getattr(headers, "multi_items", None)
    if callable(multi):
        return status, multi()
    if isinstance(headers, Mapping):
        return status, [(str(k), str(v)) for k, v in headers.items()]
    return status, None


def _handed_permit(waiter: _Waiter) -> _NativePermit | None:
    """The permit a waiter was handed, if any (its caller gave up after it came)."""
    if isinstance(waiter, _SyncWaiter):
        return waiter.permit
    future = waiter.future
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None


def _shadow_side(raw: dict[str, Any]) -> ShadowSide:
    return {
        "requests": raw["requests"],
        "went_at_once": raw["went_at_once"],
        "went_after_wait": raw["went_after_wait"],
        "refused": dict(raw["refused"]),
        "cancelled": raw["cancelled"],
        "retried": raw["retried"],
        "waiting": raw["waiting"],
        "wait_seconds": {
            "p50": raw["wait_p50"],
            "p95": raw["wait_p95"],
            "p99": raw["wait_p99"],
            "max": raw["wait_max"],
            "total": raw["wait_total"],
        },
    }


def metrics_of(text: str) -> dict[str, Any]:
    """The core's metrics JSON as the dict ``metrics()`` returns (in-memory and shared controllers)."""
    metrics: dict[str, Any] = json.loads(text)
    # JSON has no infinity: the last bucket's bound comes as null.
    for h in metrics["wait"]:
        h["buckets"] = [(math.inf if le is None else le, n) for le, n in h["buckets"]]
    for f in metrics["families"]:
        for sample in f["samples"]:
            sample["labels"] = dict(sample["labels"])
    return metrics


def shadow_report_of(text: str) -> ShadowReport:
    """The core's ``ShadowReport`` JSON as the dict ``shadow_report()`` returns (in-memory and
    shared controllers)."""
    raw = json.loads(text)
    return {
        "since": raw["since"] / 1e6,
        "at": raw["at"] / 1e6,
        "tracked": raw["tracked"],
        "enforced": _shadow_side(raw["enforced"]),
        "shadow": _shadow_side(raw["shadow"]),
    }


def shadow_arguments(
    config: Config | str | None, env: Mapping[str, str] | None, env_prefix: str | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """How ``set_shadow`` hands its config to the native call after ``now`` (in-memory and shared
    controllers): a preset name with the environment's overrides, a config (with them only when a
    prefix is named), or ``None``."""
    if config is None:
        return (None,), {}
    environ = os.environ if env is None else env
    if isinstance(config, str):
        return (), {"preset": config, "env": environ, "env_prefix": env_prefix}
    if env_prefix is not None:
        return (config,), {"env": environ, "env_prefix": env_prefix}
    return (config,), {}
