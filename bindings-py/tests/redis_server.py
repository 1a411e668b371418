"""A redis-server of a test's own: free port, no persistence, stopped with ``shutdown nosave``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, port: int, directory: str) -> None:
        self.port = port
        self.dir = directory

    @classmethod
    def start(cls, port: int | None = None) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        s = cls(port or free_port(), tempfile.mkdtemp(prefix="tc-redis-"))
        s._up()
        return s

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout.strip()

    def _up(self) -> None:
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--pidfile", f"{self.dir}/redis.pid",
             "--logfile", f"{self.dir}/redis.log"],
            check=True,
        )
        t0 = time.monotonic()
        while self.cli("ping") != "PONG":
            if time.monotonic() - t0 > 10:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.cli("shutdown", "nosave")
        t0 = time.monotonic()
        while self.cli("ping") == "PONG" and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_ports(n: int) -> list[int]:
    """``n`` distinct free ports whose cluster bus port (the port + 10,000) is free too: a cluster
    node refuses a port above 55,535."""
    import random

    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20_000, 45_000)
        if port in ports:
            continue
        try:
            for q in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
        except OSError:
            continue
        ports.append(port)
    return ports


class RedisCluster:
    """A Redis Cluster of a test's own: ``masters`` masters with ``replicas`` replicas each, joined
    by ``redis-cli --cluster create``, all on 127.0.0.1 (the Python twin of
    ``js/test/redis-server.mjs``'s ``startRedisCluster``)."""

    def __init__(self, ports: list[int], directory: str) -> None:
        self.ports = ports
        self.dir = directory

    @classmethod
    def start(cls, masters: int = 3, replicas: int = 1) -> RedisCluster:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        c = cls(cluster_ports(masters * (1 + replicas)), tempfile.mkdtemp(prefix="tc-cluster-"))
        for port in c.ports:
            subprocess.run(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "yes", "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", f"{c.dir}/nodes-{port}.conf",
                 "--cluster-node-timeout", "2000", "--dir", c.dir, "--pidfile", f"{c.dir}/{port}.pid",
                 "--logfile", f"{c.dir}/{port}.log"],
                check=True,
            )
        try:
            c._until(lambda: all(c.cli(p, "ping") == "PONG" for p in c.ports), "the nodes did not start")
            created = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in c.ports),
                                      "--cluster-replicas", str(replicas), "--cluster-yes"], capture_output=True, text=True)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create: {created.stdout}{created.stderr}")
            c._until(c._ok, "the cluster did not become ok")
            c._until(lambda: all(len(s[2]) >= replicas for s in c._slots()) and bool(c._slots()), "the replicas did not link")
        except BaseException:
            c.stop()
            raise
        return c

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    def cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()

    def key_slot(self, key: str) -> int:
        return int(self.cli(self.ports[0], "cluster", "keyslot", key))

    def _slots(self) -> list[tuple[int, int, list[int], int]]:
        import json

        raw = json.loads(self.cli(self.ports[0], "--json", "cluster", "slots") or "[]")
        return [(s[0], s[1], [r[1] for r in s[3:]], s[2][1]) for s in raw]

    def master_of(self, slot: int) -> tuple[int, list[int]]:
        """The port of the master serving ``slot`` now, and its replicas'."""
        for lo, hi, replicas, master in self._slots():
            if lo <= slot <= hi:
                return master, replicas
        raise RuntimeError(f"no node serves slot {slot}")

    def failover(self, slot: int) -> int:
        """Promotes the replica of the master serving ``slot`` (``CLUSTER FAILOVER`` on the replica:
        a planned handover, after the replica caught up); returns its port once the cluster is ok."""
        _, (replica, *_) = self.master_of(slot)
        out = self.cli(replica, "cluster", "failover")
        if out != "OK":
            raise RuntimeError(f"CLUSTER FAILOVER: {out}")
        self._until(lambda: self.cli(replica, "role").split("\n")[0].strip() == "master", "the replica was not promoted")
        self._until(self._ok, "the cluster did not become ok after the failover")
        # The node master_of asks learns of the promotion by gossip: wait until it has.
        self._until(lambda: self.master_of(slot)[0] == replica, "the cluster did not show the new master")
        return replica

    def _ok(self) -> bool:
        return all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in self.ports)

    @staticmethod
    def _until(check: object, what: str, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        while not check():  # type: ignore[operator]
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"redis cluster: {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.ports:
            self.cli(p, "shutdown", "nosave")
        self._until(lambda: all(self.cli(p, "ping") != "PONG" for p in self.ports), "the nodes did not stop", 10.0)
        shutil.rmtree(self.dir, ignore_errors=True)
