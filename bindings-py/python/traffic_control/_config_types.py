"""The config's shape, as ``TypedDict``s: the JSON the core reads (``core/src/config.rs``), the same
as the TypeScript package's ``Config`` (``js/src/types.ts``).

The core's reader is the authority: it refuses unknown fields (naming them), checks each value's
type, and fills in the defaults named below. A field the reader treats ``null`` as absent takes
``None`` here too. Durations are text (``"10s"``, ``"250ms"``, ``"1m 30s"``) or a number of
milliseconds (fractions allowed). Lists may be lists or tuples; maps are dicts.

Required and optional keys sit in separate classes, one the base of the other (``typing.Required``
is Python 3.11+ and the package has no dependencies); ``Config``'s optional keys use the functional
syntax, ``global`` being a Python keyword.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Optional, TypedDict, Union

__all__ = [
    "BudgetLimit",
    "ConcurrencyLimit",
    "Config",
    "CostExtra",
    "CountCost",
    "Duration",
    "EventsConfig",
    "FeedbackConfig",
    "LimitConfig",
    "LimitWithCost",
    "QueueConfig",
    "RouteConfig",
    "RouteCost",
    "RouteLimit",
    "StatusRequest",
    "TokenBucketLimit",
    "WindowLimit",
]

Duration = Union[str, float]
"""A duration: text such as ``"10s"``, ``"250ms"``, ``"1m 30s"``, or a number of milliseconds.
``tc.config`` gives each one back twice: as text (``"per": "10s"``) and as milliseconds a program
can read (``"per_ms": 10000``); a config may carry either or both (both must agree)."""

# ---- limits ------------------------------------------------------------------------------------


class _WindowLimitRequired(TypedDict):
    kind: Literal["window"]
    max: int
    """Cost-units admitted in any interval of length ``per``."""
    per: Duration


class WindowLimit(_WindowLimitRequired, total=False):
    """``{"kind": "window", "max": 150, "per": "10s"}``: an exact sliding window."""

    per_ms: Optional[float]
    """``per`` in milliseconds, as ``tc.config`` gives it back beside the text (either or both may
    be given; both must agree)."""

    hold: Optional[Literal["completion", "go"]]
    """Until when a request counts: ``completion`` (the default: from its go until its completion
    plus ``per``, whatever the latency) or ``go`` (``per`` from its go)."""


class _TokenBucketLimitRequired(TypedDict):
    kind: Literal["token_bucket"]
    capacity: int
    refill: int
    """Tokens added per ``per``."""
    per: Duration


class TokenBucketLimit(_TokenBucketLimitRequired, total=False):
    """``{"kind": "token_bucket", "capacity": 10, "refill": 1, "per": "1s"}``: starts full."""

    per_ms: Optional[float]
    """``per`` in milliseconds (as ``tc.config`` gives it back)."""


class ConcurrencyLimit(TypedDict):
    """``{"kind": "concurrency", "max": 4}``: requests in flight at once."""

    kind: Literal["concurrency"]
    max: int


class _BudgetLimitRequired(TypedDict):
    kind: Literal["budget"]
    refill: int
    """Added to the balance at every period boundary."""
    per: Duration
    max: int
    """The most the balance accumulates."""


class BudgetLimit(_BudgetLimitRequired, total=False):
    """``{"kind": "budget", "refill": 20, "per": "1m", "max": 1200}``: a balance the server holds
    (Keepa's tokens)."""

    per_ms: Optional[float]
    """``per`` in milliseconds (as ``tc.config`` gives it back)."""
    floor: Optional[int]
    """The balance is never spent below this (default 0)."""
    initial: Optional[int]
    """The balance at start; absent: unknown until reported (``sync_budget`` or the status request)."""
    warn_below: Optional[int]
    """Warn (a ``budget_low`` event) when an admission takes the balance below this."""


class _BreakerLimitRequired(TypedDict):
    kind: Literal["breaker"]


class BreakerLimit(_BreakerLimitRequired, total=False):
    """``{"kind": "breaker"}``: a circuit breaker (in-memory controller only). It opens for
    failures over ``per``, an authentication failure (401, a WAF 403, a blocked token) or a 429 or
    block (until the server's time exactly), stops every request that takes it while open, lets
    ``probes`` through when half-open and closes after ``close_after`` successes. Defaults: 5
    failures, 30 s, 2 successes."""

    failures: int
    """Failures (a 5xx, or no response) within ``per`` that open it (default 5)."""
    failure_percent: int
    """The share of the calls within ``per`` that must have failed too, in percent (default 0: any)."""
    min_calls: int
    """The fewest calls within ``per`` for the share to count (default: ``failures``)."""
    per: Duration
    """The failures' window (default ``1m``)."""
    per_ms: Optional[float]
    open_for: Duration
    """How long it opens when the server names no time, doubled per opening until it closes (default ``30s``)."""
    open_for_ms: Optional[float]
    max_open: Duration
    """The longest opening it computes itself (default ``10m``)."""
    max_open_ms: Optional[float]
    probes: int
    """Requests let through at once while half-open (default 1)."""
    close_after: int
    """Probe successes that close it (default 2)."""


LimitConfig = Union[WindowLimit, TokenBucketLimit, ConcurrencyLimit, BudgetLimit, BreakerLimit]
"""One limit, by its ``kind``."""

# ---- routes ------------------------------------------------------------------------------------


class LimitWithCost(TypedDict):
    """A limit a route takes at a fixed cost, whatever the request's: ``{"limit": "api", "cost": 2}``."""

    limit: str
    cost: int


RouteLimit = Union[str, LimitWithCost]
"""A limit a route takes: its name (at the request's cost), or its name with a fixed cost."""


class _CostExtraRequired(TypedDict):
    param: str
    """The query parameter that switches the extra on (with a positive number)."""
    cost: int
    """Cost per item (per started ``per`` of the parameter's value, if given)."""


class CostExtra(_CostExtraRequired, total=False):
    """A per-item extra cost: ``{"param": "offers", "cost": 6, "per": 10}``."""

    per: Optional[int]


class _CountCostRequired(TypedDict):
    count: str
    """The query parameter whose comma-separated items are counted (``asin``)."""


class CountCost(_CountCostRequired, total=False):
    """(``factor`` + extras) × the items in query parameter ``count``, plus ``plus``, at most ``max``."""

    factor: int
    """Cost per item (default 1)."""
    extras: Sequence[CostExtra]
    plus: int
    """Added once per request (default 0)."""
    max: Optional[int]


RouteCost = Union[int, CountCost]
"""A route's cost when the request does not say: a number, or counted from a query parameter."""


class _StatusRequestRequired(TypedDict):
    path: str
    """The path to request on the same origin (``/token``); starts with ``/``."""


class StatusRequest(_StatusRequestRequired, total=False):
    """The free request that reports the budgets' balance (Keepa's ``/token``)."""

    query: Sequence[str]
    """Query parameters copied from the request that met the unknown balance (``["key"]``)."""


class _RouteConfigRequired(TypedDict):
    name: str
    path: str
    """A regular expression matched against the request's path (query string excluded)."""


class RouteConfig(_RouteConfigRequired, total=False):
    """A route: which requests (method, path) take which limits, at what cost. The first match wins."""

    method: Optional[str]
    """The HTTP method it applies to (any when absent)."""
    limits: Sequence[RouteLimit]
    """Taken in addition to the global ones."""
    cost: RouteCost
    """Default 1."""
    status: Optional[StatusRequest]


# ---- the rest ----------------------------------------------------------------------------------


class QueueConfig(TypedDict):
    """The waiting queue."""

    max_waiting: int
    """Requests waiting at once, all priorities together (default 100000 when ``queue`` is absent)."""


class EventsConfig(TypedDict, total=False):
    """What events show of a request."""

    query: Literal["drop", "redact"]
    """The URL's query string: dropped (the default) or kept with every value redacted."""


class FeedbackConfig(TypedDict, total=False):
    """What the controller does with the server's answers (429, ``Retry-After``, blocks)."""

    block: Duration
    """How long a 429 pauses when the server names no time (default 10 s); repeats double it."""
    block_ms: Optional[float]
    """``block`` in milliseconds (as ``tc.config`` gives it back); likewise each ``*_ms`` below."""
    blocks: Mapping[str, Duration]
    """A limit's own block, by limit name."""
    blocks_ms: Mapping[str, float]
    max_block: Duration
    """The longest pause backoff reaches (default 5 min)."""
    max_block_ms: Optional[float]
    cooldown: Duration
    """How long a WAF block or a blocked token stops the limits when the server names no end
    (default 1 min)."""
    cooldown_ms: Optional[float]
    max_retries: int
    """Retries of a rate-limited request before giving up (default 3)."""
    jitter: float
    """Up to this fraction of a backoff pause is added at random (default 0.1)."""
    seed: int
    """Seed of the jitter's generator."""


class TierConfig(TypedDict, total=False):
    """A tier of tenants (``tiers``): the settings its tenants take unless they set them themselves."""

    weight: int
    """Its weight against the other tenants waiting at the same priority (1 to 1000, default 1)."""
    guaranteed: int
    """The percentage of each window and concurrency limit kept for it while it has requests
    waiting (0 to 80; all tenants' shares add up to 80 at most). Within it, it goes ahead of other
    tenants' waiters."""
    lendable: int
    """The percentage of its guaranteed share lent to others while it has nothing waiting (default 100)."""
    borrow: Optional[int]
    """The percentage of each limit's capacity it may use beyond its guaranteed share (no cap if absent)."""


class TenantConfig(TierConfig, total=False):
    """A tenant's share of the account: within a priority, waiting requests are served by weight;
    with ``guaranteed`` or ``borrow`` its use of each limit shows as a limit named ``<limit>#<tenant>``."""

    tier: Optional[str]
    """The tier (``tiers``) whose settings it takes."""
    key: Optional[str]
    """A key of a pool (``pools``) dedicated to it: its requests go on that key unless they name another."""


class PoolConfig(TypedDict):
    """A pool of API keys: each key has its own copy of ``limits`` (named ``<limit>@<key>``); a
    request taking them goes on the least-loaded key that can admit it now, or the key it names."""

    keys: Sequence[str]
    """The keys' ids (never the secrets: the httpx transports' ``keys=`` maps them to headers)."""
    limits: Sequence[str]
    """The limits each key has its own copy of (a breaker among them is one per key)."""


# ``global`` is a Python keyword: the optional keys are declared with the functional syntax.
_ConfigOptional = TypedDict(
    "_ConfigOptional",
    {
        # Limits every request takes, whatever its route.
        "global": Sequence[str],
        # Ordered rules mapping a request to the limits it takes; the first match wins.
        "routes": Sequence[RouteConfig],
        "queue": QueueConfig,
        # How long a reservation lives when its request does not say (default 30 s).
        "reservation_ttl": Duration,
        # Each duration also in milliseconds, as ``tc.config`` gives it back beside the text.
        "reservation_ttl_ms": Optional[float],
        # How long an admitted request may stay in flight before its slots are taken back (default 1 min).
        "lease_ttl": Duration,
        "lease_ttl_ms": Optional[float],
        "events": EventsConfig,
        "feedback": FeedbackConfig,
        # Tenants by name (``default``: those the config does not name); the in-memory controller only.
        "tenants": Mapping[str, TenantConfig],
        # Named sets of tenant settings (``premium``, ``standard``, ``basic``).
        "tiers": Mapping[str, TierConfig],
        # Pools of API keys by name; the in-memory controller only.
        "pools": Mapping[str, PoolConfig],
    },
    total=False,
)


class Config(_ConfigOptional):
    """The controller's config: the JSON shape the core, the TypeScript and the wasm packages read::

        config: Config = {
            "limits": {"api": {"kind": "window", "max": 150, "per": "10s"}},
            "global": ["api"],
        }

    Optional keys: ``global``, ``routes``, ``queue``, ``reservation_ttl``, ``lease_ttl``,
    ``events``, ``feedback``, ``tenants``, ``pools``.
    """

    limits: Mapping[str, LimitConfig]
    """The limits, by name (at least one)."""
