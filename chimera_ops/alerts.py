"""Alerts: a de-duplicating, rate-limited webhook sink (Slack-compatible JSON).

Two layers, so the rules are unit-tested with a fake clock and no network:

- `AlertPolicy` (alerts_policy.py, re-exported here) is pure decision logic: one alert per
  incident (by `key`), an optional repeat after `repeat_interval`, one "resolved" per incident,
  and a global token bucket. Excess alerts are dropped and counted; one summary is due when
  the bucket has refilled.
- `AlertSink` asks the policy, then POSTs with httpx. It never raises into the caller: every
  failure is logged (with the webhook URL masked, it may embed a secret) and counted. With
  `alertmanager:` configured it also hands every alert and resolution to `AlertmanagerSink`
  (alertmanager.py), which keeps its own state: Alertmanager wants the firing set re-sent.

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

from chimera_ops.alerts_policy import AlertPolicy, Decision, SuppressionSummary, TokenBucket
from chimera_ops.alerts_spec import AlertsConfig
from chimera_ops.errors import describe_exception
from chimera_ops.redact import redact_text

if TYPE_CHECKING:
    import httpx

    from chimera_ops.alertmanager import AlertmanagerSink

__all__ = [
    "Alert",
    "AlertPolicy",
    "AlertSink",
    "AlertStats",
    "AlertsConfig",
    "Decision",
    "SuppressionSummary",
    "TokenBucket",
    "mask_url",
]

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
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.on_failure = on_failure  # called with the sink's name on each failed delivery
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
        self.alertmanager: AlertmanagerSink | None = None
        am_url = config.alertmanager.resolve_url(env)
        if am_url is not None:
            from chimera_ops.alertmanager import AlertmanagerSink

            self.alertmanager = AlertmanagerSink(
                config.alertmanager,
                am_url,
                instance=self.host,
                on_failure=on_failure,
                transport=transport,
            )

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
        if self.alertmanager is not None:
            self.alertmanager.fire(key, component, severity, summary, details or {})
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
        if self.alertmanager is not None:
            self.alertmanager.resolve(key, summary)
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
        if self.alertmanager is not None:
            await self.alertmanager.aclose()
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
        if self.on_failure is not None:
            self.on_failure("webhook")
        log.warning(
            "alert %s (%s) not delivered to %s: %s",
            alert.key,
            alert.severity,
            mask_url(self.url),
            error,
        )
        return False
