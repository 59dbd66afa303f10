"""The supervision loop's wake-up event, which also knows when the loop will wake by itself."""

from __future__ import annotations

import asyncio


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
