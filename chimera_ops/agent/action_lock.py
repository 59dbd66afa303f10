"""The procedure lock around the API's plain actions (issue 20, item 3).

`start`/`stop`/`restart` of one component and `resume` of trading change the stack as a
procedure does, so they take the same stack-wide lock (`JobRunner.hold`) for as long as they
run: one issued during a `restart --safe`, a restore or a maintenance fix is refused with 423,
naming the holder and how to end it; a lock that cannot be read is refused with 503 (fail
closed). A halt never waits for the lock: it is the brake, and a halt during a procedure only
makes trading safer (the procedure resumes only on a healthy stack).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from chimera_ops.agent.view import AgentView

Handler = Callable[[Request], Awaitable[Response]]


def locked(
    agent: AgentView,
    handler: Handler,
    what: Callable[[Request], str],
    authorised: Callable[[Request], bool],
) -> Handler:
    """`handler` run under the procedure lock; a caller the handler would refuse anyway (no
    token on TCP) is passed straight to it, so it never holds the lock."""

    async def run(request: Request) -> Response:
        if agent.jobs is None or not authorised(request):
            return await handler(request)
        from chimera_ops.agent.jobs import lock_refusal
        from chimera_ops.ops.proclock import LockHeld, LockUnreadable

        try:
            async with agent.jobs.hold(what(request), None):
                return await handler(request)
        except (LockHeld, LockUnreadable) as exc:
            raise lock_refusal(exc) from None

    return run
