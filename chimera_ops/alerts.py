"""Alerts: a de-duplicating, rate-limited webhook sink (Slack-compatible JSON).

Two layers, so the rules are unit-tested with a fake clock and no network:

- `AlertPolicy` is pure decision logic: one alert per incident (by `key`), an optional repeat
  after `repeat_interval`, one "resolved" per incident, and a global token bucket. Excess alerts
  are dropped and counted; one summary is due when the bucket has refilled.
- `AlertSink` asks the policy, then POSTs with httpx. It never raises into the caller: every
  failure is logged (with the webhook URL masked, it may embed a secret) and counted.

The agent calls `fire(...)` on every tick while a condition holds; de-duplication makes that
one message per incident, not one per tick.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from chimera_ops.alerts_spec import AlertsConfig
from chimera_ops.errors import describe_exception
from chimera_ops.redact import redact_text

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class _MaskUrlFilter(logging.Filter):
    """Masks webhook URLs in httpx's own request log lines ("HTTP Request: POST <url>")."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls:
            message = record.getMessage()
            masked = message
            for url in self.urls:
                masked = masked.replace(url, mask_url(url))
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_URL_FILTER = _MaskUrlFilter()
logging.getLogger("httpx").addFilter(_URL_FILTER)

Severity = Literal["warning", "critical", "resolved"]
_RANK = {"warning": 1, "critical": 2}


# Config models live in alerts_spec.py (cheap to import for the config loader).


def mask_url(url: str | None) -> str:
    """Scheme and host only: webhook paths and queries (Slack, Discord) are the secret."""
    if not url:
        return "<none>"
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/***"


# --------------------------------------------------------------------------- pure policy


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


# --------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class Alert:
    """One message. `to_payload` is the JSON body (Slack `text` plus structured fields)."""

    key: str
    component: str
    severity: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)

    def to_payload(self) -> dict[str, Any]:
        """The webhook body; free text passes through redaction (it may quote a DSN)."""
        summary = redact_text(self.summary)
        at_iso = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")
        return {
            "text": f"[{self.severity.upper()}] {self.component}: {summary} ({self.key} on {self.host})",
            "key": self.key,
            "component": self.component,
            "severity": self.severity,
            "summary": summary,
            "details": _redact_obj(self.details),
            "at": at_iso,
            "host": self.host,
        }


def _redact_obj(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return "<nested too deep>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): _redact_obj(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_obj(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


@dataclass
class AlertStats:
    """Counters for metrics and `status`."""

    sent: int = 0
    failed: int = 0
    deduplicated: int = 0
    suppressed: int = 0
    summaries: int = 0
    last_error: str | None = None


class AlertSink:
    """Sends alerts to the webhook through the policy. Methods never raise (except cancel).

    Without a URL the sink is disabled: decisions are still made (so state is consistent) and
    nothing is posted.
    """

    RETRY_DELAYS = (0.2, 0.5)  # two retries; the agent should not wait long for a webhook

    def __init__(
        self,
        config: AlertsConfig,
        *,
        host: str | None = None,
        policy: AlertPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.url = config.webhook.resolve_url(env)
        if self.url:
            _URL_FILTER.urls.add(self.url)
        self.host = host or socket.gethostname()
        self.policy = policy or AlertPolicy.from_config(config)
        self.wall_clock = wall_clock
        self.stats = AlertStats()
        # httpx is imported only when there is somewhere to post: an agent without a webhook
        # should not carry the HTTP client in memory.
        self._client: httpx.AsyncClient | None = None
        if self.url is not None:
            import httpx

            self._client = httpx.AsyncClient(timeout=config.webhook.timeout, transport=transport)
        self._tasks: set[asyncio.Task[bool]] = set()
        self._components: dict[str, str] = {}  # key -> component, for resolved messages

    @property
    def enabled(self) -> bool:
        """True when a webhook URL is configured."""
        return self.url is not None

    async def fire(
        self,
        key: str,
        component: str,
        severity: Literal["warning", "critical"],
        summary: str,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Report that an incident holds (call every tick). True if a message was delivered."""
        decision = self.policy.should_send(key, severity)
        await self._maybe_summary()
        if not decision:
            self._count_skip(decision)
            return False
        self._components[key] = component
        alert = Alert(
            key, component, severity, summary, details or {}, self.wall_clock(), self.host
        )
        delivered = await self._post(alert)
        if not delivered:
            self.policy.forget(key)  # retried on the next tick
        return delivered

    async def resolve(
        self, key: str, summary: str | None = None, details: dict[str, Any] | None = None
    ) -> bool:
        """Report that an incident is over: one "resolved" message if it was announced."""
        decision = self.policy.should_send(key, "resolved")
        await self._maybe_summary()
        if not decision:
            self._count_skip(decision)
            return False
        component = self._components.pop(key, key.split(":", 1)[0])
        alert = Alert(
            key,
            component,
            "resolved",
            summary or f"{key} resolved",
            details or {},
            self.wall_clock(),
            self.host,
        )
        return await self._post(alert)

    def fire_background(
        self,
        key: str,
        component: str,
        severity: Literal["warning", "critical"],
        summary: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Schedule `fire` without waiting (the agent tick must not wait on a slow webhook)."""
        task = asyncio.get_running_loop().create_task(
            self.fire(key, component, severity, summary, details)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def tick(self) -> None:
        """Send the suppression summary if it is due; the agent calls this every tick."""
        await self._maybe_summary()

    async def aclose(self) -> None:
        """Wait for background sends, then close the HTTP client."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _count_skip(self, decision: Decision) -> None:
        if decision.reason == "duplicate":
            self.stats.deduplicated += 1
        elif decision.reason == "rate-limited":
            self.stats.suppressed = self.policy.dropped_total

    async def _maybe_summary(self) -> None:
        summary = self.policy.take_summary()
        if summary is None:
            return
        self.stats.summaries += 1
        alert = Alert(
            key="chimera:alerts-suppressed",
            component="chimera-ops",
            severity="warning",
            summary=summary.text(),
            details={
                "dropped": summary.dropped,
                "never_delivered": list(summary.keys),
                "delivered_late": list(summary.delivered_late),
            },
            at=self.wall_clock(),
            host=self.host,
        )
        await self._post(alert)

    async def _post(self, alert: Alert) -> bool:
        if self.url is None or self._client is None:
            log.info("alert (no webhook configured): %s", alert.to_payload()["text"])
            return False
        payload = alert.to_payload()
        error = "unknown"
        for attempt, delay in enumerate((0.0, *self.RETRY_DELAYS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self._client.post(self.url, json=payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sender never raises into the agent
                # str(exc) of httpx errors may include the URL; mask it.
                error = redact_text(describe_exception(exc), [self.url])
                continue
            if response.is_success:
                self.stats.sent += 1
                return True
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a 4xx will not get better by retrying
            log.debug("alert webhook attempt %d failed: %s", attempt + 1, error)
        self.stats.failed += 1
        self.stats.last_error = error
        log.warning(
            "alert %s (%s) not delivered to %s: %s",
            alert.key,
            alert.severity,
            mask_url(self.url),
            error,
        )
        return False
