"""Procedures as jobs inside the agent: journaled, locked, surviving a dropped terminal.

The CLI starts a job over the control API and follows its journal; the job runs here, so a CLI
killed at any step changes nothing. An agent killed mid-job leaves the job `running` in the
journal: the next agent marks it `interrupted at step N`, releases its lock, raises an alert and
never resumes trading by itself (an engine's halted state is its own, and survives its restart).

The same stack-wide lock guards the plain actions: `hold` takes it for the length of a
`start`/`stop`/`restart` of one component or a `resume-trading` through the agent, so one of
them during a procedure (or a restore, a maintenance fix) is refused naming the holder and how
to end it. `abort` ends the running job at its next step boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from chimera_ops.errors import describe_exception
from chimera_ops.ops.procedures.journal import Journal, config_secrets
from chimera_ops.ops.procedures.steps import Outcome, StepFailed, Steps

if TYPE_CHECKING:
    from chimera_ops.agent.loop import Agent
    from chimera_ops.ops.proclock import LockHolder, ProcedureLock

log = logging.getLogger("chimera_ops.agent")

KINDS = ("safe-restart", "emergency-stop", "staged-start")


class JobBusy(Exception):
    """A procedure already runs: one at a time."""

    def __init__(self, job: str) -> None:
        self.job = job
        super().__init__(f"procedure {job} is running; follow it: chimera-ops procedure show {job}")


def lock_refusal(exc: Exception) -> Any:
    """The API's answer to a refused lock: 423 naming the holder and how to end it, or 503
    when the lock cannot be read (fail closed). Both carry a `hint`."""
    from chimera_ops.agent.api_guard import ApiError
    from chimera_ops.ops.proclock import LockHeld

    if isinstance(exc, LockHeld):
        holder = exc.holder
        return ApiError(
            str(exc),
            status=423,
            holder=None if holder is None else {**holder.__dict__},
            hint=exc.hint,
        )
    return ApiError(str(exc), status=503, hint=getattr(exc, "hint", None))


class JobRunner:
    """Starts, runs and recovers the agent's procedures (one at a time)."""

    def __init__(self, agent: Agent) -> None:
        assert agent.store is not None
        self.agent = agent
        self.journal = Journal(agent.store, config_secrets(agent.config))  # redacted journal
        self.current: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.lock: ProcedureLock | None = None
        self.holder: LockHolder | None = None
        self.current_kind: str | None = None
        self.current_step: str | None = None
        self.current_started: float = 0.0
        self.current_user: str | None = None
        self.interrupted: list[dict[str, Any]] = []
        self.abort_requested: tuple[str, str] | None = None  # (by whom, why) for the current job

    # ----------------------------------------------------------------- recovery
    def recover(self) -> None:
        """Jobs an earlier agent left running: interrupted, said, alerted, lock released."""
        from chimera_ops.ops.proclock import LockHolder, lock_for

        for job in self.journal.with_state("running"):
            step = self.journal.current_step(job["id"])
            at = f"step {step[0]} ({step[1]})" if step else "its start"
            summary = (
                f"{job['kind']} {job['id']} was interrupted at {at} when agent pid "
                f"{job['agent_pid']} stopped; trading was left halted if it had been halted: "
                "check `chimera-ops status`, then `chimera-ops resume-trading` or run the "
                "procedure again"
            )
            self.journal.finish(
                job["id"], "interrupted", {"summary": summary, "at_step": step[0] if step else 0}
            )
            raw = self.agent.store.connection.execute(  # type: ignore[union-attr]
                "SELECT lock FROM procedures WHERE id = ?", (job["id"],)
            ).fetchone()[0]
            holder = LockHolder.from_json(raw)
            if holder is not None:
                try:
                    lock_for(self.agent.config).release(holder)
                except Exception as exc:  # noqa: BLE001 - the TTL still frees it
                    log.warning("could not release the lock of %s: %s", job["id"], exc)
            log.warning("%s", summary)
            assert self.agent.store is not None
            self.agent.store.add_event("procedure_interrupted", summary, data={"job": job["id"]})
            if self.agent.alerts is not None:
                self.agent.alerts.fire_background(
                    f"procedure:{job['id']}", job["kind"], "critical", summary, {}
                )
        self.export_interrupted()

    def export_interrupted(self) -> None:
        self._load_interrupted()
        counts: dict[str, int] = {kind: 0 for kind in KINDS}
        for job in self.journal.with_state("interrupted", unacknowledged=True):
            counts[job["kind"]] = counts.get(job["kind"], 0) + 1
        for kind, count in counts.items():
            self.agent.metrics.set_gauge("procedure_interrupted", count, procedure=kind)

    def acknowledge(self) -> None:
        """An operator acted (a procedure succeeded, trading resumed): interrupted jobs are
        no longer news."""
        if self.journal.acknowledge_interrupted():
            self.export_interrupted()

    def status(self) -> dict[str, Any]:
        """For the status document: the running job, and interrupted ones nobody acted on.

        From memory, not the store: the status route runs in a thread, and the store's
        connection belongs to the loop's thread.
        """
        running = None
        if self.current is not None:
            running = {"id": self.current, "kind": self.current_kind, "step": self.current_step}
        return {"running": running, "interrupted": list(self.interrupted)}

    def _load_interrupted(self) -> None:
        self.interrupted = [
            {"id": j["id"], "kind": j["kind"], "summary": (j["result"] or {}).get("summary")}
            for j in self.journal.with_state("interrupted", unacknowledged=True)
        ]

    # ----------------------------------------------------------------- running
    def begin(self, kind: str, params: dict[str, Any], user: str | None) -> str:
        """Start a job; its id. JobBusy when one runs; ValueError for bad params."""
        if kind not in KINDS:
            raise ValueError(f"unknown procedure {kind!r}; known: {', '.join(KINDS)}")
        if self.current is not None:
            raise JobBusy(self.current)
        unknown = [c for c in params.get("components") or [] if c not in self.agent.units]
        if unknown:
            raise KeyError(unknown[0])
        job = self.journal.create(kind, params, user, os.getpid())
        self.current, self.current_kind, self.current_step = job, kind, None
        self.current_started, self.current_user = time.time(), user
        self.abort_requested = None
        self._task = asyncio.create_task(self._run(job, kind, params, user))
        return job

    async def _run(self, job: str, kind: str, params: dict[str, Any], user: str | None) -> None:
        from chimera_ops.agent.stack import AgentStack

        store = self.agent.store
        assert store is not None

        def audit(step: str, result: str, seconds: float) -> None:
            store.audit(
                f"procedure {kind}", {"job": job, "step": step}, None, result, seconds, user=user
            )

        steps = Steps(self.journal, job, audit, on_step=self._on_step, stop=self._abort_asked)
        stack = AgentStack(self.agent, self, job, user)
        started = time.monotonic()
        refresher = asyncio.create_task(self._keep_lock())
        store.add_event("procedure", f"{kind} {job} started", data={"job": job, "params": params})
        try:
            outcome = await _dispatch(kind, stack, steps, params, self.agent)
        except asyncio.CancelledError:
            at = self.journal.current_step(job)
            self.journal.finish(
                job,
                "interrupted",
                {"summary": f"interrupted at step {at[0] if at else 0}: the agent stopped"},
            )
            raise
        except StepFailed as exc:
            outcome = Outcome("failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must still end the job in the journal
            log.exception("procedure %s failed", job)
            # Python's own class names help a bug report; ours are never shown (errors.py).
            outcome = Outcome("failed", f"internal error: {describe_exception(exc)}")
        finally:
            refresher.cancel()
            await self._release()
            self.current = None
        self.journal.finish(job, outcome.state, {"summary": outcome.summary, **outcome.details})
        seconds = time.monotonic() - started
        self.agent.metrics.m["procedure_runs"].labels(procedure=kind, result=outcome.state).inc()
        self.agent.metrics.set_gauge("procedure_duration_seconds", seconds, procedure=kind)
        store.add_event(
            "procedure", f"{kind} {job} {outcome.state}: {outcome.summary}", data={"job": job}
        )
        audit("result", f"{outcome.state}: {outcome.summary}", seconds)
        if outcome.state == "succeeded":
            self.acknowledge()

    def _on_step(self, n: int, name: str) -> None:
        self.current_step = f"{n}. {name}"

    def _abort_asked(self) -> str | None:
        if self.abort_requested is None:
            return None
        who, why = self.abort_requested
        return f"aborted by {who}" + (f" ({why})" if why else "")

    def abort(self, job: str, user: str | None, reason: str | None) -> dict[str, Any]:
        """Ask the running `job` to end at its next step boundary (KeyError: not running)."""
        if self.current != job:
            raise KeyError(job)
        who = user or "an operator"
        self.abort_requested = (who, (reason or "").strip())
        assert self.agent.store is not None
        self.agent.store.add_event(
            "procedure",
            f"{self.current_kind} {job}: abort asked by {who} at {self.current_step or 'its start'}"
            + (f": {reason}" if reason else ""),
            data={"job": job, "user": who, "reason": reason},
        )
        self.agent.store.audit(
            "procedure abort", {"job": job, "step": self.current_step}, reason, "asked", user=user
        )
        return {"id": job, "abort": "requested", "step": self.current_step}

    @contextlib.asynccontextmanager
    async def hold(self, what: str, user: str | None) -> AsyncIterator[None]:
        """Hold the procedure lock while a plain action runs (see the module docstring);
        LockHeld (naming the holder) or LockUnreadable when it cannot be taken."""
        from chimera_ops.ops.proclock import LockHeld, LockHolder, lock_for

        if self.current is not None:
            # Our own job: its holder, or (before its preflight took the lock) the job itself.
            holder = self.holder or LockHolder(
                self.current_kind or "procedure",
                0,
                socket.gethostname(),
                os.getpid(),
                self.current_user or "unknown",
                self.current_started,
                self.current,
            )
            where = self.lock.where if self.lock is not None else "the agent's running procedure"
            raise LockHeld(holder, where)
        lock = lock_for(self.agent.config)
        holder = await self._acquire(lock, what, None)
        try:
            yield
        finally:
            try:
                await asyncio.to_thread(lock.release, holder)
            except Exception as exc:  # noqa: BLE001 - a Redis lock still expires by its TTL
                log.warning("procedure lock release failed: %s", exc)

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(30)
            if self.lock is not None and self.holder is not None:
                try:
                    await asyncio.to_thread(self.lock.refresh, self.holder)
                except Exception as exc:  # noqa: BLE001 - the step will find out soon enough
                    log.warning("procedure lock refresh failed: %s", exc)

    async def take_lock(self, procedure: str, job: str) -> LockHolder:
        """Acquire the stack-wide lock for this job (LockHeld names the holder).

        Only the lock's own I/O (Redis round trips, or the flock) runs in a thread; the
        journal's SQLite connection belongs to the loop's thread, so it is written here."""
        from chimera_ops.ops.proclock import lock_for

        lock = lock_for(self.agent.config)
        holder = await self._acquire(lock, procedure, job)
        self.lock, self.holder = lock, holder
        self.journal.set_lock(job, holder.to_json())
        return holder

    async def _acquire(self, lock: ProcedureLock, procedure: str, job: str | None) -> LockHolder:
        """`lock.acquire` off the loop; a dead holder it released is recorded as an event here
        (the store's connection belongs to the loop's thread), taken or refused."""
        from chimera_ops.ops.proclock import record_cleared

        try:
            return await asyncio.to_thread(lock.acquire, procedure, job)
        finally:
            assert self.agent.store is not None
            for line in record_cleared(lock, self.agent.store.add_event):
                log.warning("%s", line)

    async def _release(self) -> None:
        lock, holder = self.lock, self.holder
        self.lock = self.holder = None
        if lock is not None and holder is not None:
            try:
                await asyncio.to_thread(lock.release, holder)
            except Exception as exc:  # noqa: BLE001 - a Redis lock still expires by TTL
                log.warning("procedure lock release failed: %s", exc)

    def cancel(self) -> None:
        """Agent shutdown: the job is interrupted (and said to be, by the journal)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_cancelled(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)


async def _dispatch(
    kind: str, stack: Any, steps: Steps, params: dict[str, Any], agent: Agent
) -> Outcome:
    settings = agent.config.procedures
    reason = params.get("reason") or kind
    if kind == "safe-restart":
        from chimera_ops.ops.procedures.safe_restart import SafeRestartParams, run_safe_restart

        return await run_safe_restart(
            stack,
            steps,
            SafeRestartParams(
                components=params.get("components") or None,
                no_backup=bool(params.get("no_backup")),
                dry_run=bool(params.get("dry_run")),
                timeout=float(params.get("timeout") or 600.0),
                settle=float(params.get("settle") or settings.settle),
                settle_passes=settings.settle_passes,
                ready_timeout=settings.ready_timeout,
                reason=reason,
            ),
        )
    from chimera_ops.ops.procedures.emergency import (
        EmergencyParams,
        StagedStartParams,
        run_emergency_stop,
        run_staged_start,
    )

    if kind == "emergency-stop":
        return await run_emergency_stop(stack, steps, EmergencyParams(reason=reason))
    return await run_staged_start(
        stack,
        steps,
        StagedStartParams(reason=reason, ready_timeout=settings.ready_timeout),
    )
