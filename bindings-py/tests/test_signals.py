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
