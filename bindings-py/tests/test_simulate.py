"""The what-if simulator from Python: the same library as the traffic-control-sim command."""

from __future__ import annotations

import json

import pytest

import traffic_control
from traffic_control import ConfigError, TrafficControl, simulate


def test_the_backmarket_preset_keeps_back_markets_real_limits() -> None:
    sim = simulate(config="backmarket", workload="backmarket", server="backmarket")
    (r,) = sim["reports"]
    assert r["label"] == "backmarket"
    server = r["server"]
    assert server is not None and server["refused"] == 0
    for w in server["windows"]:
        assert w["peak"] <= w["max"], w
    assert [p["name"] for p in r["priorities"]] == ["critical", "high", "normal", "low"]
    assert r["arrived"] == sum(s["arrived"] for s in r["streams"])
    assert "== server (counted at arrival) ==" in sim["text"]
    assert "html" not in sim


def test_compare_two_keepa_configs_with_a_page() -> None:
    workload = {
        "duration": "5m",
        "streams": [{"name": "product", "rate": 0.5, "request": {"url": "https://api.keepa.com/product?key=K&asin=A{n},B{n},C{n}"}}],
    }
    sim = simulate(
        configs=["keepa", {"preset": "keepa", "env": {"KEEPA_RATE_LIMIT_TOKENS_FLOOR": "100"}, "label": "floor 100"}],
        workload=workload,
        server="keepa",
        html=True,
        title="Keepa: what if we kept 100 tokens aside",
    )
    a, b = sim["reports"]
    assert (a["label"], b["label"]) == ("keepa", "floor 100")
    sa, sb = a["server"], b["server"]
    assert sa is not None and sb is not None
    assert sa["refused"] == sb["refused"] == 0
    # Keeping 100 tokens aside: the server's balance never goes below them, and requests wait longer.
    assert sa["budget"] is not None and sb["budget"] is not None
    assert sa["budget"]["lowest"] < 100 <= sb["budget"]["lowest"]
    assert a["priorities"][0]["p95_ms"] < b["priorities"][0]["p95_ms"]
    assert sim["html"].startswith("<!doctype html>")
    assert "Keepa: what if we kept 100 tokens aside" in sim["html"]


def test_an_event_log_recorded_from_a_controller_replays() -> None:
    lines: list[str] = []
    tc = TrafficControl("backmarket", listener=lambda e: lines.append(json.dumps(e.log())))
    for i in range(15):
        tc.run_sync(lambda: None, url=f"https://www.backmarket.fr/ws/listings/{i}?key=SECRET")
    tc.close()
    assert lines and all("SECRET" not in line for line in lines)
    sim = simulate(config="backmarket", workload={"events": "\n".join(lines)})
    assert sim["reports"][0]["arrived"] == 15
    assert sim["reports"][0]["went"] == 15


def test_bad_input_names_its_field() -> None:
    with pytest.raises(ValueError, match=r"workload\.streams\[0\]\.rate"):
        simulate(config="backmarket", workload={"duration": "1m", "streams": [{"name": "s", "rate": 0, "request": {"url": "/a"}}]})
    with pytest.raises(ConfigError) as e:
        simulate(config={"preset": "backmarket", "env": {"BM_RATE_LIMIT_CATALOG_MAX_REQUESTS": "lots"}}, workload="backmarket")
    assert e.value.code == "CONFIG"
    assert "BM_RATE_LIMIT_CATALOG_MAX_REQUESTS" in str(e.value)
    with pytest.raises(ValueError, match="exactly one of config and configs"):
        simulate(workload="backmarket")
    assert "simulate" in traffic_control.__all__
