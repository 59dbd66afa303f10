"""Pure decisions of the procedures: what is restarted, what is only checked, which runbook."""

from __future__ import annotations

import re
from dataclasses import dataclass

ALIVE = ("starting", "running", "unhealthy")
_DB_NAME = re.compile(r"postgres|timescale|(^|[-_])db($|[-_])")


@dataclass(frozen=True)
class RestartPlan:
    """Managed components to restart (dependency order) and external ones to check."""

    restart: list[str]
    check: list[str]

    def describe(self) -> list[str]:
        lines = []
        if self.restart:
            lines.append("stop in this order: " + ", ".join(reversed(self.restart)))
            lines.append("start in this order, each gated on readiness: " + ", ".join(self.restart))
        if self.check:
            lines.append("check (never restarted): " + ", ".join(self.check))
        return lines


def restart_plan(order: list[str], managed: dict[str, bool], only: list[str] | None) -> RestartPlan:
    """Every managed component (or those in `only`), in dependency order; the rest checked."""
    chosen = [n for n in order if managed[n] and (not only or n in only)]
    return RestartPlan(chosen, [n for n in order if n not in chosen])


def runbook_for(component: str) -> str:
    """The runbook for a component that does not come back (as the alert rules choose it)."""
    if _DB_NAME.search(component):
        return "runbooks/db-connection-failure.md"
    return "runbooks/full-restart.md"


def first_unhealthy(states: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The first component (in the given order) that is not running, with its reason."""
    for name, (state, reason) in states.items():
        if state != "running":
            return name, f"{state}: {reason}" if reason else state
    return None


def enough_room(free: int, last_set: int, margin: float = 1.2) -> bool:
    """Room for the next backup set: the last one's size with a margin (any room when none)."""
    return free >= int(last_set * margin)
