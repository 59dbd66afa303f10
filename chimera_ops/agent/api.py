"""Control API (Starlette): status, start / stop / restart, events, the agent's own health, /metrics.

Served on a 0600 unix socket (full access: the file mode is the authentication) and, when
`agent.metrics.listen` is set, on loopback TCP where only read-only routes exist unless a bearer
token (`agent.api.token_env`) is configured and presented.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.agent.procedure_api import procedure_routes
from chimera_ops.agent.trading_api import trading_routes
from chimera_ops.config import UnknownComponent
from chimera_ops.states import State

if TYPE_CHECKING:
    from chimera_ops.agent.unit import Unit
    from chimera_ops.agent.view import AgentView

API_PREFIX = "/v1"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


SETTLED = {State.RUNNING, State.FATAL, State.BACKOFF, State.EXITED, State.UNHEALTHY}


def _wait_timeout(request: Request) -> float:
    try:
        return max(0.0, min(300.0, float(request.query_params.get("wait", "30"))))
    except ValueError:
        return 30.0


async def _settle(unit: Unit, timeout: float) -> None:
    """Wait until a started component is running (or failed), so the answer tells the outcome."""
    deadline = time.monotonic() + timeout
    while unit.state not in SETTLED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def build_app(agent: AgentView, tcp: bool = False) -> Starlette:
    """The API app; `tcp=True` builds the loopback variant (mutations need the token)."""
    token_env = agent.config.agent.api.token_env
    token = os.environ.get(token_env) if token_env else None

    def authorised(request: Request) -> bool:
        if not tcp:
            return True
        if not token:
            return False
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header, f"Bearer {token}")

    async def status(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(agent.status))

    async def health(request: Request) -> Response:
        lag = time.time() - agent.last_tick if agent.last_tick else None
        tick = agent.config.agent.tick
        # Ticks come at least every `tick`; three missed ones mean the loop is stuck.
        healthy = lag is not None and lag < max(3 * tick, 5.0)
        body = {
            "healthy": healthy,
            "pid": os.getpid(),
            "last_tick_age_s": lag,
            "tick_lag_s": agent.tick_lag,
            "uptime_s": time.time() - agent.started_at,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        if agent.watcher is not None:
            # Sampled per scrape, not on a timer: an unscraped agent does no /proc walks.
            await agent.watcher.sample_rss()
        if agent.store is not None and agent.config.backup is not None:
            from chimera_ops.agent.backup_metrics import export_backup_figures

            export_backup_figures(agent.config, agent.store, agent.metrics)
        if agent.store is not None:
            from chimera_ops.agent.maintenance_metrics import export_maintenance_figures

            export_maintenance_figures(agent.store, agent.metrics)
        return Response(agent.metrics.render(), media_type="text/plain; version=0.0.4")

    async def events(request: Request) -> Response:
        assert agent.store is not None
        component = request.query_params.get("component")
        if component:
            try:
                agent.unit(component)
            except UnknownComponent as exc:
                return _error(404, str(exc), known=exc.known)
        since_raw = request.query_params.get("since")
        try:
            since = float(since_raw) if since_raw else None
            limit = int(request.query_params.get("limit", "1000"))
        except ValueError:
            return _error(400, "'since' is a unix time and 'limit' an integer")
        found = agent.store.events(component=component, since=since, limit=limit)
        return JSONResponse({"events": [e.to_dict() for e in found]})

    async def action(request: Request) -> Response:
        if not authorised(request):
            return _error(
                401, "this listener needs 'Authorization: Bearer <token>' to change state"
            )
        name = request.path_params["name"]
        verb = request.path_params["verb"]
        try:
            unit = agent.unit(name)
        except UnknownComponent as exc:
            return _error(404, str(exc), known=exc.known)
        if not unit.managed:
            return _error(
                409,
                f"{name!r} is an external component: chimera-ops watches it and never starts, "
                f"stops or restarts it; act on the service itself, then `chimera-ops probe {name}`",
            )
        reason = f"operator {verb}"
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return _error(400, 'the body must be JSON, e.g. {"reason": "..."}')
        if isinstance(body, dict) and isinstance(body.get("reason"), str) and body["reason"]:
            reason = f"operator {verb}: {body['reason']}"
        started = time.monotonic()
        if verb == "start":
            await unit.start(reason)
        elif verb == "stop":
            await unit.stop(reason)
        elif verb == "restart":
            await agent.restart(name, reason)
        else:
            return _error(404, f"unknown action {verb!r}; use start, stop or restart")
        if verb in ("start", "restart"):
            await _settle(unit, timeout=_wait_timeout(request))
        assert agent.store is not None
        agent.store.audit(
            verb,
            {"component": name},
            reason=reason,
            result=str(unit.state),
            duration_s=time.monotonic() - started,
        )
        return JSONResponse(
            {"component": name, "action": verb, "state": str(unit.state), "reason": unit.reason}
        )

    routes = [
        Route(f"{API_PREFIX}/status", status),
        Route(f"{API_PREFIX}/health", health),
        Route(f"{API_PREFIX}/events", events),
        Route(f"{API_PREFIX}/components/{{name}}/{{verb}}", action, methods=["POST"]),
        Route("/metrics", metrics),
        *trading_routes(agent, authorised),
        *procedure_routes(agent, tcp=tcp),
    ]
    return Starlette(routes=routes)
