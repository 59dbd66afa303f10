"""Every Prometheus metric of the agent, declared in one table, on the agent's own registry."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from chimera_ops.agent.exposition import Counter, Family, Gauge, render
from chimera_ops.states import State


@dataclass(frozen=True)
class MetricSpec:
    """One metric: name (without the `chimera_` prefix), type, help, labels."""

    name: str
    kind: type[Gauge] | type[Counter]
    help: str
    labels: tuple[str, ...]


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("component_up", Gauge, "1 when the component is running and ready", ("component",)),
    MetricSpec(
        "component_state", Gauge, "1 for the component's current state", ("component", "state")
    ),
    MetricSpec(
        "component_restarts", Counter, "Restarts since the store was created", ("component",)
    ),
    MetricSpec(
        "probe_success", Gauge, "1 when the probe's last run succeeded", ("component", "probe")
    ),
    MetricSpec(
        "probe_duration_seconds", Gauge, "Latency of the probe's last run", ("component", "probe")
    ),
    MetricSpec(
        "process_resident_memory_bytes",
        Gauge,
        "RSS of the component's whole process tree",
        ("component",),
    ),
    MetricSpec(
        "memory_leak_slope_bytes_per_second",
        Gauge,
        "Robust slope of the tree's RSS",
        ("component",),
    ),
    MetricSpec(
        "memory_leak_forecast_seconds",
        Gauge,
        "Forecast time until the memory limit",
        ("component",),
    ),
    MetricSpec(
        "pool_connections", Gauge, "Connections of a pool by state", ("component", "pool", "state")
    ),
    MetricSpec("pool_max_connections", Gauge, "Capacity of a pool", ("component", "pool")),
    MetricSpec("pool_usage_ratio", Gauge, "Used / capacity of a pool", ("component", "pool")),
    MetricSpec("disk_free_ratio", Gauge, "Free / total space of a watched directory", ("path",)),
    MetricSpec("trading_halted", Gauge, "1 when the engine reports trading halted", ("component",)),
    # Backups (only with a `backup:` section; from the store's catalog, per scrape).
    MetricSpec(
        "backup_last_success_timestamp_seconds",
        Gauge,
        "When the newest backup set was finished",
        ("dir",),
    ),
    MetricSpec("backup_size_bytes", Gauge, "Size of the newest backup set", ("dir",)),
    MetricSpec("backup_duration_seconds", Gauge, "How long the newest backup set took", ("dir",)),
    MetricSpec(
        "backup_last_verified_timestamp_seconds",
        Gauge,
        "When a set last restored as recorded (`backup verify`)",
        ("dir",),
    ),
    MetricSpec(
        "backup_first_timestamp_seconds", Gauge, "When the first backup set was taken", ("dir",)
    ),
    MetricSpec("backup_sets", Gauge, "Backup sets in the catalog", ("dir",)),
    # Procedures (restart --safe, emergency-stop, start --all), run by the agent as jobs.
    MetricSpec(
        "procedure_runs", Counter, "Procedures run, by how they ended", ("procedure", "result")
    ),
    MetricSpec("procedure_duration_seconds", Gauge, "How long the last run took", ("procedure",)),
    MetricSpec(
        "procedure_interrupted",
        Gauge,
        "Procedures the agent died in, not yet followed by an operator action",
        ("procedure",),
    ),
    # Maintenance (`maintenance weekly|monthly`, run by cron or a timer; from the store, per scrape).
    MetricSpec(
        "maintenance_check_status",
        Gauge,
        "Newest result of a maintenance check: 0 ok, 1 unknown, 2 warning, 3 critical",
        ("schedule", "check"),
    ),
    MetricSpec(
        "maintenance_last_run_timestamp_seconds",
        Gauge,
        "When the newest run of a maintenance schedule finished",
        ("schedule",),
    ),
    MetricSpec(
        "maintenance_scheduled_timestamp_seconds",
        Gauge,
        "When `maintenance install` scheduled the runs (the dead man's switch counts from it)",
        ("schedule",),
    ),
    MetricSpec("agent_tick_lag_seconds", Gauge, "How late the last agent tick started", ()),
    # The agent's own store (store_guard.py): failed writes wait in memory, never fatal.
    MetricSpec(
        "state_write_errors",
        Counter,
        "Writes to the agent's store that failed (full disk, I/O error, state dir removed)",
        (),
    ),
    MetricSpec("state_write_backlog", Gauge, "Store writes waiting in memory to be replayed", ()),
    MetricSpec(
        "docker_engine_up", Gauge, "1 when the Docker engine of docker components answers", ()
    ),
    # Child output (the log relay): a write that fails drops lines, never blocks the child.
    MetricSpec(
        "log_write_errors",
        Counter,
        "Failing streaks of a component log's writes (disk full, I/O error, folder gone)",
        ("component",),
    ),
    MetricSpec(
        "log_writes_failing",
        Gauge,
        "1 while a component's log cannot be written (its lines are dropped and counted)",
        ("component",),
    ),
    MetricSpec(
        "log_dropped_lines",
        Counter,
        "Lines of a component's output dropped because its log could not be written",
        ("component",),
    ),
    MetricSpec(
        "log_relay_restarts", Counter, "Times the log relay process ended and was started again", ()
    ),
    MetricSpec(
        "alert_delivery_failures",
        Counter,
        "Alert deliveries that failed (webhook: after its retries; alertmanager: each post)",
        ("sink",),
    ),
)


class AgentMetrics:
    """The agent's registry; `set_*` helpers keep label handling in one place."""

    def __init__(self) -> None:
        self.m: dict[str, Any] = {}
        for spec in METRICS:
            self.m[spec.name] = spec.kind(f"chimera_{spec.name}", spec.help, spec.labels)
        self._restarts_seen: dict[str, int] = {}
        for sink in ("webhook", "alertmanager"):  # 0 from the start, so increase() works
            self.m["alert_delivery_failures"].labels(sink=sink).inc(0)
        self.m["log_relay_restarts"].inc(0)

    def update_component(self, name: str, state: State, up: bool, total_restarts: int) -> None:
        """Refresh the per-component state gauges."""
        self.m["component_up"].labels(component=name).set(1 if up else 0)
        for candidate in State:
            self.m["component_state"].labels(component=name, state=str(candidate)).set(
                1 if candidate is state else 0
            )
        # The counter mirrors the store, so it starts from the persisted total.
        seen = self._restarts_seen.get(name, 0)
        if total_restarts > seen:
            self.m["component_restarts"].labels(component=name).inc(total_restarts - seen)
            self._restarts_seen[name] = total_restarts
        elif name not in self._restarts_seen:
            self.m["component_restarts"].labels(component=name).inc(0)
            self._restarts_seen[name] = total_restarts

    def update_probe(self, name: str, role: str, ok: bool, latency_s: float) -> None:
        self.m["probe_success"].labels(component=name, probe=role).set(1 if ok else 0)
        self.m["probe_duration_seconds"].labels(component=name, probe=role).set(latency_s)

    def set_gauge(self, metric: str, value: float, **labels: str) -> None:
        """Set any gauge of the table by its short name."""
        gauge = self.m[metric]
        (gauge.labels(**labels) if labels else gauge).set(value)

    def remove(self, metric: str, **labels: str) -> None:
        """Drop a labelled series (e.g. the leak forecast when no leak is seen)."""
        with contextlib.suppress(KeyError):
            self.m[metric].remove(*labels.values())

    def count_state_write_error(self) -> None:
        """One write to the agent's store failed."""
        self.m["state_write_errors"].inc()

    def register_log(self, component: str) -> None:
        """A process component's log series, at 0 from the start (so `increase()` and the
        dashboard see them before the first failure)."""
        self.m["log_write_errors"].labels(component=component).inc(0)
        self.m["log_dropped_lines"].labels(component=component).inc(0)
        self.m["log_writes_failing"].labels(component=component).set(0)

    def count_alert_failure(self, sink: str) -> None:
        """One failed alert delivery to `sink` (webhook | alertmanager)."""
        self.m["alert_delivery_failures"].labels(sink=sink).inc()

    def render(self) -> bytes:
        families: list[Family] = list(self.m.values())
        return render(families)
