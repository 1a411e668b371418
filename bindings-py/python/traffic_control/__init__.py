"""traffic-control: a client-side traffic controller for calling rate-limited APIs.

One deterministic Rust core decides *when* each outgoing request may go (exact sliding windows,
token buckets, concurrency, token budgets, reservations, priorities); this package waits for it in
asyncio and in threads, and wraps httpx::

    from traffic_control import TrafficControl

    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 10, "per": "1s"}}, "global": ["api"]})

    async with tc.acquire("https://api.example.com/items/1") as permit:
        ...  # send the request; permit.report(status, headers, body) tells the core what came back

The httpx transports (``TrafficControlTransport``, ``AsyncTrafficControlTransport``) need the
``httpx`` extra and are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config_types import (
    BreakerLimit,
    BudgetLimit,
    ConcurrencyLimit,
    Config,
    CostExtra,
    CountCost,
    Duration,
    EventsConfig,
    FeedbackConfig,
    LimitConfig,
    LimitWithCost,
    PoolConfig,
    QueueConfig,
    RouteConfig,
    RouteCost,
    RouteLimit,
    StatusRequest,
    TenantConfig,
    TierConfig,
    TokenBucketLimit,
    WindowLimit,
)
from ._controller import Priority, TrafficControl
from ._traffic_control import (
    PRESETS,
    AsyncPermit,
    Completion,
    ConfigError,
    DeadlineError,
    Event,
    FollowUp,
    InsufficientBudgetError,
    NeverSucceedsError,
    Permit,
    QueueFullError,
    RequestCancelledError,
    StoreError,
    StoreReplyError,
    StoreUnavailableError,
    SyncPermit,
    TrafficControlError,
    Wait,
)

from ._simulate import Simulation, SimulationReport, simulate
from ._types import LimitState, LogRow, Pause, ShadowReport, ShadowSide, ShadowWaits, Snapshot, Waiting

if TYPE_CHECKING:
    from .transport import AsyncTrafficControlTransport, TrafficControlTransport

__all__ = [
    "PRESETS",
    "AsyncPermit",
    "AsyncTrafficControlTransport",
    "BreakerLimit",
    "BudgetLimit",
    "Completion",
    "ConcurrencyLimit",
    "Config",
    "ConfigError",
    "CostExtra",
    "CountCost",
    "DeadlineError",
    "Duration",
    "Event",
    "EventsConfig",
    "FeedbackConfig",
    "FollowUp",
    "InsufficientBudgetError",
    "LimitConfig",
    "LimitState",
    "LimitWithCost",
    "LogRow",
    "NeverSucceedsError",
    "Pause",
    "Permit",
    "Priority",
    "QueueConfig",
    "QueueFullError",
    "PoolConfig",
    "RequestCancelledError",
    "RouteConfig",
    "RouteCost",
    "RouteLimit",
    "Simulation",
    "ShadowReport",
    "ShadowSide",
    "ShadowWaits",
    "SimulationReport",
    "Snapshot",
    "StatusRequest",
    "TenantConfig",
    "TierConfig",
    "StoreError",
    "StoreReplyError",
    "StoreUnavailableError",
    "SyncPermit",
    "TokenBucketLimit",
    "TrafficControl",
    "TrafficControlError",
    "TrafficControlTransport",
    "Wait",
    "Waiting",
    "WindowLimit",
    "simulate",
]


def __getattr__(name: str) -> Any:
    # httpx is an optional dependency: import the transports only when asked for.
    if name in ("TrafficControlTransport", "AsyncTrafficControlTransport"):
        from . import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'traffic_control' has no attribute {name!r}")
