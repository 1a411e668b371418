"""Shapes of the plain data the native module returns (snapshots, log rows, shadow reports)."""

from __future__ import annotations

from typing import Dict, Optional, TypedDict

__all__ = ["LimitState", "LogRow", "Pause", "ShadowReport", "ShadowSide", "ShadowWaits", "Snapshot", "Waiting"]


class Pause(TypedDict):
    """A limit's pause after a 429 or a block."""

    until: float
    """Nothing but CRITICAL goes before this instant (ms)."""
    server_until: float
    """The part the server imposed: CRITICAL waits only until then."""
    reason: str
    """``retry_after``, ``block``, ``backoff`` (repeats doubled it), ``cooldown`` or ``exhausted``
    (a success reported 0 remaining until its reset)."""
    strikes: int


class LimitState(TypedDict):
    """One limit in a snapshot."""

    kind: str
    """``window``, ``token_bucket``, ``concurrency`` or ``budget``."""
    capacity: int
    used: int
    reserved: int
    available: int
    next_free: Optional[float]
    balance: Optional[int]
    pause: Optional[Pause]


class Waiting(TypedDict):
    """Requests waiting per priority."""

    critical: int
    high: int
    normal: int
    low: int


class Snapshot(TypedDict):
    """``TrafficControl.snapshot()``: every limit and the queue depths at ``at`` (ms)."""

    at: float
    limits: Dict[str, LimitState]
    waiting: Waiting
    in_flight: int
    reservations: int


class LogRow(TypedDict):
    """``Event.log()``: one row of the ``rate_limit_logs`` table."""

    timestamp_ms: float
    request_id: int
    endpoint: str
    route: Optional[str]
    priority: str
    status: str
    response_status: Optional[int]
    duration_ms: Optional[float]
    error: Optional[str]


class ShadowWaits(TypedDict):
    """Waits before going over the requests that went (zero for those that went at once), in
    seconds."""

    p50: float
    p95: float
    p99: float
    max: float
    total: float


class ShadowSide(TypedDict):
    """One config's decisions in a :class:`ShadowReport`."""

    requests: int
    went_at_once: int
    went_after_wait: int
    refused: Dict[str, int]
    """Refused, by error code (``QUEUE_FULL``, ``DEADLINE_UNREACHABLE``, ...)."""
    cancelled: int
    """Cancelled by their caller while waiting."""
    retried: int
    """Queued again after a 429 (the shadow's own retries)."""
    waiting: int
    """Waiting at the report's instant."""
    wait_seconds: ShadowWaits


class ShadowReport(TypedDict):
    """``TrafficControl.shadow_report()``: what the shadow config would have decided beside what
    the enforced one decided, over the requests seen since ``since`` (ms, the controller's clock)."""

    since: float
    at: float
    tracked: int
    """Requests the shadow still follows (waiting or in flight on either side)."""
    enforced: ShadowSide
    shadow: ShadowSide
