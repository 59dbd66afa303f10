"""What the log relay reports, turned into events, metrics and alerts.

A log write that fails (disk full, I/O error, the state dir removed) never stops the agent or a
child: the relay drops the lines and counts them (`runtimes/relay.py`). Here the operator hears
of it: an event and one alert naming the path and the free space while it fails, and an event
with the count of dropped lines once writing works again (the alert resolves).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chimera_ops.units import format_size

if TYPE_CHECKING:
    from chimera_ops.agent.view import AgentView


def _component(path: str) -> str | None:
    name = Path(path).name
    return name[: -len(".log")] if name.endswith(".log") else None


class LogTroubleReporter:
    """`on_trouble` of the agent's `LogRelay`."""

    def __init__(self, agent: AgentView) -> None:
        self.agent = agent

    def __call__(self, op: str, message: dict[str, Any]) -> None:
        path = str(message.get("path", ""))
        component = _component(path)
        if op == "log_error":
            free = message.get("free")
            room = (
                f"{format_size(int(free))} free" if isinstance(free, int) else "free space unknown"
            )
            text = (
                f"cannot write {path}: {message.get('error')} ({room}); the child keeps running, "
                "its lines are dropped and counted until writing works again"
            )
            self._count("log_write_errors", component)
            self.agent.metrics.set_gauge("log_writes_failing", 1.0, component=component or "")
            self._record("log_write_error", text, component, message)
            self._alert(f"log:{path}", component, text, firing=True)
        elif op == "log_resumed":
            lines = int(message.get("dropped_lines") or 0)
            text = f"writing {path} again: {lines} lines dropped while {message.get('error')}"
            self._count("log_dropped_lines", component, lines)
            self.agent.metrics.set_gauge("log_writes_failing", 0.0, component=component or "")
            self._record("log_resumed", text, component, message)
            self._alert(f"log:{path}", component, text, firing=False)
        elif op == "relay_restarted":
            text = (
                f"the log relay ended (exit {message.get('exit')}) and was started again; "
                f"pipes handed over: {', '.join(message.get('reattached') or []) or 'none'}"
            )
            self._count("log_relay_restarts", None)
            self._record("log_relay_restarted", text, None, message)

    def _count(self, metric: str, component: str | None, by: int = 1) -> None:
        family = self.agent.metrics.m[metric]
        (family.labels(component=component or "") if family.labelnames else family).inc(by)

    def _record(self, kind: str, text: str, component: str | None, data: dict[str, Any]) -> None:
        store = self.agent.store
        if store is not None:
            store.add_event(kind, text, component=component, data=data)

    def _alert(self, key: str, component: str | None, text: str, firing: bool) -> None:
        watcher, alerts = self.agent.watcher, self.agent.alerts
        if watcher is None or alerts is None:
            return
        if firing:
            watcher.active[key] = "critical"
            alerts.fire_background(key, component or "agent", "critical", text, {})
        elif watcher.active.pop(key, None) is not None:
            watcher.resolve(key, text)
