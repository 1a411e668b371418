"""One Python worker of the cross-process run (bindings-node/test/support/crossprocess.mjs): the
same probes and scans as the Node/Bun workers, through traffic_control.shared over redis.asyncio.

TC_REDIS_CLUSTER (comma-separated ports) connects through redis-py's asyncio RedisCluster instead.
TC_DEADLINE_MS: a request still unresolved then is reported (``unresolved``) and the process ends.
TC_MEMORY=n: instead, n requests through the in-memory controller, reporting the resident memory
at the start, halfway and at the end (a leak shows as growth over the second half).
TC_RETRIES=n: the config's ``feedback.max_retries`` (default 3): a request answered 429 is sent again
on the retry permit ``complete()`` gives (the driver queued it again behind the store's pause); its
reservation is made, or spent, once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster

import traffic_control
from traffic_control.shared import SharedReservation, SharedTrafficControl


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(wid: int, n: int) -> None:
    tc = traffic_control.TrafficControl({"limits": {"api": {"kind": "window", "max": 1_000_000_000, "per": 1000}}, "global": ["api"]})
    start, half = rss(), 0
    for i in range(n):
        permit = tc.acquire_sync(f"/items/{i % 1000}", method="GET")
        permit.report(200)
        if i == n // 2:
            half = rss()
    print(json.dumps({"worker": wid, "runtime": "python", "requests": n, "rssStart": start, "rssHalf": half, "rssEnd": rss()}), flush=True)


async def main() -> None:
    env = os.environ
    wid = int(env["TC_WORKER"])
    r: Any
    if env.get("TC_REDIS_CLUSTER"):
        nodes = [aiocluster.ClusterNode("127.0.0.1", int(p)) for p in env["TC_REDIS_CLUSTER"].split(",")]
        r = aiocluster.RedisCluster(startup_nodes=nodes, socket_connect_timeout=0.5, socket_timeout=2)
    else:
        r = aioredis.Redis(host="127.0.0.1", port=int(env["TC_REDIS_PORT"]), socket_connect_timeout=0.5, socket_timeout=2)
    config = json.loads(env["TC_CONFIG"])
    if env.get("TC_RETRIES"):
        config["feedback"] = {**config.get("feedback", {}), "max_retries": int(env["TC_RETRIES"])}
    tc = SharedTrafficControl(config, redis=r, account=env["TC_ACCOUNT"], unavailable_max_wait=60)
    base = env["TC_MOCK_URL"]
    out: dict[str, Any] = {"worker": wid, "runtime": "python", "probes": 0, "scans": 0, "errors": [], "probeEnds": [], "status": {},
                           "started": 0, "settled": 0, "rssStart": rss()}
    t0 = time.monotonic()

    def report() -> None:
        out["elapsedMs"] = (time.monotonic() - t0) * 1000
        out["unresolved"] = out["started"] - out["settled"]
        out["rssEnd"] = rss()
        print(json.dumps(out), flush=True)

    if env.get("TC_DEADLINE_MS"):
        def late() -> None:
            report()
            os._exit(0)
        asyncio.get_running_loop().call_later(int(env["TC_DEADLINE_MS"]) / 1000, late)
    async with httpx.AsyncClient(base_url=base) as http:

        async def call(method: str, path: str, body: Any = None, **options: Any) -> None:
            out["started"] += 1
            try:
                permit = await tc.acquire(path, method=method, **options)
                while True:
                    res = None
                    try:
                        res = await http.request(method, path, json=body)
                    finally:
                        completion = await permit.complete(
                            None if res is None else res.status_code, None if res is None else list(res.headers.items())
                        )
                    out["status"][str(res.status_code)] = out["status"].get(str(res.status_code), 0) + 1
                    if completion.kind == "retry":
                        permit = completion.permit
                        continue
                    if res.status_code >= 400:
                        raise RuntimeError(f"{method} {path}: {res.status_code}")
                    return
            finally:
                out["settled"] += 1

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
    report()
    await r.aclose()


if os.environ.get("TC_MEMORY"):
    memory(int(os.environ["TC_WORKER"]), int(os.environ["TC_MEMORY"]))
else:
    asyncio.run(main())
