"""The example FastAPI service (examples/keepa_service.py) against the mock Keepa API, driven
through httpx.ASGITransport: a burst of mixed-cost requests draws no 429, keeps the floor, and
work that cannot be afforded within its wait gets a clear 503."""

from __future__ import annotations

import asyncio

import httpx
from keepa_service import create_app
from mock_servers import MockKeepa

from traffic_control import TrafficControl

FLOOR = 10
ENV = {
    "KEEPA_RATE_LIMIT_TOKENS_PER": "100ms",
    "KEEPA_RATE_LIMIT_TOKENS_REFILL": "25",
    "KEEPA_RATE_LIMIT_TOKENS_FLOOR": str(FLOOR),
}


async def test_discover_burst_no_429_floor_kept_and_503_for_what_cannot_be_afforded() -> None:
    tc = TrafficControl("keepa", env=ENV)
    with MockKeepa(tokens=100, refill=25, period=0.1) as keepa:
        app = create_app(keepa.url, key="secret", tc=tc, max_wait=5.0)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:

                async def discover(params: dict[str, str]) -> httpx.Response:
                    return await client.get("/api/v1/products/discover", params=params)

                burst = []
                for i in range(24):
                    if i % 4 == 0:  # bestsellers (50) + 3 products
                        burst.append({"category": str(1000 + i), "limit": "3"})
                    else:  # 1 to 6 products
                        burst.append({"asins": ",".join(f"B{i:02d}{n}" for n in range((i % 6) + 1))})
                # 100 products plus the floor are never there within 50 ms (at most 100 + 25).
                expensive = {"asins": ",".join(f"X{n:03d}" for n in range(100)), "max_wait": "0.05"}
                responses = await asyncio.gather(*(discover(p) for p in burst), discover(expensive))
    *ok, refused = responses
    assert [r.status_code for r in ok] == [200] * len(burst)
    assert all(len(r.json()["products"]) > 0 for r in ok)
    assert keepa.rate_limited == 0, "Keepa answered 429"
    assert keepa.min_balance_after_spend is not None and keepa.min_balance_after_spend >= FLOOR
    assert refused.status_code == 503
    body = refused.json()
    assert body["error"] == "INSUFFICIENT_BUDGET"
    assert "insufficient budget" in body["detail"] and "needs 100" in body["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert keepa.by_path["/bestsellers"] == 6


async def test_a_request_that_can_never_go_is_a_400() -> None:
    tc = TrafficControl("keepa", env=ENV)
    with MockKeepa(tokens=100) as keepa:
        app = create_app(keepa.url, tc=tc)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
                # 1,300 ASINs cost more than the budget can ever hold (1,200).
                r = await client.get(
                    "/api/v1/products/discover", params={"asins": ",".join(f"Z{n}" for n in range(1300))}
                )
                assert r.status_code == 400 and r.json()["error"] == "COST_EXCEEDS_CAPACITY"
                limits = (await client.get("/api/v1/limits")).json()
                assert limits["limits"]["tokens"]["kind"] == "budget"
