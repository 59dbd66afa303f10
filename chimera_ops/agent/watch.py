"""Monitors and alerts of the agent: samples on each monitor's own period, findings -> events,
alerts (de-duplicated by key), restart requests and metrics.

An alert opens when a key turns warning/critical (an `alert` event is recorded once per change of
severity, not once per sample) and resolves when the same key reports ok again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from chimera_ops.agent.wake import Wake
from chimera_ops.alerts import AlertSink
from chimera_ops.monitors.base import Finding, Monitor
from chimera_ops.monitors.factory import build_monitors, monitor_period
from chimera_ops.monitors.spec import DiskMonitorConfig, LogsMonitorConfig, MonitorsConfig
from chimera_ops.monitors.tree import tree_rss
from chimera_ops.states import State

if TYPE_CHECKING:
    from chimera_ops.agent.metrics import AgentMetrics
    from chimera_ops.agent.unit import Unit
    from chimera_ops.config import ChimeraConfig
    from chimera_ops.store import Store

log = logging.getLogger("chimera_ops.agent")

AGENT = "agent"  # pseudo-component of the agent's own host checks (disk, log sizes)
TRADING_PERIOD = 5.0  # how often engines are asked for their trading state (metric + status)
TRADING_STALE_AFTER = 3 * TRADING_PERIOD
"""A reading older than this (polls hang or fail to land) is shown as stale, never current."""
ENGINE_UP = (State.RUNNING, State.UNHEALTHY)  # an engine's answer means something only in these
AlertSeverity = Literal["warning", "critical"]
ALERT_STATES: dict[State, AlertSeverity] = {
    State.FATAL: "critical",
    State.UNHEALTHY: "critical",
    State.BACKOFF: "warning",
}


@dataclass
class _Scheduled:
    monitor: Monitor
    period: float
    next_due: float = 0.0
    task: asyncio.Task[None] | None = None


class Watcher:
    """Runs every monitor of every component and turns findings into actions."""

    def __init__(
        self,
        config: ChimeraConfig,
        units: dict[str, Unit],
        store: Store,
        metrics: AgentMetrics,
        alerts: AlertSink,
        wake: Wake,
    ) -> None:
        self.units = units
        self.store = store
        self.metrics = metrics
        self.alerts = alerts
        self.wake = wake
        self.active: dict[str, str] = {}  # alert key -> severity
        self.scheduled: dict[str, list[_Scheduled]] = {}
        for name, unit in units.items():
            section = unit.config.monitors
            if section is not None:
                env = {**os.environ, **unit.config.env}
                self.scheduled[name] = [
                    _Scheduled(m, monitor_period(m)) for m in build_monitors(name, section, env)
                ]
        state_dir = str(config.agent.state_dir)
        host = MonitorsConfig(
            disk=DiskMonitorConfig(paths=[state_dir]),
            logs=LogsMonitorConfig(paths=[os.path.join(state_dir, "logs")]),
        )
        self.scheduled[AGENT] = [
            _Scheduled(m, monitor_period(m)) for m in build_monitors(AGENT, host)
        ]
        self._resolves: set[asyncio.Task[bool]] = set()
        # Only engines are polled; a stack without one schedules nothing for it.
        self._trading_due = 0.0 if any(u.config.trading for u in units.values()) else float("inf")
        self._trading_task: asyncio.Task[None] | None = None
        # The last reading per engine: its answer (or error), `asked` (when the request went
        # out: a reading asked before the engine's latest start belongs to an earlier process)
        # and `at` (when it came back). `trading_view` decides what of it status may show.
        self.trading: dict[str, dict[str, Any]] = {}
        # One memory sample per component per interval goes to the store (the weekly leak check).
        self.sample_interval = config.maintenance.memory_sample_interval
        self._stored_at: dict[str, float] = {}

    # ----------------------------------------------------------------- scheduling
    def _eligible(self) -> list[tuple[str, Unit | None, _Scheduled]]:
        """Monitors that may run now: their component is alive (ready, for `needs_ready` ones)
        and they are not running."""
        out = []
        for name, entries in self.scheduled.items():
            unit = self.units.get(name)
            if unit is not None and unit.state not in (
                State.STARTING,
                State.RUNNING,
                State.UNHEALTHY,
            ):
                continue
            ready = unit is None or unit.state is not State.STARTING
            out += [
                (name, unit, e)
                for e in entries
                if (e.task is None or e.task.done()) and (ready or not e.monitor.needs_ready)
            ]
        return out

    def launch_due(self, now: float) -> None:
        """Start each due monitor as its own task; a slow one delays no other."""
        for name, unit, entry in self._eligible():
            if now >= entry.next_due:
                entry.next_due = now + entry.period
                entry.task = asyncio.create_task(self._observe(name, unit, entry.monitor))
                # A running monitor is not in next_due(); its end may be news to the loop.
                self.wake.when_done(entry.task, entry)
        if self._needs_trading_read():
            self._trading_due = min(self._trading_due, now)
        if now >= self._trading_due and (self._trading_task is None or self._trading_task.done()):
            self._trading_due = now + TRADING_PERIOD
            self._trading_task = asyncio.create_task(self._sample_trading())

    def next_due(self) -> float | None:
        """The earliest wall time a monitor (or the trading-state poll) falls due."""
        times = [entry.next_due for _, _, entry in self._eligible()]
        if self._trading_task is None or self._trading_task.done():
            times.append(self._trading_due)
        return min(times) if times else None

    async def _observe(self, name: str, unit: Unit | None, monitor: Monitor) -> None:
        pid = unit.runtime.pid if unit is not None else None
        pids = [pid] if pid else []
        if unit is not None and unit.managed and not pids:
            return
        try:
            findings = await monitor.observe(pids, time.time())
        except Exception as exc:  # noqa: BLE001 - a broken monitor must not stop the agent
            log.warning("%s: monitor %s failed: %s", name, monitor.name, exc)
            return
        for finding in findings:
            self._handle(finding, unit)
        self._export(name, monitor)

    async def sample_rss(
        self, offload: Callable[[Callable[[], dict[str, int]]], Awaitable[dict[str, int]]]
    ) -> None:
        """Refresh the per-component RSS gauges (called when /metrics is scraped); the /proc
        walk runs through `offload` (the API's own bounded threads, not the default pool the
        agent's kills use)."""
        roots = {name: unit.runtime.pid for name, unit in self.units.items() if unit.runtime.pid}
        if not roots:
            return
        for name, rss in (await offload(lambda: tree_rss(roots))).items():
            self.metrics.set_gauge("process_resident_memory_bytes", rss, component=name)

    def _needs_trading_read(self) -> bool:
        """An engine runs and has no reading of its current process (it just (re)started):
        read it now rather than up to a period later, so status soon has a current answer."""
        for name, unit in self.units.items():
            if unit.config.trading is None or unit.state not in ENGINE_UP:
                continue
            reading = self.trading.get(name)
            if reading is None or reading.get("asked", 0.0) < (unit.started_at or 0.0):
                return True
        return False

    async def _sample_trading(self) -> None:
        from chimera_ops.trading import EngineControl, TradingControlError

        for name, unit in self.units.items():
            trading = unit.config.trading
            if trading is None or unit.state not in ENGINE_UP:
                continue
            asked = time.time()
            try:
                state = await EngineControl(
                    name, trading, {**os.environ, **unit.config.env}
                ).state()
            except TradingControlError as exc:
                self._keep_newest(name, {"error": str(exc), "asked": asked, "at": time.time()})
                continue
            if self._keep_newest(name, {**state.to_dict(), "asked": asked, "at": time.time()}):
                halted = 1.0 if state.halted else 0.0
                self.metrics.set_gauge("trading_halted", halted, component=name)

    def _keep_newest(self, name: str, reading: dict[str, Any]) -> bool:
        """Keep `reading` unless one asked later is already there: a poll that went out before
        a halt and came back after it must not put the pre-halt `active` back."""
        held = self.trading.get(name)
        if held is not None and held.get("asked", 0.0) > reading["asked"]:
            return False
        self.trading[name] = reading
        return True

    def note_trading(self, rows: list[dict[str, Any]], asked: float) -> None:
        """Answers of a halt, resume or state read made through the agent (API, procedures):
        fresher than the last poll, so status shows them at once instead of a stale `active`."""
        now = time.time()
        for row in rows:
            name = row.get("component")
            if not isinstance(name, str) or name not in self.units:
                continue
            if row.get("trading") in ("active", "halted"):
                keep = ("error", "ok", "drain")  # the row's own bookkeeping, not engine state
                reading = {k: v for k, v in row.items() if k not in keep}
                if self._keep_newest(name, {**reading, "asked": asked, "at": now}):
                    halted = 1.0 if row["trading"] == "halted" else 0.0
                    self.metrics.set_gauge("trading_halted", halted, component=name)
            elif row.get("error"):
                self._keep_newest(name, {"error": str(row["error"]), "asked": asked, "at": now})

    def trading_status(self, name: str, now: float) -> dict[str, Any]:
        """The status document's `trading` of one engine (see `trading_view`)."""
        unit = self.units[name]
        return trading_view(
            self.trading.get(name), str(unit.state), unit.started_at, unit.state_since, now
        )

    # ----------------------------------------------------------------- findings
    def _handle(self, finding: Finding, unit: Unit | None) -> None:
        key = finding.key
        if finding.ok:
            if key in self.active:
                del self.active[key]
                self.store.add_event(
                    "alert_resolved",
                    finding.message,
                    component=finding.component,
                    data={"key": key},
                )
                self._resolve(key, finding.message)
            return
        severity: AlertSeverity = "critical" if finding.severity == "critical" else "warning"
        if self.active.get(key) != severity:
            self.active[key] = severity
            self.store.add_event(
                "alert",
                f"{finding.severity}: {finding.message}",
                component=finding.component,
                data=finding.to_dict(),
            )
        self.alerts.fire_background(
            key, finding.component, severity, finding.message, dict(finding.values)
        )
        if (
            finding.action == "restart"
            and unit is not None
            and unit.managed
            and not unit.monitor_restart
        ):
            unit.monitor_restart = f"{finding.monitor}: {finding.message}"
            self.wake.set()

    def resolve(self, key: str, summary: str) -> None:
        """Resolve an alert raised outside the monitors (log writes, the docker engine)."""
        self._resolve(key, summary)

    def _resolve(self, key: str, summary: str) -> None:
        task = asyncio.get_running_loop().create_task(self.alerts.resolve(key, summary))
        self._resolves.add(task)
        task.add_done_callback(self._resolves.discard)

    def state_changed(self, unit: Unit, old: State, new: State, reason: str) -> None:
        """Alert on unhealthy / fatal / backoff; resolve when the component runs again."""
        key = f"{unit.name}:state"
        severity = ALERT_STATES.get(new)
        if severity is not None:
            if self.active.get(key) != severity:
                self.active[key] = severity
            self.alerts.fire_background(
                key, unit.name, severity, f"{unit.name} is {new}: {reason}", {}
            )
        elif new is State.RUNNING and key in self.active:
            del self.active[key]
            self._resolve(key, f"{unit.name} is running again")

    # ----------------------------------------------------------------- metrics / status
    def _export(self, name: str, monitor: Monitor) -> None:
        snap = monitor.snapshot()
        if monitor.name == "memory":
            if snap.get("rss_bytes") is not None:
                self.metrics.set_gauge(
                    "process_resident_memory_bytes", snap["rss_bytes"], component=name
                )
                self._store_sample(name, float(snap.get("at") or time.time()), snap["rss_bytes"])
            self.metrics.set_gauge(
                "memory_leak_slope_bytes_per_second",
                snap.get("slope_bytes_per_s") or 0.0,
                component=name,
            )
            # The forecast means something only while a leak is flagged (absent otherwise).
            if snap.get("forecast_s") is not None and f"{name}:memory:leak" in self.active:
                self.metrics.set_gauge(
                    "memory_leak_forecast_seconds", snap["forecast_s"], component=name
                )
            else:
                self.metrics.remove("memory_leak_forecast_seconds", component=name)
        elif monitor.name == "pool":
            for pool, used, limit, by_state in _pool_figures(snap):
                if limit:
                    self.metrics.set_gauge(
                        "pool_usage_ratio", used / limit, component=name, pool=pool
                    )
                    self.metrics.set_gauge("pool_max_connections", limit, component=name, pool=pool)
                for state, count in by_state.items():
                    self.metrics.set_gauge(
                        "pool_connections", count, component=name, pool=pool, state=state
                    )
        elif monitor.name == "disk":
            for path, figures in snap.items():
                if isinstance(figures, dict) and figures.get("total"):
                    self.metrics.set_gauge(
                        "disk_free_ratio", figures["free"] / figures["total"], path=path
                    )

    def _store_sample(self, name: str, at: float, rss: int) -> None:
        if at - self._stored_at.get(name, 0.0) < self.sample_interval:
            return
        self._stored_at[name] = at
        try:
            self.store.add_memory_sample(name, at, rss)
        except Exception as exc:  # noqa: BLE001 - a busy store must not stop the monitor
            log.warning("%s: memory sample not stored: %s", name, exc)

    def snapshot(self, name: str) -> dict[str, Any]:
        """Every monitor's latest figures for one component (status document)."""
        return {
            entry.monitor.name: entry.monitor.snapshot() for entry in self.scheduled.get(name, [])
        }

    def alerts_for(self, name: str) -> dict[str, str]:
        """Open alert keys of a component with their severity."""
        return {key: sev for key, sev in self.active.items() if key.startswith(f"{name}:")}

    def cancel(self) -> None:
        for entries in self.scheduled.values():
            for entry in entries:
                if entry.task is not None:
                    entry.task.cancel()


def _pool_figures(snap: dict[str, Any]) -> list[tuple[str, float, float | None, dict[str, float]]]:
    """(pool, used, capacity, connections by state) from a PoolMonitor snapshot."""
    out: list[tuple[str, float, float | None, dict[str, float]]] = []
    pg = snap.get("postgres")
    if isinstance(pg, dict):
        out.append(
            (
                "postgres",
                float(pg.get("connections") or 0),
                pg.get("max_connections"),
                dict(pg.get("by_state") or {}),
            )
        )
    rd = snap.get("redis")
    if isinstance(rd, dict):
        out.append(("redis", float(rd.get("connected_clients") or 0), rd.get("maxclients"), {}))
    for pool, gauges in (snap.get("app") or {}).items():
        limit = gauges.get("max") or gauges.get("size")
        states = {k: v for k in ("in_use", "waiting") if (v := gauges.get(k)) is not None}
        out.append((f"app:{pool}", float(gauges.get("in_use") or 0), limit, states))
    return out


def trading_view(
    reading: dict[str, Any] | None,
    state: str,
    started_at: float | None,
    state_since: float | None,
    now: float,
) -> dict[str, Any]:
    """What status may say of an engine's trading, from the agent's last reading. Pure.

    Never a stale fact as a current one: `trading` and `open_orders` are the engine's answer
    only while it runs and the answer was asked of the process running now; otherwise they
    are null, `current` is false and `note` says why (stopped, starting, not read since its
    start, unreachable). `at` and `age_s` say when the answer shown came back; a reading older
    than TRADING_STALE_AFTER keeps its figures but is not `current`.
    """
    view: dict[str, Any] = {
        "trading": None,
        "open_orders": None,
        "at": None,
        "age_s": None,
        "current": False,
        "note": None,
    }
    if state not in {str(s) for s in ENGINE_UP}:
        view["note"] = f"engine {state}: no trading state (read only while it runs)"
        if state_since:
            view["note"] += f", {state} for {now - state_since:.0f}s"
        return view
    if reading is None or reading.get("asked", 0.0) < (started_at or 0.0):
        view["note"] = "not read since the engine started"
        return view
    at = reading.get("at")
    view["at"] = at
    view["age_s"] = max(0.0, now - at) if at else None
    if reading.get("error"):
        view["error"] = reading["error"]
        view["note"] = "engine unreachable: trading state unknown"
        return view
    # The engine's fields first, ours over them: an engine cannot declare itself `current`.
    view = {**{k: v for k, v in reading.items() if k not in ("asked", "at")}, **view}
    view["trading"], view["open_orders"] = reading.get("trading"), reading.get("open_orders")
    stale = view["age_s"] is None or view["age_s"] > TRADING_STALE_AFTER
    view["current"] = not stale
    if stale:
        view["note"] = "stale: the engine has not answered since"
    return view
