"""The uncontended path, in one process: traffic_control's async and sync acquire against
aiolimiter, PyrateLimiter and limits (moving window, memory storage).

Every limiter gets a limit that never binds, so this measures what a request pays when it may go at
once: the cost of asking. Prints ops/s, and the ratios against the targets: our async path at least
as fast as aiolimiter's ``async with``, and at least 4x PyrateLimiter and limits.

    python bench/bench.py            # about 20 s
    python bench/bench.py --quick    # a few seconds (what test.sh runs)

Exits 0 even when a target is missed (speed is reported, not asserted): timed unit tests are flaky.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Callable

import aiolimiter
import limits
import limits.storage
import limits.strategies
import pyrate_limiter

from traffic_control import TrafficControl

NEVER_BINDS = 10**9  # per second: no limiter here ever makes anyone wait


def best_of(repeat: int, run: Callable[[int], float], n: int) -> float:
    """The best ops/s of `repeat` runs of `n` operations (the least disturbed run)."""
    run(max(1, n // 10))  # warm up
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        elapsed = run(n)
        best = max(best, n / elapsed)
    return best


def ours_async(n: int) -> float:
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": NEVER_BINDS, "per": "1s"}}, "global": ["api"]})

    async def loop() -> float:
        acquire = tc.acquire
        t0 = time.perf_counter()
        for _ in range(n):
            async with acquire("https://api.example.com/items"):
                pass
        return time.perf_counter() - t0

    return asyncio.run(loop())


def ours_sync(n: int) -> float:
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": NEVER_BINDS, "per": "1s"}}, "global": ["api"]})
    acquire = tc.acquire_sync
    t0 = time.perf_counter()
    for _ in range(n):
        with acquire("https://api.example.com/items"):
            pass
    return time.perf_counter() - t0


def aiolimiter_async(n: int) -> float:
    async def loop() -> float:
        limiter = aiolimiter.AsyncLimiter(NEVER_BINDS, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            async with limiter:
                pass
        return time.perf_counter() - t0

    return asyncio.run(loop())


def pyrate_sync(n: int) -> float:
    limiter = pyrate_limiter.Limiter(pyrate_limiter.Rate(NEVER_BINDS, pyrate_limiter.Duration.SECOND))
    try_acquire = limiter.try_acquire
    t0 = time.perf_counter()
    for _ in range(n):
        if not try_acquire("bench", blocking=False):
            raise AssertionError("PyrateLimiter refused: the limit must never bind")
    elapsed = time.perf_counter() - t0
    limiter.dispose(limiter.buckets()[0])
    return elapsed


def limits_moving_window(n: int) -> float:
    storage = limits.storage.MemoryStorage()
    moving = limits.strategies.MovingWindowRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(NEVER_BINDS)
    hit = moving.hit
    t0 = time.perf_counter()
    for _ in range(n):
        if not hit(item, "bench"):
            raise AssertionError("limits refused: the limit must never bind")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer operations and repeats (a smoke run)")
    args = parser.parse_args()
    n, repeat = (20_000, 3) if args.quick else (200_000, 5)
    # limits and PyrateLimiter keep one entry per hit in the window, and limits prepends to a list:
    # their cost grows with the entries of the last second, so they run the same n as the others.
    runs = {
        "traffic_control async (async with tc.acquire)": ours_async,
        "traffic_control sync (with tc.acquire_sync)": ours_sync,
        "aiolimiter (async with AsyncLimiter)": aiolimiter_async,
        "PyrateLimiter (Limiter.try_acquire, in memory)": pyrate_sync,
        "limits (moving window, memory storage)": limits_moving_window,
    }
    print(f"uncontended path, {n} operations, best of {repeat}, Python {sys.version.split()[0]}")
    results = {}
    for name, run in runs.items():
        results[name] = best_of(repeat, run, n)
        print(f"  {name:<50} {results[name]:>12,.0f} ops/s  ({1e6 / results[name]:.2f} us/op)")
    ours_a, ours_s, aio, pyrate, lim = results.values()
    rows = [
        ("async / aiolimiter", ours_a / aio, 1.0),
        ("async / PyrateLimiter", ours_a / pyrate, 4.0),
        ("async / limits", ours_a / lim, 4.0),
        ("sync / PyrateLimiter", ours_s / pyrate, 4.0),
        ("sync / limits", ours_s / lim, 4.0),
    ]
    print("ratios (target):")
    for label, ratio, target in rows:
        verdict = "met" if ratio >= target else "MISSED"
        print(f"  {label:<24} {ratio:6.2f}x  (>= {target:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
