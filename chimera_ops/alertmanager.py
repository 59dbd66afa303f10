"""The Alertmanager sink: the agent's alerts posted to `/api/v2/alerts` the way Prometheus does.

Alertmanager owns grouping, silences, inhibition and routing; this module only keeps it told:

- every alert carries `alertname`, `component`, `severity`, `instance` (plus `key`, the agent's
  own identity of the incident, and the configured extra labels) and the annotations `summary`,
  `description`, `runbook_url`; `startsAt` is when the incident began;
- while an alert holds, the whole firing set is re-sent every `resend_interval` with `endsAt`
  four intervals ahead (Prometheus' rule), so Alertmanager never resolves it on a timeout, and
  an agent that dies lets its alerts expire instead of leaving them firing forever;
- a resolution is one more post with `endsAt` = now; an escalation (warning -> critical) is a
  new label set, so the old one is resolved in the same post.

Delivery never blocks the agent: posts run in one background task. An unreachable Alertmanager
is retried with exponential backoff (capped at `resend_interval`); resolutions wait in a bounded
queue (the oldest are dropped and counted past `max_queue`), the firing set is re-sent whole,
and every failed post calls `on_failure` (the agent counts
`chimera_alert_delivery_failures_total{sink="alertmanager"}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chimera_ops.alerts_spec import AlertmanagerConfig
from chimera_ops.errors import describe_exception
from chimera_ops.redact import redact_text

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
VALID_FOR = 4  # endsAt of a firing alert: this many resend intervals ahead (as Prometheus)
FIRST_BACKOFF = 1.0

# The runbook of an alert, by the monitor (or `state`) in its key.
RUNBOOKS = {
    "state": "full-restart",
    "memory": "memory-leak",
    "cpu": "server-freeze",
    "fds": "server-freeze",
    "disk": "disk-full",
    "logs": "disk-full",
    "pool": "db-connection-failure",
    "engine": "full-restart",
}


def iso(ts: float) -> str:
    """RFC 3339 in UTC, as Alertmanager's API expects."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertname(key: str) -> str:
    """`engine:memory:leak` -> `ChimeraMemoryLeak`; `engine:state` -> `ChimeraComponentState`."""
    parts = key.split(":")[1:] or [key]
    if parts == ["state"]:
        parts = ["component", "state"]
    words = [w for part in parts for w in part.replace("-", "_").split("_") if w]
    return "Chimera" + "".join(w[:1].upper() + w[1:] for w in words)


def runbook_for(key: str) -> str:
    """The runbook file name (without .md) that fits an alert key."""
    parts = key.split(":")
    kind = parts[1] if len(parts) > 1 else parts[0]
    if kind == "pool" and "redis" in key:
        return "redis-pool-exhaustion"
    return RUNBOOKS.get(kind, "full-restart")


@dataclass
class _Firing:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float


class AlertmanagerSink:
    """Keeps Alertmanager's view of the agent's alerts current. Methods never raise."""

    def __init__(
        self,
        config: AlertmanagerConfig,
        url: str,
        *,
        instance: str,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        self.config = config
        self.endpoint = url.rstrip("/") + API_PATH
        self.instance = config.instance or instance
        self.on_failure = on_failure
        self.clock = clock
        self.firing: dict[str, _Firing] = {}
        self.resolved: deque[dict[str, Any]] = deque()
        self.dropped = 0  # resolutions dropped past max_queue
        self.sent = 0  # successful posts
        self.failures = 0  # failed posts
        self.last_error: str | None = None
        self._client = httpx.AsyncClient(timeout=config.timeout, transport=transport)
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- what the agent says
    def fire(
        self, key: str, component: str, severity: str, summary: str, details: dict[str, Any]
    ) -> None:
        """An incident holds. A new alert (or a new severity) is posted at once; the same one
        again only refreshes its annotations (it is re-sent on the resend cadence)."""
        now = self.clock()
        labels = {
            **self.config.labels,
            "alertname": alertname(key),
            "component": component,
            "severity": severity,
            "instance": self.instance,
            "key": key,
        }
        text = redact_text(summary)
        described = ", ".join(f"{k}={redact_text(str(v))}" for k, v in sorted(details.items()))
        annotations = {
            "summary": text,
            "description": f"{component} on {self.instance}: {text}"
            + (f" ({described})" if described else ""),
            "runbook_url": f"{self.config.runbook_base_url.rstrip('/')}/{runbook_for(key)}.md",
        }
        current = self.firing.get(key)
        if current is not None and current.labels == labels:
            current.annotations = annotations
            return
        starts_at = now
        if current is not None:  # a new label set (escalation): end the old one
            self._queue_resolved(current, now)
            starts_at = current.starts_at
        self.firing[key] = _Firing(labels, annotations, starts_at)
        self._wake()

    def resolve(self, key: str, summary: str | None = None) -> None:
        """The incident is over: posted with endsAt = now (nothing if it never fired here)."""
        current = self.firing.pop(key, None)
        if current is None:
            return
        if summary:
            current.annotations = {**current.annotations, "summary": redact_text(summary)}
        self._queue_resolved(current, self.clock())
        self._wake()

    # ----------------------------------------------------------------- delivery
    def payload(self) -> list[dict[str, Any]]:
        """The next post: every firing alert (endsAt ahead) and the queued resolutions."""
        valid_until = iso(self.clock() + VALID_FOR * self.config.resend_interval)
        firing = [
            {
                "labels": f.labels,
                "annotations": f.annotations,
                "startsAt": iso(f.starts_at),
                "endsAt": valid_until,
            }
            for f in self.firing.values()
        ]
        return firing + list(self.resolved)

    def _queue_resolved(self, alert: _Firing, now: float) -> None:
        if len(self.resolved) >= self.config.max_queue:
            self.resolved.popleft()
            self.dropped += 1
        self.resolved.append(
            {
                "labels": alert.labels,
                "annotations": alert.annotations,
                "startsAt": iso(alert.starts_at),
                "endsAt": iso(now),
            }
        )

    def _wake(self) -> None:
        self._dirty.set()
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the next call starts it
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while self.firing or self.resolved:
            self._dirty.clear()
            if await self.post_once():
                backoff = FIRST_BACKOFF
                wait = self.config.resend_interval
            else:
                wait, backoff = backoff, min(backoff * 2, self.config.resend_interval)
                await asyncio.sleep(wait)  # a change does not cut a backoff short
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=wait)

    async def post_once(self) -> bool:
        """Post the current payload once; True on success (the queued resolutions are done)."""
        body = self.payload()
        if not body:
            return True
        sent_resolved = len(self.resolved)
        try:
            response = await self._client.post(self.endpoint, json=body)
            ok = response.is_success
            error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - delivery never raises into the agent
            ok, error = False, describe_exception(exc)
        if ok:
            self.sent += 1
            for _ in range(min(sent_resolved, len(self.resolved))):
                self.resolved.popleft()
            return True
        self.failures += 1
        if error != self.last_error:
            log.warning("alertmanager %s: %s (alerts kept, retrying)", self.endpoint, error)
        self.last_error = error
        if self.on_failure is not None:
            self.on_failure("alertmanager")
        return False

    async def aclose(self, flush_timeout: float = 2.0) -> None:
        """One last post of what is pending (bounded), then stop and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.resolved:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.post_once(), timeout=flush_timeout)
        await self._client.aclose()
