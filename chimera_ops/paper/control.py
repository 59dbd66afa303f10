"""The trading control contract: GET /control/state, POST /control/halt, POST /control/resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chimera_ops.paper.engine import Engine
from chimera_ops.paper.httputil import HttpError, check_token, json_object

MAX_REASON = 500


def _reason(body: dict[str, object]) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise HttpError(400, "field 'reason' is required and must be a non-empty string")
    if len(reason) > MAX_REASON:
        raise HttpError(400, f"field 'reason' is longer than {MAX_REASON} characters")
    return reason.strip()


def control_routes(engine: Engine) -> list[Route]:
    """Routes of the control contract, bound to ``engine``."""
    token = engine.cfg.control_token

    async def state(request: Request) -> JSONResponse:
        check_token(request, token)
        return JSONResponse(engine.state())

    async def halt(request: Request) -> JSONResponse:
        # Auth first: an unauthenticated caller learns nothing about body validation.
        check_token(request, token)
        body = await json_object(request, {"reason": str, "cancel_open_orders": bool})
        reason = _reason(body)
        cancel = bool(body.get("cancel_open_orders", True))
        return JSONResponse(await engine.halt(reason, cancel))

    async def resume(request: Request) -> JSONResponse:
        check_token(request, token)
        body = await json_object(request, {"reason": str})
        if engine.stopping:
            raise HttpError(409, "engine is shutting down")
        return JSONResponse(await engine.resume(_reason(body)))

    return [
        Route("/control/state", state, methods=["GET"]),
        Route("/control/halt", halt, methods=["POST"]),
        Route("/control/resume", resume, methods=["POST"]),
    ]
