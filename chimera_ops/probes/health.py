"""Probe scheduling and health state with Kubernetes semantics, plus two rules from Docker.
Pure: no I/O, clock injected.

One `ProbeTracker` per (component, role). The agent asks `due(now)`, notes the incarnation it
probes, runs the probe, and hands the result to `record(result, now, incarnation)`. Status moves:

- `unknown` until the first verdict (before `initial_delay`, or while evidence is short);
- `failing` after `failure_threshold` consecutive *counted* failures (from any status);
- `passing` after `success_threshold` consecutive successes (from any status).

Docker's `start_period` and `start_interval` on top (ARCHITECTURE.md, "Health model"):

- **grace**: from a (re)start until the probe's first success, its failures are not counted,
  for at most `start_period`. After the first success (or once the period is over) every failure
  counts. A process that never answers is still killed: `start_period` + the usual threshold.
- **fast first verdict**: until the probe first reaches `passing` after a (re)start, it runs every
  `start_interval` (`STEADY_FAST_RUNS` times), then each interval `START_INTERVAL_GROWTH` times
  the last, capped at `period`.
  A service that answers 60 ms after its spawn is seen passing about 0.1 s later, not a period
  later.
- **incarnations**: every `start()` opens a new incarnation; a result that was started under an
  earlier one (a probe in flight across a restart) is dropped, never counted for the new process.

A startup probe keeps its Kubernetes meaning: the process has `initial_delay + failure_threshold
x period` to pass it. It is probed at the fast cadence too (so a quick start is seen at once),
but its failures count only once that budget is spent (its default `start_period`), and then the
first one fails it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from chimera_ops.probes.base import ProbeResult
from chimera_ops.probes.spec import DEFAULT_START_PERIOD, ProbeConfig

Role = Literal["liveness", "readiness", "startup"]
Status = Literal["unknown", "passing", "failing"]
ROLES: tuple[Role, ...] = ("liveness", "readiness", "startup")
HISTORY = 50
START_INTERVAL_GROWTH = 1.5
"""Each fast run waits this much longer than the one before, up to `period`: quick to see a
fast starter, and a slow one (PostgreSQL replaying WAL) is not probed ten times a second."""
STEADY_FAST_RUNS = 10
"""The first runs after a (re)start all wait `start_interval` (a Python service needs 0.1 to
0.5 s to listen on a busy host: it is seen within one interval of answering); growth after."""


@dataclass
class ProbeTracker:
    """Kubernetes-style timing and thresholds for one probe of one component."""

    component: str
    role: Role
    period: float
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0
    start_period: float = DEFAULT_START_PERIOD
    start_interval: float | None = None  # None: no fast phase, every run at `period`
    history_size: int = HISTORY

    status: Status = "unknown"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    uncounted_failures: int = 0  # failures inside the start grace of this incarnation
    stale_results: int = 0  # results dropped because they probed an earlier incarnation
    incarnation: int = 0
    last_result: ProbeResult | None = None
    last_change: float | None = None
    history: deque[tuple[float, ProbeResult]] = field(init=False)
    _started_at: float | None = field(default=None, init=False)
    _next_due: float | None = field(default=None, init=False)
    _succeeded: bool = field(default=False, init=False)  # a success in this incarnation
    _grace: bool = field(default=True, init=False)  # this incarnation has a start grace
    _fast: bool = field(default=False, init=False)  # still at the fast cadence
    _interval: float = field(default=0.0, init=False)  # the next fast interval
    _fast_runs: int = field(default=0, init=False)  # runs at the fast cadence so far
    _start_period_now: float = field(default=DEFAULT_START_PERIOD, init=False)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_size)
        self._start_period_now = self.start_period

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
            start_period=config.effective_start_period(role),
            start_interval=config.start_interval,
        )
        if now is not None:
            tracker.start(now)
        return tracker

    # ----------------------------------------------------------------- incarnations
    def start(self, now: float, grace: bool = True, start_period: float | None = None) -> int:
        """The component (re)started at `now`: a new incarnation, no verdict yet, initial_delay
        again, fast cadence and start grace again. Returns the new incarnation.

        ``grace=False`` for a component the agent did not start (an external database being
        watched): it should already answer, so its failures count from the first.
        ``start_period`` replaces the configured one for this incarnation only (a container's
        own HEALTHCHECK start_period: a slow starter Docker still calls `starting` is left alone).
        History is kept on purpose: it is what an incident capture wants to show.
        """
        if start_period is not None:
            self._start_period_now = start_period
        else:
            self._start_period_now = self.start_period
        self.incarnation += 1
        self._started_at = now
        self._next_due = now + self.initial_delay
        self._succeeded = False
        self._grace = grace and self._start_period_now > 0
        self._fast = self.start_interval is not None and self.start_interval < self.period
        self._interval = self.start_interval or self.period
        self._fast_runs = 0
        self.status = "unknown"
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.uncounted_failures = 0
        self.last_change = now
        return self.incarnation

    def in_grace(self, now: float) -> bool:
        """True while failures of this incarnation do not count (before its first success,
        within `start_period` of the start)."""
        if not self._grace or self._succeeded or self._started_at is None:
            return False
        return now - self._started_at < self._start_period_now

    def run_now(self, now: float) -> None:
        """Make the probe due at once (Docker just reported a health change)."""
        if self._next_due is not None:
            self._next_due = min(self._next_due, now)

    # ----------------------------------------------------------------- scheduling
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

    def _schedule_next(self, now: float) -> None:
        if self._fast:
            self._next_due = now + self._interval
            self._fast_runs += 1
            if self._fast_runs >= STEADY_FAST_RUNS:
                self._interval = min(self.period, self._interval * START_INTERVAL_GROWTH)
            return
        # Keep the cadence steady: the next run is one period after the one that was due,
        # unless the probe ran so late that this is already past (then: one period from now).
        base = self._next_due if self._next_due is not None else now
        self._next_due = base + self.period
        if self._next_due <= now:
            self._next_due = now + self.period

    # ----------------------------------------------------------------- verdicts
    def record(self, result: ProbeResult, now: float, incarnation: int | None = None) -> bool:
        """Account one result at `now`; return True when `status` changed.

        ``incarnation`` is the one the run was started under (`incarnation` when it began); a
        result of an earlier incarnation is dropped: it says nothing about the new process.
        """
        if incarnation is not None and incarnation != self.incarnation:
            self.stale_results += 1
            return False
        self.last_result = result
        self.history.append((now, result))
        if result.ok:
            self._succeeded = True
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        elif self.in_grace(now):
            self.uncounted_failures += 1
            self.consecutive_successes = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
        new = self.status
        # A startup probe's budget is its whole start_period: the first counted failure ends it.
        threshold = 1 if self.role == "startup" and self._grace else self.failure_threshold
        if self.consecutive_failures >= threshold:
            new = "failing"
        elif self.consecutive_successes >= self.success_threshold:
            new = "passing"
        if new == "passing":
            self._fast = False  # the first verdict is in: from here on, every period
        self._schedule_next(now)
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
            "uncounted_failures": self.uncounted_failures,
            "incarnation": self.incarnation,
            "last_result": self.last_result.to_dict() if self.last_result else None,
            "last_change": self.last_change,
            "next_due": self._next_due,
        }
