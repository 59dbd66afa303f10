"""Rich rendering of status and events for people (JSON output never comes through here)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from chimera_ops.units import format_duration, format_size

STATE_STYLE = {
    "running": "green",
    "starting": "cyan",
    "stopping": "cyan",
    "stopped": "dim",
    "exited": "yellow",
    "backoff": "yellow",
    "unhealthy": "bold red",
    "fatal": "bold red",
    "unknown": "magenta",
}


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


_ROLE = {"liveness": "L", "readiness": "R", "startup": "S"}
_VERDICT = {"passing": "ok", "failing": "FAIL", "unknown": "?"}


def _health(component: dict[str, Any]) -> str:
    """Compact probe verdicts: `L ok 3ms  R FAIL 1002ms` (L=liveness, R=readiness, S=startup)."""
    parts = []
    for role, snap in (component.get("health") or {}).items():
        last = snap.get("last_result") or {}
        latency = last.get("latency_s")
        lat = f" {latency * 1000:.0f}ms" if latency is not None else ""
        verdict = _VERDICT.get(snap.get("status", "unknown"), "?")
        parts.append(f"{_ROLE.get(role, role)} {verdict}{lat}")
    return "  ".join(parts) or "-"


def _memory(component: dict[str, Any]) -> str:
    memory = component.get("memory") or {}
    text = format_size(memory.get("rss_bytes")) if memory.get("rss_bytes") else "-"
    slope = memory.get("slope_bytes_per_s")
    if slope:
        text += f" {'+' if slope > 0 else ''}{format_size(slope)}/s"
    if memory.get("forecast_s") is not None:
        text += f" (limit in {format_duration(memory['forecast_s'])})"
    return text


def _pools(component: dict[str, Any]) -> str:
    """Pool usage from the pool monitor: `postgres 12/100  redis 3/10000`."""
    pools = (component.get("monitors") or {}).get("pool") or {}
    parts = []
    pg = pools.get("postgres")
    if isinstance(pg, dict) and pg.get("max_connections"):
        parts.append(f"pg {pg.get('connections', 0)}/{pg['max_connections']}")
    rd = pools.get("redis")
    if isinstance(rd, dict) and rd.get("maxclients"):
        parts.append(f"redis {rd.get('connected_clients', 0)}/{rd['maxclients']}")
    for name, gauges in (pools.get("app") or {}).items():
        limit = gauges.get("max") or gauges.get("size")
        if limit:
            parts.append(f"{name} {gauges.get('in_use') or 0:.0f}/{limit:.0f}")
    return "  ".join(parts)


def notes(doc: dict[str, Any]) -> list[str]:
    """Lines under the table: trading state of engines, pool usage, open alerts."""
    out = []
    for comp in doc.get("components", []):
        trading = comp.get("trading")
        if trading:
            if trading.get("error"):
                out.append(f"{comp['name']}: trading state unknown: {trading['error']}")
            else:
                out.append(
                    f"{comp['name']}: trading {trading.get('trading', '?').upper()}, "
                    f"{trading.get('open_orders', '?')} open orders"
                    + (f" ({trading['reason']})" if trading.get("reason") else "")
                )
        pools = _pools(comp)
        if pools:
            out.append(f"{comp['name']}: pools {pools}")
        for key, severity in (comp.get("alerts") or {}).items():
            out.append(f"{comp['name']}: {severity.upper()} alert {key}")
    return out


def status_table(doc: dict[str, Any]) -> Table:
    """The `chimera-ops status` table."""
    table = Table(show_lines=False, header_style="bold")
    for column in (
        "component",
        "state",
        "pid",
        "uptime",
        "restarts",
        "health",
        "memory",
        "last exit / reason",
    ):
        table.add_column(column, overflow="fold")
    for comp in doc.get("components", []):
        state = comp.get("state", "unknown")
        reason = comp.get("reason") or ""
        last_exit = comp.get("last_exit") or ""
        detail = reason
        if state == "running" and comp.get("restarts") and last_exit:
            detail = f"{reason} (last exit: {last_exit})"
        table.add_row(
            comp["name"],
            Text(state, style=STATE_STYLE.get(state, "")),
            str(comp.get("pid") or "-"),
            format_duration(comp.get("uptime_s")),
            str(comp.get("restarts", 0)),
            _health(comp),
            _memory(comp),
            detail,
        )
    return table


def events_table(events: list[dict[str, Any]]) -> Table:
    """The `chimera-ops events` table."""
    table = Table(header_style="bold")
    for column in ("time (UTC)", "component", "event", "change", "reason"):
        table.add_column(column, overflow="fold")
    for event in events:
        change = ""
        if event.get("from_state") or event.get("to_state"):
            change = f"{event.get('from_state') or '?'} -> {event.get('to_state') or '?'}"
        table.add_row(
            _when(event["ts"]),
            event.get("component") or "agent",
            event["kind"],
            change,
            event.get("reason") or "",
        )
    return table


def age(ts: float | None) -> str:
    """'12s ago' style age of a timestamp."""
    return "-" if not ts else format_duration(time.time() - ts) + " ago"
