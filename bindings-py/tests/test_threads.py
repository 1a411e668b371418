"""16 threads hammering one controller through the sync httpx transport, against a mock API that
enforces its limits on arrival and counts every violation."""

from __future__ import annotations

import threading

import httpx
from mock_servers import MockWindowApi, busiest

from traffic_control import Event, TrafficControl, TrafficControlTransport

MAX, WINDOW_MS, SLOTS = 20, 250, 4
# The server counts arrivals; a request reaches it a little after the controller let it go, and
# not always equally late. The controller's windows are exact; the server's are 40 ms shorter to
# absorb that jitter (the Back Market preset runs 25% below the real limit for the same reason).
SERVER_WINDOW = (WINDOW_MS - 40) / 1000


def test_sixteen_threads_never_exceed_a_limit() -> None:
    go: list[float] = []
    tc = TrafficControl(
        {
            "limits": {
                "global": {"kind": "window", "max": MAX, "per": f"{WINDOW_MS}ms"},
                "inflight": {"kind": "concurrency", "max": SLOTS},
            },
            "global": ["global", "inflight"],
        },
        listener=lambda e: go.append(e.at) if e.type == "go" else None,
        timeout=10,
    )
    errors: list[BaseException] = []
    with MockWindowApi(max=MAX, window=SERVER_WINDOW, latency=0.004) as api:
        with httpx.Client(transport=TrafficControlTransport(tc), base_url=api.url) as client:
            barrier = threading.Barrier(16)

            def hammer(i: int) -> None:
                try:
                    barrier.wait()
                    for j in range(5):
                        assert client.post(f"/ws/listings/{i}-{j}", json={"price": 1}).status_code == 200
                except BaseException as e:  # reported below, with the thread's failure
                    errors.append(e)

            threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    assert not errors, errors[0]
    assert api.requests == 80
    assert api.rate_limited == 0, f"{api.rate_limited} requests over the server's window"
    assert api.max_in_flight <= SLOTS
    assert api.busiest_window() <= MAX
    # The controller's own record: exact, no tolerance.
    assert len(go) == 80 and busiest(go, WINDOW_MS) == MAX
    snapshot = tc.snapshot()
    assert snapshot["in_flight"] == 0 and snapshot["waiting"] == {"critical": 0, "high": 0, "normal": 0, "low": 0}


def test_acquire_sync_holds_concurrency_exactly() -> None:
    tc = TrafficControl({"limits": {"slots": {"kind": "concurrency", "max": 3}}, "global": ["slots"]})
    lock = threading.Lock()
    inside = 0
    most = 0

    def worker() -> None:
        nonlocal inside, most
        for _ in range(50):
            with tc.acquire_sync("/x"):
                with lock:
                    inside += 1
                    most = max(most, inside)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most <= 3
    assert tc.snapshot()["in_flight"] == 0
