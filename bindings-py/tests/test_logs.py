"""The seed's rate_limit_logs table, for real: events mapped by the table in tests/log_rows.json, and
LogSink writing them through aiomysql into a MariaDB of this module's own (mariadb_server.py). A
slow database (its table locked) and a dead one (mariadbd killed, then restarted) never delay or
lose an admission, from asyncio or from threads."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import aiomysql
import pytest

from traffic_control import Config, Event, NeverSucceedsError, TrafficControl, TrafficControlError
from traffic_control.logs import LogSink, RateLimitLogRow, create_table, log_row, mysql_writer, table_sql
from mariadb_server import MARIADB_REQUIRED, MariaDBServer, mariadb_missing

TABLE = json.loads((Path(__file__).resolve().parents[2] / "tests" / "log_rows.json").read_text(encoding="utf-8"))
WINDOW: Config = {"limits": {"api": {"kind": "window", "max": 200, "per": 100}}, "global": ["api"]}


def epoch_ms(at: datetime) -> int:
    """A row's timestamp (aware, or naive UTC as the database gives it back) as epoch ms."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return round(at.timestamp() * 1000)


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while True:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.01)


# ---- the mapping, against the shared table ------------------------------------------------------


@pytest.mark.parametrize("case", TABLE["cases"], ids=[c["name"] for c in TABLE["cases"]])
def test_log_row_matches_the_shared_table(case: dict[str, Any]) -> None:
    # The event as Event.log() gives it: the kind under "status".
    event = dict(case["event"])
    event["status"] = event.pop("type")
    row = log_row(event, TABLE["wall_offset_ms"])
    if case["row"] is None:
        assert row is None
        return
    assert row is not None
    assert row["timestamp"].tzinfo is not None
    assert {**row, "timestamp": epoch_ms(row["timestamp"])} == case["row"]


async def test_log_row_of_an_event_is_the_row_of_its_log() -> None:
    events: list[Event] = []
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 1, "per": 50}}, "global": ["api"]},
                        listener=events.append)
    for _ in range(2):
        async with tc.acquire("https://api.example.com/items?key=SECRET", priority="low") as permit:
            permit.report(200)
    kinds = [e.type for e in events]
    assert "queued" in kinds and "completed" in kinds and "go" in kinds
    for e in events:
        assert log_row(e, 5.0) == log_row(e.log(), 5.0)
    rows = [r for r in (log_row(e, 0) for e in events) if r]
    assert [r["status"] for r in rows] == ["EXECUTED", "QUEUED", "EXECUTED"]
    assert all(r["endpoint"] == "GET /items" and r["priority"] == 3 for r in rows)


# ---- tc.on ---------------------------------------------------------------------------------------


async def test_on_adds_listeners_beside_the_constructors_and_stops_them() -> None:
    first: list[str] = []
    second: list[str] = []
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 5, "per": "1s"}}, "global": ["api"]},
                        listener=lambda e: first.append(e.type))
    off = tc.on(lambda e: second.append(e.type))
    async with tc.acquire("/a") as permit:
        permit.report(200)
    assert first == second == ["go", "completed"]
    assert off() is True and off() is False
    async with tc.acquire("/b"):
        pass
    assert len(first) == 4 and len(second) == 2
    # A controller made without a listener starts giving events once one is added.
    bare = TrafficControl({"limits": {"api": {"kind": "window", "max": 5, "per": "1s"}}, "global": ["api"]})
    seen: list[str] = []
    bare.on(lambda e: seen.append(e.type))
    async with bare.acquire("/c") as permit:
        permit.report(204)
    assert seen == ["go", "completed"]


# ---- the sink's own guarantees, with a writer of the test's -----------------------------------


