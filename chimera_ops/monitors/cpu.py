"""CPU monitor: CPU % of the whole tree (100 = one core) sustained above a threshold."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil

from chimera_ops.monitors.base import Finding, Monitor, Severity
from chimera_ops.monitors.spec import CpuMonitorConfig
from chimera_ops.monitors.tree import tree_processes
from chimera_ops.units import format_duration


def tree_cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds of the tree, reaped children included.

    A child's time moves into its parent's children_* counters when it is reaped, so the sum
    stays (nearly) monotonic as short-lived helpers come and go.
    """
    total = 0.0
    for proc in tree_processes(pids):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


class CpuMonitor(Monitor):
    """`feed(t, cpu_seconds)` / `evaluate(now)` are pure; `observe` samples with psutil."""

    name = "cpu"

    def __init__(self, component: str, config: CpuMonitorConfig) -> None:
        super().__init__(component)
        self.config = config
        self.percent: float | None = None
        self.above_since: float | None = None
        self._prev: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the previous sample (component restarted)."""
        self.percent = None
        self.above_since = None
        self._prev = None

    def feed(self, t: float, cpu_seconds: float) -> None:
        """Add a cumulative CPU-seconds sample; the percent is the rate since the last one."""
        if self._prev is not None and t > self._prev[0]:
            # A member that exits unreaped takes its time with it: never report a negative rate.
            used = max(0.0, cpu_seconds - self._prev[1])
            self.percent = 100.0 * used / (t - self._prev[0])
            if self.percent > self.config.threshold:
                if self.above_since is None:
                    self.above_since = self._prev[0]
            else:
                self.above_since = None
        self._prev = (t, cpu_seconds)

    def evaluate(self, now: float) -> list[Finding]:
        """A finding once CPU has stayed above the threshold for `for` seconds."""
        if self.percent is None:
            return []
        cfg = self.config
        values = {"cpu_percent": self.percent, "threshold_percent": cfg.threshold}
        if self.above_since is not None:
            lasted = now - self.above_since
            values["above_for_s"] = lasted
            if lasted >= cfg.for_:
                severity: Severity = "critical" if cfg.action == "restart" else "warning"
                return [
                    self.finding(
                        "high",
                        severity,
                        f"CPU {self.percent:.0f}% above {cfg.threshold:.0f}% for "
                        f"{format_duration(lasted)}",
                        values,
                        action=cfg.action,
                    )
                ]
        return [self.finding("high", "ok", f"CPU {self.percent:.0f}%", values)]

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Sample the tree's CPU seconds at `now` and evaluate."""
        if not pids:
            self.reset()
            return []
        seconds = await asyncio.to_thread(tree_cpu_seconds, pids)
        self.feed(now, seconds)
        return self.evaluate(now)

    def snapshot(self) -> dict[str, Any]:
        """Latest CPU % and since when it has been above the threshold."""
        return {"cpu_percent": self.percent, "above_since": self.above_since}
