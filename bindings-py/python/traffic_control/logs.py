"""The seed's ``rate_limit_logs`` table, fed from a controller's events without ever slowing an
admission (``pip install "traffic-control[mysql]"`` for the MySQL/MariaDB writer)::

    import aiomysql
    from traffic_control import TrafficControl
    from traffic_control.logs import LogSink, create_table, mysql_writer

    pool = await aiomysql.create_pool(host="127.0.0.1", user="app", password="...", db="app")
    await create_table(pool)                       # or run rate_limit_logs.sql yourself
    tc = TrafficControl("backmarket")
    sink = LogSink(tc, mysql_writer(pool))         # inside the running event loop
    ...
    await sink.aclose()                            # at shutdown: writes what is left

The controller's listener only maps the event to a row and appends it to a bounded buffer (under a
lock: the controller may call it from any thread); an asyncio task writes the buffer in batches, one
write at a time. A slow or dead database therefore never delays or loses an admission. The mapping
is the table in ``tests/log_rows.json``, the same as the Node package's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, AsyncContextManager, Awaitable, Callable, Literal, Optional, Protocol, TypedDict, Union

from ._traffic_control import Event

__all__ = [
    "ENDPOINT_MAX_CHARS",
    "LOG_PRIORITIES",
    "LOG_STATUSES",
    "LogSink",
    "LogSinkStats",
    "LogStatus",
    "LogWriter",
    "RateLimitLogRow",
    "create_table",
    "log_row",
    "mysql_writer",
    "table_sql",
]

_log = logging.getLogger("traffic_control.logs")

# A Union of Literals, not one Literal: mypy.stubtest reads the alias as a Union.
LogStatus = Union[Literal["QUEUED"], Literal["EXECUTED"], Literal["429_HIT"], Literal["ERROR"]]
"""The ``status`` column: what happened to the request."""

LOG_STATUSES: tuple[LogStatus, ...] = ("QUEUED", "EXECUTED", "429_HIT", "ERROR")
"""The ``status`` column's values, in the order of the table's enum."""

LOG_PRIORITIES: Mapping[str, int] = {"critical": 0, "high": 1, "normal": 2, "low": 3}
"""The ``priority`` column: 0 critical, 1 high, 2 normal, 3 low."""

ENDPOINT_MAX_CHARS = 255
"""The ``endpoint`` column's length (``varchar(255)``: characters)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ROW_KINDS = frozenset(("queued", "completed", "rate_limited", "rejected", "expired"))


class RateLimitLogRow(TypedDict):
    """One row of ``rate_limit_logs`` (its ``id`` is the table's auto-increment)."""

    priority: int
    """0 critical, 1 high, 2 normal, 3 low."""
    status: LogStatus
    endpoint: str
    """``METHOD /path`` without the query string's values (or the route name), at most 255 characters."""
    response_status: Optional[int]
    """The HTTP status, or None (queued, rejected, expired, no response)."""
    duration: Optional[int]
    """The event's duration in whole milliseconds (request time; for a block, how long the limits pause)."""
    timestamp: datetime
    """When it happened: wall clock, UTC (timezone-aware)."""


def log_row(event: Union[Event, Mapping[str, Any]], wall_offset_ms: float) -> Optional[RateLimitLogRow]:
    """The row an event makes, or None when it makes none.

    ``event`` is an :class:`~traffic_control.Event` (anything with its ``type`` and ``log()``) or
    its ``log()`` dict (the kind under ``status``). ``queued`` → QUEUED; ``completed`` → EXECUTED below 400, 429_HIT at 429, ERROR at
    any other status or without a response; ``rate_limited`` at a status other than 429 (a block
    signalled at 200, a WAF's 403) → 429_HIT (a 429's ``completed`` row already says it);
    ``rejected``, ``expired`` → ERROR; every other kind → None. ``wall_offset_ms`` is the
    wall-clock instant (epoch ms) of the controller's 0.
    """
    if isinstance(event, Mapping):
        log: Mapping[str, Any] = event
    else:
        if event.type not in _ROW_KINDS:
            return None
        log = event.log()
    kind = log["status"]
    response_status: Optional[int] = log.get("response_status")
    status: LogStatus
    if kind == "queued":
        status = "QUEUED"
    elif kind == "completed":
        if response_status is None:
            status = "ERROR"
        elif response_status == 429:
            status = "429_HIT"
        else:
            status = "EXECUTED" if response_status < 400 else "ERROR"
    elif kind == "rate_limited":
        if response_status == 429:
            return None
        status = "429_HIT"
    elif kind in ("rejected", "expired"):
        status = "ERROR"
    else:
        return None
    duration_ms: Optional[float] = log.get("duration_ms")
    endpoint: str = log["endpoint"]
    return {
        "priority": LOG_PRIORITIES.get(log["priority"], 2),
        "status": status,
        "endpoint": endpoint[:ENDPOINT_MAX_CHARS],
        # Only a response's row carries its status (a rejection or an expiry never had one).
        "response_status": response_status if kind in ("completed", "rate_limited") else None,
        "duration": None if duration_ms is None else _round_half_up(duration_ms),
        "timestamp": _EPOCH + timedelta(milliseconds=_round_half_up(wall_offset_ms + log["timestamp_ms"])),
    }


