"""The config's TypedDicts (``traffic_control.Config`` and its parts) against the core's reader: a
config written to the types is accepted, and each TypedDict has exactly the keys the reader accepts
there, the same required ones, and takes ``None`` exactly where the reader reads ``null`` as absent.

The reader's own words are the reference: an unknown key is refused with the list of the fields it
expected (``unknown field `bogus`, expected one of `limits`, `global`, ...``), and a field of
another kind of limit with that kind's fields (``... (its fields: max, per, hold)``)."""

from __future__ import annotations

import copy
import re
import typing
from typing import Any, Union

import pytest

import traffic_control
from traffic_control import (
    BreakerLimit,
    BudgetLimit,
    ConcurrencyLimit,
    Config,
    ConfigError,
    CostExtra,
    CountCost,
    EventsConfig,
    FeedbackConfig,
    LimitWithCost,
    PoolConfig,
    QueueConfig,
    RouteConfig,
    StatusRequest,
    TenantConfig,
    TierConfig,
    TokenBucketLimit,
    TrafficControl,
    WindowLimit,
)

#: Every key of every TypedDict, at least once (a valid config).
FULL: Config = {
    "limits": {
        "api": {"kind": "window", "max": 150, "per": "10s", "per_ms": 10_000, "hold": "go"},
        "bucket": {"kind": "token_bucket", "capacity": 10, "refill": 1, "per": 250, "per_ms": 250},
        "slots": {"kind": "concurrency", "max": 4},
        "tokens": {"kind": "budget", "refill": 20, "per": "1m", "per_ms": 60_000, "max": 1200, "floor": 5, "initial": 100, "warn_below": 50},
        "requests": {"kind": "window", "max": 100, "per": "1m"},
        "token": {
            "kind": "breaker",
            "failures": 5,
            "failure_percent": 50,
            "min_calls": 10,
            "per": "1m",
            "per_ms": 60_000,
            "open_for": "30s",
            "open_for_ms": 30_000,
            "max_open": "10m",
            "max_open_ms": 600_000,
            "probes": 1,
            "close_after": 2,
        },
    },
    "global": ["api"],
    "routes": [
        {
            "name": "product",
            "method": "GET",
            "path": "^/product",
            "limits": [{"limit": "tokens", "cost": 2}, "slots"],
            "cost": {
                "count": "asin",
                "factor": 1,
                "extras": [{"param": "offers", "cost": 6, "per": 10}],
                "plus": 0,
                "max": 100,
            },
            "status": {"path": "/token", "query": ["key"]},
        },
        {"name": "other", "path": "^/", "cost": 3, "limits": ["bucket"]},
    ],
    "queue": {"max_waiting": 1000},
    "reservation_ttl": 30_000,
    "reservation_ttl_ms": 30_000,
    "lease_ttl": "1m 30s",
    "lease_ttl_ms": 90_000,
    "events": {"query": "redact"},
    "feedback": {
        "block": "10s",
        "block_ms": 10_000,
        "blocks": {"api": "30s"},
        "blocks_ms": {"api": 30_000},
        "max_block": 300_000.0,
        "max_block_ms": 300_000,
        "cooldown": "1m",
        "cooldown_ms": 60_000,
        "max_retries": 3,
        "jitter": 0.25,
        "seed": 7,
    },
    "tenants": {
        "shop-a": {"weight": 3, "guaranteed": 20, "lendable": 50, "borrow": 30, "tier": "premium", "key": "k1"},
        "default": {"weight": 1},
    },
    "tiers": {"premium": {"weight": 2, "guaranteed": 10, "lendable": 100, "borrow": 20}},
    "pools": {"baselinker": {"keys": ["k1", "k2"], "limits": ["requests", "token"]}},
}

#: Where each TypedDict sits in FULL: keys and list indexes from the root.
PLACES: list[tuple[type, tuple[str | int, ...]]] = [
    (Config, ()),
    (WindowLimit, ("limits", "api")),
    (TokenBucketLimit, ("limits", "bucket")),
    (ConcurrencyLimit, ("limits", "slots")),
    (BudgetLimit, ("limits", "tokens")),
    (BreakerLimit, ("limits", "token")),
    (RouteConfig, ("routes", 0)),
    (LimitWithCost, ("routes", 0, "limits", 0)),
    (CountCost, ("routes", 0, "cost")),
    (CostExtra, ("routes", 0, "cost", "extras", 0)),
    (StatusRequest, ("routes", 0, "status")),
    (QueueConfig, ("queue",)),
    (EventsConfig, ("events",)),
    (FeedbackConfig, ("feedback",)),
    (TenantConfig, ("tenants", "shop-a")),
    (TierConfig, ("tiers", "premium")),
    (PoolConfig, ("pools", "baselinker")),
]
IDS = [t.__name__ for t, _ in PLACES]

