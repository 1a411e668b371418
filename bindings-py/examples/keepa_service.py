"""An example FastAPI service that calls Keepa through traffic_control's httpx transport.

``GET /api/v1/products/discover?category=...&asins=A,B&max_wait=2`` reads a category's bestsellers
(50 tokens) and/or products (1 token per ASIN) from Keepa. Every call goes through the token budget:
it waits for refill when refill comes within ``max_wait`` seconds, and otherwise the service answers
503 with ``Retry-After`` at once, never a 429 from Keepa.

Run it (needs ``pip install traffic-control[httpx] fastapi uvicorn``)::

    KEEPA_KEY=... uvicorn keepa_service:app          # against api.keepa.com
    KEEPA_BASE_URL=http://127.0.0.1:8001 ...          # against a mock

The tests drive ``create_app`` through ``httpx.ASGITransport`` against a mock Keepa server.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import httpx
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from traffic_control import (
    AsyncTrafficControlTransport,
    DeadlineError,
    InsufficientBudgetError,
    NeverSucceedsError,
    QueueFullError,
    TrafficControl,
    TrafficControlError,
)


def create_app(
    keepa_url: str = "https://api.keepa.com",
    key: str = "",
    tc: TrafficControl | None = None,
    max_wait: float = 2.0,
) -> FastAPI:
    """The service. ``tc`` defaults to the ``keepa`` preset with overrides from the environment
    (``KEEPA_RATE_LIMIT_TOKENS_REFILL``, ``..._FLOOR``, ...)."""
    controller = tc if tc is not None else TrafficControl("keepa")
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        transport = AsyncTrafficControlTransport(controller)
        async with httpx.AsyncClient(transport=transport, base_url=keepa_url, timeout=30) as client:
            state["keepa"] = client
            # /token costs nothing: it tells the budget its balance before anything costly goes.
            (await client.get("/token", params={"key": key})).raise_for_status()
            yield

    app = FastAPI(title="Keepa discovery (traffic-control example)", lifespan=lifespan)

    async def keepa(path: str, params: dict[str, str], wait: float) -> dict[str, Any]:
        response = await state["keepa"].get(
            path, params={"key": key, **params}, extensions={"traffic_control": {"timeout": wait}}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    @app.exception_handler(TrafficControlError)
    async def refused(request: Any, error: TrafficControlError) -> JSONResponse:
        # The library's errors, mapped: work that cannot be afforded or scheduled within its wait is
        # a 503 with Retry-After; a request that can never go is the caller's mistake (400).
        status = 400 if isinstance(error, NeverSucceedsError) else 503
        headers = {}
        if isinstance(error, (InsufficientBudgetError, DeadlineError, QueueFullError)):
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                headers["Retry-After"] = str(max(1, round(retry_after)))
        content = {"error": error.code, "detail": str(error), "retry_after": getattr(error, "retry_after", None)}
        return JSONResponse(status_code=status, content=content, headers=headers)

    @app.get("/api/v1/products/discover")
    async def discover(
        category: Optional[str] = None,
        asins: Optional[str] = None,
        limit: int = Query(5, ge=1, le=100),
        max_wait: float = Query(max_wait, ge=0),
    ) -> dict[str, Any]:
        found: list[str] = []
        if category is not None:
            best = await keepa("/bestsellers", {"domain": "1", "category": category}, max_wait)
            found += best["bestSellersList"]["asinList"][:limit]
        if asins:
            found += [a for a in asins.split(",") if a]
        if not found:
            return {"products": [], "tokens_left": None}
        products = await keepa("/product", {"domain": "1", "asin": ",".join(found)}, max_wait)
        return {"products": products["products"], "tokens_left": products["tokensLeft"]}

    @app.get("/api/v1/limits")
    async def limits() -> dict[str, Any]:
        return dict(controller.snapshot())

    return app


app = create_app(os.environ.get("KEEPA_BASE_URL", "https://api.keepa.com"), os.environ.get("KEEPA_KEY", ""))
