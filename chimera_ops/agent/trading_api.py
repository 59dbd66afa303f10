"""Agent API routes of the trading control contract: state, halt and resume of every engine.

`GET /v1/trading`, `POST /v1/trading/halt` `{"reason", "wait", "component", "user"}`,
`POST /v1/trading/resume` `{"reason", "component", "user"}`. Halt and resume are written to the
audit log with who asked (the CLI sends its user), why, the per-engine result and the duration.
Reads are not audited: a dashboard polling the state would bury the actions that matter.
Each halt and resume is also recorded as events (`trading`, `orders_cancelled`, `drained`:
`chimera_ops.trading.record_trading`) with who and why, so `events` shows trading changes.
A resume takes the procedure lock (`agent/action_lock.py`): never in the middle of a procedure;
a halt never waits for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.agent.api_guard import ApiError, json_object
from chimera_ops.trading_spec import TradingConfig

if TYPE_CHECKING:
    from chimera_ops.agent.view import AgentView

API_PREFIX = "/v1"
_FIELDS: dict[str, type] = {"reason": str, "wait": bool, "component": str, "user": str}


def _unix_socket_only(request: Request) -> bool:
    # uvicorn reports no client address for a unix-socket peer; the socket's 0600 mode is the
    # authentication there. Anything over TCP is refused unless the caller passes a check.
    return request.scope.get("client") is None


def trading_routes(
    agent: AgentView, authorised: Callable[[Request], bool] | None = None
) -> list[Route]:
    """The trading routes, bound to `agent`.

    `authorised` decides who may halt or resume; by default only unix-socket callers, so these
    routes are safe to mount on the loopback TCP app too.
    """
    allowed = authorised or _unix_socket_only

    def engines(component: str | None) -> dict[str, TradingConfig]:
        cfg = agent.config
        names = cfg.engines()
        if not names:
            raise ApiError(
                "no trading engine is configured (no component has a `trading:` section)",
                status=409,
            )
        configs = {n: t for n in names if (t := cfg.components[n].trading) is not None}
        if component is None:
            return configs
        if component not in cfg.components:
            raise ApiError(
                f"unknown component {component!r}", status=404, known=sorted(cfg.components)
            )
        if component not in names:
            raise ApiError(
                f"component {component!r} is not a trading engine", field="component", engines=names
            )
        return {component: configs[component]}

    async def state(request: Request) -> Response:
        targets = engines(request.query_params.get("component"))
        from chimera_ops.trading import run_on_engines  # httpx only when engines are asked

        asked = time.time()
        rows = await run_on_engines(targets, "state")
        if agent.watcher is not None:  # a fresh answer: status shows it, not an older poll
            agent.watcher.note_trading(rows, asked)
        return JSONResponse({"via": "agent", "engines": rows, "ok": all(r["ok"] for r in rows)})

    async def act(request: Request, op: Literal["halt", "resume"]) -> Response:
        if not allowed(request):
            return JSONResponse(
                {"error": "this listener needs 'Authorization: Bearer <token>' to change state"},
                status_code=401,
            )
        started = time.monotonic()
        body = await json_object(request, _FIELDS)
        targets = engines(body.get("component"))
        user = body.get("user") or None
        reason = (body.get("reason") or "").strip() or f"{op} through the agent API"
        wait = bool(body.get("wait")) and op == "halt"
        from chimera_ops.trading import run_on_engines, summarize

        asked = time.time()
        rows = await run_on_engines(targets, op, reason, wait)
        if agent.watcher is not None:  # status shows the halt at once, not the last poll
            agent.watcher.note_trading(rows, asked)
        duration = time.monotonic() - started
        assert agent.store is not None
        from chimera_ops.trading import record_trading

        record_trading(agent.store.add_event, op, rows, user or "unknown", reason, via="agent")
        ok = all(r["ok"] for r in rows)
        assert agent.store is not None
        agent.store.audit(
            f"{op}-trading",
            {"components": list(targets), "wait": wait, "via": "agent", "pid": os.getpid()},
            reason=reason,
            result=("ok: " if ok else "FAILED: ") + summarize(rows),
            duration_s=duration,
            user=user,
        )
        if ok and op == "resume" and agent.jobs is not None:
            agent.jobs.acknowledge()  # an operator resumed: an interrupted job is answered
        return JSONResponse(
            {
                "via": "agent",
                "action": op,
                "reason": reason,
                "wait": wait,
                "ok": ok,
                "engines": rows,
            }
        )

    async def halt(request: Request) -> Response:
        return await act(request, "halt")

    async def resume(request: Request) -> Response:
        return await act(request, "resume")

    from chimera_ops.agent.action_lock import locked

    locked_resume = locked(agent, resume, lambda request: "resume-trading", allowed)

    return [
        Route(f"{API_PREFIX}/trading", state, methods=["GET"]),
        Route(f"{API_PREFIX}/trading/halt", halt, methods=["POST"]),
        Route(f"{API_PREFIX}/trading/resume", locked_resume, methods=["POST"]),
    ]
