"""The native module: the sans-IO controller, the fast path of the driver, values and errors.

Time is milliseconds on one monotonic clock (``time.monotonic() * 1000``) wherever a parameter is
called ``now``, ``deadline``, ``at``, ``until``; ``max_wait`` (formerly ``timeout``) is in seconds.
"""

from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Literal, SupportsIndex, final

from typing_extensions import Self, disjoint_base

from traffic_control._config_types import Config
from traffic_control._types import LogRow, Snapshot

__all__ = [
    "TrafficControl",
    "AsyncPermit",
    "_Done",
    "Driver",
    "SyncPermit",
    "ConfigError",
    "DeadlineError",
    "InsufficientBudgetError",
    "NeverSucceedsError",
    "QueueFullError",
    "RequestCancelledError",
    "TrafficControlError",
    "Completion",
    "Event",
    "FollowUp",
    "Permit",
    "Wait",
    "PRESETS",
    "wants_body",
    "simulate_json",
    "SharedDriver",
    "StoreError",
    "StoreReplyError",
    "StoreUnavailableError",
]

def simulate_json(input: str) -> str:
    """The what-if simulator: JSON in (configs, workload, server model), JSON out (reports, text, html)."""

def wants_body(status: int, content_type: str | None = None, content_length: int | None = None) -> bool:
    """Whether a host must read a response's body for the core to see what it says about limits."""

PRESETS: dict[str, str]
"""Every preset that ships with the core: name → environment prefix of its overrides."""

_Priority = SupportsIndex | str | None
_Headers = Mapping[str, str] | Iterable[tuple[str, str]]

# ---- errors ------------------------------------------------------------------------------------

class TrafficControlError(Exception):
    """Base class of every traffic-control error; ``code`` is the core's stable code."""

    code: str | None
    kind: str | None
    retry_after: float | None
    """Seconds until the request could go (budget and unreachable-deadline errors), else None."""

class StoreError(TrafficControlError):
    """The shared store (Redis) could not answer: STORE_UNAVAILABLE or STORE_REPLY."""

class StoreUnavailableError(StoreError):
    """Redis could not be reached within the request's longest wait (STORE_UNAVAILABLE)."""

class StoreReplyError(StoreError):
    """Redis answered something the script never sends (STORE_REPLY)."""

class ConfigError(TrafficControlError):
    """An invalid config: ``field`` names the offending field, ``reason`` says what is wrong."""

    field: str | None
    reason: str | None

class NeverSucceedsError(TrafficControlError):
    """The request can never go as asked: UNKNOWN_ROUTE, UNKNOWN_LIMIT, COST_EXCEEDS_CAPACITY."""

    route: str | None
    limit: str | None
    cost: int | None
    capacity: int | None

class DeadlineError(TrafficControlError):
    """The deadline passed (DEADLINE_EXCEEDED) or cannot be met (DEADLINE_UNREACHABLE)."""

    deadline: float | None
    now: float | None
    earliest: float | None

class QueueFullError(TrafficControlError):
    """The waiting queue holds its configured maximum (QUEUE_FULL)."""

    max_waiting: int | None

class InsufficientBudgetError(TrafficControlError):
    """Not enough budget within the allowed wait (INSUFFICIENT_BUDGET), or its balance unknown
    (BUDGET_UNKNOWN)."""

    limit: str | None
    needed: int | None
    available: int | None
    ahead: int | None
    """What the requests waiting ahead of it on the same budget ask first."""
    enough_at: float | None

class RequestCancelledError(TrafficControlError):
    """The request was cancelled before it could go (CANCELLED)."""

# ---- values ------------------------------------------------------------------------------------

@final
class Permit:
    """The right to send one request now (from ``try_acquire`` or a ``go`` event)."""

    @property
    def request(self) -> int: ...
    @property
    def reservations(self) -> list[int]: ...
    @property
    def at(self) -> float: ...
    @property
    def key(self) -> str | None: ...

@final
class Wait:
    """``try_acquire``'s answer when the request may not go now: ask again at ``until``."""

    @property
    def until(self) -> float | None: ...

@final
class Completion:
    """The core's answer to an outcome: ``"done"``, ``"retry"`` (queued again; goes no earlier than
    ``at``), ``"give_up"`` (rate limited, retries spent) or ``"unknown"`` (not in flight)."""

    @property
    def kind(self) -> Literal["done", "retry", "give_up", "unknown"]: ...
    @property
    def at(self) -> float | None: ...

