"""The engine's HTTP surface: health, metrics, read-only views, control and (opt-in) faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.paper.control import control_routes
from chimera_ops.paper.engine import Engine
from chimera_ops.paper.faults import FaultInjector, fault_routes
from chimera_ops.paper.httputil import HttpError, error_response

log = logging.getLogger("chimera.paper.http")


def _symbol_arg(engine: Engine, request: Request) -> str | None:
    symbol = request.query_params.get("symbol")
    if symbol is None:
        return None
    if symbol not in engine.cfg.symbols:
        raise HttpError(400, f"unknown symbol {symbol!r}; known: {', '.join(engine.cfg.symbols)}")
    return symbol


def build_app(engine: Engine) -> Starlette:
    """Assemble the Starlette app for ``engine``."""

    async def health(request: Request) -> JSONResponse:
        if engine.health_delay > 0:
            await asyncio.sleep(engine.health_delay)
        healthy, doc = engine.health()
        return JSONResponse(doc, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def prices(request: Request) -> JSONResponse:
        symbol = _symbol_arg(engine, request)
        data = engine.feed.prices()
        return JSONResponse({symbol: data[symbol]} if symbol else data)

    async def positions(request: Request) -> JSONResponse:
        # Positions as committed to PostgreSQL (fills count once committed).
        symbol = _symbol_arg(engine, request)
        data = {s: engine.positions.get(s, 0) for s in engine.cfg.symbols}
        return JSONResponse({symbol: data[symbol]} if symbol else data)

    async def orders(request: Request) -> JSONResponse:
        symbol = _symbol_arg(engine, request)
        return JSONResponse(
            [
                {
                    "order_id": o.order_id,
                    "symbol": o.symbol,
                    "side": o.side,
                    "price": o.price,
                    "qty": o.qty,
                }
                for o in engine.book.open_orders(symbol)
            ]
        )

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/prices", prices, methods=["GET"]),
        Route("/positions", positions, methods=["GET"]),
        Route("/orders", orders, methods=["GET"]),
        *control_routes(engine),
    ]
    if engine.cfg.faults:
        routes += fault_routes(engine, FaultInjector(engine))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return error_response(exc.status, exc.message)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail))

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        HttpError: on_http_error,
        HTTPException: on_starlette_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
