"""What every monitor returns (`Finding`) and the interface the agent calls (`Monitor`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Severity = Literal["ok", "warning", "critical"]
Action = Literal["none", "alert", "restart"]


@dataclass(frozen=True)
class Finding:
    """One verdict of one check of one monitor.

    Monitors report every check they made, `severity="ok"` included, so the agent can resolve
    an open alert by `key` when its condition clears.
    """

    component: str
    monitor: str
    severity: Severity
    action: Action
    message: str
    key: str
    values: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.severity == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the store and the API."""
        return {
            "component": self.component,
            "monitor": self.monitor,
            "severity": self.severity,
            "action": self.action,
            "message": self.message,
            "key": self.key,
            "values": dict(self.values),
        }


def grade(ratio: float, warn: float, critical: float) -> Severity:
    """Severity of a usage ratio against warn/critical thresholds."""
    if ratio >= critical:
        return "critical"
    if ratio >= warn:
        return "warning"
    return "ok"


class Monitor(ABC):
    """A sampler of one component plus its pure evaluator.

    `observe` does the I/O (blocking work off the loop), feeds the evaluator and returns its
    findings; `snapshot` is the latest state for status and metrics.
    """

    name: ClassVar[str] = "monitor"
    # True for monitors that talk to the component itself (its pools, its /metrics): they wait
    # until it is ready, or every start would raise alerts about a service still coming up.
    needs_ready: ClassVar[bool] = False

    def __init__(self, component: str) -> None:
        self.component = component

    def key(self, check: str) -> str:
        """Stable de-dup key, e.g. 'engine:memory:leak'."""
        return f"{self.component}:{self.name}:{check}"

    def finding(
        self,
        check: str,
        severity: Severity,
        message: str,
        values: dict[str, float] | None = None,
        action: Action | None = None,
    ) -> Finding:
        """A Finding of this monitor; action defaults to alert unless severity is ok."""
        if action is None:
            action = "none" if severity == "ok" else "alert"
        return Finding(
            component=self.component,
            monitor=self.name,
            severity=severity,
            action=action,
            message=message,
            key=self.key(check),
            values=values or {},
        )

    @abstractmethod
    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Sample once (the component's root pids, wall or monotonic `now`) and evaluate."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The latest figures, JSON-ready."""
