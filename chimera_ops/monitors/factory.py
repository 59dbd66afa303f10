"""`build_monitors`: one monitor per configured section."""

from __future__ import annotations

from collections.abc import Mapping

from chimera_ops.monitors.base import Monitor
from chimera_ops.monitors.spec import MonitorsConfig


def build_monitors(
    component: str, config: MonitorsConfig, env: Mapping[str, str] | None = None
) -> list[Monitor]:
    """One monitor per configured section, in a fixed order."""
    monitors: list[Monitor] = []
    # Imported per configured section: the pool monitor brings psycopg and redis.
    if config.memory:
        from chimera_ops.monitors.memory import MemoryMonitor

        monitors.append(MemoryMonitor(component, config.memory))
    if config.cpu:
        from chimera_ops.monitors.cpu import CpuMonitor

        monitors.append(CpuMonitor(component, config.cpu))
    if config.fds:
        from chimera_ops.monitors.fds import FdsMonitor

        monitors.append(FdsMonitor(component, config.fds))
    if config.pools:
        from chimera_ops.monitors.pools import PoolMonitor

        monitors.append(PoolMonitor(component, config.pools, env))
    if config.disk:
        from chimera_ops.monitors.disk import DiskMonitor

        monitors.append(DiskMonitor(component, config.disk))
    if config.logs:
        from chimera_ops.monitors.logs import LogsMonitor

        monitors.append(LogsMonitor(component, config.logs))
    return monitors


def monitor_period(monitor: Monitor) -> float:
    """The sampling period the monitor's config asks for (seconds)."""
    period = getattr(getattr(monitor, "config", None), "period", None)
    return float(period) if period else 10.0
