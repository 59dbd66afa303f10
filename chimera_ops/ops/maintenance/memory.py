"""Weekly memory-leak check over the agent's own samples (the store keeps a week of them).

The trend is the monitor's own (Theil–Sen slope, Mann–Kendall test, forecast to the limit),
judged by each component's `monitors.memory.leak` thresholds over `maintenance.leak_window`.
`--fix` restarts a leaking managed component through the agent: a trading one with the
`safe-restart` procedure (halt, restart, resume only when healthy), any other with a restart.
"""

from __future__ import annotations

import time
from typing import Any

from chimera_ops.monitors.slope import Trend, analyse
from chimera_ops.monitors.spec import LeakConfig
from chimera_ops.ops.maintenance.base import Check, Context, Result
from chimera_ops.units import format_duration, format_size

PROCEDURE_POLL = 0.5


def leaking(trend: Trend | None, leak: LeakConfig) -> bool:
    """Pure: the trend is a significant rise (the monitor's own criteria)."""
    return (
        trend is not None
        and trend.n >= leak.min_samples
        and trend.span_s >= leak.min_span
        and trend.test.p_increasing < leak.p_value
        and trend.test.positive_fraction >= leak.min_positive_fraction
        and trend.slope > leak.min_slope
    )


def fix_leak(ctx: Context, name: str) -> str:
    """Restart `name` through the agent; a trading component by the safe path. Returns what
    happened (raises RuntimeError when it did not work)."""
    from chimera_ops.client import AgentClient, AgentError, AgentUnavailable

    client = AgentClient(ctx.config.agent.state_dir, timeout=30.0)
    reason = f"maintenance weekly: memory leak in {name}"
    try:
        if ctx.config.components[name].trading is None:
            client.action(name, "restart", reason)
            return f"{name} restarted"
        job = client.start_procedure(
            "safe-restart", {"components": [name], "no_backup": True, "reason": reason}
        )["id"]
        deadline = time.monotonic() + 900.0
        doc: dict[str, Any] = {"state": "running"}
        while doc["state"] == "running" and time.monotonic() < deadline:
            time.sleep(PROCEDURE_POLL)
            doc = client.procedure(job)
    except (AgentUnavailable, AgentError) as exc:
        raise RuntimeError(f"{name} not restarted: {exc}") from exc
    if doc["state"] != "succeeded":
        summary = (doc.get("result") or {}).get("summary") or doc["state"]
        raise RuntimeError(f"safe-restart {job} of {name}: {summary}")
    return f"{name} restarted by safe-restart {job} (halted, restarted, resumed)"


class MemoryLeakCheck(Check):
    """Weekly: a component whose memory rises towards its limit."""

    name = "memory_leak"
    runbook = "memory-leak.md"

    def decide(self, trends: dict[str, tuple[Trend | None, LeakConfig, int]]) -> Result:
        """Pure verdict over each component's (trend, leak thresholds, limit)."""
        leaks: dict[str, dict[str, Any]] = {}
        figures: dict[str, dict[str, Any]] = {}
        for name, (trend, leak, limit) in trends.items():
            if trend is None:
                figures[name] = {"samples": 0}
                continue
            figures[name] = {
                "samples": trend.n,
                "slope_bytes_per_s": trend.slope,
                "forecast_s": trend.forecast_s,
                "limit_bytes": limit,
            }
            if leaking(trend, leak):
                leaks[name] = figures[name]
        threshold = "no significant rise (monitors.memory.leak)"
        if not trends:
            return self.unknown("no component has a memory monitor", threshold)
        if all(f["samples"] == 0 for f in figures.values()):
            return self.unknown("the agent has stored no memory samples yet", threshold)
        if not leaks:
            return self.result("ok", "no leak", threshold, "nothing to do", {"components": figures})
        parts = []
        for name, f in leaks.items():
            eta = f["forecast_s"]
            when = f", limit in ~{format_duration(eta)}" if eta is not None else ""
            parts.append(f"{name} +{format_size(f['slope_bytes_per_s'])}/s{when}")
        return self.result(
            "warning",
            "; ".join(parts),
            threshold,
            "`maintenance weekly --fix` restarts it (trading: halt, restart, resume); "
            "then find the leak",
            {"components": figures, "leaking": sorted(leaks)},
        )

    def run(self, ctx: Context) -> Result:
        window_start = ctx.now - ctx.config.maintenance.leak_window
        # Only the running process's own samples: a restart (by --fix or anyone) ends a trend.
        born = {c.component: c.create_time or 0.0 for c in ctx.store.children()}
        trends: dict[str, tuple[Trend | None, LeakConfig, int]] = {}
        for name, comp in ctx.config.components.items():
            memory = comp.monitors.memory if comp.monitors is not None else None
            if memory is None:
                continue
            samples = ctx.store.memory_samples(name, max(window_start, born.get(name, 0.0)))
            trends[name] = (analyse(samples, limit=memory.limit), memory.leak, memory.limit)
        result = self.decide(trends)
        if ctx.fix and not ctx.dry_run:
            for name in result.data.get("leaking", []):
                if ctx.config.components[name].runtime == "external":
                    result.data.setdefault("not_fixed", []).append(f"{name}: external")
                    continue
                try:
                    result.fixed.append(fix_leak(ctx, name))
                except RuntimeError as exc:
                    result.data.setdefault("not_fixed", []).append(str(exc))
            if result.fixed and not result.data.get("not_fixed"):
                result.status = "ok"
                result.advice = "restarted; if it leaks again, find the leak (runbook)"
        return result
