"""Tenants (``Config["tenants"]``) through the Python host layers: within a priority, waiting
requests are served by weight, a tenant the config does not name is in the default class, and
the shared store refuses a config with tenants rather than ignoring them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from traffic_control import Config, ConfigError, TrafficControl

CONFIG: Config = {
    "limits": {"api": {"kind": "window", "max": 1, "per": 10}},
    "global": ["api"],
    "tenants": {"big": {"weight": 3}, "small": {"weight": 1}},
}


async def test_asyncio_serves_tenants_by_weight() -> None:
    tc = TrafficControl(CONFIG)
    async with tc.acquire("/warm"):
        pass
    order: list[str] = []

    async def job(tenant: str) -> None:
        async with tc.acquire("/x", tenant=tenant):
            order.append(tenant)

    await asyncio.gather(*(job(t) for _ in range(12) for t in ("big", "small")))
    assert order[:8].count("big") == 6, order


def test_threads_and_the_default_class_too() -> None:
    tc = TrafficControl(CONFIG)
    with tc.acquire_sync("/warm"):
        pass
    order: list[str] = []
    lock = threading.Lock()

    def job(tenant: str) -> None:
        with tc.acquire_sync("/x", tenant=tenant):
            with lock:
                order.append(tenant)

    threads = [threading.Thread(target=job, args=(t,)) for _ in range(8) for t in ("big", "nobody")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Weight 3 against the default class's 1 (threads queue in the order they start: a margin).
    assert order[:8].count("big") >= 5, order


def test_a_bad_weight_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        TrafficControl({"limits": {"api": {"kind": "window", "max": 1, "per": 10}}, "tenants": {"a": {"weight": 0}}})
    assert e.value.field == "tenants.a.weight"


def test_the_shared_store_refuses_tenants_shares() -> None:
    from traffic_control.shared import SyncSharedTrafficControl

    shares: Config = {**CONFIG, "tenants": {"big": {"weight": 3, "guaranteed": 30}}}
    with pytest.raises(ConfigError) as e:
        SyncSharedTrafficControl(shares, redis=object(), account="t")  # type: ignore[arg-type]
    assert e.value.field == "tenants.big.guaranteed"