class FakeSource:
    """A controller stand-in: the test emits events (log dicts through a tiny Event-like object)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any], object]] = []

    def now(self) -> float:
        return 1000.0

    def on(self, listener: Callable[[Any], object]) -> Callable[[], bool]:
        self.listeners.append(listener)

        def off() -> bool:
            self.listeners.remove(listener)
            return True

        return off

    def emit(self, i: int, kind: str = "queued") -> None:
        for listener in list(self.listeners):
            listener(_FakeEvent(kind, i))


class _FakeEvent:
    def __init__(self, kind: str, i: int) -> None:
        self.type = kind
        self._log = {"timestamp_ms": 1000.0 + i, "request_id": i, "endpoint": f"GET /q/{i}", "route": None,
                     "priority": "normal", "status": kind, "response_status": None, "duration_ms": None, "error": None}

    def log(self) -> dict[str, Any]:
        return self._log


def _stats(**kw: int) -> dict[str, int]:
    base = {"written": 0, "dropped": 0, "lost": 0, "failed_batches": 0, "pending": 0, "in_flight": 0}
    return {**base, **kw}


async def test_sink_buffers_only_drops_the_oldest_and_reports_once_per_streak() -> None:
    source = FakeSource()
    fail = True
    writes: list[list[str]] = []
    errors: list[str] = []
    gate = asyncio.Event()

    async def writer(rows: list[RateLimitLogRow]) -> None:
        writes.append([r["endpoint"] for r in rows])
        if fail:
            raise ConnectionError("database down")
        await gate.wait()
        gate.clear()

    sink = LogSink(source, writer, batch_size=3, flush_interval=60, max_buffered=5, on_error=lambda e: errors.append(str(e)))
    for i in range(8):
        source.emit(i)
    source.emit(99, "go")  # no row
    assert writes == []  # nothing written inside the listener, even with full batches
    assert sink.stats == _stats(dropped=3, pending=5)
    await asyncio.sleep(0.01)
    assert writes == [["GET /q/3", "GET /q/4", "GET /q/5"]]  # the task wrote the full batch, which failed
    assert sink.stats == _stats(dropped=3, lost=3, failed_batches=1, pending=2)
    await sink.flush()
    source.emit(8)
    await sink.flush()
    assert sink.stats == _stats(dropped=3, lost=6, failed_batches=3)
    assert errors == ["database down"]  # one report for the streak
    # While failing, a full batch waits for the next interval (here: flush()).
    fail = False
    for i in range(10, 13):
        source.emit(i)
    await asyncio.sleep(0.01)
    assert len(writes) == 3
    flushing = asyncio.ensure_future(sink.flush())
    await until(lambda: sink.stats["in_flight"] == 3, "a write in flight")
    gate.set()
    await flushing
    # Working again: a full batch goes at once.
    for i in range(13, 16):
        source.emit(i)
    await until(lambda: sink.stats["in_flight"] == 3, "a write in flight")
    gate.set()
    await until(lambda: sink.stats["written"] == 6, "written")
    fail = True
    source.emit(20)
    await sink.flush()
    assert errors == ["database down", "database down"]  # a new streak, a new report
    fail = False
    source.emit(21)
    closing = asyncio.ensure_future(sink.aclose(1.0))
    await until(lambda: sink.stats["in_flight"] == 1, "the last write")
    gate.set()
    assert await closing == _stats(written=7, dropped=3, lost=7, failed_batches=4)
    assert source.listeners == []
    source.emit(30)
    assert sink.stats["pending"] == 0


async def test_the_default_report_is_one_warning_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    tc = TrafficControl(WINDOW)

    async def down(rows: list[RateLimitLogRow]) -> None:
        raise OSError("no route to the database")

    sink = LogSink(tc, down, batch_size=2, flush_interval=60)
    with caplog.at_level(logging.WARNING, logger="traffic_control.logs"):
        for _ in range(3):
            for _ in range(4):
                async with tc.acquire("/a") as permit:
                    permit.report(200)
            await sink.flush()
    assert sink.stats["failed_batches"] >= 3
    assert [r.getMessage() for r in caplog.records if r.name == "traffic_control.logs"] == [
        "traffic_control: writing rate_limit_logs failed (no route to the database); the rows of failed batches are "
        "counted as lost (sink.stats['lost']) and this is said again only after a write succeeds"
    ]
    await sink.aclose()


def test_a_sink_needs_a_controller_with_events_and_a_running_loop() -> None:
    with pytest.raises(TypeError, match="no events"):
        LogSink(object(), mysql_writer(object()))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="inside the running event loop"):
        LogSink(TrafficControl(WINDOW), mysql_writer(object()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a table name"):
        mysql_writer(object(), table="logs; DROP TABLE x")  # type: ignore[arg-type]
    assert "CREATE TABLE IF NOT EXISTS `rate_limit_logs`" in table_sql()


# ---- against a real MariaDB ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    missing = mariadb_missing()
    if missing:
        if MARIADB_REQUIRED:
            pytest.fail(f"{missing} and TC_REQUIRE_MARIADB=1")
        pytest.skip(missing)
    # A server whose own time zone is not UTC: the rows must not depend on it.
    s = MariaDBServer.start(time_zone="+02:00")
    yield s
    s.stop()


_databases = [0]
#: The database each pool of the `pool` fixture works in.
_names: dict[int, str] = {}


@pytest.fixture
async def pool(mariadb: MariaDBServer) -> AsyncIterator[aiomysql.Pool]:
    """A pool on a fresh database holding the table, made by create_table (the shipped DDL)."""
    _databases[0] += 1
    name = f"tc_py_{_databases[0]}"
    admin = await aiomysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user, autocommit=True)
    async with admin.cursor() as cur:
        await cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    p = await aiomysql.create_pool(host=mariadb.host, port=mariadb.port, user=mariadb.user, db=name,
                                   minsize=1, maxsize=2, connect_timeout=2)
    await create_table(p)
    _names[id(p)] = name
    yield p
    p.close()
    await p.wait_closed()


async def query(p: aiomysql.Pool, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with p.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute(sql, args or None)
            rows: list[tuple[Any, ...]] = list(await cur.fetchall())
        await conn.commit()
    return rows


async def test_rows_arrive_as_the_events_say(pool: aiomysql.Pool) -> None:
    columns = await query(pool, "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
                                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rate_limit_logs' ORDER BY ORDINAL_POSITION")
    assert [(c[0], c[2]) for c in columns] == [("id", "NO"), ("priority", "NO"), ("status", "NO"), ("endpoint", "NO"),
                                               ("response_status", "YES"), ("duration", "YES"), ("timestamp", "NO")]
    assert columns[2][1] == "enum('QUEUED','EXECUTED','429_HIT','ERROR')" and columns[6][1] == "datetime(3)"

    events: list[Event] = []
    tc = TrafficControl({"limits": {"api": {"kind": "window", "max": 3, "per": 150}}, "global": ["api"],
                         "routes": [{"name": "listings", "path": "^/ws/listings"}],
                         "feedback": {"max_retries": 0, "block": 20, "cooldown": 20}},
                        listener=events.append)
    sink = LogSink(tc, mysql_writer(pool), batch_size=4, flush_interval=0.05)
    t0 = time.time()

    async def call(url: str, status: int | None, headers: list[tuple[str, str]] | None = None, **kw: Any) -> None:
        async with tc.acquire(url, **kw) as permit:
            await asyncio.sleep(0.005)
            if status is None:
                raise ConnectionError("no response")  # leaving without a report: completed without a status
            permit.report(status, headers)

    # Three go at once; two wait for the window (QUEUED), then go.
    await asyncio.gather(*(call(f"https://api.example.com/ws/listings/{i}?key=SECRET", 200) for i in range(1, 4)),
                         call("https://api.example.com/ws/listings/4", 200, priority="low"),
                         call("https://api.example.com/ws/listings/5", 204, priority="high"))
    with pytest.raises(NeverSucceedsError):
        await call("https://api.example.com/ws/listings/x", 200, cost=9)   # refused at once: ERROR
    with pytest.raises(ConnectionError):
        await call("https://api.example.com/ws/listings/gone", None)      # a network failure: ERROR
    await call("https://api.example.com/ws/listings/limited", 429, [("retry-after", "0")], priority="critical")
    await call("https://api.example.com/ws/listings/waf", 403, [("cf-mitigated", "challenge")], priority="critical")
    t1 = time.time()

    stats = await sink.aclose()
    expected = [r for r in (log_row(e, 0) for e in events) if r is not None]
    assert stats == _stats(written=len(expected))
    rows = await query(pool, "SELECT priority, status, endpoint, response_status, duration, `timestamp` FROM rate_limit_logs ORDER BY id")
    assert [r[:5] for r in rows] == [(e["priority"], e["status"], e["endpoint"], e["response_status"], e["duration"]) for e in expected]
    seen = {(r[1], r[3]) for r in rows}
    for want in [("QUEUED", None), ("EXECUTED", 200), ("EXECUTED", 204), ("429_HIT", 429), ("ERROR", 403), ("429_HIT", 403), ("ERROR", None)]:
        assert want in seen, want
    assert any(r[1] == "QUEUED" and r[0] == 3 and r[2] == "GET /ws/listings/4" for r in rows)
    assert not any("SECRET" in r[2] for r in rows)
    # Timestamps: the events' instants on the wall clock (UTC), to the millisecond, whatever the server's zone.
    offset = time.time() * 1000 - tc.now()
    for r, e in zip(rows, expected):
        assert abs(epoch_ms(r[5]) - epoch_ms(e["timestamp"]) - offset) <= 5
        assert t0 * 1000 - 5 <= epoch_ms(r[5]) <= t1 * 1000 + 5
    [(ago,)] = await query(pool, "SELECT TIMESTAMPDIFF(SECOND, MAX(`timestamp`), UTC_TIMESTAMP(3)) FROM rate_limit_logs")
    assert 0 <= ago < 30


async def test_rows_arrive_from_every_process_of_a_shared_account(pool: aiomysql.Pool) -> None:
    """Three processes of one account (two asyncio controllers, one threaded), a sink each, one
    table: every event row arrives, and one request's events name one id across them."""
    import redis
    import redis.asyncio as aioredis
    from redis_server import RedisServer
    from traffic_control.shared import SharedTrafficControl, SyncSharedTrafficControl

    server = RedisServer.start()
    try:
        config: Config = {"limits": {"api": {"kind": "window", "max": 2, "per": 200, "hold": "go"}}, "global": ["api"],
                          "routes": [{"name": "listings", "path": "^/ws/listings"}], "feedback": {"block": 20, "cooldown": 20, "max_retries": 0}}
        events: list[Event] = []
        procs = [SharedTrafficControl(config, redis=aioredis.Redis(host="127.0.0.1", port=server.port), account="logs",
                                      listener=events.append) for _ in range(2)]
        threaded = SyncSharedTrafficControl(config, redis=redis.Redis(host="127.0.0.1", port=server.port), account="logs")
        threaded.on(events.append)
        sinks = [LogSink(tc, mysql_writer(pool), batch_size=3, flush_interval=0.03) for tc in (*procs, threaded)]

        async def call(tc: SharedTrafficControl, path: str, status: int, priority: str = "normal") -> None:
            permit = await tc.acquire(f"https://api.example.com{path}", priority=priority)
            await asyncio.sleep(0.005)
            await permit.complete(status, [("retry-after", "0")] if status == 429 else None)

        def call_sync(path: str) -> None:
            permit = threaded.acquire(f"https://api.example.com{path}")
            permit.complete(200)

        # Seven calls over a window of 2 per 200 ms: most wait (QUEUED); one meets a 429.
        await asyncio.gather(
            call(procs[0], "/ws/listings/1?key=SECRET", 200),
            call(procs[1], "/ws/listings/2", 200),
            call(procs[0], "/ws/listings/limited", 429, "high"),
            call(procs[1], "/ws/listings/4", 200, "low"),
            call(procs[0], "/ws/listings/5", 204),
            asyncio.to_thread(call_sync, "/ws/listings/6"),
            asyncio.to_thread(call_sync, "/ws/listings/7"),
        )
        # Once the window is empty, two fill it at once; one that cannot wait ~200 ms for it is
        # refused: an ERROR row.
        await asyncio.sleep(0.25)
        held = await asyncio.gather(*(procs[1].acquire(f"https://api.example.com/ws/listings/{i}") for i in (8, 9)))
        with pytest.raises(TrafficControlError):
            await procs[1].acquire("https://api.example.com/ws/listings/10", max_wait=0.001)
        for p in held:
            await p.complete(200)
        stats = [await s.aclose() for s in sinks]
        expected = [r for r in (log_row(e, 0) for e in events) if r is not None]
        assert sum(s["written"] for s in stats) == len(expected)
        assert all(s["lost"] == 0 and s["dropped"] == 0 for s in stats)
        rows = await query(pool, "SELECT priority, status, endpoint, response_status, duration FROM rate_limit_logs ORDER BY id")
        assert sorted(rows, key=repr) == sorted(((e["priority"], e["status"], e["endpoint"], e["response_status"], e["duration"])
                                                 for e in expected), key=repr)
        count = lambda status, code=-1: sum(1 for r in rows if r[1] == status and (code == -1 or r[3] == code))  # noqa: E731
        assert count("QUEUED") >= 2
        assert count("EXECUTED", 200) == 7 and count("EXECUTED", 204) == 1 and count("429_HIT", 429) == 1
        assert count("ERROR") >= 1
        assert not any("SECRET" in r[2] for r in rows)
        by_id: dict[int, list[str]] = {}
        for e in events:
            by_id.setdefault(e.request, []).append(e.type)
        assert sum(1 for kinds in by_id.values() if "go" in kinds) == 9, by_id
        for rid, kinds in by_id.items():
            if "queued" in kinds:
                assert kinds[:2] == ["queued", "go"], (rid, kinds)
        for tc in procs:
            await tc.aclose()
        threaded.close()
    finally:
        server.stop()


