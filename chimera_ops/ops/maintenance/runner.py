"""Run a schedule: one lock per schedule (an overlapping run exits at once), every check timed,
a check that raises is `unknown`, the run recorded in the store, a failed run to the webhook.

Fixes respect the procedure lock: while a procedure (restart --safe, restore...) holds it,
`--fix` changes nothing and says who holds it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from chimera_ops.config import ChimeraConfig
from chimera_ops.errors import describe_exception
from chimera_ops.ops.maintenance.backups import BackupAgeCheck, BackupIntegrityCheck
from chimera_ops.ops.maintenance.base import SCHEDULES, Check, Context, Result, worst
from chimera_ops.ops.maintenance.capacity import DatabaseSizeCheck, DiskCheck, RateLimitCheck
from chimera_ops.ops.maintenance.deps import DependencyAuditCheck, DockerImagesCheck
from chimera_ops.ops.maintenance.files import LogSizeCheck, OldFilesCheck
from chimera_ops.ops.maintenance.history import record_run
from chimera_ops.ops.maintenance.memory import MemoryLeakCheck
from chimera_ops.store import Store

CHECKS: dict[str, tuple[type[Check], ...]] = {
    "weekly": (
        LogSizeCheck,
        MemoryLeakCheck,
        RateLimitCheck,
        DatabaseSizeCheck,
        DiskCheck,
        BackupAgeCheck,
    ),
    "monthly": (OldFilesCheck, DockerImagesCheck, DependencyAuditCheck, BackupIntegrityCheck),
}


class RunOverlap(Exception):
    """Another run of the same schedule holds its lock."""


@dataclass
class Report:
    """One run's outcome."""

    schedule: str
    started_at: float
    results: list[Result] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    finished_at: float = 0.0
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return worst([r.status for r in self.results])

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "status": self.status,
            "ok": self.ok,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "notes": self.notes,
            "checks": [
                r.to_dict() | {"seconds": round(self.seconds[r.check], 3)} for r in self.results
            ],
        }


@contextmanager
def schedule_lock(config: ChimeraConfig, schedule: str) -> Iterator[None]:
    """flock on `<state_dir>/maintenance-<schedule>.lock`; RunOverlap when it is held."""
    state = config.agent.state_dir
    state.mkdir(parents=True, exist_ok=True)
    path = state / f"maintenance-{schedule}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunOverlap(f"a {schedule} run is already running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def procedure_lock_refusal(config: ChimeraConfig, store: Store | None = None) -> str | None:
    """Why --fix must not run now: the procedure lock is held (named), or it cannot be read
    (fail closed: "cannot read" is never "nobody holds it"); None when it is free. A dead
    holder on this host is released (an event in `store`, when given)."""
    from chimera_ops.ops.proclock import LockHeld, LockUnreadable, lock_for, record_cleared

    try:
        lock = lock_for(config)
        try:
            lock.check_free()
        finally:
            if store is not None:
                record_cleared(lock, store.add_event)
    except LockHeld as exc:
        who = exc.holder.describe() if exc.holder else "an unknown holder"
        return f"the procedure lock is held by {who}"
    except LockUnreadable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a lock that cannot even be set up: fail closed
        return f"the procedure lock cannot be read ({exc}); refusing to fix"
    return None


def run_schedule(
    config: ChimeraConfig,
    schedule: str,
    *,
    fix: bool = False,
    dry_run: bool = False,
    user: str | None = None,
    only: set[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """Run every check of `schedule` under its lock and record the run (see module doc)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: weekly | monthly")
    # A partial run (`--only`) is not the schedule's run: recorded, it would stand in for the
    # checks it skipped (history, the agent's gauges, the dead man's switch, the webhook).
    partial = only is not None
    with schedule_lock(config, schedule):
        report = Report(schedule, time.time())
        store = Store.open_in(config.agent.state_dir)
        if fix and not dry_run and (why := procedure_lock_refusal(config, store)):
            report.notes.append(f"--fix skipped: {why}")
            fix = False
        try:
            ctx = Context(config, store, fix=fix, dry_run=dry_run, now=report.started_at)
            for cls in CHECKS[schedule]:
                check = cls()
                if only is not None and check.name not in only:
                    continue
                progress(check.name)
                t0 = time.monotonic()
                try:
                    result = check.run(ctx)
                except Exception as exc:  # noqa: BLE001 - one broken check must not stop the run
                    result = check.unknown(f"check failed: {describe_exception(exc)}")
                report.seconds[check.name] = time.monotonic() - t0
                report.results.append(result)
            report.finished_at = time.time()
            if partial:
                report.notes.append("a partial run (--only): shown, not recorded")
            if not dry_run and not partial:
                report.run_id = record_run(
                    store,
                    schedule,
                    report.started_at,
                    report.finished_at,
                    report.status,
                    report.results,
                    fix,
                    user,
                )
        finally:
            store.close()
    if not report.ok and not dry_run and not partial:
        notify_failure(config, report)
    return report


def notify_failure(config: ChimeraConfig, report: Report) -> bool:
    """Post a failed run to the alert webhook (when one is configured)."""
    from chimera_ops.alerts import AlertSink

    bad = [r for r in report.results if r.status != "ok"]
    summary = f"maintenance {report.schedule}: " + "; ".join(
        f"{r.check} {r.status}: {r.value}" for r in bad[:4]
    )
    severity: Literal["warning", "critical"] = (
        "critical" if report.status == "critical" else "warning"
    )

    async def send() -> bool:
        sink = AlertSink(config.agent.alerts)
        try:
            if not sink.enabled:
                return False
            details = {r.check: {"status": r.status, "value": r.value} for r in bad}
            return await sink.fire(
                f"maintenance:{report.schedule}", "maintenance", severity, summary, details
            )
        finally:
            await sink.aclose()

    return asyncio.run(send())
