"""Mock APIs on 127.0.0.1 (a free port), run inside the tests: they enforce limits the way the real
servers do and count every violation. Time is scaled down so a test takes about a second.

- :class:`MockKeepa`: Keepa's token bucket. A balance refilled by ``refill`` tokens every
  ``period`` seconds (Keepa: every minute), at most ``max_tokens``; each request costs its route's
  tokens (``/product``: 1 per ASIN, ``/bestsellers``: 50, ``/token``: 0) and is refused with 429
  ``NOT_ENOUGH_TOKEN`` when the balance is not positive (a positive balance may be overdrawn, as on
  the real API). Every body carries ``timestamp``, ``tokensLeft``, ``refillIn``, ``refillRate``,
  ``tokensConsumed``.
- :class:`MockWindowApi`: a Back Market-like API: at most ``max`` requests in any ``window``
  seconds (exact sliding window over arrival times) else 429, and a count of requests in flight.
"""

from __future__ import annotations

import abc
import bisect
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


class _Server(abc.ABC):
    """A threading HTTP server on 127.0.0.1:0 whose handler calls `self.handle`."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                self._serve()

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self._serve()

            def _serve(self) -> None:
                status, headers, body = owner.respond(self.command, self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, method: str, path: str, headers: Any) -> tuple[int, list[tuple[str, str]], Any]:
        """Answers one request with its headers at hand; most mocks need only `handle`."""
        return self.handle(method, path)

    @abc.abstractmethod
    def handle(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], Any]:
        """Answers one request: status, headers, JSON body. Each mock API defines it."""

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MockKeepa(_Server):
    """Keepa's API, time scaled: see the module docs."""

    def __init__(
        self,
        tokens: int = 100,
        refill: int = 20,
        period: float = 0.1,
        max_tokens: int = 1200,
        latency: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.clock = clock
        self.start = clock()
        self.tokens = tokens
        self.refill = refill
        self.period = period
        self.max_tokens = max_tokens
        self.latency = latency
        self.refills_done = 0
        # What the tests check.
        self.requests = 0
        self.rate_limited = 0  # 429 NOT_ENOUGH_TOKEN answers: the client should cause none
        self.consumed = 0
        self.min_balance_after_spend: int | None = None
        self.by_path: dict[str, int] = {}

    def _refill(self, now: float) -> None:
        periods = int((now - self.start) / self.period)
        if periods > self.refills_done:
            self.tokens = min(self.max_tokens, self.tokens + (periods - self.refills_done) * self.refill)
            self.refills_done = periods

    def _refill_in_ms(self, now: float) -> int:
        next_refill = self.start + (self.refills_done + 1) * self.period
        return max(0, int((next_refill - now) * 1000))

    @staticmethod
    def cost(path: str, query: dict[str, list[str]]) -> int:
        if path.rstrip("/") == "/token":
            return 0
        if path.rstrip("/") == "/bestsellers":
            return 50
        if path.rstrip("/") == "/product":
            asins = [a for value in query.get("asin", []) for a in value.split(",") if a]
            return len(asins)
        return 1

    def handle(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], Any]:
        url = urlsplit(target)
        query = parse_qs(url.query)
        cost = self.cost(url.path, query)
        with self.lock:
            now = self.clock()
            self._refill(now)
            self.requests += 1
            self.by_path[url.path] = self.by_path.get(url.path, 0) + 1
            refused = cost > 0 and self.tokens <= 0
            if refused:
                self.rate_limited += 1
                consumed = 0
            else:
                self.tokens -= cost
                consumed = cost
                self.consumed += cost
                if cost > 0:
                    low = self.min_balance_after_spend
                    self.min_balance_after_spend = self.tokens if low is None else min(low, self.tokens)
            fields = {
                "timestamp": int(time.time() * 1000),
                "tokensLeft": self.tokens,
                "refillIn": self._refill_in_ms(now),
                "refillRate": self.refill,
                "tokenFlowReduction": 0.0,
                "tokensConsumed": consumed,
                "processingTimeInMs": int(self.latency * 1000),
            }
        if self.latency:
            time.sleep(self.latency)
        if refused:
            return 429, [], {**fields, "error": {"type": "NOT_ENOUGH_TOKEN", "message": "not enough tokens"}}
        path = url.path.rstrip("/")
        if path == "/product":
            asins = [a for value in query.get("asin", []) for a in value.split(",") if a]
            return 200, [], {**fields, "products": [{"asin": a, "title": f"Product {a}"} for a in asins]}
        if path == "/bestsellers":
            category = (query.get("category") or ["0"])[0]
            asin_list = [f"B{category}{i:05d}" for i in range(100)]
            return 200, [], {**fields, "bestSellersList": {"categoryId": category, "asinList": asin_list}}
        return 200, [], fields


