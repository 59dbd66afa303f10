"""Control API (Starlette): status, start / stop / restart, events, the agent's own health, /metrics.

Served on a 0600 unix socket (full access: the file mode is the authentication) and, when
`agent.metrics.listen` is set, on loopback TCP where only read-only routes exist unless a bearer
token (`agent.api.token_env`) is configured and presented.

Nothing slow runs on the event loop: store reads and the JSON of their answers run in a small
pool per listener (`agent/reads.py`), every list is paged (a capped `limit` and an id cursor),
bodies are capped at 1 MiB and malformed input gets a 400 naming the field
(`agent/api_guard.py`), and `server_options` keeps a flood of connections cheap.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.agent.action_lock import locked
from chimera_ops.agent.api_guard import (
    ApiError,
    BodyCap,
    api_error_handler,
    json_object,
    page_limit,
    query_float,
    query_int,
)
from chimera_ops.agent.procedure_api import procedure_routes
from chimera_ops.agent.reads import StoreReads
from chimera_ops.agent.trading_api import trading_routes
from chimera_ops.config import UnknownComponent
from chimera_ops.states import State

if TYPE_CHECKING:
    from chimera_ops.agent.engine_halt import EngineHalt
    from chimera_ops.agent.maintenance_metrics import MaintenanceFigures
    from chimera_ops.agent.unit import Unit
    from chimera_ops.agent.view import AgentView
    from chimera_ops.ops.backup.catalog import BackupFigures
    from chimera_ops.store import Store

API_PREFIX = "/v1"
DEFAULT_PAGE = 200
MAX_PAGE = 1000


def server_options(tcp: bool) -> dict[str, Any]:
    """uvicorn settings of a listener: a flood of connections stays cheap and bounded.

    Beyond `limit_concurrency` open connections a request is answered 503 at once; headers
    are refused past 16 KiB (h11, named so that an installed httptools, which has no such
    cap, is not picked instead); an idle keep-alive connection is closed after 5 s; no
    WebSocket upgrades. The unix socket has its own server and limit, so a TCP flood never
    locks the operator out.
    """
    return {
        "http": "h11",
        "ws": "none",
        "limit_concurrency": 32 if tcp else 64,
        "h11_max_incomplete_event_size": 16 * 1024,
        "timeout_keep_alive": 5,
        "backlog": 64,
    }


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


SETTLED = {State.RUNNING, State.FATAL, State.BACKOFF, State.EXITED, State.UNHEALTHY}


def _action_name(request: Request) -> str:
    """What a component action is, as the procedure lock names its holder."""
    return f"{request.path_params['verb']} {request.path_params['name']}"


def _wait_timeout(request: Request) -> float:
    wait = query_float(request, "wait", 30.0)
    assert wait is not None
    return max(0.0, min(300.0, wait))


async def _settle(unit: Unit, timeout: float) -> None:
    """Wait until a started component is running (or failed), so the answer tells the outcome."""
    deadline = time.monotonic() + timeout
    while unit.state not in SETTLED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _halt_before(agent: AgentView, unit: Unit, verb: str, reason: str) -> EngineHalt | None:
    """An engine about to be stopped or restarted is halted first (its open orders cancelled
    and counted), so what the stop does to trading is said, not silent. None when the unit is
    not an engine, the verb is a start, or nothing runs to halt."""
    from chimera_ops.agent.engine_halt import DOWN, halt_engines

    trading = unit.config.trading
    if trading is None or verb == "start" or unit.state in DOWN:
        return None
    [halt] = await halt_engines({unit.name: trading}, reason, agent.store)
    return halt


async def _after_restart(
    agent: AgentView, unit: Unit, verb: str, halt: EngineHalt | None
) -> dict[str, Any] | None:
    """The `trading` part of the answer. An engine that traded before a plain restart and is
    back `running` resumes (the halt was only for the restart); one that is not running, or was
    halted before, stays halted, and the answer says so."""
    if halt is None:
        return None
    doc: dict[str, Any] = halt.to_dict() | {"resumed": False, "resume_error": None}
    trading = unit.config.trading
    if verb == "restart" and halt.halted and halt.was == "active" and trading is not None:
        if unit.state is State.RUNNING:
            from chimera_ops.agent.engine_halt import resume_engine

            error = await resume_engine(
                unit.name, trading, "operator restart: back and ready", agent.store
            )
            doc.update(resumed=not error, resume_error=error or None)
        else:
            doc["resume_error"] = f"not resumed: {unit.name} is {unit.state} after the restart"
    return doc


def build_app(agent: AgentView, tcp: bool = False) -> Starlette:
    """The API app; `tcp=True` builds the loopback variant (mutations need the token)."""
    token_env = agent.config.agent.api.token_env
    token = os.environ.get(token_env) if token_env else None
    reads = StoreReads(agent.state_dir / "chimera.db")

    def authorised(request: Request) -> bool:
        if not tcp:
            return True
        if not token:
            return False
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header, f"Bearer {token}")

    async def status(request: Request) -> Response:
        body = await reads.run(lambda: json.dumps(agent.status()).encode())
        return Response(body, media_type="application/json")

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
            await agent.watcher.sample_rss(reads.run)
        from chimera_ops.agent.backup_metrics import apply_backup_figures
        from chimera_ops.agent.maintenance_metrics import (
            apply_maintenance_figures,
            read_maintenance_figures,
        )

        def query(store: Store) -> tuple[BackupFigures | None, MaintenanceFigures]:
            backup = None
            if agent.config.backup is not None:
                from chimera_ops.ops.backup.catalog import figures

                backup = figures(store)
            return backup, read_maintenance_figures(store)

        try:
            backup, maintenance = await reads.call(query)
        except ApiError:
            pass  # an unreadable store: the figures keep their last values, the rest renders
        else:
            if backup is not None:
                apply_backup_figures(agent.config, backup, agent.metrics)
            apply_maintenance_figures(maintenance, agent.metrics)
        return Response(agent.metrics.render(), media_type="text/plain; version=0.0.4")

    async def events(request: Request) -> Response:
        component = request.query_params.get("component") or None
        if component:
            try:
                agent.unit(component)
            except UnknownComponent as exc:
                return _error(404, str(exc), known=exc.known, field="component")
        since = query_float(request, "since")
        limit = page_limit(request, DEFAULT_PAGE, MAX_PAGE)
        before = query_int(request, "before", minimum=1)
        after = query_int(request, "after")
        if before is not None and after is not None:
            raise ApiError("give one cursor: 'before' or 'after', not both", field="after")

        def query(store: Store) -> dict[str, Any]:
            found, more = store.events_page(limit, component, since, before, after)
            cursor = None
            if more and after is not None:
                cursor = {"after": found[-1].id}
            elif more:
                cursor = {"before": found[0].id}
            return {"events": [e.to_dict() for e in found], "limit": limit, "next": cursor}

        return await reads.json(query)

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
        if verb not in ("start", "stop", "restart"):
            return _error(404, f"unknown action {verb!r}; use start, stop or restart")
        reason = f"operator {verb}"
        body = await json_object(request, {"reason": str})
        wait = _wait_timeout(request)
        if body.get("reason"):
            reason = f"operator {verb}: {body['reason']}"
        started = time.monotonic()
        halt = await _halt_before(agent, unit, verb, reason)
        if verb == "start":
            await unit.start(reason)
        elif verb == "stop":
            await unit.stop(reason)
        else:
            await agent.restart(name, reason)
        if verb in ("start", "restart"):
            await _settle(unit, timeout=wait)
        trading = await _after_restart(agent, unit, verb, halt)
        assert agent.store is not None
        agent.store.audit(
            verb,
            {"component": name},
            reason=reason,
            result=str(unit.state) + (f"; {halt.text()}" if halt is not None else ""),
            duration_s=time.monotonic() - started,
        )
        answer = {
            "component": name,
            "action": verb,
            "state": str(unit.state),
            "reason": unit.reason,
        }
        return JSONResponse(answer | ({"trading": trading} if trading is not None else {}))

    routes = [
        Route(f"{API_PREFIX}/status", status),
        Route(f"{API_PREFIX}/health", health),
        Route(f"{API_PREFIX}/events", events),
        Route(
            f"{API_PREFIX}/components/{{name}}/{{verb}}",
            # The procedure lock for as long as it runs: never in the middle of a procedure.
            locked(agent, action, _action_name, authorised),
            methods=["POST"],
        ),
        Route("/metrics", metrics),
        *trading_routes(agent, authorised),
        *procedure_routes(agent, tcp=tcp, reads=reads, authorised=authorised),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyCap)],
        exception_handlers={ApiError: api_error_handler},
    )
