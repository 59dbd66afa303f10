"""The agent's status document (docs/status-json.md): every component's snapshot with its
memory, monitors, alerts and trading state, and the agent's own figures."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from chimera_ops import __version__
from chimera_ops.monitors.tree import tree_rss

if TYPE_CHECKING:
    from chimera_ops.agent.view import AgentView

ALIVE = ("starting", "running", "unhealthy")
"""States with a process (or a watched service) that a probe verdict can be about."""


def probe_currency(
    health: dict[str, Any], state: str, started_at: float | None, now: float
) -> dict[str, Any]:
    """Each probe entry with `age_s` (of its last result) and `current` (that result probed the
    process running now). A component with no process has no verdict: a `passing` kept from
    before a stop is shown as `unknown` (its last result stays, with its age). Pure."""
    out = {}
    for role, snap in health.items():
        last = snap.get("last_result") or {}
        at = last.get("at")
        alive = state in ALIVE
        current = at is not None and alive and at >= (started_at or 0.0)
        entry = {**snap, "age_s": max(0.0, now - at) if at else None, "current": current}
        if not alive:
            entry["status"] = "unknown"
        out[role] = entry
    return out


def status_document(agent: AgentView) -> dict[str, Any]:
    """The stable status document of a running agent."""
    now = time.time()
    components = []
    roots = {
        n: u.runtime.pid
        for n, u in agent.units.items()
        if u.runtime.pid and u.runtime.owns_children
    }
    rss: dict[str, int | None] = dict(tree_rss(roots)) if roots else {}
    for name, unit in agent.units.items():
        memory = getattr(unit.runtime, "memory", None)
        if memory is not None:  # a container: its cgroup's working set, not a pid tree
            sample = memory()
            rss[name] = sample.usage if sample is not None else None
    for name in agent.order:
        unit = agent.units[name]
        snap = unit.snapshot(now)
        snap["health"] = probe_currency(snap["health"], snap["state"], unit.started_at, now)
        monitors = agent.watcher.snapshot(name) if agent.watcher else {}
        memory = monitors.get("memory") or {}
        # The slope goes with its significance: a steep but meaningless slope right after
        # a restart must not be shown as a trend (docs/status-json.md).
        snap["memory"] = {
            "rss_bytes": rss.get(name),
            "slope_bytes_per_s": memory.get("slope_bytes_per_s"),
            "slope_significant": bool(memory.get("slope_significant")),
            "forecast_s": memory.get("forecast_s")
            if agent.watcher and f"{name}:memory:leak" in agent.watcher.active
            else None,
        }
        snap["monitors"] = monitors
        snap["alerts"] = agent.watcher.alerts_for(name) if agent.watcher else {}
        if unit.config.trading is not None:
            snap["trading"] = agent.watcher.trading_status(name, now) if agent.watcher else None
        components.append(snap)
    return {
        "schema": 1,
        "source": "agent",
        "agent": {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "started_at": agent.started_at,
            "uptime_s": now - agent.started_at,
            "state_dir": str(agent.state_dir),
            "config": str(agent.config.source) if agent.config.source else None,
            "last_tick": agent.last_tick,
            "tick_lag_s": agent.tick_lag,
        },
        "components": components,
        "procedures": agent.jobs.status() if agent.jobs is not None else {},
    }
