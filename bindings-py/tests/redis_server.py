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
