"""httpx transports: every request goes through the limits, every response is reported back.

::

    tc = TrafficControl("keepa")
    async with httpx.AsyncClient(transport=AsyncTrafficControlTransport(tc)) as client:
        r = await client.get("https://api.keepa.com/product", params={"key": KEY, "asin": "B0..."})

Per request, ``extensions={"traffic_control": {...}}`` takes the keywords of
:meth:`TrafficControl.acquire` (``priority``, ``cost``, ``max_wait``, ``route``, ``limits``,
``reserve``, ``spend``, ``tenant``, ``key``; ``timeout`` is ``max_wait``'s former name). The response's
status, headers and (for JSON and short error pages) body go back to the core: Keepa's token
fields reconcile the budget, ``Retry-After``/``RateLimit`` and
blocks pause the limits. When the core says retry, the transport waits for the request's next go
and sends it again (only requests whose body can be sent twice); when it gives up, the last
response is returned as it came.

``tc`` may also be a shared controller (:class:`traffic_control.shared.SharedTrafficControl` for
the async transport, :class:`traffic_control.shared.SyncSharedTrafficControl` for the blocking
one): the limits are then the account's in Redis, and a rate-limited answer is sent again on the
retry's permit the store gives (``complete()`` answers ``retry``); the controller learns an unknown
budget by itself (its ``http=`` client).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Mapping

import httpx

from ._controller import Priority, TrafficControl, _AsyncWaiter, _SyncWaiter
from ._traffic_control import AsyncPermit, SyncPermit, wants_body
from .shared import SharedTrafficControl, SyncSharedTrafficControl

__all__ = ["AsyncTrafficControlTransport", "TrafficControlTransport"]

_OPTION_KEYS = frozenset(
    {"priority", "cost", "max_wait", "timeout", "route", "limits", "reserve", "spend", "tenant", "key"}
)


def _options(
    request: httpx.Request, priority: Priority | int | str | None, timeout: float | None
) -> dict[str, Any]:
    opts: Mapping[str, Any] = request.extensions.get("traffic_control") or {}
    unknown = set(opts) - _OPTION_KEYS
    if unknown:
        raise TypeError(f"extensions['traffic_control']: unknown option(s) {sorted(unknown)}; use {sorted(_OPTION_KEYS)}")
    if "timeout" in opts:  # the former name of max_wait
        opts = {k: v for k, v in opts.items() if k != "timeout"} | {"max_wait": opts.get("max_wait", opts["timeout"])}
    kw: dict[str, Any] = {"priority": priority, "max_wait": timeout, **opts}
    if kw.get("route") is None:
        kw["url"] = str(request.url)
        kw["method"] = request.method
    return kw


def _credentials(request: httpx.Request, key: str | None, keys: Mapping[str, Mapping[str, str]]) -> None:
    """Sets the headers of the pool key the permit names (``keys=``: key id -> headers); the core
    only ever sees the id."""
    if key is not None and key in keys:
        request.headers.update(keys[key])


def _shared_options(kw: dict[str, Any]) -> dict[str, Any]:
    """``_options`` for a shared controller: its priority is a name, its absent options absent."""
    # The shared store has no key pools (it refuses a config with them): no key there.
    out = {k: v for k, v in kw.items() if v is not None and k != "key"}
    priority = out.get("priority")
    if isinstance(priority, int):  # Priority is an IntEnum
        out["priority"] = Priority(priority).name.lower()
    return out


def _rebuilt(response: httpx.Response, request: httpx.Request, raw: bytes) -> tuple[httpx.Response, str]:
    """The response over its read body, and that body as text for the core."""
    body = _decoded_text(response, raw)
    stream = httpx.ByteStream(raw)
    return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                          extensions=response.extensions, request=request), body


async def _send_async(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> tuple[httpx.Response, str | None]:
    """Sends; reads the body when the core's rule says it carries limit fields."""
    response = await transport.handle_async_request(request)
    if not _wants_body(response):
        return response, None
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return _rebuilt(response, request, raw)


def _send_sync(transport: httpx.BaseTransport, request: httpx.Request) -> tuple[httpx.Response, str | None]:
    """Sends; reads the body when the core's rule says it carries limit fields."""
    response = transport.handle_request(request)
    if not _wants_body(response):
        return response, None
    raw = b"".join(response.iter_raw())
    response.close()
    return _rebuilt(response, request, raw)


def _wants_body(response: httpx.Response) -> bool:
    """The core's rule: JSON bodies (Keepa's token fields, BaseLinker's errors, at any status) and
    short error pages (Cloudflare's block codes); anything else is left unread."""
    length = response.headers.get("content-length")
    size = int(length) if length is not None and length.isdigit() else None
    return wants_body(response.status_code, response.headers.get("content-type"), size)


def _decoded_text(response: httpx.Response, raw: bytes) -> str:
    """The body as text, content-encoding undone (the raw bytes stay as they came)."""
    if not response.headers.get("content-encoding"):
        return raw.decode(response.encoding or "utf-8", errors="replace")
    return httpx.Response(response.status_code, headers=response.headers, content=raw).text


def _resendable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


def _budget_unknown(e: BaseException) -> bool:
    return getattr(e, "code", None) == "BUDGET_UNKNOWN"


def _status_request(tc: TrafficControl, request: httpx.Request) -> httpx.Request | None:
    """The free status request (Keepa's ``/token``) made from ``request``, or None."""
    url = tc._core.status_url(str(request.url))
    if url is None:
        return None
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in ("content-length", "content-type")]
    return httpx.Request("GET", url, headers=headers)


