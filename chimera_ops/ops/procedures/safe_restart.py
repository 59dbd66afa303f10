"""`restart --safe`: halt, drain, back up, restart in order gated on readiness, settle, resume.

Trading is resumed only on a healthy stack. Before anything was stopped, a failure puts things
back (resume, nothing restarted: `aborted`); after, the stack is left halted with the component
that did not come back, its last reason and the runbook to follow (`failed`). A `procedure
abort` ends it at the next step boundary the same way: resumed if nothing was stopped yet,
left halted otherwise.

Settle waits on evidence, not a clock: every component's liveness and readiness probes pass
`settle_passes` rounds in a row, run at the probes' fast start interval, within `settle` at
most. The outcome carries the summary: seconds halted, open orders the halt cancelled, each
step's seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from chimera_ops.ops.procedures.plan import (
    SettleEvidence,
    cancelled_by,
    first_unhealthy,
    halt_summary,
    restart_plan,
    runbook_for,
)
from chimera_ops.ops.procedures.steps import (
    Aborted,
    Outcome,
    Stack,
    StepFailed,
    Steps,
    aborted,
)

PROCEDURE = "safe-restart"


@dataclass(frozen=True)
class SafeRestartParams:
    """What the operator asked for."""

    components: list[str] | None = None
    no_backup: bool = False
    dry_run: bool = False
    timeout: float = 600.0
    settle: float = 10.0  # the most the settle step waits for its evidence
    settle_passes: int = 3
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


class _Window:
    """When trading was halted (monotonic) and what the halt cancelled, for the summary."""

    def __init__(self) -> None:
        self.halted_at: float | None = None
        self.resumed_at: float | None = None
        self.cancelled: int | None = None

    def figures(self, steps: Steps) -> dict[str, object]:
        halted = None
        if self.halted_at is not None:
            halted = (self.resumed_at or time.monotonic()) - self.halted_at
        return {"summary_figures": halt_summary(halted, self.cancelled, steps.times)}


async def run_safe_restart(stack: Stack, steps: Steps, params: SafeRestartParams) -> Outcome:
    """The whole procedure (see the module docstring); its outcome carries the summary."""
    window = _Window()
    outcome = await _safe_restart(stack, steps, params, window)
    if outcome.state != "planned":
        outcome.details.update(window.figures(steps))
    return outcome


async def _safe_restart(
    stack: Stack, steps: Steps, params: SafeRestartParams, window: _Window
) -> Outcome:
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
        lines.append(
            f"settle: {params.settle_passes} passing probe rounds in a row (at most "
            f"{params.settle:g}s), then resume trading only if all are healthy"
        )
        return " | ".join(lines)

    try:
        detail = await steps.run("preflight", preflight)
    except Aborted as exc:
        return Outcome("aborted", f"{exc}: nothing was changed", {"why": str(exc)})
    if params.dry_run:
        return Outcome("planned", "dry run: nothing was changed", {"plan": detail.split(" | ")})

    reason = params.reason
    if engines:

        async def halt() -> str:
            window.halted_at = time.monotonic()
            rows = await stack.halt(f"{reason}: halted before the restart")
            window.cancelled = cancelled_by(rows)
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
            why = str(exc) if isinstance(exc, Aborted) else f"backup failed: {exc}"
            return await _abort(stack, steps, reason, why)
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
        names = [n for n in stack.order if stack.has_probes(n)]
        evidence = SettleEvidence(params.settle_passes)
        interval = min((stack.probe_interval(n) for n in names), default=0.1)
        started = time.monotonic()
        until = started + params.settle
        while True:
            states = {n: stack.component_state(n) for n in stack.order}
            bad = first_unhealthy(states)
            if bad is not None:
                raise _NotBack(*bad)
            answers = await asyncio.gather(*(stack.probe_once(n) for n in names))
            for name, (ok, why) in zip(names, answers, strict=True):
                evidence.record(name, ok, why)
            if evidence.done(names):
                return (
                    f"{params.settle_passes} passing probe rounds in a row every {interval:g}s "
                    f"from {len(names)} component(s) in {time.monotonic() - started:.1f} s"
                )
            if time.monotonic() >= until:
                lacking = evidence.lacking(names)
                assert lacking is not None
                raise _NotBack(lacking[0], f"no evidence within {params.settle:g}s: {lacking[1]}")
            await asyncio.sleep(interval)

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
            window.resumed_at = time.monotonic()
            return _rows_text(rows)

        try:
            await steps.run("resume trading", resume)
        except Aborted as exc:
            return _aborted_halted(exc)
    else:
        steps.note("resume trading", "nothing to resume: no trading component")
    return Outcome("succeeded", "restarted; every component healthy; trading resumed")


class _NotBack(Exception):
    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"{name} is not healthy: {why}")


def _aborted_halted(exc: Aborted) -> Outcome:
    return aborted(
        exc,
        "components were restarted, so trading stays HALTED: check `chimera-ops status`, "
        "then `chimera-ops resume-trading`",
    )


def _after_stop_failure(stack: Stack, steps: Steps, exc: StepFailed) -> Outcome:
    """Something went wrong once components were stopped: never resume; say who and why."""
    if isinstance(exc, Aborted):
        return _aborted_halted(exc)
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
        resumed = await steps.run("resume trading (abort)", resume, abortable=False)
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
