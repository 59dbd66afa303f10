"""The agent: one asyncio loop. tick -> launch due probes -> reconcile -> act -> metrics.

The period stays steady even when a tick runs long; a child's exit or a probe verdict wakes the
loop at once so nothing waits for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from chimera_ops import __version__
from chimera_ops.agent import registry
from chimera_ops.agent.jobs import JobRunner
from chimera_ops.agent.lock import AgentAlreadyRunning, AgentLock
from chimera_ops.agent.log_trouble import LogTroubleReporter
from chimera_ops.agent.metrics import AgentMetrics
from chimera_ops.agent.paths import MAX_SOCKET_PATH, instance_id, log_dir, socket_path
from chimera_ops.agent.reconcile import decide
from chimera_ops.agent.sdnotify import SystemdNotify
from chimera_ops.agent.status_doc import status_document
from chimera_ops.agent.unit import Unit
from chimera_ops.agent.upkeep import StateUpkeep
from chimera_ops.agent.wake import Wake
from chimera_ops.agent.watch import Watcher
from chimera_ops.aio import within
from chimera_ops.alerts import AlertSink
from chimera_ops.config import ChimeraConfig, UnknownComponent
from chimera_ops.filemodes import (
    enter_private_umask,
    leave_private_umask,
    make_private_dir,
    tighten_tree,
)
from chimera_ops.runtimes.base import Runtime
from chimera_ops.runtimes.external import ExternalRuntime
from chimera_ops.runtimes.guard import DeathGuard
from chimera_ops.runtimes.process import ProcessRuntime, withheld_env
from chimera_ops.runtimes.relay_client import LogRelay
from chimera_ops.runtimes.tree import kill_tree, live_agents, marker_value, pids_with_marker
from chimera_ops.states import State, is_up
from chimera_ops.store import Store
from chimera_ops.store_guard import open_agent_store

if TYPE_CHECKING:
    from chimera_ops.docker.engine import DockerEngine

log = logging.getLogger("chimera_ops.agent")

MIN_SLEEP = 0.01  # never spin: at most 100 wake-ups a second however much falls due


def _use_pidfd_child_watcher() -> None:
    """Child exits via pidfd on the event loop: no thread per child (Python 3.11's default
    ThreadedChildWatcher parks one thread per child in waitpid). Still seen at once."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return  # 3.12+ picks pidfd by itself
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # kernel without pidfd: keep the threaded watcher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        asyncio.set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())