@final
class FollowUp:
    """A follow-up whose capacity a request reserves in its own admission."""

    def __new__(
        cls,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        limits: Sequence[str] | None = None,
        cost: int | None = None,
        ttl_ms: float | None = None,
    ) -> Self: ...

@final
class Event:
    """One step of a request's life; ``log()`` is its row of the ``rate_limit_logs`` table."""

    @property
    def type(
        self,
    ) -> Literal[
        "queued",
        "go",
        "completed",
        "rate_limited",
        "retried",
        "rejected",
        "expired",
        "cancelled",
        "lease_expired",
        "reservation_expired",
        "reservation_released",
        "limit_lowered",
        "budget_low",
        "breaker_opened",
        "breaker_half_open",
        "breaker_closed",
    ]: ...
    @property
    def request(self) -> int: ...
    @property
    def at(self) -> float: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def priority(self) -> Literal["critical", "high", "normal", "low"]: ...
    @property
    def permit(self) -> Permit | None: ...
    @property
    def waited(self) -> float | None: ...
    @property
    def status(self) -> int | None: ...
    @property
    def response_status(self) -> int | None: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def until(self) -> float | None: ...
    @property
    def attempt(self) -> int | None: ...
    @property
    def retry_at(self) -> float | None: ...
    @property
    def held(self) -> float | None: ...
    @property
    def reservation(self) -> int | None: ...
    @property
    def limit(self) -> str | None: ...
    @property
    def max(self) -> int | None: ...
    @property
    def previous(self) -> int | None: ...
    @property
    def balance(self) -> int | None: ...
    @property
    def cost(self) -> int | None: ...
    @property
    def reason(
        self,
    ) -> Literal["cost_over_half", "below_warning", "failures", "auth", "rate_limited", "probe_failed"] | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def error(self) -> TrafficControlError | None: ...
    def log(self) -> LogRow: ...

# ---- the shared store (Redis) ------------------------------------------------------------------

@final
class SharedDriver:
    """The core's sans-IO driver of the shared store: every input answers ``(result, outputs,
    timeout_ms, waiting)``. Outputs: ``("run", call, keys, args)``, ``("go", handle, request,
    reservations)``, ``("fail", handle, error)``, ``("done", handle, live)``, ``("snapshot", handle,
    limits)``, ``("metrics", handle, (json, text))``, ``("status", handle, url)``, ``("subscribe", channel)``, ``("unsubscribe",)``,
    ``("event", event)`` (while the ``events`` input turned them on)."""

    def __new__(cls, config: str, options_json: str, env: Mapping[str, str] | None = None) -> Self: ...
    @staticmethod
    def script() -> tuple[str, str]: ...
    def wakeups(self) -> int: ...
    def step(self, now: float, input_json: str) -> tuple[int | None, list[tuple[Any, ...]], float | None, int]: ...
    def reply(self, now: float, call: int, reply: Any) -> tuple[int | None, list[tuple[Any, ...]], float | None, int]: ...
    def set_shadow(
        self,
        now: float,
        config: Config | str | None = None,
        *,
        preset: str | None = None,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
    ) -> None: ...
    def shadow_report_json(self, now: float) -> str | None: ...

# ---- the sans-IO controller --------------------------------------------------------------------

