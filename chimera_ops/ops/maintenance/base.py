"""What a maintenance check is and what it answers: status, value, threshold, advice, runbook.

A check's `run` does the I/O and hands the figures to a pure `decide` (unit-tested); a check
that cannot run answers `unknown` with the reason, never `ok`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig
    from chimera_ops.store import Store

Status = Literal["ok", "warning", "critical", "unknown"]
SCHEDULES = ("weekly", "monthly")
SEVERITY: dict[str, int] = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
RUNBOOK_DIR = Path(__file__).resolve().parents[3] / "runbooks"


@dataclass
class Result:
    """One check's verdict."""

    check: str
    status: Status
    value: str
    threshold: str
    advice: str
    runbook: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "value": self.value,
            "threshold": self.threshold,
            "advice": self.advice,
            "runbook": f"runbooks/{self.runbook}" if self.runbook else None,
            "data": self.data,
            "fixed": self.fixed,
        }


@dataclass
class Context:
    """What a check runs with: the config, the store, and what the operator allowed."""

    config: ChimeraConfig
    store: Store
    fix: bool = False
    dry_run: bool = False
    now: float = 0.0


def worst(statuses: list[Status]) -> Status:
    """The most severe status (unknown ranks above ok, below warning)."""
    return max(statuses, key=lambda s: SEVERITY[s], default="ok")


class Check(ABC):
    """One maintenance check."""

    name: str = ""
    runbook: str | None = None

    def result(
        self,
        status: Status,
        value: str,
        threshold: str,
        advice: str,
        data: dict[str, Any] | None = None,
    ) -> Result:
        """A result of this check, carrying its runbook."""
        return Result(self.name, status, value, threshold, advice, self.runbook, data or {})

    def unknown(self, reason: str, threshold: str = "-") -> Result:
        """The check could not run: say why, never claim ok."""
        return self.result("unknown", "-", threshold, reason)

    @abstractmethod
    def run(self, ctx: Context) -> Result:
        """Do the I/O, decide, and (with ctx.fix) repair what this check may repair."""
