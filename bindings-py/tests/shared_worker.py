"""One Python worker of the cross-process run (bindings-node/test/support/crossprocess.mjs): the
same probes and scans as the Node/Bun workers, through traffic_control.shared over redis.asyncio."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from traffic_control.shared import SharedReservation, SharedTrafficControl


async def main() -> None:
    env = os.environ
    wid = int(env["TC_WORKER"])
    r = aioredis.Redis(host="127.0.0.1", port=int(env["TC_REDIS_PORT"]), socket_connect_timeout=0.5, socket_timeout=2)
    tc = SharedTrafficControl(json.loads(env["TC_CONFIG"]), redis=r, account=env["TC_ACCOUNT"], unavailable_max_wait=60)
    base = env["TC_MOCK_URL"]
    out: dict[str, Any] = {"worker": wid, "runtime": "python", "probes": 0, "scans": 0, "errors": [], "probeEnds": [], "status": {}}
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=base) as http:

        async def call(method: str, path: str, body: Any = None, **options: Any) -> None:
            permit = await tc.acquire(path, method=method, **options)
            res = None
            try:
                res = await http.request(method, path, json=body)
            finally:
                await permit.complete(None if res is None else res.status_code, None if res is None else list(res.headers.items()))
            out["status"][str(res.status_code)] = out["status"].get(str(res.status_code), 0) + 1
            if res.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {res.status_code}")

        async def probe(listing: int) -> None:
            peak: SharedReservation = tc.reservation(f"/ws/listings/{listing}", method="POST")
            await call("POST", f"/ws/listings/{listing}", {"price": 1}, reserve=[peak])
            try:
                await call("GET", f"/ws/backbox/v1/competitors/{listing}", priority="high")
            finally:
                await call("POST", f"/ws/listings/{listing}", {"price": 500}, priority="high", spend=peak)
            out["probes"] += 1
            out["probeEnds"].append((time.monotonic() - t0) * 1000)

        async def guarded(coro: Any, key: str) -> None:
            try:
                await coro
                if key:
                    out[key] += 1
            except Exception as e:
                out["errors"].append(str(getattr(e, "code", None) or e))

        work = [guarded(probe(wid * 1000 + i), "") for i in range(int(env["TC_PROBES"]))]
        work += [guarded(call("GET", f"/ws/listings?page={i % 7 + 1}", priority="low"), "scans") for i in range(int(env["TC_SCANS"]))]
        await asyncio.gather(*work)
    out["elapsedMs"] = (time.monotonic() - t0) * 1000
    print(json.dumps(out), flush=True)
    await r.aclose()


asyncio.run(main())
