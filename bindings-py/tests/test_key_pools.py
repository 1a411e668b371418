"""Key pools (the config's ``pools``) through the httpx transport, against a mock BaseLinker on
127.0.0.1 that counts each token's requests in exact sliding windows (time scaled: 5 per 0.5 s
per token instead of 100 a minute) and blocks a token over it (``ERROR_BLOCKED_TOKEN ... blocked
until``): the pool spreads a flood over both tokens with no block, the permit names the key and
the transport sends that key's header, and a token revoked mid-run (401) is skipped from the next
request on while the run goes on on the other."""

from __future__ import annotations

import asyncio

import httpx
from mock_servers import MockBaseLinker

from traffic_control import AsyncTrafficControlTransport, Config, Event, TrafficControl

CONFIG: Config = {
    "limits": {
        "requests": {"kind": "window", "max": 5, "per": "500ms"},
        "token": {"kind": "breaker", "open_for": "10s"},
    },
    "global": ["requests", "token"],
    "pools": {"baselinker": {"keys": ["shop-a", "shop-b"], "limits": ["requests", "token"]}},
}
HEADERS = {"shop-a": {"X-BLToken": "secret-a"}, "shop-b": {"X-BLToken": "secret-b"}}


async def test_a_flood_spread_over_two_tokens_and_a_revoked_one_skipped() -> None:
    events: list[Event] = []
    tc = TrafficControl(CONFIG, listener=events.append)
    with MockBaseLinker(max=5, window=0.5, block=5.0) as api:
        transport = AsyncTrafficControlTransport(tc, keys=HEADERS)
        async with httpx.AsyncClient(transport=transport, base_url=api.url) as client:
            responses = await asyncio.gather(*(client.post("/connector.php") for _ in range(30)))
            assert all(r.json()["status"] == "SUCCESS" for r in responses)
            assert api.blocks == 0
            # Both tokens carry the flood. Not an exact 15/15: a slot frees when the server has
            # counted the request (its answer), so a slow answer on one token lets the other's next
            # slot come first and that token take one more; the limits above still hold.
            per_token = {t: len(a) for t, a in api.arrivals.items()}
            assert sorted(per_token) == ["secret-a", "secret-b"], per_token
            assert max(per_token.values()) - min(per_token.values()) <= 4, per_token
            # Revoked mid-run: the next request on it gets 401 and opens its breaker; the run goes
            # on on the other token.
            api.revoked.add("secret-a")
            statuses = [(await client.post("/connector.php")).status_code for _ in range(12)]
            assert statuses.count(401) <= 1, statuses
            assert api.on_revoked <= 1
            assert api.blocks == 0
    assert any(e.type == "breaker_opened" and e.limit == "token@shop-a" and e.reason == "auth" for e in events)
    permits = [e for e in events if e.type == "go"]
    assert len(permits) == 42
