"""A multi-tenant platform syncing orders through BaseLinker (100 requests a minute per API token,
the token blocked for minutes beyond it): many shops share two tokens. The tiers give the shops
their weights (premium 3, standard 2, basic 1); a noisy shop floods; a new shop comes in the middle;
one token is revoked mid-run. One in-memory controller behind httpx: a key pool spreads the requests
over the tokens (a breaker per token skips a revoked one), tenants are served by weight.

    python examples/baselinker_platform.py     against a mock BaseLinker on 127.0.0.1 (the Node
                                               package's, run with node), time 30x faster
    BASELINKER_URL=https://api.baselinker.com/connector.php BASELINKER_TOKENS=t1,t2 SCALE=1 \\
        python examples/baselinker_platform.py  against the real API (it only reads: getOrders)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx

from traffic_control import AsyncTrafficControlTransport, Config, Event, TrafficControl, TrafficControlError

#: The shops sharing the tokens, by tier. The noisy one is basic too.
SHOPS = {"shop-a": "premium", "shop-b": "standard", "shop-c": "basic", "noisy": "basic"}
WEIGHTS = {"premium": 3, "standard": 2, "basic": 1}


def platform_config(scale: float = 1.0, keys: tuple[str, ...] = ("token-1", "token-2")) -> Config:
    """The platform's config; ``scale`` shortens every duration (60: the minute is a second)."""
    ms = lambda v: v / scale  # noqa: E731
    return {
        # 90 of BaseLinker's 100 a minute per token: a margin for the other integrations on the token.
        "limits": {
            "requests": {"kind": "window", "max": 90, "per": ms(60_000)},
            "token": {"kind": "breaker", "open_for": ms(30_000), "max_open": ms(600_000)},
        },
        "global": ["requests", "token"],
        "pools": {"baselinker": {"keys": list(keys), "limits": ["requests", "token"]}},
        "tiers": {tier: {"weight": w} for tier, w in WEIGHTS.items()},
        "tenants": {shop: {"tier": tier} for shop, tier in [*SHOPS.items(), ("shop-new", "basic")]},
    }


@dataclass
class Share:
    shop: str
    weight: int
    served: int
    share: float
    fair: float


@dataclass
class Report:
    shops: list[Share]
    total: int
    window: float
    new_wait: float = 0.0
    new_ahead: int = 0
    events: list[Event] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    #: Requests admitted on each token after its breaker first opened, and its half-opens (each
    #: lets one probe go): a breaker doing its job admits no more than that.
    after_revoked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"served {self.total} order reads in all; fair share = weight / 7 while every shop asks"]
        for s in self.shops:
            off = 100 * (s.share - s.fair) / s.fair
            lines.append(f"  {s.shop:<7} weight {s.weight}  served {s.served:>4}  share {100 * s.share:5.1f}%  "
                         f"fair {100 * s.fair:5.1f}%  ({off:+.1f}% of it)")
        lines.append(f"  the new shop's first request waited {1000 * self.new_wait:.0f} ms (a window is "
                     f"{1000 * self.window:.0f} ms), behind {self.new_ahead} requests of the other shops")
        opened = ", ".join(f"{e.type} {e.limit}" + (f" ({e.reason})" if e.reason else "") for e in self.events)
        lines.append(f"  breaker events: {opened or 'none'}")
        for token, (sent, probes) in self.after_revoked.items():
            lines.append(f"  sent on {token} after its breaker opened: {sent} (half-open probes allowed: {probes})")
        lines.append(f"  answers by status: {dict(sorted(self.statuses.items()))}")
        return "\n".join(lines)


