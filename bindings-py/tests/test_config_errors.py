"""Configs (dicts, JSON, TOML, presets, environment overrides) and errors by kind."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import window

from traffic_control import (
    ConfigError,
    DeadlineError,
    FollowUp,
    InsufficientBudgetError,
    NeverSucceedsError,
    Priority,
    QueueFullError,
    RequestCancelledError,
    TrafficControl,
    TrafficControlError,
)


def test_every_error_kind_is_a_traffic_control_error() -> None:
    kinds = [
        ConfigError,
        NeverSucceedsError,
        DeadlineError,
        QueueFullError,
        InsufficientBudgetError,
        RequestCancelledError,
    ]
    for kind in kinds:
        assert issubclass(kind, TrafficControlError)
        assert kind.kind is not None
    assert len({k.kind for k in kinds}) == len(kinds)


def test_config_from_dict_json_and_toml() -> None:
    assert TrafficControl(window(3, "1s")).config["limits"]["api"] == {
        "kind": "window",
        "max": 3,
        "per": "1s",
        "per_ms": 1000,
    }
    tc = TrafficControl.from_json('{"limits": {"api": {"kind": "concurrency", "max": 2}}, "global": ["api"]}')
    assert tc.config["limits"]["api"]["max"] == 2
    tc = TrafficControl.from_toml('global = ["api"]\n[limits.api]\nkind = "window"\nmax = 5\nper = "10s"\n')
    assert tc.config["limits"]["api"]["per"] == "10s"


def test_config_gives_durations_in_milliseconds_beside_the_text_and_reads_back() -> None:
    tc = TrafficControl("backmarket")
    config = tc.config
    assert (config["limits"]["global"]["per"], config["limits"]["global"]["per_ms"]) == ("10s", 10_000)
    assert config["feedback"]["block_ms"] == 10_000 and config["lease_ttl_ms"] == 60_000
    assert TrafficControl(tc.config).config == config  # reads back as the same config
    with pytest.raises(ConfigError) as e:
        TrafficControl({"limits": {"api": {"kind": "window", "max": 1, "per": "1s", "per_ms": 2000}}})
    assert "limits.api.per_ms" in str(e.value) and "disagrees" in str(e.value)


def test_invalid_config_names_the_field_and_the_reason() -> None:
    with pytest.raises(ConfigError) as info:
        TrafficControl(window(0, "1s"))
    e = info.value
    assert e.code == "CONFIG"
    assert e.field == "limits.api.max"
    assert e.reason == "must be at least 1"
    assert str(e) == "invalid config at limits.api.max: must be at least 1"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"limits": {"api": {"kind": "window", "max": 1, "per": "soon"}}}, "limits.api.per"),
        # What a kind needs or refuses is said of the limit.
        ({"limits": {"api": {"kind": "window", "per": "1s"}}}, "limits.api"),
        ({"limits": {"api": {"kind": "bucket", "max": 1}}}, "limits.api.kind"),
        ({"limits": {"api": {"kind": "window", "max": 1, "per": "1s"}}, "global": ["nope"]}, "global[0]"),
        ({"limits": {}}, "limits"),
        ({"limits": {"api": {"kind": "window", "max": 1, "per": "1s"}}, "colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_their_field(config: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrafficControl(config)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"invalid config at {field}: ")


def test_config_must_be_plain_data() -> None:
    with pytest.raises(TypeError, match="limits.api.max"):
        TrafficControl({"limits": {"api": {"kind": "window", "max": object(), "per": "1s"}}})  # type: ignore[arg-type]


def test_json_and_toml_errors_say_where() -> None:
    with pytest.raises(ConfigError, match="limits.api.max: invalid value: integer `-1`"):
        TrafficControl.from_json('{"limits": {"api": {"kind": "window", "max": -1, "per": "1s"}}}')
    with pytest.raises(ConfigError, match="line 2"):
        TrafficControl.from_toml("[limits.api]\nkind = \n")


def test_preset_with_overrides_from_a_mapping() -> None:
    tc = TrafficControl("backmarket", env={"BM_RATE_LIMIT_CATALOG_MAX_REQUESTS": "10", "UNRELATED": "x"})
    assert tc.config["limits"]["catalog"]["max"] == 10


def test_preset_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPA_RATE_LIMIT_TOKENS_REFILL", "5")
    monkeypatch.setenv("KEEPA_RATE_LIMIT_TOKENS_PER", "100ms")
    limit = TrafficControl("keepa").config["limits"]["tokens"]
    assert (limit["refill"], limit["per"]) == (5, "100ms")


def test_a_bad_override_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="BM_RATE_LIMIT_CATALOG_MAX_REQUESTS"):
        TrafficControl("backmarket", env={"BM_RATE_LIMIT_CATALOG_MAX_REQUESTS": "many"})
    with pytest.raises(ConfigError, match="BM_RATE_LIMIT_CATLOG_MAX"):
        TrafficControl("backmarket", env={"BM_RATE_LIMIT_CATLOG_MAX": "3"})


def test_dict_config_takes_overrides_only_with_a_prefix() -> None:
    env = {"MY_API_API_MAX": "7"}
    assert TrafficControl(window(3, "1s"), env=env).config["limits"]["api"]["max"] == 3
    assert TrafficControl(window(3, "1s"), env=env, env_prefix="MY_API").config["limits"]["api"]["max"] == 7


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="backmarket, keepa, baselinker"):
        TrafficControl("stripe")


async def test_errors_keep_their_kind_code_and_details() -> None:
    tc = TrafficControl(
        {
            "limits": {"api": {"kind": "window", "max": 2, "per": "1s"}},
            "global": ["api"],
            "routes": [{"name": "items", "path": "^/items"}],
            "queue": {"max_waiting": 1},
        }
    )
    with pytest.raises(NeverSucceedsError) as cost:
        await tc.acquire("/items/1", cost=3)
    assert (cost.value.code, cost.value.limit, cost.value.cost, cost.value.capacity) == (
        "COST_EXCEEDS_CAPACITY",
        "api",
        3,
        2,
    )
    assert "can never go" in str(cost.value)
    with pytest.raises(NeverSucceedsError) as route:
        tc.acquire_sync(route="orders")
    assert (route.value.code, route.value.route) == ("UNKNOWN_ROUTE", "orders")
    with pytest.raises(NeverSucceedsError) as limit:
        tc.acquire_sync("/x", limits=["nope"])
    assert (limit.value.code, limit.value.limit) == ("UNKNOWN_LIMIT", "nope")
    with pytest.raises(NeverSucceedsError, match="UNKNOWN_ROUTE|unknown route"):
        tc.acquire_sync("/x", reserve=[FollowUp(route="orders")])

    # Fill the window, then: one waiter fits in the queue, the next finds it full.
    for _ in range(2):
        tc.acquire_sync("/items/1").report(200)
    with pytest.raises(DeadlineError) as unreachable:
        await tc.acquire("/items/2", timeout=0.1)
    assert unreachable.value.code == "DEADLINE_UNREACHABLE"
    assert 0.5 < unreachable.value.retry_after <= 1.0
    import asyncio

    waiter = asyncio.ensure_future(tc.acquire("/items/3").__aenter__())
    await asyncio.sleep(0.01)
    assert tc.waiting == 1
    with pytest.raises(QueueFullError) as full:
        await tc.acquire("/items/4", priority=Priority.HIGH)
    assert (full.value.code, full.value.max_waiting) == ("QUEUE_FULL", 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


def test_bad_arguments_are_type_or_value_errors() -> None:
    tc = TrafficControl(window(2, "1s"))
    with pytest.raises(ValueError, match="priority"):
        tc.acquire_sync("/x", priority=7)
    with pytest.raises(ValueError, match="priority"):
        tc.acquire_sync("/x", priority="urgent")
    with pytest.raises(ValueError, match="not both"):
        tc.acquire_sync("/x", route="r")
    with pytest.raises(ValueError, match="max_wait"):
        tc.acquire_sync("/x", max_wait=-1)
    with pytest.raises(ValueError, match="max_wait"):
        tc.acquire_sync("/x", timeout=-1)  # its former name
    with pytest.raises(OverflowError):
        tc.acquire_sync("/x", cost=-1)
