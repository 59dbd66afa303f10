"""Agent API routes of the procedures: start one (unix socket only), list and follow them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.agent.jobs import JobBusy

if TYPE_CHECKING:
    from chimera_ops.agent.view import AgentView

API_PREFIX = "/v1"


def procedure_routes(agent: AgentView, tcp: bool) -> list[Route]:
    """`POST /v1/procedures` {kind, params, user} -> 202 {id}; `GET /v1/procedures[/{id}]`."""

    async def start(request: Request) -> Response:
        if tcp:  # the loopback listener serves reads; procedures change the whole stack
            return JSONResponse(
                {"error": "procedures start only over the agent's unix socket"}, status_code=403
            )
        assert agent.jobs is not None
        try:
            body: dict[str, Any] = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        try:
            job = agent.jobs.begin(
                str(body.get("kind")), dict(body.get("params") or {}), body.get("user")
            )
        except JobBusy as exc:
            return JSONResponse({"error": str(exc), "running": exc.job}, status_code=409)
        except KeyError as exc:
            return JSONResponse(
                {"error": f"unknown component {exc.args[0]!r}", "known": list(agent.order)},
                status_code=404,
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"id": job}, status_code=202)

    async def listing(request: Request) -> Response:
        assert agent.jobs is not None
        limit = int(request.query_params.get("limit", "50"))
        return JSONResponse({"procedures": agent.jobs.journal.recent(limit)})

    async def show(request: Request) -> Response:
        assert agent.jobs is not None
        ref = request.path_params["job"]
        doc = agent.jobs.journal.get(ref)
        if doc is None:
            matches = agent.jobs.journal.ids_like(ref)
            doc = agent.jobs.journal.get(matches[0]) if len(matches) == 1 else None
        if doc is None:
            known = [j["id"] for j in agent.jobs.journal.recent(10)]
            return JSONResponse({"error": f"no procedure {ref!r}", "known": known}, 404)
        return JSONResponse(doc)

    return [
        Route(f"{API_PREFIX}/procedures", start, methods=["POST"]),
        Route(f"{API_PREFIX}/procedures", listing, methods=["GET"]),
        Route(f"{API_PREFIX}/procedures/{{job}}", show, methods=["GET"]),
    ]