async def workload(tc: TrafficControl, n: int, threads: int = 0) -> float:
    """`n` requests through `tc.acquire` (and `threads` threads of `n // 4` through `acquire_sync`),
    each reporting 200; returns how long they all took (s)."""
    t0 = time.perf_counter()

    async def one() -> None:
        async with tc.acquire("/a") as permit:
            permit.report(200)

    def sync() -> None:
        for _ in range(n // 4):
            with tc.acquire_sync("/a") as permit:
                permit.report(200)

    await asyncio.gather(*(one() for _ in range(n)), *(asyncio.to_thread(sync) for _ in range(threads)))
    return time.perf_counter() - t0


def produced_counter(tc: TrafficControl) -> Callable[[], int]:
    """Counts the rows the controller's events make, from any thread."""
    n = [0]
    lock = threading.Lock()

    def count(e: Event) -> None:
        if log_row(e, 0) is not None:
            with lock:
                n[0] += 1

    tc.on(count)
    return lambda: n[0]


async def test_a_locked_table_never_delays_admissions_and_the_rows_arrive_after(mariadb: MariaDBServer, pool: aiomysql.Pool) -> None:
    baseline = await workload(TrafficControl(WINDOW), 600, threads=2)
    locker = await aiomysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user, db=_names[id(pool)], autocommit=True)
    async with locker.cursor() as cur:
        await cur.execute("LOCK TABLES rate_limit_logs WRITE")
    tc = TrafficControl(WINDOW)
    produced = produced_counter(tc)
    sink = LogSink(tc, mysql_writer(pool), batch_size=100, flush_interval=0.02)
    await workload(tc, 150)   # its rows' INSERT blocks on the lock
    await until(lambda: sink.stats["in_flight"] == 100, "an INSERT in flight")

    async def waiting() -> bool:
        # The server shows the INSERT waiting on the lock a moment after it was sent (asked once
        # under load, it may not be there yet).
        async with locker.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE LIKE '%metadata lock%'")
            return bool((await cur.fetchone()) == (1,))

    await until(waiting, "the INSERT waits for the lock")
    await asyncio.sleep(0.15)  # the first wave's window ends: the same free limits as the baseline's

    locked = await workload(tc, 600, threads=2)   # asyncio and threads
    assert locked < baseline + 0.3, f"{locked:.3f} s with the table locked, {baseline:.3f} s without a sink"
    assert sink.stats["written"] == 0 and sink.stats["in_flight"] == 100 and sink.stats["dropped"] == 0

    async with locker.cursor() as cur:
        await cur.execute("UNLOCK TABLES")
    locker.close()
    await until(lambda: sink.stats["written"] == produced(), "the rows written after the unlock")
    assert (await query(pool, "SELECT COUNT(*) FROM rate_limit_logs")) == [(produced(),)]
    # Every completion (150 + 600 + 2 × 150) and every wait (at least 400 of the 600 asked at once).
    assert produced() >= 150 + 900 + 400
    assert await sink.aclose() == _stats(written=produced())