@final
class TrafficControl:
    """The sans-IO controller: never reads a clock or sleeps; every call takes ``now`` (ms)."""

    def __new__(
        cls,
        config: Config | str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        keep_events: bool = True,
    ) -> Self: ...
    @staticmethod
    def preset(
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        keep_events: bool = True,
    ) -> TrafficControl: ...
    @staticmethod
    def from_toml(
        text: str,
        *,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
        keep_events: bool = True,
    ) -> TrafficControl: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def keep_events(self) -> bool: ...
    @keep_events.setter
    def keep_events(self, keep: bool) -> None: ...
    @property
    def waiting(self) -> int: ...
    def try_acquire(
        self,
        now: float,
        url: str | None = None,
        method: str | None = None,
        route: str | None = None,
        limits: Sequence[str] | None = None,
        cost: int | None = None,
        priority: _Priority = None,
        deadline: float | None = None,
        reserve: Sequence[FollowUp] | None = None,
        spend: int | None = None,
        tenant: str | None = None,
        key: str | None = None,
    ) -> Permit | Wait: ...
    def submit(
        self,
        now: float,
        url: str | None = None,
        method: str | None = None,
        route: str | None = None,
        limits: Sequence[str] | None = None,
        cost: int | None = None,
        priority: _Priority = None,
        deadline: float | None = None,
        reserve: Sequence[FollowUp] | None = None,
        spend: int | None = None,
        tenant: str | None = None,
        key: str | None = None,
    ) -> int: ...
    def poll(self, now: float) -> Event | None: ...
    def poll_timeout(self) -> float | None: ...
    def complete(
        self,
        now: float,
        request: int,
        status: int | None = None,
        headers: _Headers | None = None,
        body: str | bytes | None = None,
        unix_time: float | None = None,
    ) -> Completion: ...
    def cancel(self, now: float, request: int) -> bool: ...
    def release(self, now: float, reservation: int) -> bool: ...
    def sync_budget(self, now: float, limit: str, tokens_left: int, refill_in: float | None = None) -> None: ...
    def snapshot(self, now: float) -> Snapshot: ...
    def metrics_json(self, now: float) -> str: ...
    def metrics_text(self, now: float) -> str: ...
    def set_shadow(
        self,
        now: float,
        config: Config | str | None = None,
        *,
        preset: str | None = None,
        env: Mapping[str, str] | None = None,
        env_prefix: str | None = None,
    ) -> None: ...
    def shadow_report_json(self, now: float) -> str | None: ...
    def is_waiting(self, request: int) -> bool: ...
    def status_url(self, url: str) -> str | None:
        """The free status request that reports the budgets' balance (Keepa's ``/token``), made
        from a request to the same API; None when the config has none."""

# ---- the driver's fast path --------------------------------------------------------------------

@final
class _Done:
    def __await__(self) -> Generator[Any, Any, None]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> None: ...

@final
class AsyncPermit:
    """What ``TrafficControl.acquire`` returns: ``async with`` it, or ``await`` it."""

    @property
    def request(self) -> int: ...
    @property
    def reservations(self) -> list[int]: ...
    @property
    def at(self) -> float: ...
    @property
    def key(self) -> str | None: ...
    @property
    def completion(self) -> Completion | None: ...
    @completion.setter
    def completion(self, completion: Completion | None) -> None: ...
    def report(
        self,
        status: int | None = None,
        headers: _Headers | None = None,
        body: str | bytes | None = None,
        *,
        unix_time: float | None = None,
    ) -> Completion: ...
    def _submit(self, now: float) -> int: ...
    def _go(self, permit: Permit) -> None: ...
    def __aenter__(self) -> Awaitable[Self]: ...
    def __aexit__(self, exc_type: object, exc: object, tb: object) -> Awaitable[None]: ...
    def __await__(self) -> Generator[Any, Any, Self]: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Self: ...

@final
class SyncPermit:
    """What ``TrafficControl.acquire_sync`` returns once the request may go; ``with`` it."""

    @property
    def request(self) -> int: ...
    @property
    def reservations(self) -> list[int]: ...
    @property
    def at(self) -> float: ...
    @property
    def key(self) -> str | None: ...
    @property
    def completion(self) -> Completion | None: ...
    @completion.setter
    def completion(self, completion: Completion | None) -> None: ...
    def report(
        self,
        status: int | None = None,
        headers: _Headers | None = None,
        body: str | bytes | None = None,
        *,
        unix_time: float | None = None,
    ) -> Completion: ...
    def _submit(self, now: float) -> int: ...
    def _go(self, permit: Permit) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

@disjoint_base
class Driver:
    """The native base of ``traffic_control.TrafficControl``."""

    def __new__(
        cls, core: TrafficControl, *, clock: Callable[[], float] | None = None, timeout: float | None = None
    ) -> Self: ...
    @property
    def core(self) -> TrafficControl: ...
    @property
    def timeout(self) -> float | None: ...
    def now(self) -> float: ...
    def acquire(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        limits: Sequence[str] | None = None,
        cost: int | None = None,
        priority: _Priority = None,
        max_wait: float | None = None,
        reserve: Sequence[FollowUp] | None = None,
        spend: int | None = None,
        timeout: float | None = None,
        tenant: str | None = None,
        key: str | None = None,
    ) -> AsyncPermit: ...
    def acquire_sync(
        self,
        url: str | None = None,
        *,
        method: str | None = None,
        route: str | None = None,
        limits: Sequence[str] | None = None,
        cost: int | None = None,
        priority: _Priority = None,
        max_wait: float | None = None,
        reserve: Sequence[FollowUp] | None = None,
        spend: int | None = None,
        timeout: float | None = None,
        tenant: str | None = None,
        key: str | None = None,
    ) -> SyncPermit: ...
    def _finish(self, request: int, unreported: bool = False) -> Completion: ...
