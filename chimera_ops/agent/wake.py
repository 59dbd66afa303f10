"""The supervision loop's wake-up event, which also knows when the loop will wake by itself."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Scheduled(Protocol):
    """Anything run on a schedule: a probe tracker, a monitor entry."""

    @property
    def next_due(self) -> float | None:
        """Wall time of the next run (None: now)."""


class Wake(asyncio.Event):
    """Set to run a round at once; ``due_at`` sets it only when the loop would wake too late.

    The loop sleeps until the earliest due time it knows of, but a probe or monitor that is
    still running has no due time yet: its next run is scheduled when it finishes. ``due_at``
    is how that late news reaches a sleeping loop, without costing a round per result.
    """

    def __init__(self) -> None:
        super().__init__()
        # Wall time the sleeping loop wakes by itself; 0 while a round runs (the round's
        # own planning sees the new due time, so nothing needs waking).
        self.sleeping_until = 0.0

    def due_at(self, at: float | None) -> None:
        """Something falls due at wall time ``at`` (None: now); wake the loop if it would miss it."""
        if at is None or at < self.sleeping_until:
            self.set()

    def when_done(self, task: asyncio.Task[None], scheduled: Scheduled) -> None:
        """When ``task`` (one run of ``scheduled``) ends, pass its next due time to `due_at`."""
        task.add_done_callback(lambda _task: self.due_at(scheduled.next_due))
