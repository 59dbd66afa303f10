"""`AgentStack`: the procedures' view of the agent (ops/procedures/steps.py `Stack`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from chimera_ops.ops.procedures.plan import ALIVE, enough_room
from chimera_ops.ops.procedures.steps import StepFailed
from chimera_ops.states import State

if TYPE_CHECKING:
    from chimera_ops.agent.jobs import JobRunner
    from chimera_ops.agent.loop import Agent
    from chimera_ops.trading_spec import TradingConfig

READY_POLL = 0.05
FAST_INTERVAL = 0.1  # a probe without a start_interval is still settled at Docker's default


class AgentStack:
    """Components, engines, backups and alerts, as one running agent has them."""

    def __init__(self, agent: Agent, runner: JobRunner, job: str, user: str | None = None) -> None:
        self.agent = agent
        self.runner = runner
        self.job = job
        self.user = user  # who started the job: the trading events name them
        self.order = list(agent.order)

    # ----------------------------------------------------------------- facts
    def is_managed(self, name: str) -> bool:
        return self.agent.units[name].managed

    def is_engine(self, name: str) -> bool:
        return self.agent.config.components[name].trading is not None

    def component_state(self, name: str) -> tuple[str, str]:
        unit = self.agent.units[name]
        failing = [
            f"{role}: {tracker.last_result.reason}"
            for role, (tracker, _) in unit.probes.items()
            if tracker.status == "failing" and tracker.last_result is not None
        ]
        return str(unit.state), "; ".join([unit.reason, *failing]).strip("; ")

    async def config_problems(self) -> list[str]:
        source = self.agent.config.source
        if source is None:
            return []
        from chimera_ops.config import ConfigError, load_config

        try:
            await asyncio.to_thread(load_config, source)
        except ConfigError as exc:
            return [str(issue) for issue in exc.issues]
        return []

    def has_backup(self) -> bool:
        return self.agent.config.backup is not None

    async def disk_room(self) -> tuple[bool, str]:
        section = self.agent.config.backup
        assert section is not None
        from chimera_ops.ops.backup.sets import list_sets

        def measure() -> tuple[int, int]:
            sets = list_sets(section.dir)
            where = section.dir if section.dir.exists() else section.dir.parent
            return (sets[0].size if sets else 0), shutil.disk_usage(where).free

        last, free = await asyncio.to_thread(measure)
        if enough_room(free, last):
            return True, f"{free} bytes free in {section.dir}"
        return False, (
            f"not enough room for a backup in {section.dir}: {free} bytes free, the last set "
            f"took {last}"
        )

    async def acquire_lock(self, procedure: str, job: str) -> str:
        from chimera_ops.ops.proclock import LockHeld, LockUnreadable

        try:
            return (await self.runner.take_lock(procedure, job)).describe()
        except (LockHeld, LockUnreadable) as exc:
            raise StepFailed(f"{exc}; {exc.hint}") from None

    # ----------------------------------------------------------------- trading
    def _engines(self) -> dict[str, TradingConfig]:
        out = {}
        for name in self.order:
            trading = self.agent.config.components[name].trading
            if trading is not None and str(self.agent.units[name].state) in ALIVE:
                out[name] = trading
        return out

    async def _on_engines(self, op: str, reason: str, wait: bool = False) -> list[dict[str, Any]]:
        from chimera_ops.trading import run_on_engines

        targets = self._engines()
        if not targets:
            return []
        from chimera_ops.trading import record_trading

        asked = time.time()
        rows = await run_on_engines(targets, op, reason, wait)  # type: ignore[arg-type]
        if self.agent.watcher is not None:  # status shows the halt at once, not the last poll
            self.agent.watcher.note_trading(rows, asked)
        assert self.agent.store is not None
        self.agent.store.audit(
            f"{op}-trading",
            {"components": list(targets), "via": "procedure", "job": self.job},
            reason=reason,
            result="ok" if all(r["ok"] for r in rows) else "FAILED",
            user=self.user,
        )
        who = f"{self.user or 'unknown'} (procedure {self.job})"
        record_trading(self.agent.store.add_event, op, rows, who, reason, via="procedure")
        return rows

    async def halt(self, reason: str) -> list[dict[str, Any]]:
        return await self._on_engines("halt", reason)

    async def drain(self) -> list[dict[str, Any]]:
        # A halt again (idempotent) and a wait until open_orders == 0 within drain_timeout.
        return await self._on_engines("halt", "drain before the restart", wait=True)

    async def resume(self, reason: str) -> list[dict[str, Any]]:
        rows = await self._on_engines("resume", reason)
        if rows and all(r["ok"] for r in rows):
            self.runner.acknowledge()
        return rows

    # ----------------------------------------------------------------- components
    async def stop(self, name: str, reason: str) -> None:
        await self.agent.units[name].stop(reason)

    async def start(self, name: str, reason: str) -> None:
        await self.agent.units[name].start(reason)
        self.agent.wake.set()

    async def wait_ready(self, name: str, timeout: float) -> tuple[bool, str]:
        unit = self.agent.units[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if unit.state is State.RUNNING:
                return True, ""
            if unit.state is State.FATAL:
                return False, f"fatal: {self.component_state(name)[1]}"
            await asyncio.sleep(READY_POLL)
        state, why = self.component_state(name)
        return False, f"not ready within {timeout:g}s ({state}: {why})"

    def has_probes(self, name: str) -> bool:
        return any(role in self.agent.units[name].probes for role in ("liveness", "readiness"))

    def probe_interval(self, name: str) -> float:
        """The fastest start interval of the component's liveness and readiness probes."""
        found = [
            tracker.start_interval or FAST_INTERVAL
            for role, (tracker, _) in self.agent.units[name].probes.items()
            if role in ("liveness", "readiness")
        ]
        return min(found, default=FAST_INTERVAL)

    async def probe_once(self, name: str) -> tuple[bool, str]:
        """One round of the component's liveness and readiness probes, run now (not on their
        schedule), concurrently; ok when every one passed, else the first failure's reason."""
        probes = [
            (role, probe)
            for role, (_, probe) in self.agent.units[name].probes.items()
            if role in ("liveness", "readiness")
        ]
        results = await asyncio.gather(*(probe.run() for _, probe in probes))
        for (role, _), result in zip(probes, results, strict=True):
            if not result.ok:
                return False, f"{role}: {result.reason}"
        return True, ""

    async def capture(self, name: str, reason: str) -> str | None:
        unit = self.agent.units[name]
        await self.agent._before_kill(unit, reason)
        return "incident captured"

    async def log_tail(self, name: str, lines: int) -> list[str]:
        runtime = self.agent.units[name].runtime
        text = await runtime.log_text(lines)
        if text is None:
            files = runtime.log_files()
            if not files:
                return []
            text = await asyncio.to_thread(_tail, files[0], lines)
        return text.splitlines()[-lines:]

    # ----------------------------------------------------------------- backup, alerts
    async def backup(self, reason: str) -> str:
        from chimera_ops.ops.backup import catalog, housekeeping
        from chimera_ops.ops.backup.create import create_backup
        from chimera_ops.ops.backup.sets import BackupError, check_files

        config = self.agent.config
        try:
            result = await asyncio.to_thread(create_backup, config, reason)
            problems = await asyncio.to_thread(check_files, result.backup_set)
        except BackupError as exc:
            raise StepFailed(str(exc)) from None
        if problems:
            raise StepFailed("the new set does not match its manifest: " + "; ".join(problems))
        store = self.agent.store
        assert store is not None and config.backup is not None
        backup_set = result.backup_set
        catalog.record_set(store, backup_set.id, str(backup_set.path), backup_set.manifest)
        housekeeping.prune(config.backup, store)
        return f"set {backup_set.id} ({backup_set.size} bytes), checked against its manifest"

    def alert(self, key: str, component: str, message: str) -> None:
        if self.agent.alerts is not None:
            self.agent.alerts.fire_background(key, component, "critical", message, {})
        assert self.agent.store is not None
        self.agent.store.add_event("alert", message, component=component, data={"key": key})


def _tail(path: os.PathLike[str], lines: int) -> str:
    """The last `lines` lines of a file, read from its end (logs can be large)."""
    with open(path, "rb") as src:
        src.seek(0, os.SEEK_END)
        size = src.tell()
        block = min(size, 256 * 1024)
        src.seek(size - block)
        return src.read().decode("utf-8", "replace")
