"""Signals the server sends in a body with status 200 reach the core through the httpx
transports: BaseLinker's blocked token (``ERROR_BLOCKED_TOKEN``, status 200, JSON) pauses the
token's limit; a file body (not JSON) is left unread. A mock BaseLinker on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest

from traffic_control import AsyncTrafficControlTransport, TrafficControl, TrafficControlTransport
from traffic_control._traffic_control import wants_body

BLOCKED = json.dumps(
    {"status": "ERROR", "error_code": "ERROR_BLOCKED_TOKEN", "error_message": "Token blocked for too many requests"}
).encode()
# A blocked token is rate limited: without this, the transport would send it again after the cooldown.
NO_RETRY = {"BASELINKER_RATE_LIMIT_FEEDBACK_MAX_RETRIES": "0"}


@pytest.fixture(scope="module")
def baselinker() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.path.startswith("/file"):
                body, kind = bytes(1024), "application/octet-stream"
            else:
                body, kind = BLOCKED, "application/json"
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve  # noqa: N815 - the stdlib's names

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def pause(tc: TrafficControl) -> Any:
    return tc.snapshot()["limits"]["requests"]["pause"]


def test_a_blocked_token_at_status_200_pauses_the_token_through_the_transport(baselinker: str) -> None:
    tc = TrafficControl("baselinker", env=NO_RETRY)
    with httpx.Client(transport=TrafficControlTransport(tc)) as client:
        response = client.post(f"{baselinker}/connector.php")
    assert response.json()["error_code"] == "ERROR_BLOCKED_TOKEN", "the caller still reads the body"
    assert pause(tc) is not None and pause(tc)["reason"] == "cooldown"


async def test_the_async_transport_too_and_a_file_is_not_read(baselinker: str) -> None:
    tc = TrafficControl("baselinker", env=NO_RETRY)
    async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc)) as client:
        await client.post(f"{baselinker}/connector.php")
    assert pause(tc)["reason"] == "cooldown"
    fresh = TrafficControl("baselinker", env=NO_RETRY)
    async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(fresh)) as client:
        response = await client.get(f"{baselinker}/file")
    assert len(response.content) == 1024
    assert pause(fresh) is None


def test_the_rule_is_the_cores() -> None:
    assert wants_body(200, "application/json; charset=utf-8")
    assert wants_body(403, "text/html", 2048) and wants_body(429, None)
    assert not wants_body(200, "text/html") and not wants_body(503, "text/html", 10_000_000)


# ---- the transports over the shared store (Redis) ------------------------------------------------


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    from redis_server import RedisServer

    server = RedisServer.start()
    yield server.port
    server.stop()


@pytest.fixture(scope="module")
def flaky() -> Iterator[tuple[str, list[float]]]:
    """Answers every other request 429 (Retry-After 0.2 s), the others 200; records arrivals."""
    import time

    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            arrivals.append(time.monotonic())
            limited = len(arrivals) % 2 == 1
            body = b'{"ok":false}' if limited else b'{"ok":true}'
            self.send_response(429 if limited else 200)
            if limited:
                self.send_header("retry-after", "0.2")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", arrivals
    server.shutdown()


SHARED_CONFIG = {"limits": {"api": {"kind": "window", "max": 100, "per": "1s", "hold": "go"}}, "global": ["api"]}


async def test_the_async_transport_over_the_shared_store_sends_a_rate_limited_request_again(
    redis_port: int, flaky: tuple[str, list[float]]
) -> None:
    import redis.asyncio as aioredis

    from traffic_control.shared import SharedTrafficControl

    url, arrivals = flaky
    arrivals.clear()
    tc = SharedTrafficControl(SHARED_CONFIG, redis=aioredis.Redis(port=redis_port), account="py-transport-async")
    async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc, priority="high")) as client:
        response = await client.get(f"{url}/items")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.19, "sent again after the store's pause"
    await tc.aclose()


def test_the_blocking_transport_over_the_shared_store_too_and_a_blocked_token_pauses_every_process(
    redis_port: int, flaky: tuple[str, list[float]], baselinker: str
) -> None:
    import redis

    from traffic_control.shared import SyncSharedTrafficControl

    url, arrivals = flaky
    arrivals.clear()
    tc = SyncSharedTrafficControl(SHARED_CONFIG, redis=redis.Redis(port=redis_port), account="py-transport-sync")
    with httpx.Client(transport=TrafficControlTransport(tc)) as client:
        assert client.get(f"{url}/items").status_code == 200
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.19
    tc.close()

    blocked = SyncSharedTrafficControl("baselinker", redis=redis.Redis(port=redis_port), account="py-transport-bl", env=NO_RETRY)
    with httpx.Client(transport=TrafficControlTransport(blocked)) as client:
        response = client.post(f"{baselinker}/connector.php")
    assert response.json()["error_code"] == "ERROR_BLOCKED_TOKEN"
    name, _, _, _, paused = next(limit for limit in blocked.snapshot() if limit[0] == "requests")
    assert paused is not None and paused[1] == "cooldown", (name, paused)
    blocked.close()