async def test_a_dead_database_never_blocks_or_loses_an_admission(mariadb: MariaDBServer, pool: aiomysql.Pool) -> None:
    tc = TrafficControl(WINDOW)
    produced = produced_counter(tc)
    errors: list[BaseException] = []
    sink = LogSink(tc, mysql_writer(pool), batch_size=50, flush_interval=0.03, max_buffered=300, on_error=errors.append)

    def accounted() -> int:
        s = sink.stats
        return s["written"] + s["dropped"] + s["lost"] + s["pending"] + s["in_flight"]

    await workload(tc, 60)
    await until(lambda: sink.stats["written"] == produced(), "the first rows")

    mariadb.kill()
    baseline = await workload(TrafficControl(WINDOW), 600, threads=2)
    dead = await workload(tc, 600, threads=2)
    assert dead < baseline + 0.3, f"{dead:.3f} s with the database dead, {baseline:.3f} s without a sink"
    await until(lambda: sink.stats["failed_batches"] >= 3, "failed writes")
    assert len(errors) == 1, errors  # one report for the streak
    s = sink.stats
    assert s["lost"] > 0 and s["dropped"] > 0 and s["pending"] <= 300, s
    assert accounted() == produced()

    await asyncio.to_thread(mariadb.up)
    before = sink.stats["written"]
    await workload(tc, 100)
    await until(lambda: sink.stats["written"] > before and sink.stats["pending"] == 0 and sink.stats["in_flight"] == 0,
                "writing resumed")
    assert len(errors) == 1  # no report while it works

    mariadb.kill()  # a new streak is reported again
    await workload(tc, 100)
    failed = sink.stats["failed_batches"]
    await until(lambda: sink.stats["failed_batches"] > failed, "a new failure")
    assert len(errors) == 2

    await asyncio.to_thread(mariadb.up)

    async def drained() -> bool:
        await sink.flush()
        return sink.stats["pending"] == 0 and sink.stats["in_flight"] == 0

    await until(drained, "the rest written")
    stats = await sink.aclose()
    assert accounted() == produced()
    [(n,)] = await query(pool, "SELECT COUNT(*) FROM rate_limit_logs")
    # A batch whose connection broke may still have committed: it is counted as lost, never retried.
    assert stats["written"] <= n <= stats["written"] + stats["lost"], (n, stats)