class AsyncTrafficControlTransport(httpx.AsyncBaseTransport):
    """An httpx async transport that sends every request through ``tc``'s limits.

    ``transport`` is the transport that really sends (default ``httpx.AsyncHTTPTransport()``);
    ``priority`` and ``max_wait`` (seconds a request may wait for its permit; ``timeout`` is its
    former name) are the defaults for requests that do not say. ``keys`` maps the ids of a key
    pool's keys (the config's ``pools``) to the headers that carry each key's credentials: a
    request is sent with the headers of the key its permit names.
    """

    def __init__(
        self,
        tc: TrafficControl | SharedTrafficControl,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        priority: Priority | int | str | None = None,
        max_wait: float | None = None,
        timeout: float | None = None,
        keys: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.tc = tc
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._priority = priority
        self._timeout = max_wait if max_wait is not None else timeout
        self._keys = keys or {}
        self._learning: dict[str, asyncio.Future[bool]] = {}

    async def _learn_budget(self, request: httpx.Request) -> bool:
        """Sends the status request (one at a time per URL): its token fields set the budget."""
        assert isinstance(self.tc, TrafficControl)  # a shared controller learns by itself
        status = _status_request(self.tc, request)
        if status is None:
            return False
        key = str(status.url)
        pending = self._learning.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._learning[key] = future
        try:
            response = await self.handle_async_request(status)
            await response.aread()
            await response.aclose()
            future.set_result(response.status_code < 400)
        except Exception:
            future.set_result(False)
        finally:
            del self._learning[key]
        return future.result()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        tc = self.tc
        if isinstance(tc, SharedTrafficControl):
            return await self._shared(tc, request)
        try:
            permit: AsyncPermit = await tc.acquire(**_options(request, self._priority, self._timeout))
        except Exception as e:
            # A budget nobody reported yet: learn it with the free status request, ask once more.
            if not _budget_unknown(e) or not await self._learn_budget(request):
                raise
            permit = await tc.acquire(**_options(request, self._priority, self._timeout))
        while True:
            _credentials(request, permit.key, self._keys)
            try:
                response, body = await _send_async(self._transport, request)
            except BaseException as e:
                # Cancelled: nothing is known of the server (breakers do not judge it); else no answer.
                tc._finish(permit.request, isinstance(e, asyncio.CancelledError))
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

    async def _shared(self, tc: SharedTrafficControl, request: httpx.Request) -> httpx.Response:
        """Through the shared store: a rate-limited answer is sent again on the retry's permit."""
        permit = await tc.acquire(**_shared_options(_options(request, self._priority, self._timeout)))
        while True:
            try:
                response, body = await _send_async(self._transport, request)
            except BaseException:
                await permit.complete()  # no response came
                raise
            completion = await permit.complete(response.status_code, response.headers.multi_items(), body)
            if completion.kind != "retry":
                return response
            if not _resendable(request):
                await completion.permit.complete()  # the retry will not be sent
                return response
            await response.aclose()
            permit = completion.permit

    async def aclose(self) -> None:
        await self._transport.aclose()


class TrafficControlTransport(httpx.BaseTransport):
    """An httpx transport (blocking, safe from many threads) that sends every request through
    ``tc``'s limits; see :class:`AsyncTrafficControlTransport`."""

    def __init__(
        self,
        tc: TrafficControl | SyncSharedTrafficControl,
        transport: httpx.BaseTransport | None = None,
        *,
        priority: Priority | int | str | None = None,
        max_wait: float | None = None,
        timeout: float | None = None,
        keys: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.tc = tc
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._priority = priority
        self._timeout = max_wait if max_wait is not None else timeout
        self._keys = keys or {}
        self._learning = threading.Lock()
        self._learnt = 0

    def _learn_budget(self, request: httpx.Request) -> bool:
        """Sends the status request (one thread at a time): its token fields set the budget."""
        assert isinstance(self.tc, TrafficControl)  # a shared controller learns by itself
        status = _status_request(self.tc, request)
        if status is None:
            return False
        generation = self._learnt
        with self._learning:
            if self._learnt != generation:
                return True  # another thread learnt it while this one waited for the lock
            try:
                response = self.handle_request(status)
                response.read()
                response.close()
            except Exception:
                return False
            self._learnt += 1
            return response.status_code < 400

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        tc = self.tc
        if isinstance(tc, SyncSharedTrafficControl):
            return self._shared(tc, request)
        try:
            permit: SyncPermit = tc.acquire_sync(**_options(request, self._priority, self._timeout))
        except Exception as e:
            # A budget nobody reported yet: learn it with the free status request, ask once more.
            if not _budget_unknown(e) or not self._learn_budget(request):
                raise
            permit = tc.acquire_sync(**_options(request, self._priority, self._timeout))
        while True:
            _credentials(request, permit.key, self._keys)
            try:
                response, body = _send_sync(self._transport, request)
            except BaseException as e:
                # Cancelled: nothing is known of the server (breakers do not judge it); else no answer.
                tc._finish(permit.request, isinstance(e, asyncio.CancelledError))
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

    def _shared(self, tc: SyncSharedTrafficControl, request: httpx.Request) -> httpx.Response:
        """Through the shared store: a rate-limited answer is sent again on the retry's permit."""
        permit = tc.acquire(**_shared_options(_options(request, self._priority, self._timeout)))
        while True:
            try:
                response, body = _send_sync(self._transport, request)
            except BaseException:
                permit.complete()  # no response came
                raise
            completion = permit.complete(response.status_code, response.headers.multi_items(), body)
            if completion.kind != "retry":
                return response
            if not _resendable(request):
                completion.permit.complete()  # the retry will not be sent
                return response
            response.close()
            permit = completion.permit

    def close(self) -> None:
        self._transport.close()
