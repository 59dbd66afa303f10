"""Backup figures for /metrics, read from the store's backup catalog when /metrics is scraped.

The CLI writes the sets and the catalog; the agent only reports them. A config without a
`backup:` section exports none of these series, so no backup alert can fire on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chimera_ops.agent.metrics import AgentMetrics
    from chimera_ops.config import ChimeraConfig
    from chimera_ops.ops.backup.catalog import BackupFigures
    from chimera_ops.store import Store

GAUGES = (
    ("backup_last_success_timestamp_seconds", "last_success_at"),
    ("backup_size_bytes", "last_size_bytes"),
    ("backup_duration_seconds", "last_duration_s"),
    ("backup_last_verified_timestamp_seconds", "last_verified_at"),
    ("backup_first_timestamp_seconds", "first_at"),
    ("backup_sets", "sets"),
)


def export_backup_figures(config: ChimeraConfig, store: Store, metrics: AgentMetrics) -> None:
    """Set the backup gauges; one that has no value yet (no set, none verified) is absent."""
    if config.backup is None:
        return
    from chimera_ops.ops.backup.catalog import figures

    apply_backup_figures(config, figures(store), metrics)


def apply_backup_figures(
    config: ChimeraConfig, found: BackupFigures, metrics: AgentMetrics
) -> None:
    """Set the backup gauges from figures read beforehand (the API reads them off the loop)."""
    if config.backup is None:
        return
    directory = str(config.backup.dir)
    for metric, attribute in GAUGES:
        value = getattr(found, attribute)
        if value is None:
            metrics.remove(metric, dir=directory)
        else:
            metrics.set_gauge(metric, float(value), dir=directory)