#: For each kind of limit, a field it refuses (the reader then names the kind's fields).
FOREIGN = {"window": "capacity", "token_bucket": "max", "concurrency": "per", "budget": "capacity"}


def keys(t: Any) -> set[str]:
    return set(t.__required_keys__ | t.__optional_keys__)


def at(config: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        config = config[step]
    return config


def error(config: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        TrafficControl(config)
    return info.value


def accepted_keys(t: type, path: tuple[str | int, ...]) -> set[str]:
    """The keys the reader accepts at `path`, in its own words."""
    config: Any = copy.deepcopy(FULL)
    place = at(config, path)
    kind = place.get("kind") if len(path) == 2 and path[0] == "limits" else None
    # A breaker's reader lists its fields as any object's does (below).
    if kind is not None and kind != "breaker":
        place[FOREIGN[kind]] = 1
        reason = error(config).reason or ""
        listed = re.fullmatch(r"`\w+` does not apply to an? \w+ limit \(its fields: (.*)\)", reason)
        assert listed, reason
        return {"kind", *listed.group(1).split(", ")}
    place["bogus"] = 1
    e = error(config)
    field, reason = e.field or "", e.reason or ""
    assert field.endswith("bogus"), e
    assert reason.startswith("unknown field `bogus`, expected "), reason
    return set(re.findall(r"`(\w+)`", reason.split("expected ", 1)[1]))


def test_a_config_written_to_the_types_is_accepted() -> None:
    sample: Config = {
        "limits": {"api": {"kind": "window", "max": 10, "per": "1s"}},
        "global": ["api"],
        "feedback": {"block": 5_000, "max_retries": 2},
    }
    assert TrafficControl(sample).config["limits"]["api"] == {"kind": "window", "max": 10, "per": "1s", "per_ms": 1000}
    tc = TrafficControl(FULL)
    assert tc.config["feedback"]["blocks"] == {"api": "30s"}
    assert tc.config["routes"][0]["status"] == {"path": "/token", "query": ["key"]}
    assert tc.config["reservation_ttl"] == "30s"


def test_every_key_is_in_the_full_sample() -> None:
    for t, path in PLACES:
        assert set(at(FULL, path)) == keys(t), t.__name__


@pytest.mark.parametrize(("t", "path"), PLACES, ids=IDS)
def test_the_keys_are_the_readers(t: type, path: tuple[str | int, ...]) -> None:
    assert keys(t) == accepted_keys(t, path)


@pytest.mark.parametrize(("t", "path"), PLACES, ids=IDS)
def test_required_keys_are_the_readers(t: Any, path: tuple[str | int, ...]) -> None:
    for key in sorted(keys(t)):
        config: Any = copy.deepcopy(FULL)
        del at(config, path)[key]
        # A duration may be given as text or in milliseconds: a required one is missing only
        # without either.
        at(config, path).pop(f"{key}_ms", None)
        if path == () and key == "pools":
            # Without pools, no tenant can name a pool's key.
            del config["tenants"]["shop-a"]["key"]
        if path == () and key == "tiers":
            # Without tiers, no tenant can name one.
            del config["tenants"]["shop-a"]["tier"]
        if key in t.__required_keys__:
            error(config)
        else:
            TrafficControl(config)


@pytest.mark.parametrize(("t", "path"), PLACES, ids=IDS)
def test_none_is_typed_where_the_reader_reads_null_as_absent(t: Any, path: tuple[str | int, ...]) -> None:
    hints = typing.get_type_hints(t)
    for key in sorted(keys(t)):
        config: Any = copy.deepcopy(FULL)
        at(config, path)[key] = None
        at(config, path).pop(f"{key}_ms", None)
        if type(None) in typing.get_args(hints[key]):
            assert key not in t.__required_keys__
            TrafficControl(config)
        else:
            error(config)


def test_durations_are_text_or_milliseconds() -> None:
    assert typing.get_args(traffic_control.Duration) == typing.get_args(Union[str, float])
    for per in ("1s", 1000, 1000.0):
        config: Config = {"limits": {"api": {"kind": "window", "max": 1, "per": per}}}
        assert TrafficControl(config).config["limits"]["api"]["per"] == "1s"


def test_the_types_are_exported() -> None:
    for name in ("Config", "LimitConfig", "WindowLimit", "RouteConfig", "FeedbackConfig", "RouteCost", "CostExtra"):
        assert name in traffic_control.__all__
        assert getattr(traffic_control, name) is not None
