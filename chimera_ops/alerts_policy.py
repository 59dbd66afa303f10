"""The alert policy: which alerts go out. Pure decision logic, no I/O, an injectable clock.

One alert per incident (by `key`), an optional repeat after `repeat_interval`, one "resolved"
per incident, and a global token bucket. Excess alerts are dropped and counted; one summary is
due when the bucket has refilled. The sinks (`alerts.py`, `alertmanager.py`) ask it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from chimera_ops.alerts_spec import AlertsConfig

__all__ = ["AlertPolicy", "Decision", "SuppressionSummary", "TokenBucket"]

_RANK = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class Decision:
    """The policy's answer. Truthy when the alert must be sent."""

    send: bool
    reason: str  # new | escalated | repeat | resolved | duplicate | not-active | rate-limited

    def __bool__(self) -> bool:
        return self.send


@dataclass(frozen=True)
class SuppressionSummary:
    """What the rate limit dropped since the last summary."""

    dropped: int  # distinct alerts (key, severity) dropped, not ticks
    keys: tuple[str, ...]  # dropped and never delivered afterwards
    delivered_late: tuple[str, ...]  # dropped once, delivered on a later tick
    since: float

    def text(self) -> str:
        """The human line sent to the webhook."""
        shown = ", ".join(self.keys[:20]) + (" ..." if len(self.keys) > 20 else "")
        text = f"{self.dropped} alerts suppressed by the rate limit"
        if self.keys:
            text += f"; never delivered: {shown}"
        if self.delivered_late:
            text += f"; {len(self.delivered_late)} delivered late"
        return text


@dataclass
class _Active:
    severity: str
    last_sent: float


class TokenBucket:
    """`capacity` tokens, refilled continuously at capacity/per tokens per second."""

    def __init__(self, capacity: int, per: float, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / per
        self.tokens = float(capacity)
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)  # a clock that steps back never adds tokens
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> bool:
        """Consume one token if available."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (the burst is over)."""
        self._refill(now)
        return self.tokens >= self.capacity - 1e-9


class AlertPolicy:
    """Decides which alerts go out. No I/O; `now` comes from the injectable monotonic clock.

    Rules:
    - warning/critical for an inactive key: send (subject to the rate limit), key becomes active.
    - same key again while active: not re-sent, unless it escalates (warning -> critical) or
      `repeat_interval` has passed since the last send.
    - resolved: sent once if the key is active (the incident was announced); ignored otherwise.
      Resolves bypass the bucket: each follows an admitted alert, so they are bounded already.
    - rate limit: a send that finds the bucket empty is dropped and counted once per
      (key, severity); the key is not marked active, so a condition that still holds is
      delivered on a later tick. A summary is due once the bucket is full again.
    """

    def __init__(
        self,
        *,
        repeat_interval: float | None = 3600.0,
        rate_max: int = 10,
        rate_per: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repeat_interval = repeat_interval
        self.clock = clock
        self.bucket = TokenBucket(rate_max, rate_per, clock())
        self.active: dict[str, _Active] = {}
        self._dropped: dict[tuple[str, str], bool] = {}  # (key, severity) -> delivered later
        self._dropped_since: float | None = None
        self.dropped_total = 0  # distinct drops, for metrics

    @classmethod
    def from_config(
        cls, config: AlertsConfig, clock: Callable[[], float] = time.monotonic
    ) -> AlertPolicy:
        """Build from the `alerts:` config section."""
        return cls(
            repeat_interval=config.repeat_interval,
            rate_max=config.rate_limit.max,
            rate_per=config.rate_limit.per,
            clock=clock,
        )

    def should_send(self, key: str, severity: str, now: float | None = None) -> Decision:
        """Decide and record: a True decision means the caller sends now."""
        now = self.clock() if now is None else now
        if severity == "resolved":
            # Not rate-limited: a resolve follows an announced (hence already admitted) alert,
            # so resolves are bounded by the bucket anyway, and dropping one would leave the
            # channel showing an incident that is over.
            if key not in self.active:
                return Decision(False, "not-active")
            del self.active[key]
            return Decision(True, "resolved")
        if severity not in _RANK:
            raise ValueError(f"unknown severity {severity!r} (warning|critical|resolved)")
        current = self.active.get(key)
        if current is None:
            reason = "new"
        elif _RANK[severity] > _RANK.get(current.severity, 0):
            reason = "escalated"
        elif self.repeat_interval is not None and now - current.last_sent >= self.repeat_interval:
            reason = "repeat"
        else:
            return Decision(False, "duplicate")
        if not self._admit(key, severity, now):
            return Decision(False, "rate-limited")
        kept = severity
        if current is not None and _RANK.get(current.severity, 0) > _RANK[severity]:
            kept = current.severity
        self.active[key] = _Active(severity=kept, last_sent=now)
        return Decision(True, reason)

    def _admit(self, key: str, severity: str, now: float) -> bool:
        if self.bucket.take(now):
            if (key, severity) in self._dropped:
                self._dropped[(key, severity)] = True
            return True
        if (key, severity) not in self._dropped:
            self._dropped[(key, severity)] = False
            self.dropped_total += 1
            if self._dropped_since is None:
                self._dropped_since = now
        return False

    def forget(self, key: str) -> None:
        """Undo a send that failed, so the alert is retried on the next tick."""
        self.active.pop(key, None)

    def take_summary(self, now: float | None = None) -> SuppressionSummary | None:
        """The suppression summary once the bucket is full again; None if nothing is due."""
        now = self.clock() if now is None else now
        if not self._dropped or not self.bucket.full(now):
            return None
        summary = SuppressionSummary(
            dropped=len(self._dropped),
            keys=tuple(sorted({k for (k, _), late in self._dropped.items() if not late})),
            delivered_late=tuple(sorted({k for (k, _), late in self._dropped.items() if late})),
            since=self._dropped_since if self._dropped_since is not None else now,
        )
        self._dropped.clear()
        self._dropped_since = None
        self.bucket.take(now)  # the summary is a message too
        return summary
