"""Shadow mode: a second config beside the enforced one, on a fake clock."""

from __future__ import annotations

import pytest

from traffic_control import Config, ConfigError, NeverSucceedsError, TrafficControl


def window(max_: int, per: str) -> Config:
    return {"limits": {"api": {"kind": "window", "max": max_, "per": per}}, "global": ["api"]}


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_a_stricter_shadow_reports_the_waits_it_would_have_made() -> None:
    clock = Clock()
    tc = TrafficControl(window(3, "100ms"), clock=clock)
    assert tc.shadow_report() is None
    tc.set_shadow(window(1, "100ms"))
    for i in range(3):
        async with tc.acquire(f"https://api.example.com/items/{i}"):
            pass
    clock.t += 0.3
    r = tc.shadow_report()
    assert r is not None
    assert r["tracked"] == 0
    assert (r["enforced"]["requests"], r["enforced"]["went_at_once"], r["enforced"]["went_after_wait"]) == (3, 3, 0)
    assert (r["shadow"]["requests"], r["shadow"]["went_at_once"], r["shadow"]["went_after_wait"]) == (3, 1, 2)
    assert r["shadow"]["waiting"] == 0
    # The shadow's second and third go 100 ms and 200 ms after they arrived (within the
    # histogram's 12.5 %).
    assert r["shadow"]["wait_seconds"]["max"] == pytest.approx(0.2, rel=0.125)
    assert r["enforced"]["wait_seconds"]["max"] == 0
    assert r["at"] - r["since"] == pytest.approx(300.0)


def test_a_looser_shadow_takes_what_the_enforced_config_refused() -> None:
    tc = TrafficControl(window(2, "1s"))
    tc.set_shadow(window(5, "1s"))
    with pytest.raises(NeverSucceedsError) as e:
        with tc.acquire_sync("https://api.example.com/bulk", cost=3):
            pass
    assert e.value.code == "COST_EXCEEDS_CAPACITY"
    r = tc.shadow_report()
    assert r is not None
    assert r["enforced"]["refused"] == {"COST_EXCEEDS_CAPACITY": 1}
    assert r["shadow"]["refused"] == {}
    assert r["shadow"]["went_at_once"] == 1


def test_an_invalid_shadow_config_names_the_field_and_keeps_the_running_shadow() -> None:
    tc = TrafficControl(window(2, "1s"))
    tc.set_shadow(window(1, "1s"))
    with tc.acquire_sync("https://api.example.com/a"):
        pass
    with pytest.raises(ConfigError, match=r"limits\.api\.max"):
        tc.set_shadow(window(0, "1s"))
    r = tc.shadow_report()
    assert r is not None and r["shadow"]["requests"] == 1


def test_a_preset_shadow_with_overrides_and_stopping_it() -> None:
    tc = TrafficControl("backmarket", env={})
    tc.set_shadow("backmarket", env={"BM_RATE_LIMIT_CATALOG_MAX_REQUESTS": "5"})
    r = tc.shadow_report()
    assert r is not None and r["shadow"]["requests"] == 0
    with pytest.raises(ConfigError, match="BM_RATE_LIMIT_CATALOG_MAX_REQUESTS"):
        tc.set_shadow("backmarket", env={"BM_RATE_LIMIT_CATALOG_MAX_REQUESTS": "none"})
    tc.set_shadow(None)
    assert tc.shadow_report() is None
