"""`restart --safe`: halt, drain, back up, restart in order gated on readiness, settle, resume.

Trading is resumed only on a healthy stack. Before anything was stopped, a failure puts things
back (resume, nothing restarted: `aborted`); after, the stack is left halted with the component
that did not come back, its last reason and the runbook to follow (`failed`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from chimera_ops.ops.procedures.plan import first_unhealthy, restart_plan, runbook_for
from chimera_ops.ops.procedures.steps import Outcome, Stack, StepFailed, Steps

PROCEDURE = "safe-restart"
SETTLE_POLL = 0.25


@dataclass(frozen=True)
class SafeRestartParams:
    """What the operator asked for."""

    components: list[str] | None = None
    no_backup: bool = False
    dry_run: bool = False
    timeout: float = 600.0
    settle: float = 10.0
    ready_timeout: float = 120.0
    reason: str = "restart --safe"


def _rows_text(rows: list[dict[str, object]]) -> str:
    parts = []
    for row in rows:
        state = row.get("trading") or "?"
        extra = f", {row['open_orders']} open orders" if row.get("open_orders") is not None else ""
        error = f" ({row['error']})" if row.get("error") else ""
        parts.append(f"{row.get('component')}: {state}{extra}{error}")
    return "; ".join(parts) or "no engine"


async def run_safe_restart(stack: Stack, steps: Steps, params: SafeRestartParams) -> Outcome:
    """The whole procedure (see the module docstring)."""
    deadline = time.monotonic() + params.timeout
    managed = {n: stack.is_managed(n) for n in stack.order}
    plan = restart_plan(stack.order, managed, params.components)
    engines = [n for n in stack.order if stack.is_engine(n)]
    backup_wanted = stack.has_backup() and not params.no_backup

    async def preflight() -> str:
        problems = await stack.config_problems()
        if problems:
            raise StepFailed("the config does not validate: " + "; ".join(problems))
        if backup_wanted:
            room, why = await stack.disk_room()
            if not room:
                raise StepFailed(why + "; free space or pass --no-backup")
        holder = await stack.acquire_lock(PROCEDURE, steps.job)
        states = ", ".join(f"{n} {stack.component_state(n)[0]}" for n in stack.order)
        lines = [f"lock held: {holder}", f"now: {states}"]
        lines.append(
            ("halt trading on: " + ", ".join(engines)) if engines else "no trading component"
        )
        lines.append("back up: yes" if backup_wanted else "back up: no")
        lines += plan.describe()
        lines.append(f"settle {params.settle:g}s, then resume trading only if all are healthy")
        return " | ".join(lines)

    detail = await steps.run("preflight", preflight)
    if params.dry_run:
        return Outcome("planned", "dry run: nothing was changed", {"plan": detail.split(" | ")})

    reason = params.reason
    if engines:

        async def halt() -> str:
            rows = await stack.halt(f"{reason}: halted before the restart")
            bad = [r for r in rows if not r.get("ok")]
            if bad:
                raise StepFailed(f"halt failed: {_rows_text(bad)}")
            drained = await stack.drain()
            stuck = [r for r in drained if not r.get("ok")]
            if stuck:
                raise StepFailed(f"drain timeout: {_rows_text(stuck)}")
            return _rows_text(drained)

        try:
            await steps.run("halt trading and drain", halt)
        except StepFailed as exc:
            return await _abort(stack, steps, reason, str(exc))
    else:
        steps.note("halt trading and drain", "nothing to halt: no trading component")

    if backup_wanted:
        try:
            await steps.run("backup", lambda: stack.backup(f"{reason}: before the restart"))
        except StepFailed as exc:
            return await _abort(stack, steps, reason, f"backup failed: {exc}")
    else:
        why = "--no-backup" if params.no_backup else "no backup: section in the config"
        steps.note("backup", f"skipped ({why})")

    async def restart() -> str:
        for name in reversed(plan.restart):
            await stack.stop(name, f"{reason}: stopped")
        done = []
        for name in plan.restart:
            await stack.start(name, f"{reason}: started")
            left = max(1.0, deadline - time.monotonic())
            ready, why = await stack.wait_ready(name, min(params.ready_timeout, left))
            if not ready:
                raise _NotBack(name, why)
            if stack.is_engine(name):  # back up halted, whatever it remembered
                await stack.halt(f"{reason}: kept halted after its start")
            done.append(name)
        for name in plan.check:
            state, why = stack.component_state(name)
            if state != "running":
                raise _NotBack(name, f"{state}: {why}")
        return (
            "restarted: "
            + (", ".join(done) or "nothing")
            + (f"; checked: {', '.join(plan.check)}" if plan.check else "")
        )

    try:
        await steps.run("stop and start in dependency order", restart)
    except StepFailed as exc:
        return _after_stop_failure(stack, steps, exc)

    async def settle() -> str:
        until = time.monotonic() + params.settle
        while True:
            states = {n: stack.component_state(n) for n in stack.order}
            bad = first_unhealthy(states)
            if bad is not None:
                raise _NotBack(*bad)
            if time.monotonic() >= until:
                return f"every component running for {params.settle:g}s"
            await asyncio.sleep(SETTLE_POLL)

    try:
        await steps.run("settle", settle)
    except StepFailed as exc:
        return _after_stop_failure(stack, steps, exc)

    if engines:

        async def resume() -> str:
            rows = await stack.resume(f"{reason}: the stack is healthy")
            bad = [r for r in rows if not r.get("ok")]
            if bad:
                raise StepFailed(f"resume failed: {_rows_text(bad)}")
            return _rows_text(rows)

        await steps.run("resume trading", resume)
    else:
        steps.note("resume trading", "nothing to resume: no trading component")
    return Outcome("succeeded", "restarted; every component healthy; trading resumed")


class _NotBack(Exception):
    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"{name} is not healthy: {why}")


def _after_stop_failure(stack: Stack, steps: Steps, exc: StepFailed) -> Outcome:
    """Something went wrong once components were stopped: never resume; say who and why."""
    cause = exc.__cause__  # the step wrapper keeps the original exception as the cause
    if isinstance(cause, _NotBack):
        return _unhealthy(stack, steps, cause.name, cause.why)
    return _unhealthy(stack, steps, "the stack", str(exc))


async def _abort(stack: Stack, steps: Steps, reason: str, why: str) -> Outcome:
    """Before anything was stopped: resume trading, restart nothing."""

    async def resume() -> str:
        rows = await stack.resume(f"{reason}: aborted ({why})")
        return _rows_text(rows)

    try:
        resumed = await steps.run("resume trading (abort)", resume)
    except StepFailed as exc:
        resumed = f"resume FAILED: {exc}"
    return Outcome(
        "aborted",
        f"aborted: {why}; trading resumed, nothing was restarted",
        {"why": why, "resumed": resumed},
    )


def _unhealthy(stack: Stack, steps: Steps, name: str, why: str) -> Outcome:
    runbook = runbook_for(name)
    message = f"{name} did not come back healthy ({why}); trading stays HALTED; follow {runbook}"
    stack.alert(f"procedure:{steps.job}", name, message)
    return Outcome("failed", message, {"component": name, "reason": why, "runbook": runbook})
