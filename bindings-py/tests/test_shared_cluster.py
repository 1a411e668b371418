"""The shared store on a Redis Cluster (3 masters, a replica each, started for this module) through
redis-py's ``RedisCluster`` clients, threaded and asyncio: every key of an account carries its hash
tag, so each script call runs on the node serving the account's slot. Two controllers never exceed
the window together, as the API counts (the instants the requests were sent), and a planned
failover of the account's master in the middle of the run loses no request and admits nothing
over the limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio.cluster as aiocluster
from redis.cluster import ClusterNode

from traffic_control import Config
from traffic_control.shared import SharedTrafficControl, SyncSharedTrafficControl
from redis_server import RedisCluster

PER, MAX = 0.3, 5
#: The default hold (the go until the completion plus per): the sent instants hold the window
#: exactly, whatever the latency (a reply slowed by the failover included).
CONFIG: Config = {"limits": {"api": {"kind": "window", "max": MAX, "per": int(PER * 1000)}}, "global": ["api"]}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster.start(masters=3, replicas=1)
    yield c
    c.stop()


def peak(times: list[float], span: float) -> int:
    """The most instants within any ``span`` seconds."""
    t = sorted(times)
    most, j = 0, 0
    for i in range(len(t)):
        while t[i] - t[j] >= span:
            j += 1
        most = max(most, i - j + 1)
    return most


def test_threads_on_a_cluster_share_one_window_through_a_failover(cluster: RedisCluster) -> None:
    account = "py-cluster-sync"
    slot = cluster.key_slot(f"tc:{{{account}}}:meta")
    nodes = [ClusterNode(h, p) for h, p in cluster.nodes]
    tcs = [SyncSharedTrafficControl(CONFIG, redis=redis.cluster.RedisCluster(startup_nodes=nodes), account=account,
                                    unavailable_max_wait=20.0) for _ in range(2)]
    goes: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        permit = tcs[i % 2].acquire(f"/x/{i}")
        with lock:
            goes.append(time.monotonic())
        permit.complete(200)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(goes)
    old, _ = cluster.master_of(slot)
    promoted = cluster.failover(slot)
    assert promoted != old and cluster.master_of(slot)[0] == promoted
    for t in threads:
        t.join(60)
    assert len(goes) == 40, "every request went"
    assert 0 < before < 40
    assert peak(goes, PER) <= MAX, f"at most {MAX} in any window, saw {peak(goes, PER)}"
    for tc in tcs:
        tc.close()


async def test_asyncio_on_a_cluster_shares_one_window_through_a_failover(cluster: RedisCluster) -> None:
    account = "py-cluster-async"
    slot = cluster.key_slot(f"tc:{{{account}}}:meta")
    nodes = [aiocluster.ClusterNode(h, p) for h, p in cluster.nodes]
    clients = [aiocluster.RedisCluster(startup_nodes=nodes) for _ in range(2)]
    tcs = [SharedTrafficControl(CONFIG, redis=c, account=account, unavailable_max_wait=20.0) for c in clients]
    goes: list[float] = []

    async def one(i: int) -> None:
        permit = await tcs[i % 2].acquire(f"/x/{i}")
        goes.append(time.monotonic())
        await permit.complete(200)

    run = asyncio.gather(*(one(i) for i in range(40)))
    await asyncio.sleep(1.0)
    before = len(goes)
    promoted = await asyncio.to_thread(cluster.failover, slot)
    assert cluster.master_of(slot)[0] == promoted
    await asyncio.wait_for(run, 60)
    assert len(goes) == 40 and 0 < before < 40
    assert peak(goes, PER) <= MAX, f"at most {MAX} in any window, saw {peak(goes, PER)}"
    for tc in tcs:
        await tc.aclose()
    for c in clients:
        await c.aclose()
