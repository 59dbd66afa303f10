"""What a procedure needs from the agent (`Stack`), and how its steps are journaled (`Steps`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chimera_ops.errors import error_text
from chimera_ops.ops.procedures.journal import Journal


class Stack(Protocol):
    """The agent as a procedure sees it (agent/jobs.py implements it over the units)."""

    order: list[str]

    def is_managed(self, name: str) -> bool: ...
    def is_engine(self, name: str) -> bool: ...
    def component_state(self, name: str) -> tuple[str, str]: ...
    # Blocking work (reading the config, listing sets, Redis round trips) runs off the loop.
    async def config_problems(self) -> list[str]: ...
    async def disk_room(self) -> tuple[bool, str]: ...
    def has_backup(self) -> bool: ...
    async def acquire_lock(self, procedure: str, job: str) -> str: ...
    async def halt(self, reason: str) -> list[dict[str, Any]]: ...
    async def drain(self) -> list[dict[str, Any]]: ...
    async def resume(self, reason: str) -> list[dict[str, Any]]: ...
    async def stop(self, name: str, reason: str) -> None: ...
    async def start(self, name: str, reason: str) -> None: ...
    async def wait_ready(self, name: str, timeout: float) -> tuple[bool, str]: ...
    def has_probes(self, name: str) -> bool: ...
    def probe_interval(self, name: str) -> float: ...
    async def probe_once(self, name: str) -> tuple[bool, str]: ...
    async def backup(self, reason: str) -> str: ...
    async def capture(self, name: str, reason: str) -> str | None: ...
    async def log_tail(self, name: str, lines: int) -> list[str]: ...
    def alert(self, key: str, component: str, message: str) -> None: ...


class StepFailed(Exception):
    """A step could not do its job; the message says what and what to do next."""


class Aborted(StepFailed):
    """An operator asked the job to end (`procedure abort`): raised at a step boundary, before
    the next step starts, so no step is ever cut in half."""


@dataclass
class Outcome:
    """How a procedure ended: the journal state, a one-line summary, details for the report."""

    state: str  # succeeded | failed | aborted | planned
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state in ("succeeded", "planned")


def aborted(exc: Aborted, left: str) -> Outcome:
    """How an aborted job ends: who aborted it and why (`exc`), then the state it `left`."""
    return Outcome("aborted", f"{exc}; {left}", {"why": str(exc)})


Audit = Callable[[str, str, float], None]


class Steps:
    """Numbers, journals and audits each step of one job."""

    def __init__(
        self,
        journal: Journal,
        job: str,
        audit: Audit,
        on_step: Callable[[int, str], None] = lambda n, name: None,
        stop: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.journal = journal
        self.job = job
        self.audit = audit
        self.on_step = on_step
        self.stop = stop  # why to end the job now (an abort asked), or None
        self.n = 0
        self.times: list[tuple[str, float]] = []  # each finished step's name and seconds

    async def run(
        self, name: str, body: Callable[[], Awaitable[str]], abortable: bool = True
    ) -> str:
        """Run one step; its detail on success; StepFailed (journaled as failed) otherwise.

        Aborted, before the step starts, when an abort was asked; steps that put things back
        (a resume after an early abort) pass `abortable=False`."""
        why = self.stop() if abortable else None
        if why is not None:
            raise Aborted(f"{why}, before step {self.n + 1} ({name})")
        self.n += 1
        self.journal.step_started(self.job, self.n, name)
        self.on_step(self.n, name)
        started = time.monotonic()
        try:
            detail = await body()
        except StepFailed as exc:
            self._end(name, "failed", str(exc), started)
            raise
        except Exception as exc:  # noqa: BLE001 - an unexpected error still ends the step
            # What went wrong, in words: never an internal class name such as `_NotBack`.
            detail = error_text(exc)
            self._end(name, "failed", detail, started)
            raise StepFailed(f"{name}: {detail}") from exc
        self._end(name, "ok", detail, started)
        return detail

    def note(self, name: str, detail: str) -> None:
        """A step with nothing to do (skipped), journaled so the report says why."""
        self.n += 1
        self.journal.step_started(self.job, self.n, name)
        self._end(name, "skipped", detail, time.monotonic())

    def _end(self, name: str, state: str, detail: str, started: float) -> None:
        self.journal.step_finished(self.job, self.n, state, detail)
        self.times.append((name, time.monotonic() - started))
        self.audit(f"step {self.n} {name}", f"{state}: {detail}", time.monotonic() - started)