class Agent:
    """Supervises the configured components until asked to stop."""

    def __init__(self, config: ChimeraConfig) -> None:
        self.config = config
        self.state_dir = config.agent.state_dir
        self.started_at = time.time()
        self.instance = instance_id(self.state_dir)
        self.lock = AgentLock(self.state_dir)
        self.store: Store | None = None
        self.units: dict[str, Unit] = {}
        self.order = config.start_order()
        self.metrics = AgentMetrics()
        self.wake = Wake()
        self.shutdown = asyncio.Event()
        self.guard: DeathGuard | None = None
        self.last_tick = 0.0
        self.tick_lag = 0.0
        self._api_exit = asyncio.Event()  # tells the uvicorn servers to stop
        self._api_tasks: list[asyncio.Task[None]] = []
        self.upkeep: StateUpkeep | None = None  # the store's failures, a removed state dir
        self.watcher: Watcher | None = None
        self.alerts: AlertSink | None = None
        self.jobs: JobRunner | None = None  # procedures (restart --safe...), once running
        self.docker: DockerEngine | None = None  # made only when a docker component exists
        self.systemd = SystemdNotify.from_env()  # READY/STATUS/WATCHDOG/STOPPING when asked
        # Every process component's output goes through one relay process (started on first
        # use), so a stopped or busy agent never blocks a child's writes.
        self.relay = LogRelay(on_trouble=LogTroubleReporter(self))

    # ----------------------------------------------------------------- setup
    def _runtime_for(self, name: str) -> Runtime:
        component = self.config.components[name]
        if component.runtime == "process":
            marker = marker_value(self.instance, os.getpid(), name)
            self.metrics.register_log(name)
            return ProcessRuntime(
                name,
                component,
                log_dir(self.state_dir),
                marker,
                self.relay,
                withheld=withheld_env(self.config),  # no child gets the agent's tokens
            )
        if component.runtime == "external":
            return ExternalRuntime()
        if component.runtime == "docker":
            # Imported here only: a process-only agent never loads the docker SDK (idle RSS).
            from chimera_ops.runtimes.docker import DockerRuntime

            return DockerRuntime(name, component, self._docker_engine())
        raise NotImplementedError(f"runtime {component.runtime!r} is not available yet")

    def _docker_engine(self) -> DockerEngine:
        if self.docker is None:
            from chimera_ops.docker.engine import DockerEngine, resolve_host

            self.docker = DockerEngine(resolve_host(self.config.agent.docker.host))
            self.docker.on_status(self._docker_status)
        return self.docker

    def _docker_status(self, reachable: bool, reason: str) -> None:
        """The engine came or went: an event, a metric, and an alert while it is gone (each
        docker component also goes `unknown` with the reason, and alerts on its own)."""
        self.metrics.set_gauge("docker_engine_up", 1.0 if reachable else 0.0)
        if self.store is not None:
            self.store.add_event("docker_engine", reason, data={"reachable": reachable})
        if self.watcher is None or self.alerts is None:
            return
        key = "docker:engine"
        if not reachable:
            self.watcher.active[key] = "critical"
            self.alerts.fire_background(key, "docker", "critical", reason, {})
        elif self.watcher.active.pop(key, None) is not None:
            self.watcher._resolve(key, reason)

    def _attach_container_memory(self) -> None:
        """A docker component's memory monitor reads the container's cgroup (usage and its
        own limit), not the RSS of a process tree."""
        if self.watcher is None:
            return
        for name, unit in self.units.items():
            memory = getattr(unit.runtime, "memory", None)
            if memory is None:
                continue
            for entry in self.watcher.scheduled.get(name, []):
                if entry.monitor.name == "memory":
                    entry.monitor.source = memory  # type: ignore[attr-defined]

    def _end_leftovers(self, store: Store) -> None:
        """End what an earlier agent on this state_dir left behind; never run a second copy.

        The earlier agent's death guard normally did this already; this is the fallback when
        the guard died too (kill -9 of the whole process group).
        """
        for record in store.children():
            try:
                proc = psutil.Process(record.pid)
                same = abs(proc.create_time() - record.create_time) < 1.0
            except psutil.Error:
                same = False
            if same:
                killed = kill_tree(record.pid, record.pid, None)
                store.add_event(
                    "orphan_ended",
                    f"ended pid {record.pid} left by agent pid {record.agent_pid} "
                    f"({len(killed)} processes)",
                    component=record.component,
                )
            store.clear_child(record.component)
        strays = [pid for pid in pids_with_marker(f"{self.instance}/") if pid != os.getpid()]
        if strays:
            kill_tree(None, None, f"{self.instance}/")
            store.add_event("orphan_ended", f"ended {len(strays)} stray processes: {strays}")

    def _bind_socket(self) -> socket.socket:
        path = socket_path(self.state_dir)
        if len(str(path)) > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"control socket path is too long ({len(str(path))} > {MAX_SOCKET_PATH} chars): "
                f"{path}; use a shorter agent.state_dir"
            )
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window in which others can connect
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        return sock

    async def _serve_api(self) -> None:
        import uvicorn

        from chimera_ops.agent.api import build_app, server_options

        class Server(uvicorn.Server):
            # The agent owns SIGTERM/SIGINT: it must stop the children before the API goes away.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

            async def main_loop(self) -> None:
                # uvicorn wakes 10x a second to check for shutdown and refresh its Date
                # header. The agent tells it when to exit instead (and sends no Date
                # header), so an idle agent's API costs no wake-ups at all.
                await exit_requested.wait()
                self.should_exit = True

        exit_requested = self._api_exit

        app = build_app(self)
        unix: list[Server] = []

        def serve_unix() -> None:
            """Listen on a new control socket (at start, and when it was removed)."""
            sock = self._bind_socket()
            server = Server(
                uvicorn.Config(
                    app,
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    date_header=False,
                    **server_options(tcp=False),
                )
            )
            for old in unix:  # the removed socket's listener: no one can reach it any more
                for listener in old.servers:
                    listener.close()
            unix[:] = [server]
            self._api_tasks.append(asyncio.create_task(server.serve(sockets=[sock])))

        serve_unix()
        if self.upkeep is not None:
            self.upkeep.rebind = serve_unix
        if self.config.agent.metrics.listen:
            host, _, port = self.config.agent.metrics.listen.rpartition(":")
            metrics_server = Server(
                uvicorn.Config(
                    build_app(self, tcp=True),
                    host=host.strip("[]"),
                    port=int(port),
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    date_header=False,
                    **server_options(tcp=True),
                )
            )
            self._api_tasks.append(asyncio.create_task(metrics_server.serve()))
        await exit_requested.wait()
        await asyncio.gather(*self._api_tasks)

    def _note_tightened(self, store: Store, changed: int, errors: list[str]) -> None:
        """One note of what `tighten_tree` made private (left readable by an older version or
        a copy by hand), and what it could not."""
        if changed:
            reason = (
                f"made {changed} files and folders in {self.state_dir} private "
                "(they were readable by group or others)"
            )
            log.warning("%s", reason)
            store.add_event("permissions", reason, data={"tightened": changed})
        for error in errors:
            log.warning("cannot make private: %s", error)

    def _register(self) -> Path | None:
        """Announce this agent in the runtime registry, so a CLI with no config finds it."""
        pid = os.getpid()
        entry = registry.AgentEntry(
            pid=pid,
            socket=str(socket_path(self.state_dir)),
            config=str(self.config.source) if self.config.source else None,
            state_dir=str(self.state_dir),
            started_at=registry.process_create_time(pid) or self.started_at,
        )
        try:
            return registry.register(self.instance, entry)
        except OSError as exc:  # the agent works without it; only discovery is lost
            log.warning("not registered in %s: %s", registry.runtime_dir(), exc)
            return None

    def _announce_fatal(self, store: Store) -> None:
        """A component left `fatal` by an earlier agent stays fatal (its counters are in the
        store), and that is said: a log line, an event, the alert again. Never silent."""
        for name, unit in self.units.items():
            if unit.state is not State.FATAL:
                continue
            since = unit.counters.fatal_at
            when = (
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "earlier"
            )
            text = (
                f"{name} is fatal since {when} ({unit.reason}); "
                f"`chimera-ops start {name}` clears it"
            )
            log.warning("%s", text)
            store.add_event("fatal_carried", text, component=name, data={"fatal_at": since})
            if self.watcher is not None:
                self.watcher.state_changed(unit, State.FATAL, State.FATAL, unit.reason)

    # ----------------------------------------------------------------- run
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; stop children in reverse dependency order; return 0."""
        enter_private_umask()  # before the lock: the state dir and agent.pid are born private
        self.lock.acquire()
        others = live_agents(self.instance)
        if others:
            self.lock.release()
            pid = min(others)
            raise AgentAlreadyRunning(self.state_dir, pid, lock_lost=True)
        make_private_dir(self.state_dir)
        # Before the store opens: SQLite gives new -wal/-shm files the database file's mode.
        tightened = tighten_tree(self.state_dir)
        _use_pidfd_child_watcher()
        # A damaged store is set aside (and said below); its write errors are never fatal.
        guarded, damaged = open_agent_store(self.state_dir / "chimera.db")
        self.store = store = guarded
        self.upkeep = upkeep = StateUpkeep(
            guarded,
            self.metrics,
            self.lock,
            socket_path(self.state_dir),
            self.config.agent.retention,
        )
        if damaged is not None:
            upkeep.store_damaged(damaged)
        registered: Path | None = None
        try:
            self._note_tightened(store, *tightened)
            self._end_leftovers(store)
            self.guard = DeathGuard(marker_value(self.instance, os.getpid(), ""))
            for name in self.order:
                self.units[name] = Unit(
                    name,
                    self.config.components[name],
                    self._runtime_for(name),
                    store,
                    self.wake,
                    on_change=self._state_changed,
                    before_kill=self._before_kill,
                )
            self.alerts = AlertSink(
                self.config.agent.alerts, on_failure=self.metrics.count_alert_failure
            )
            self.watcher = Watcher(
                self.config, self.units, store, self.metrics, self.alerts, self.wake
            )
            upkeep.attach(self.alerts, self.watcher)
            self._attach_container_memory()
            if self.docker is not None:
                self.docker.start()
            store.add_event(
                "agent_started",
                f"agent {__version__} pid {os.getpid()} on {self.state_dir}",
                data={"pid": os.getpid(), "components": self.order},
            )
            self._announce_fatal(store)
            self.jobs = JobRunner(self)
            self.jobs.recover()  # a job an earlier agent died in: interrupted, said, alerted
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.shutdown.set)
            api_task = asyncio.create_task(self._serve_api())
            registered = self._register()
            await self._supervise()
            self.systemd.stopping()
            if self.jobs is not None:  # a running procedure is interrupted, not half-finished
                self.jobs.cancel()
                await self.jobs.wait_cancelled()
            await self._stop_all("agent shutting down")
            await self.relay.aclose()  # the children are gone: the relay drains and ends
            self._api_exit.set()
            await asyncio.wait([api_task], timeout=5)
            store.add_event("agent_stopped", f"agent pid {os.getpid()} stopped cleanly")
            return 0
        finally:
            upkeep.cancel()
            for unit in self.units.values():
                unit.cancel_tasks()
            if self.watcher is not None:
                self.watcher.cancel()
            if self.alerts is not None:
                await self.alerts.aclose()
            await self.relay.aclose(timeout=2.0)
            if self.guard is not None:
                self.guard.close()
            if self.docker is not None:
                self.docker.close()
            if registered is not None:
                registry.unregister(registered, os.getpid())
            socket_path(self.state_dir).unlink(missing_ok=True)
            store.close()
            self.systemd.close()
            self.lock.release()
            leave_private_umask()

    async def _supervise(self) -> None:
        period = self.config.agent.tick
        next_tick = time.monotonic()
        while not self.shutdown.is_set():
            started = time.monotonic()
            if started >= next_tick:  # a scheduled tick (not a wake-up): advance the cadence
                self.tick_lag = started - next_tick
                next_tick += period
                if next_tick <= started:  # ran long: skip missed ticks rather than bunch them
                    next_tick = started + period
            self.wake.clear()
            await self.tick()
            # From the loop itself: a loop that hangs stops the watchdog pings.
            self.systemd.after_tick({n: u.state for n, u in self.units.items()})
            # Sleep until the next tick, or earlier when a backoff ends or a probe or monitor
            # falls due, or at once when a child exits or a verdict changes (wake).
            until = min(next_tick - time.monotonic(), self._seconds_to_next_due())
            sleep = max(MIN_SLEEP, until)
            self.wake.sleeping_until = time.time() + sleep
            with contextlib.suppress(TimeoutError):
                await within(self._wake_or_shutdown(), timeout=sleep)
            self.wake.sleeping_until = 0.0

    def _seconds_to_next_due(self) -> float:
        now = time.time()
        candidates = [unit.next_due(now) for unit in self.units.values()]
        if self.watcher is not None:
            candidates.append(self.watcher.next_due())
        ping = self.systemd.next_due()
        if ping is not None:
            candidates.append(now + ping)
        due = [c for c in candidates if c is not None]
        return (min(due) - now) if due else float("inf")

    async def _wake_or_shutdown(self) -> None:
        waits = [asyncio.create_task(self.wake.wait()), asyncio.create_task(self.shutdown.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def tick(self) -> None:
        """One round: launch due probes, decide and act for each component, refresh metrics."""
        now = time.time()
        self.last_tick = now
        if self.upkeep is not None:  # the store: replay, remake a removed state dir, prune
            self.upkeep.tick(now)
        for unit in self.units.values():
            unit.launch_due_probes(now)
        if self.watcher is not None:
            self.watcher.launch_due(now)
        for name in self.order:
            unit = self.units[name]
            if unit.busy:
                continue  # an operator command is in flight for this component
            waiting = tuple(d for d in unit.config.depends_on if not self.units[d].ready)
            action = decide(unit.view(now, waiting))
            if action.kind != "none":
                await unit.apply(action, now)
                self.wake.set()  # decide again at once: start -> running needs no extra tick
        self._refresh_metrics()

    def _refresh_metrics(self) -> None:
        for name, unit in self.units.items():
            if not unit.changed:
                continue
            unit.changed = False
            self.metrics.update_component(
                name, unit.state, is_up(unit.state), unit.counters.total_restarts
            )
            for role, (tracker, _) in unit.probes.items():
                if tracker.last_result is not None:
                    self.metrics.update_probe(
                        name, role, tracker.last_result.ok, tracker.last_result.latency_s
                    )
        self.metrics.set_gauge("agent_tick_lag_seconds", self.tick_lag)

    async def _before_kill(self, unit: Unit, reason: str) -> None:
        """Save what an engineer needs afterwards, before the evidence is killed."""
        settings = self.config.agent.incidents
        if not settings.enabled:
            return
        from chimera_ops.incidents import async_capture_incident

        path = await async_capture_incident(
            self.state_dir / "incidents",
            unit.name,
            reason,
            pids=unit.runtime.pids(),
            probe_history=unit.probe_history(),
            log_files=unit.runtime.log_files(),
            tail_lines=settings.tail_lines,
            stack_dump=settings.stack_dump,
            log_text=await unit.runtime.log_text(settings.tail_lines),
            extra_parts=await unit.runtime.incident_parts(),
        )
        assert self.store is not None
        self.store.add_event(
            "incident",
            f"captured {path.name}: {reason}",
            component=unit.name,
            data={"incident": path.name},
        )

    def _state_changed(self, unit: Unit, old: State, new: State, reason: str) -> None:
        if self.watcher is not None:
            self.watcher.state_changed(unit, old, new, reason)
            if new is State.UNKNOWN and self.alerts is not None:
                # Cannot be seen (engine gone, no such container): that is an alert too; it
                # resolves when the component runs again.
                key = f"{unit.name}:state"
                self.watcher.active[key] = "critical"
                self.alerts.fire_background(
                    key, unit.name, "critical", f"{unit.name} is unknown: {reason}", {}
                )

    async def _stop_all(self, reason: str) -> None:
        await self._halt_engines_first(reason)
        for name in reversed(self.order):
            unit = self.units[name]
            if unit.runtime.survives_agent:
                await unit.release(reason)  # a container outlives the agent: adopted next time
            else:
                await unit.stop(reason)

    async def _halt_engines_first(self, reason: str) -> None:
        """Halt every engine the agent is about to stop, before anything stops: an engine must
        not trade while what it depends on goes away, and the orders the halt cancels are
        counted (log line and `trading` event) rather than lost silently in the engine's exit.
        Containers outlive the agent and keep trading; external engines are not ours to halt."""
        from chimera_ops.agent.engine_halt import DOWN, halt_engines

        engines = {
            name: unit.config.trading
            for name, unit in self.units.items()
            if unit.config.trading is not None
            and unit.managed
            and not unit.runtime.survives_agent
            and unit.state not in DOWN
        }
        if not engines:
            return
        for halt in await halt_engines(engines, reason, self.store, who="the agent"):
            log.warning("%s: %s before the shutdown", halt.component, halt.text())

    # ----------------------------------------------------------------- API helpers
    def unit(self, name: str) -> Unit:
        """A unit by name, or UnknownComponent listing the known names."""
        try:
            return self.units[name]
        except KeyError:
            raise UnknownComponent(name, list(self.units)) from None

    async def restart(self, name: str, reason: str) -> None:
        """Operator restart: stop, count it, start again."""
        unit = self.unit(name)
        await unit.stop(reason)
        assert self.store is not None
        self.store.add_restart(name, reason)
        unit.counters = self.store.counters(name)
        await unit.start(reason)

    def status(self) -> dict[str, Any]:
        """The stable status document (docs/status-json.md)."""
        return status_document(self)