class MockWindowApi(_Server):
    """At most `max` requests in any `window` seconds (arrival times, exact), else 429 with
    `Retry-After`; counts the requests in flight at once. `latency` is the time each request takes."""

    def __init__(self, max: int, window: float, latency: float = 0.005) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.max = max
        self.window = window
        self.latency = latency
        self.arrivals: list[float] = []
        self.rate_limited = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0

    def handle(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], Any]:
        with self.lock:
            now = time.monotonic()
            self.requests += 1
            recent = len(self.arrivals) - bisect.bisect_right(self.arrivals, now - self.window)
            if recent >= self.max:
                self.rate_limited += 1
                return 429, [("retry-after", "1")], {"error": "rate limited"}
            self.arrivals.append(now)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency)
        finally:
            with self.lock:
                self.in_flight -= 1
        return 200, [], {"ok": True}

    def busiest_window(self) -> int:
        """The most arrivals in any interval of length `window` (half-open)."""
        a = self.arrivals
        return max((bisect.bisect_left(a, t + self.window) - i for i, t in enumerate(a)), default=0)


class MockFlakyApi(_Server):
    """Answers 503 while `down` is set (as an overloaded API does), else 200; counts the requests it
    received while down and when each arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.down = False
        self.arrivals: list[tuple[float, bool]] = []

    def handle(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], Any]:
        with self.lock:
            self.arrivals.append((time.monotonic(), self.down))
            if self.down:
                return 503, [], {"error": "unavailable"}
        return 200, [], {"ok": True}


class MockBaseLinker(_Server):
    """BaseLinker's connector, time scaled: at most `max` requests per `window` seconds per token
    (the `X-BLToken` header), counted at arrival in exact sliding windows; over it, status 200 with
    `ERROR_BLOCKED_TOKEN ... blocked until <time>` and the token blocked for `block` seconds. A
    revoked token gets 401. Counts blocks, arrivals per token, and requests on a revoked token."""

    def __init__(self, max: int, window: float, block: float) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.max = max
        self.window = window
        self.block = block
        self.arrivals: dict[str, list[float]] = {}
        self.blocked_until: dict[str, float] = {}
        self.revoked: set[str] = set()
        self.blocks = 0
        self.on_revoked = 0

    def respond(self, method: str, path: str, headers: Any) -> tuple[int, list[tuple[str, str]], Any]:
        return self.answer(headers.get("x-bltoken") or "")

    def handle(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], Any]:
        return self.answer("")

    def answer(self, token: str) -> tuple[int, list[tuple[str, str]], Any]:
        with self.lock:
            now = time.monotonic()
            if token in self.revoked:
                self.on_revoked += 1
                return 401, [], {"status": "ERROR", "error_code": "ERROR_AUTH", "error_message": "invalid token"}
            arrivals = self.arrivals.setdefault(token, [])
            recent = len(arrivals) - bisect.bisect_right(arrivals, now - self.window)
            if now < self.blocked_until.get(token, 0.0) or recent >= self.max:
                self.blocks += 1
                until = self.blocked_until[token] = max(self.blocked_until.get(token, 0.0), now + self.block)
                wall = time.time() + (until - now) + 3600  # BaseLinker writes Polish time (UTC+1 in winter)
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall))
                return 200, [], {"status": "ERROR", "error_code": "ERROR_BLOCKED_TOKEN",
                                 "error_message": f"Token blocked until {stamp}"}
            arrivals.append(now)
        return 200, [], {"status": "SUCCESS"}


def busiest(instants: list[float], window: float) -> int:
    """The most instants in any half-open interval [s, s + window)."""
    a = sorted(instants)
    return max((bisect.bisect_left(a, t + window) - i for i, t in enumerate(a)), default=0)
