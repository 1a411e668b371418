"""A mariadbd of a test's own, from Debian's mariadb-server (``scripts/test.sh`` installs it): a
temporary datadir made by ``mariadb-install-db`` (root without a password, no test database), a
free TCP port on 127.0.0.1, its socket in the same directory; SIGKILLed by ``kill()`` and at the end.
Without mariadbd the tests that need it skip, and fail when ``TC_REQUIRE_MARIADB=1``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from redis_server import free_port

_SBIN = os.pathsep.join(["/usr/sbin", "/usr/local/sbin", "/usr/bin"])


def _which(name: str) -> str | None:
    # Debian puts mariadbd in /usr/sbin, which is not on a user's PATH.
    return shutil.which(name) or shutil.which(name, path=_SBIN)


def mariadb_missing() -> str | None:
    """Why the MariaDB tests cannot run here, or None when they can."""
    if all(_which(n) for n in ("mariadbd", "mariadb-install-db", "mariadb-admin")):
        return None
    return "mariadbd not found (apt-get install -y mariadb-server)"


MARIADB_REQUIRED = os.environ.get("TC_REQUIRE_MARIADB") == "1"


class MariaDBServer:
    host = "127.0.0.1"
    user = "root"

    def __init__(self, port: int, directory: str, time_zone: str) -> None:
        self.port = port
        self.dir = directory
        self.time_zone = time_zone
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, time_zone: str = "+00:00") -> MariaDBServer:
        """A new server; ``time_zone`` is its own zone (the tests use one other than UTC)."""
        missing = mariadb_missing()
        if missing:
            raise RuntimeError(missing)
        s = cls(free_port(), tempfile.mkdtemp(prefix="tc-mariadb-"), time_zone)
        init = subprocess.run(
            [_which("mariadb-install-db") or "", "--no-defaults", f"--datadir={s.dir}/data", f"--user={s._os_user()}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True,
        )
        if init.returncode != 0:
            shutil.rmtree(s.dir, ignore_errors=True)
            raise RuntimeError(f"mariadb-install-db failed: {init.stdout}\n{init.stderr}")
        s.up()
        return s

    @staticmethod
    def _os_user() -> str:
        return subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()

    def alive(self) -> bool:
        return subprocess.run(
            [_which("mariadb-admin") or "", "--no-defaults", "--protocol=tcp", f"-h{self.host}", f"-P{self.port}",
             f"-u{self.user}", "--connect-timeout=1", "ping"],
            capture_output=True,
        ).returncode == 0

    def up(self) -> None:
        """Starts it (again: same port, same datadir) and waits until it accepts connections."""
        self._process = subprocess.Popen(
            [_which("mariadbd") or "", "--no-defaults", f"--datadir={self.dir}/data", f"--port={self.port}",
             f"--bind-address={self.host}", f"--socket={self.dir}/mysqld.sock", f"--pid-file={self.dir}/mysqld.pid",
             f"--log-error={self.dir}/error.log", f"--user={self._os_user()}", "--skip-name-resolve",
             f"--default-time-zone={self.time_zone}", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        while not self.alive():
            if self._process.poll() is not None:
                raise RuntimeError(f"mariadbd exited at start (see {self.dir}/error.log)")
            if time.monotonic() - t0 > 30:
                raise RuntimeError("mariadbd did not accept connections")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the database dies at once, as in a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Stops it for good and removes its files."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
