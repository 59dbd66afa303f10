"""Agent API routes of the procedures: start one (unix socket only), list and follow them.

The journal is read off the event loop (`agent/reads.py`); the list is paged (`limit`, at most
`MAX_PAGE`, and the `before` cursor the previous page's `next` gives).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chimera_ops.agent.api_guard import ApiError, check_type, json_object, page_limit
from chimera_ops.agent.jobs import JobBusy
from chimera_ops.ops.procedures.journal import Journal, config_secrets

if TYPE_CHECKING:
    from chimera_ops.agent.reads import StoreReads
    from chimera_ops.agent.view import AgentView
    from chimera_ops.store import Store

API_PREFIX = "/v1"
DEFAULT_PAGE = 50
MAX_PAGE = 200  # a procedure's result holds log tails: a page stays well under a megabyte

_BODY: dict[str, type | tuple[type, ...]] = {"kind": str, "params": dict, "user": str}
# What the procedures read from `params` (agent/jobs.py), each with its JSON type.
_PARAMS: dict[str, type | tuple[type, ...]] = {
    "reason": str,
    "components": list,
    "no_backup": bool,
    "dry_run": bool,
    "timeout": (int, float),
    "settle": (int, float),
}


def _params(raw: dict[str, Any] | None) -> dict[str, Any]:
    params = dict(raw or {})
    for key, value in params.items():
        if key not in _PARAMS:
            raise ApiError(
                f"unknown parameter 'params.{key}'; known: {', '.join(_PARAMS)}",
                field=f"params.{key}",
            )
        check_type(value, _PARAMS[key], f"params.{key}")
    for name in params.get("components") or []:
        check_type(name, str, "params.components[]")
    return params


def procedure_routes(
    agent: AgentView,
    tcp: bool,
    reads: StoreReads,
    authorised: Callable[[Request], bool] | None = None,
) -> list[Route]:
    """`POST /v1/procedures` {kind, params, user} -> 202 {id}; `GET /v1/procedures[/{id}]`.

    Reads over TCP need the API token (`authorised`): a journal quotes commands and their
    output, redacted (`Journal`) but still more than a metrics scraper should see.
    """
    secret_values = config_secrets(agent.config)  # once: the journal removes them verbatim

    def refused(request: Request) -> Response | None:
        if not tcp or (authorised is not None and authorised(request)):
            return None
        return JSONResponse(
            {"error": "this listener needs 'Authorization: Bearer <token>' to read procedures"},
            status_code=401,
        )

    async def start(request: Request) -> Response:
        if tcp:  # the loopback listener serves reads; procedures change the whole stack
            return JSONResponse(
                {"error": "procedures start only over the agent's unix socket"}, status_code=403
            )
        assert agent.jobs is not None
        body = await json_object(request, _BODY, required=("kind",))
        try:
            job = agent.jobs.begin(body["kind"], _params(body.get("params")), body.get("user"))
        except JobBusy as exc:
            return JSONResponse({"error": str(exc), "running": exc.job}, status_code=409)
        except KeyError as exc:
            return JSONResponse(
                {"error": f"unknown component {exc.args[0]!r}", "known": list(agent.order)},
                status_code=404,
            )
        except ValueError as exc:
            return JSONResponse({"error": f"field 'kind': {exc}", "field": "kind"}, 400)
        return JSONResponse({"id": job}, status_code=202)

    async def listing(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        limit = page_limit(request, DEFAULT_PAGE, MAX_PAGE)
        before = request.query_params.get("before") or None

        def query(store: Store) -> dict[str, Any]:
            journal = Journal(store, secret_values)
            if before is not None and journal.get(before) is None:
                raise ApiError(f"'before' names no procedure: {before!r}", field="before")
            rows, more = journal.page(limit, before)
            cursor = {"before": rows[-1]["id"]} if more else None
            return {"procedures": rows, "limit": limit, "next": cursor}

        return await reads.json(query)

    async def show(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        ref = request.path_params["job"]

        def query(store: Store) -> dict[str, Any]:
            journal = Journal(store, secret_values)
            doc = journal.get(ref)
            if doc is None:
                matches = journal.ids_like(ref, limit=2)
                doc = journal.get(matches[0]) if len(matches) == 1 else None
            if doc is None:
                known = [j["id"] for j in journal.page(10)[0]]
                raise ApiError(f"no procedure {ref!r}", status=404, known=known)
            return doc

        return await reads.json(query)

    async def abort(request: Request) -> Response:
        """`POST /v1/procedures/{id}/abort` {user, reason}: end the running job at its next
        step boundary (unix socket only, as starting one is). 409 when it is not running."""
        if tcp:
            return JSONResponse(
                {"error": "procedures are aborted only over the agent's unix socket"},
                status_code=403,
            )
        assert agent.jobs is not None
        body = await json_object(request, {"user": str, "reason": str})
        ref, running = request.path_params["job"], agent.jobs.current
        job = running if running is not None and running.startswith(ref) else ref
        try:
            answer = agent.jobs.abort(job, body.get("user"), body.get("reason"))
        except KeyError:
            what = f"procedure {running} is" if running else "no procedure is"
            return JSONResponse(
                {"error": f"{ref!r} is not running ({what} running): nothing to abort"},
                status_code=409,
            )
        return JSONResponse(answer, status_code=202)

    return [
        Route(f"{API_PREFIX}/procedures/{{job}}/abort", abort, methods=["POST"]),
        Route(f"{API_PREFIX}/procedures", start, methods=["POST"]),
        Route(f"{API_PREFIX}/procedures", listing, methods=["GET"]),
        Route(f"{API_PREFIX}/procedures/{{job}}", show, methods=["GET"]),
    ]
