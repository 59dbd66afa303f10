"""Probe scheduling and health state with Kubernetes semantics. Pure: no I/O, clock injected.

One `ProbeTracker` per (component, role). The agent asks `due(now)`, runs the probe, and hands
the result to `record(result, now)`. Status moves:

- `unknown` until the first verdict (before `initial_delay`, or while evidence is short);
- `failing` after `failure_threshold` consecutive failures (from any status);
- `passing` after `success_threshold` consecutive successes (from any status).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from chimera_ops.probes.base import ProbeResult
from chimera_ops.probes.spec import ProbeConfig

Role = Literal["liveness", "readiness", "startup"]
Status = Literal["unknown", "passing", "failing"]
ROLES: tuple[Role, ...] = ("liveness", "readiness", "startup")
HISTORY = 50


@dataclass
class ProbeTracker:
    """Kubernetes-style timing and thresholds for one probe of one component."""

    component: str
    role: Role
    period: float
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0
    history_size: int = HISTORY

    status: Status = "unknown"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_result: ProbeResult | None = None
    last_change: float | None = None
    history: deque[tuple[float, ProbeResult]] = field(init=False)
    _started_at: float | None = field(default=None, init=False)
    _next_due: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)

    @classmethod
    def from_config(
        cls, component: str, role: Role, config: ProbeConfig, now: float | None = None
    ) -> ProbeTracker:
        """A tracker with the timing fields of `config`; started at `now` if given."""
        tracker = cls(
            component=component,
            role=role,
            period=config.period,
            failure_threshold=config.failure_threshold,
            success_threshold=config.success_threshold,
            initial_delay=config.initial_delay,
        )
        if now is not None:
            tracker.start(now)
        return tracker

    def start(self, now: float) -> None:
        """The component (re)started at `now`: forget the verdict, honour initial_delay again.

        History is kept on purpose: it is what an incident capture wants to show.
        """
        self._started_at = now
        self._next_due = now + self.initial_delay
        self.status = "unknown"
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_change = now

    def due(self, now: float) -> bool:
        """True when the probe should run at `now` (never before start + initial_delay)."""
        if self._next_due is None:
            self.start(now)
        assert self._next_due is not None
        return now >= self._next_due

    @property
    def next_due(self) -> float | None:
        """When the probe is next due (None before `start`)."""
        return self._next_due

    def record(self, result: ProbeResult, now: float) -> bool:
        """Account one result at `now`; return True when `status` changed."""
        self.last_result = result
        self.history.append((now, result))
        # Keep the cadence steady: the next run is one period after the one that was due,
        # unless the probe ran so late that this is already past (then: one period from now).
        base = self._next_due if self._next_due is not None else now
        self._next_due = base + self.period
        if self._next_due <= now:
            self._next_due = now + self.period
        if result.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
        new = self.status
        if self.consecutive_failures >= self.failure_threshold:
            new = "failing"
        elif self.consecutive_successes >= self.success_threshold:
            new = "passing"
        if new != self.status:
            self.status = new
            self.last_change = now
            return True
        return False

    def recent(self, n: int | None = None) -> list[tuple[float, ProbeResult]]:
        """The last `n` (default all kept) results, oldest first."""
        items = list(self.history)
        return items if n is None else items[-n:]

    def snapshot(self) -> dict[str, object]:
        """JSON-ready state for status and the API."""
        return {
            "component": self.component,
            "role": self.role,
            "status": self.status,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "last_result": self.last_result.to_dict() if self.last_result else None,
            "last_change": self.last_change,
            "next_due": self._next_due,
        }