def _round_half_up(x: float) -> int:
    # Half up, as the Node package does (Python's round() goes to the even neighbour).
    return math.floor(x + 0.5)


LogWriter = Callable[[list[RateLimitLogRow]], Awaitable[object]]
"""Writes one batch of rows (one multi-row INSERT); an exception counts the batch as lost."""


class _EventSource(Protocol):
    def on(self, listener: Callable[[Event], object]) -> Callable[[], bool]: ...
    def now(self) -> float: ...


class LogSinkStats(TypedDict):
    """What a sink did so far."""

    written: int
    """Rows the writer accepted."""
    dropped: int
    """Rows dropped unwritten because the buffer was full (the oldest go first)."""
    lost: int
    """Rows of batches whose write failed (not retried: a failed INSERT may still have committed)."""
    failed_batches: int
    """Batches whose write failed."""
    pending: int
    """Rows waiting in the buffer."""
    in_flight: int
    """Rows of the write in progress."""


class LogSink:
    """Stores a controller's events as ``rate_limit_logs`` rows, off the admission path.

    Create it inside the running event loop (it starts a task there): ``LogSink(tc, writer)``, or
    ``async with LogSink(tc, writer) as sink:``. ``tc`` is a :class:`~traffic_control.TrafficControl`
    or a shared-store controller (each process runs its own sink into the one table). The controller may run requests from any
    thread: the listener only maps the event and appends the row under a lock (no I/O, no await).
    The task writes every ``flush_interval`` seconds (and at once when ``batch_size`` rows are
    waiting), one batch of at most ``batch_size`` rows at a time. Past ``max_buffered`` rows, the
    oldest are dropped and counted. A failed batch is counted as lost, not retried (the INSERT may
    have committed before the connection broke: a retry could write it twice); after a failure the
    sink waits for the next interval before it tries again. The failure is reported once per streak
    (``on_error(error)``, default one ``logging.warning``), again only after a success.
    """

    def __init__(
        self,
        tc: _EventSource,
        writer: LogWriter,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 10_000,
        close_timeout: float = 5.0,
        on_error: Optional[Callable[[BaseException], object]] = None,
    ) -> None:
        if not callable(getattr(tc, "on", None)) or not callable(getattr(tc, "now", None)):
            raise TypeError("LogSink: the controller gives no events (it needs on() and now(), as every controller has)")
        for name, value in (("batch_size", batch_size), ("max_buffered", max_buffered)):
            if value < 1:
                raise ValueError(f"LogSink: {name} must be at least 1 (got {value})")
        if not flush_interval > 0:
            raise ValueError(f"LogSink: flush_interval must be positive (got {flush_interval})")
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("LogSink: create it inside the running event loop (it writes from a task there)") from None
        self._loop_thread = threading.get_ident()
        self._tc = tc
        self._writer = writer
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max = max_buffered
        self._close_timeout = close_timeout
        self._on_error = on_error
        self._lock = threading.Lock()
        self._buffer: collections.deque[RateLimitLogRow] = collections.deque()
        # The wall-clock instant of the controller's 0 (epoch ms). An event carries the
        # controller's time of the step itself, whereas a listener runs when the controller drains
        # its events (from a caller's thread or the timer's, possibly later): converting the
        # event's time is more accurate than reading the wall clock on arrival. Taken now and at
        # every interval, so rows follow adjustments of the wall clock (NTP) within one interval.
        self._offset = time.time() * 1000.0 - tc.now()
        self._wake = asyncio.Event()
        self._kicked: bool = False
        self._failing: bool = False
        self._closed: bool = False
        self._writing = asyncio.Lock()
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._failed_batches = 0
        self._in_flight = 0
        self._task = self._loop.create_task(self._run(), name="traffic-control-logs")
        self._off = tc.on(self._listen)

    @property
    def stats(self) -> LogSinkStats:
        """What the sink did so far."""
        return {
            "written": self._written,
            "dropped": self._dropped,
            "lost": self._lost,
            "failed_batches": self._failed_batches,
            "pending": len(self._buffer),
            "in_flight": self._in_flight,
        }

    async def flush(self) -> None:
        """Writes what is buffered now (after the write in progress); stops at the first failure."""
        await self._drain(everything=True)

    async def aclose(self, timeout: Optional[float] = None) -> LogSinkStats:
        """Stops listening and writes what is left, for at most ``timeout`` seconds (default: the
        ``close_timeout`` option); returns the final counts (rows still pending then are not written)."""
        if not self._closed:
            self._closed = True
            self._off()
            self._wake.set()

            async def rest() -> None:
                # The task ends its write in progress and stops; then what is left, until a failure.
                await self._task
                failed = self._failed_batches
                while self._buffer and self._failed_batches == failed:
                    await self._drain(everything=True)

            try:
                # Past the timeout the write in progress is cancelled (its rows counted as lost).
                await asyncio.wait_for(rest(), self._close_timeout if timeout is None else timeout)
            except asyncio.TimeoutError:
                pass
        return self.stats

    async def __aenter__(self) -> LogSink:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ---- the listener (any thread) and the task (the loop's) ------------------------------------

    def _listen(self, event: Event) -> None:
        if self._closed or event.type not in _ROW_KINDS:
            return
        row = log_row(event, self._offset)
        if row is None:
            return
        with self._lock:
            buffer = self._buffer
            if len(buffer) >= self._max:
                buffer.popleft()
                self._dropped += 1
            buffer.append(row)
            kick = len(buffer) >= self._batch_size and not self._kicked and not self._failing
            if kick:
                self._kicked = True
        if kick:
            # A full batch is written by the task, never inside the admission that made it (after
            # a failure, only at the next interval: one attempt per interval while the database is down).
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            else:
                try:
                    self._loop.call_soon_threadsafe(self._wake.set)
                except RuntimeError:  # the loop is closed: the rows stay pending
                    pass

    async def _run(self) -> None:
        while not self._closed:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
                everything: bool = self._closed  # woken by aclose(): write it all
            except asyncio.TimeoutError:
                everything = True
                self._offset = time.time() * 1000.0 - self._tc.now()
            self._wake.clear()
            self._kicked = False
            await self._drain(everything)

    async def _drain(self, everything: bool) -> None:
        """Writes batches, one at a time: all that is buffered, or full batches only."""
        async with self._writing:
            while self._buffer and (everything or len(self._buffer) >= self._batch_size):
                if not await self._write_batch():
                    break

    async def _write_batch(self) -> bool:
        with self._lock:
            n = min(len(self._buffer), self._batch_size)
            batch = [self._buffer.popleft() for _ in range(n)]
        self._in_flight = n
        try:
            await self._writer(batch)
        except asyncio.CancelledError:
            # Closing past its timeout: the write may or may not have happened.
            self._lost += n
            raise
        except Exception as error:
            self._lost += n
            self._failed_batches += 1
            if not self._failing:
                self._failing = True
                self._report(error)
            return False
        finally:
            self._in_flight = 0
        self._written += n
        self._failing = False
        return True

    def _report(self, error: BaseException) -> None:
        try:
            if self._on_error is not None:
                self._on_error(error)
            else:
                _log.warning(
                    "traffic_control: writing rate_limit_logs failed (%s); the rows of failed batches are counted "
                    "as lost (sink.stats['lost']) and this is said again only after a write succeeds",
                    error,
                )
        except Exception:
            _log.exception("traffic_control: the LogSink's on_error failed")


# ---- MySQL / MariaDB ------------------------------------------------------------------------------


class _Cursor(Protocol):
    async def execute(self, query: str, args: Any = ...) -> Any: ...


class _Connection(Protocol):
    def cursor(self) -> AsyncContextManager[_Cursor]: ...
    async def commit(self) -> None: ...


class MySQLPool(Protocol):
    """What the writer uses of a pool: aiomysql's (``aiomysql.create_pool``), or any with its shape."""

    def acquire(self) -> AsyncContextManager[_Connection]: ...


_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


def mysql_writer(pool: MySQLPool, *, table: str = "rate_limit_logs") -> LogWriter:
    """A :class:`LogSink` writer: one multi-row ``INSERT INTO rate_limit_logs`` per batch through a
    connection of ``pool`` (aiomysql's, ``pip install "traffic-control[mysql]"``), committed.
    ``timestamp`` is written as UTC (a ``datetime(3)`` column: see ``rate_limit_logs.sql``)."""
    if not _TABLE_NAME.match(table):
        raise ValueError(f"mysql_writer: not a table name: {table!r}")
    quoted = ".".join(f"`{part}`" for part in table.split("."))
    head = f"INSERT INTO {quoted} (`priority`, `status`, `endpoint`, `response_status`, `duration`, `timestamp`) VALUES "

    async def write(rows: list[RateLimitLogRow]) -> None:
        if not rows:
            return
        args: list[object] = []
        for r in rows:
            at = r["timestamp"]
            args += (r["priority"], r["status"], r["endpoint"], r["response_status"], r["duration"],
                     at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo is not None else at)
        query = head + ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(query, args)
            await conn.commit()

    return write


def table_sql() -> str:
    """The table's DDL (``CREATE TABLE IF NOT EXISTS rate_limit_logs ...``), the same table as the
    Node package's Drizzle schema."""
    return resources.files(__package__).joinpath("rate_limit_logs.sql").read_text(encoding="utf-8")


async def create_table(pool: MySQLPool) -> None:
    """Creates ``rate_limit_logs`` unless it exists."""
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute(table_sql())
        await conn.commit()
