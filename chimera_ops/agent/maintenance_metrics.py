"""Maintenance figures for /metrics, read from the store when /metrics is scraped.

`maintenance weekly|monthly` (cron or a systemd timer) records its runs in the store; the agent
only reports the newest one per schedule, so Prometheus can alert on a failing check and on a
schedule gone silent. A schedule that never ran exports no run timestamp; once `maintenance
install` has scheduled it, its install time stands in, so a cron entry that never fires alerts
too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from chimera_ops.agent.metrics import AgentMetrics
    from chimera_ops.store import Store


class MaintenanceFigures(NamedTuple):
    """Per schedule: its newest run (finished_at, {check: status}), and its install time."""

    runs: dict[str, tuple[float, dict[str, str]]]
    scheduled: dict[str, float]


def read_maintenance_figures(store: Store) -> MaintenanceFigures:
    """The newest run of each schedule and the installed schedules, from the store."""
    from chimera_ops.ops.maintenance.history import latest, scheduled

    return MaintenanceFigures(latest(store), scheduled(store))


def export_maintenance_figures(store: Store, metrics: AgentMetrics) -> None:
    """Set the maintenance gauges from the newest run of each schedule."""
    apply_maintenance_figures(read_maintenance_figures(store), metrics)


def apply_maintenance_figures(found: MaintenanceFigures, metrics: AgentMetrics) -> None:
    """Set the maintenance gauges from figures read beforehand (the API reads them off the
    loop)."""
    from chimera_ops.ops.maintenance.base import SEVERITY

    # Cleared, then set: a check that the newest run no longer has leaves no stale series.
    metrics.m["maintenance_check_status"].clear()
    metrics.m["maintenance_last_run_timestamp_seconds"].clear()
    for schedule, (finished_at, checks) in found.runs.items():
        metrics.set_gauge("maintenance_last_run_timestamp_seconds", finished_at, schedule=schedule)
        for check, status in checks.items():
            metrics.set_gauge(
                "maintenance_check_status",
                float(SEVERITY.get(status, SEVERITY["unknown"])),
                schedule=schedule,
                check=check,
            )
    metrics.m["maintenance_scheduled_timestamp_seconds"].clear()
    for schedule, installed_at in found.scheduled.items():
        metrics.set_gauge(
            "maintenance_scheduled_timestamp_seconds", installed_at, schedule=schedule
        )
