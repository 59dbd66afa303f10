"""Pure decisions of the procedures: what is restarted, what is only checked, which runbook."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


@dataclass
class SettleEvidence:
    """Consecutive passing probe rounds per component: the settle step's evidence that the
    restarted stack is healthy (instead of a fixed sleep). A failed round resets the streak."""

    needed: int
    streaks: dict[str, int] = field(default_factory=dict)
    last_failure: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, ok: bool, why: str = "") -> None:
        self.streaks[name] = self.streaks.get(name, 0) + 1 if ok else 0
        if not ok:
            self.last_failure[name] = why

    def done(self, names: list[str]) -> bool:
        return all(self.streaks.get(n, 0) >= self.needed for n in names)

    def lacking(self, names: list[str]) -> tuple[str, str] | None:
        """The first component without enough passes, and its last failure (or why not)."""
        for name in names:
            have = self.streaks.get(name, 0)
            if have < self.needed:
                why = self.last_failure.get(name) or f"{have} of {self.needed} passes in a row"
                return name, why
        return None


def halt_summary(
    halted_s: float | None, cancelled: int | None, steps: list[tuple[str, float]]
) -> dict[str, object]:
    """The figures a safe restart ends with: how long trading was halted, how many open orders
    the halt cancelled (None: no engine said), and each step's seconds."""
    return {
        "halted_s": None if halted_s is None else round(halted_s, 3),
        "orders_cancelled": cancelled,
        "steps": [{"name": name, "seconds": round(seconds, 3)} for name, seconds in steps],
    }


def cancelled_by(rows: list[dict[str, object]]) -> int | None:
    """Open orders a halt cancelled, summed over engines (the contract's optional `cancelled`
    field of the halt's answer, or of its drain); None when no engine reported one."""
    found = None
    for row in rows:
        count = row.get("cancelled")
        drain = row.get("drain")
        if count is None and isinstance(drain, dict):
            count = drain.get("cancelled")
        if isinstance(count, int) and not isinstance(count, bool):
            found = (found or 0) + count
    return found
