"""`emergency-stop` and `start --all`: the seeds' emergency procedure as two commands.

emergency-stop: halt trading at once (open orders cancelled, no drain wait), capture an incident
for each managed component, stop them in reverse dependency order (SIGKILL after grace), and
return the last lines of each component's log. The agent keeps running; every component stays
stopped by the operator (nothing restarts by itself).

start --all: the staged start, in dependency order, each gated on readiness (databases and caches
first, then the app); every engine is halted again as soon as it is ready, so trading stays
halted until `chimera-ops resume-trading`. It holds the procedure lock (its first step), as a
safe restart does; `procedure abort` ends it at the next step with trading halted.
emergency-stop does not wait for the lock: it is the brake, and it must work while another
procedure holds it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from chimera_ops.ops.procedures.plan import ALIVE, runbook_for
from chimera_ops.ops.procedures.steps import (
    Aborted,
    Outcome,
    Stack,
    StepFailed,
    Steps,
    aborted,
)

TAIL_LINES = 100


@dataclass(frozen=True)
class EmergencyParams:
    reason: str = "emergency stop"


@dataclass(frozen=True)
class StagedStartParams:
    reason: str = "staged start"
    ready_timeout: float = 120.0
    timeout: float = 600.0


async def run_emergency_stop(stack: Stack, steps: Steps, params: EmergencyParams) -> Outcome:
    """Halt, capture, stop everything managed; the log tails in the outcome."""
    reason = params.reason
    managed = [n for n in stack.order if stack.is_managed(n)]
    alive = [n for n in stack.order if stack.component_state(n)[0] in ALIVE]

    async def halt() -> str:
        rows = await stack.halt(f"{reason}: emergency stop")
        return "; ".join(
            f"{r.get('component')}: {r.get('trading') or 'unreachable'}"
            + (f" ({r['error']})" if r.get("error") else "")
            for r in rows
        )

    if any(stack.is_engine(n) for n in alive):
        # An unreachable engine must not stop the emergency stop; the step says so.
        with contextlib.suppress(StepFailed):
            await steps.run("halt trading (cancel open orders)", halt)
    else:
        steps.note("halt trading (cancel open orders)", "no running trading component")

    async def capture() -> str:
        saved = []
        for name in managed:
            if name in alive:
                path = await stack.capture(name, reason)
                if path:
                    saved.append(f"{name}: {path}")
        return "; ".join(saved) or "nothing running to capture"

    await steps.run("capture incidents", capture)

    async def stop() -> str:
        for name in reversed(managed):
            await stack.stop(name, f"{reason}: stopped by the operator")
        return "stopped (in this order): " + ", ".join(reversed(managed))

    await steps.run("stop in reverse dependency order", stop)
    tails = {name: await stack.log_tail(name, TAIL_LINES) for name in managed}
    return Outcome(
        "succeeded",
        "stopped; nothing restarts by itself; `chimera-ops start --all` for the staged start",
        {"log_tails": tails},
    )


async def run_staged_start(stack: Stack, steps: Steps, params: StagedStartParams) -> Outcome:
    """Start everything in dependency order, each gated on readiness; trading stays halted."""
    deadline = time.monotonic() + params.timeout
    try:
        await steps.run("lock", lambda: stack.acquire_lock("staged-start", steps.job))
    except StepFailed as exc:
        return Outcome("failed", f"nothing was started: {exc}", {"reason": str(exc)})
    for name in stack.order:
        if not stack.is_managed(name):

            async def check(n: str = name) -> str:
                state, why = stack.component_state(n)
                if state != "running":
                    raise StepFailed(f"{n} is {state}: {why}")
                return f"{n} running"

            try:
                await steps.run(f"check {name}", check)
            except Aborted as exc:
                return _aborted(exc)
            except StepFailed as exc:
                return _not_ready(stack, steps, name, str(exc))
            continue

        async def start(n: str = name) -> str:
            await stack.start(n, f"{params.reason}: started")
            left = max(1.0, deadline - time.monotonic())
            ready, why = await stack.wait_ready(n, min(params.ready_timeout, left))
            if not ready:
                raise StepFailed(f"{n} not ready: {why}")
            if stack.is_engine(n):
                await stack.halt(f"{params.reason}: trading stays halted until resume-trading")
                return f"{n} ready; trading halted"
            return f"{n} ready"

        try:
            await steps.run(f"start {name}", start)
        except Aborted as exc:
            return _aborted(exc)
        except StepFailed as exc:
            return _not_ready(stack, steps, name, str(exc))
    return Outcome(
        "succeeded",
        "every component running; trading is HALTED until `chimera-ops resume-trading`",
    )


def _aborted(exc: Aborted) -> Outcome:
    return aborted(
        exc,
        "trading stays HALTED: `chimera-ops start --all` to finish the start, then "
        "`chimera-ops resume-trading`",
    )


def _not_ready(stack: Stack, steps: Steps, name: str, why: str) -> Outcome:
    runbook = runbook_for(name)
    message = f"staged start stopped at {name} ({why}); follow {runbook}"
    stack.alert(f"procedure:{steps.job}", name, message)
    return Outcome("failed", message, {"component": name, "reason": why, "runbook": runbook})