async def run_platform(url: str, tokens: list[str], scale: float = 30, seconds: float = 10.0, backlog: int = 900,
                       noisy: int = 3000, new_at: float = 3.0, revoke_at: float = 6.5,
                       on_revoke: Callable[[str], object] = lambda token: None) -> Report:
    """Runs the platform for ``seconds``: every shop asks continuously (a backlog of ``backlog``
    order reads each, the noisy shop ``noisy``), ``shop-new`` sends its first request at ``new_at``
    s, and ``on_revoke(token)`` is called at ``revoke_at`` s. What each shop was served counts the
    requests sent after the first window (the first window goes to whoever asks first)."""
    ids = tuple(f"token-{i + 1}" for i in range(len(tokens)))
    window = 60 / scale
    events: list[Event] = []
    report = Report(shops=[], total=0, window=window)
    # The core's admissions in order: how many went between the new shop's ask and its go.
    goes = 0
    new_asked: Optional[int] = None
    new_request: Optional[int] = None

    opened: set[str] = set()
    after_open: dict[str, int] = {}

    def listen(e: Event) -> None:
        nonlocal goes, new_request
        if e.type.startswith("breaker_"):
            events.append(e)
            if e.type == "breaker_opened" and e.limit is not None:
                opened.add(e.limit.split("@")[1])
        elif e.type == "queued" and new_asked is not None and new_request is None:
            new_request = e.request
        elif e.type == "go":
            goes += 1
            if new_asked is not None and e.request == new_request:
                report.new_ahead = goes - 1 - new_asked
            key = e.permit.key if e.permit is not None else None
            if key in opened:
                after_open[key] = after_open.get(key, 0) + 1

    tc = TrafficControl(platform_config(scale, ids), listener=listen)

    served = {shop: 0 for shop in SHOPS}
    started = time.monotonic()
    first_send: Optional[float] = None

    class Sent(httpx.AsyncBaseTransport):
        """Counts what each shop sends when it leaves (the controller let it go), from a window
        after the first send on: the first window goes to whoever asked first, and the answers'
        instants would add this process's own delays."""

        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal first_send
            shop = (request.extensions.get("traffic_control") or {}).get("tenant")
            at = time.monotonic() - started
            if first_send is None:
                first_send = at
            if shop in served and first_send + window <= at <= seconds:
                served[shop] += 1
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    transport = AsyncTrafficControlTransport(tc, keys={k: {"X-BLToken": t} for k, t in zip(ids, tokens)}, transport=Sent())
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:

        async def ask(shop: str) -> int:
            # Each shop's sync reads its own orders (the shop's order source on the shared token).
            form = {"method": "getOrders", "parameters": json.dumps({"filter_order_source": shop})}
            r = await client.post(url, data=form, extensions={"traffic_control": {"tenant": shop}})
            report.statuses[r.status_code] = report.statuses.get(r.status_code, 0) + 1
            if r.json().get("error_code") == "ERROR_BLOCKED_TOKEN":
                raise RuntimeError(f"blocked: {r.json()['error_message']}")
            return r.status_code

        # The shops' backlogs interleaved, as their syncs would ask.
        left = {shop: noisy if shop == "noisy" else backlog for shop in SHOPS}
        work: list[asyncio.Task[int]] = []
        while any(left.values()):
            for shop in [s for s, n in left.items() if n > 0]:
                left[shop] -= 1
                work.append(asyncio.create_task(ask(shop)))

        async def newcomer() -> None:
            nonlocal new_asked
            await asyncio.sleep(new_at)
            t0 = time.monotonic()
            new_asked = goes
            await ask("shop-new")
            report.new_wait = time.monotonic() - t0

        async def revoke() -> None:
            await asyncio.sleep(revoke_at)
            await asyncio.to_thread(on_revoke, tokens[0])

        side = asyncio.gather(newcomer(), revoke())
        await asyncio.sleep(seconds)
        await side
        for task in work:
            task.cancel()
        for result in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, (asyncio.CancelledError, TrafficControlError)):
                report.failures.append(repr(result))
    total = sum(served.values())
    weight_sum = sum(WEIGHTS[t] for t in SHOPS.values())
    report.total = total
    report.shops = [Share(shop, WEIGHTS[tier], served[shop], served[shop] / max(total, 1), WEIGHTS[tier] / weight_sum)
                    for shop, tier in SHOPS.items()]
    report.events = events
    for k in ids:
        probes = sum(1 for e in events if e.type == "breaker_half_open" and e.limit == f"token@{k}")
        if k in opened:
            report.after_revoked[k] = (after_open.get(k, 0), probes)
    return report


class NodeMockBaseLinker:
    """The Node package's mock BaseLinker (bindings-node/test/support/mock-baselinker.mjs) in a
    child process: 100 a minute per token counted at arrival after 10-60 ms of latency, exact
    windows, ERROR_BLOCKED_TOKEN beyond it; its counts and a revocation through /__mock/."""

    SCRIPT = Path(__file__).resolve().parents[2] / "bindings-node" / "test" / "support" / "mock-baselinker.mjs"

    def __init__(self, scale: float) -> None:
        options = {"max": 100, "windowMs": 60_000 / scale, "blockMs": 600_000 / scale}
        self.process = subprocess.Popen(["node", str(self.SCRIPT), json.dumps(options)], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url: str = json.loads(self.process.stdout.readline())["url"]

    def _call(self, path: str) -> Any:
        with urllib.request.urlopen(self.url.replace("/connector.php", f"/__mock/{path}")) as r:
            return json.load(r)

    def stats(self) -> Any:
        return self._call("stats")

    def revoke(self, token: str) -> None:
        self._call(f"revoke?token={token}")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


def main() -> None:
    scale = float(os.environ.get("SCALE", "30"))
    tokens = os.environ.get("BASELINKER_TOKENS", "secret-1,secret-2").split(",")
    url: Optional[str] = os.environ.get("BASELINKER_URL")
    mock = None
    if not url:
        mock = NodeMockBaseLinker(scale)
        url = mock.url
        print(f"mock BaseLinker on {url}: 100 a minute per token, time x{scale:g}; token 1 revoked at 6.5 s\n")
    try:
        report = asyncio.run(run_platform(url, tokens, scale=scale, on_revoke=mock.revoke if mock else lambda t: None))
        print(report)
        if report.failures:
            print("failures:", report.failures[:3])
        if mock:
            s = mock.stats()
            busiest = " / ".join(str(s["busiest"].get(t, 0)) for t in tokens)
            print(f"  the mock saw {s['requests']} requests: {s['blocks']} blocked, {s['unauthorized']} unauthorized; "
                  f"busiest window per token {busiest} of 100")
    finally:
        if mock:
            mock.close()


if __name__ == "__main__":
    main()
