"""httpx transports: every request goes through the limits, every response is reported back.

::

    tc = TrafficControl("keepa")
    async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc)) as client:
        r = await client.get("https://api.keepa.com/product", params={"key": KEY, "asin": "B0..."})

Per request, ``extensions={"traffic_control": {...}}`` takes the keywords of
:meth:`TrafficControl.acquire` (``priority``, ``cost``, ``timeout``, ``route``, ``limits``,
``reserve``, ``spend``). The response's status, headers and (for JSON and short error pages) body
go back to the core: Keepa's token fields reconcile the budget, ``Retry-After``/``RateLimit`` and
blocks pause the limits. When the core says retry, the transport waits for the request's next go
and sends it again (only requests whose body can be sent twice); when it gives up, the last
response is returned as it came.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import httpx

from ._controller import Priority, TrafficControl, _AsyncWaiter, _SyncWaiter
from ._traffic_control import AsyncPermit, SyncPermit

__all__ = ["AsyncTrafficControlTransport", "TrafficControlTransport"]

#: Error pages (Cloudflare blocks, BaseLinker) are read up to this size when not JSON.
_MAX_TEXT_BODY = 256 * 1024
_OPTION_KEYS = frozenset({"priority", "cost", "timeout", "route", "limits", "reserve", "spend"})


def _options(
    request: httpx.Request, priority: Priority | int | str | None, timeout: float | None
) -> dict[str, Any]:
    opts: Mapping[str, Any] = request.extensions.get("traffic_control") or {}
    unknown = set(opts) - _OPTION_KEYS
    if unknown:
        raise TypeError(f"extensions['traffic_control']: unknown option(s) {sorted(unknown)}; use {sorted(_OPTION_KEYS)}")
    kw: dict[str, Any] = {"priority": priority, "timeout": timeout, **opts}
    if kw.get("route") is None:
        kw["url"] = str(request.url)
        kw["method"] = request.method
    return kw


def _wants_body(response: httpx.Response) -> bool:
    """JSON bodies carry Keepa's token fields and BaseLinker's errors; short error pages carry
    Cloudflare's block codes. Anything else (files, HTML pages of 200s) is left unread."""
    kind = response.headers.get("content-type", "").lower()
    if "json" in kind:
        return True
    if response.status_code in (403, 429, 503) and ("html" in kind or "text" in kind or not kind):
        length = response.headers.get("content-length")
        return length is None or (length.isdigit() and int(length) <= _MAX_TEXT_BODY)
    return False


def _decoded_text(response: httpx.Response, raw: bytes) -> str:
    """The body as text, content-encoding undone (the raw bytes stay as they came)."""
    if not response.headers.get("content-encoding"):
        return raw.decode(response.encoding or "utf-8", errors="replace")
    return httpx.Response(response.status_code, headers=response.headers, content=raw).text


def _resendable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


class AsyncTrafficControlTransport(httpx.AsyncBaseTransport):
    """An httpx async transport that sends every request through ``tc``'s limits.

    ``transport`` is the transport that really sends (default ``httpx.AsyncHTTPTransport()``);
    ``priority`` and ``timeout`` (seconds a request may wait for its permit) are the defaults for
    requests that do not say.
    """

    def __init__(
        self,
        tc: TrafficControl,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        priority: Priority | int | str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.tc = tc
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._priority = priority
        self._timeout = timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tc = self.tc
        permit: AsyncPermit = await tc.acquire(**_options(request, self._priority, self._timeout))
        while True:
            try:
                response = await self._transport.handle_async_request(request)
                body = None
                if _wants_body(response):
                    raw = b"".join([chunk async for chunk in response.aiter_raw()])
                    await response.aclose()
                    body = _decoded_text(response, raw)
                    response = httpx.Response(
                        response.status_code,
                        headers=response.headers,
                        stream=httpx.ByteStream(raw),
                        extensions=response.extensions,
                        request=request,
                    )
            except BaseException:
                tc._finish(permit.request)
                raise
            retry = _AsyncWaiter if _resendable(request) else None
            completion, waiter = tc._complete(
                permit.request, response.status_code, response.headers.multi_items(), body, time.time(), retry
            )
            permit.completion = completion
            if waiter is None:
                return response
            await response.aclose()
            assert isinstance(waiter, _AsyncWaiter)
            permit._go(await tc._wait_async(permit.request, waiter))

    async def aclose(self) -> None:
        await self._transport.aclose()


class TrafficControlTransport(httpx.BaseTransport):
    """An httpx transport (blocking, safe from many threads) that sends every request through
    ``tc``'s limits; see :class:`AsyncTrafficControlTransport`."""

    def __init__(
        self,
        tc: TrafficControl,
        transport: httpx.BaseTransport | None = None,
        *,
        priority: Priority | int | str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.tc = tc
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._priority = priority
        self._timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        tc = self.tc
        permit: SyncPermit = tc.acquire_sync(**_options(request, self._priority, self._timeout))
        while True:
            try:
                response = self._transport.handle_request(request)
                body = None
                if _wants_body(response):
                    raw = b"".join(response.iter_raw())
                    response.close()
                    body = _decoded_text(response, raw)
                    response = httpx.Response(
                        response.status_code,
                        headers=response.headers,
                        stream=httpx.ByteStream(raw),
                        extensions=response.extensions,
                        request=request,
                    )
            except BaseException:
                tc._finish(permit.request)
                raise
            retry = _SyncWaiter if _resendable(request) else None
            completion, waiter = tc._complete(
                permit.request, response.status_code, response.headers.multi_items(), body, time.time(), retry
            )
            permit.completion = completion
            if waiter is None:
                return response
            response.close()
            assert isinstance(waiter, _SyncWaiter)
            permit._go(tc._wait_sync(permit.request, waiter))

    def close(self) -> None:
        self._transport.close()
