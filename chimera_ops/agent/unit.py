"""One supervised component: its state, runtime, probes, counters, and the actions on it.

Every state change goes through `Unit.set_state`, which records an event with its reason.
Decisions are not made here (see reconcile.py); this module carries them out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from chimera_ops.agent.reconcile import Action, UnitView
from chimera_ops.agent.wake import Wake
from chimera_ops.config import ComponentConfig
from chimera_ops.logfmt import log_fields
from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.factory import build_probe
from chimera_ops.probes.health import ROLES, ProbeTracker
from chimera_ops.runtimes.base import ExitInfo, Runtime, RuntimeUnavailable, StartError
from chimera_ops.states import State, check_transition
from chimera_ops.store import ChildRecord, Counters, Store

if TYPE_CHECKING:
    from chimera_ops.probes.docker_health import HealthSource

log = logging.getLogger("chimera_ops.agent")

UNKNOWN_RETRY = 5.0  # a component that cannot be found (no such container) is looked for again

EventHook = Callable[["Unit", State, State, str], None]
KillHook = Callable[["Unit", str], Awaitable[None]]


class Unit:
    """A component under supervision."""

    def __init__(
        self,
        name: str,
        config: ComponentConfig,
        runtime: Runtime,
        store: Store,
        wake: Wake,
        on_change: EventHook | None = None,
        before_kill: KillHook | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.runtime = runtime
        self.store = store
        self._wake = wake
        self._on_change = on_change
        self._before_kill = before_kill
        self.counters: Counters = store.counters(name)
        self.state = State.STOPPED
        self.state_since = time.time()
        self.reason = ""
        self.desired_up = True
        self.started_at: float | None = None
        self.pending_exit: ExitInfo | None = None
        self.backoff_until: float | None = None
        self.monitor_restart: str | None = None
        self.changed = True  # something metrics show changed since the last export
        self._kill_reason: str | None = None
        self._exit_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._probe_tasks: dict[str, asyncio.Task[None]] = {}
        self._busy = asyncio.Lock()
        self.probes: dict[str, tuple[ProbeTracker, Probe]] = {}
        for role in ROLES:
            probe_config = getattr(config, role)
            if probe_config is not None:
                self.probes[role] = (
                    ProbeTracker.from_config(name, role, probe_config),
                    build_probe(
                        probe_config,
                        pid_provider=lambda: self.runtime.pid,
                        env={**os.environ, **config.env},
                        health_source=self._health_source,
                    ),
                )
        # Steps of a stop (signal sent, grace over, SIGKILL) are events: the freeze path is
        # visible in `chimera-ops events`, not only in the component's log.
        self.runtime.report = self._record_step
        # A container's runtime tells of health changes and of its engine coming and going.
        if hasattr(self.runtime, "on_health"):
            self.runtime.on_health = self._health_event
        if hasattr(self.runtime, "on_change"):
            self.runtime.on_change = self._wake.set
        if self.counters.fatal_reason:
            self.state = State.FATAL
            self.reason = self.counters.fatal_reason
            self.state_since = self.counters.fatal_at or self.state_since

    # ----------------------------------------------------------------- state
    def _record_step(self, kind: str, text: str) -> None:
        self.store.add_event(kind, text, component=self.name)
        log.info("%s: %s", self.name, text, extra=log_fields(self.name, kind, text))

    def _health_source(self) -> HealthSource | None:
        """The docker runtime, while its container runs (what docker_health reads)."""
        if not hasattr(self.runtime, "health") or not self.runtime.pid:
            return None
        return cast("HealthSource", self.runtime)

    def _health_event(self, status: str) -> None:
        """Docker reported a HEALTHCHECK change: run the docker_health probes now, not at their
        next period (this is how `unhealthy` is acted on within milliseconds)."""
        now = time.time()
        for role, (tracker, probe) in self.probes.items():
            if probe.kind == "docker_health":
                tracker.run_now(now)
                self.store.add_event(
                    "docker_health", f"Docker: {status}", component=self.name, data={"role": role}
                )
        self._wake.set()

    @property
    def managed(self) -> bool:
        return self.runtime.manages_process

    @property
    def busy(self) -> bool:
        """An action or operator command is being carried out right now."""
        return self._busy.locked()

    @property
    def ready(self) -> bool:
        """Dependents may start: running (and ready, when a readiness probe exists)."""
        return self.state is State.RUNNING

    def set_state(
        self, new: State, reason: str, kind: str = "state", data: dict[str, Any] | None = None
    ) -> None:
        """The one place a state changes: checks the transition and records the event."""
        old = self.state
        if old is new and reason == self.reason:
            return
        check_transition(old, new)
        self.state = new
        self.reason = reason
        self.changed = True
        if old is not new:
            self.state_since = time.time()
        self.store.add_event(
            kind, reason, component=self.name, from_state=old, to_state=new, data=data
        )
        log.info(
            "%s: %s -> %s (%s)",
            self.name,
            old,
            new,
            reason,
            extra=log_fields(self.name, kind, reason, from_state=str(old), to_state=str(new)),
        )
        if self._on_change is not None:
            self._on_change(self, old, new, reason)

    def _save_counters(self, **changes: Any) -> None:
        self.counters = dataclasses.replace(self.counters, **changes)
        self.store.save_counters(self.counters)

    def view(self, now: float, waiting_for: tuple[str, ...]) -> UnitView:
        """The pure snapshot reconcile decides on."""
        statuses = {role: tracker.status for role, (tracker, _) in self.probes.items()}
        reasons = {
            role: tracker.last_result.reason
            for role, (tracker, _) in self.probes.items()
            if tracker.status == "failing" and tracker.last_result
        }
        return UnitView(
            name=self.name,
            managed=self.managed,
            state=self.state,
            desired_up=self.desired_up,
            policy=self.config.restart.policy,
            backoff=self.config.restart.backoff,
            crash_loop=self.config.restart.crash_loop,
            now=now,
            state_since=self.state_since,
            started_at=self.started_at,
            pending_exit=self.pending_exit,
            consecutive_failures=self.counters.consecutive_failures,
            # Only an exit needs the crash-loop window: no query on every idle tick.
            restart_times=self._restart_times(now) if self.pending_exit is not None else (),
            backoff_until=self.backoff_until,
            waiting_for=waiting_for,
            startup=statuses.get("startup"),
            readiness=statuses.get("readiness"),
            liveness=statuses.get("liveness"),
            probe_reason="; ".join(reasons.values()),
            probe_reasons=reasons,
            monitor_restart=self.monitor_restart,
            kill_in_progress=self._kill_reason is not None,
            kill_reason=self._kill_reason,
            unavailable=self.runtime.unavailable,
        )

    def _restart_times(self, now: float) -> tuple[float, ...]:
        window = self.config.restart.crash_loop.window
        since = max(now - window, self.counters.loop_reset_at)
        return tuple(self.store.restart_times(self.name, since))

    # ----------------------------------------------------------------- probes
    def _eligible_probes(self) -> list[tuple[str, ProbeTracker, Probe]]:
        """Probes that may run now: not already running, and allowed in this state
        (startup only while starting; the others only once startup has passed)."""
        if self.state not in (State.STARTING, State.RUNNING, State.UNHEALTHY):
            return []
        startup = self.probes.get("startup")
        out = []
        for role, (tracker, probe) in self.probes.items():
            if role == "startup" and self.state is not State.STARTING:
                continue
            if role != "startup" and startup is not None and startup[0].status != "passing":
                continue  # Kubernetes: other probes wait until the startup probe has passed
            running = self._probe_tasks.get(role)
            if running is not None and not running.done():
                continue
            out.append((role, tracker, probe))
        return out

    def launch_due_probes(self, now: float) -> None:
        """Start each due probe as its own task, so a hanging probe delays no other."""
        for role, tracker, probe in self._eligible_probes():
            if tracker.due(now):
                task = asyncio.create_task(self._probe_once(role, tracker, probe))
                # Its next run is scheduled when it finishes; tell a sleeping loop.
                self._wake.when_done(task, tracker)
                self._probe_tasks[role] = task

    async def _probe_once(self, role: str, tracker: ProbeTracker, probe: Probe) -> None:
        # The result belongs to the process that was probed: a restart while this run is in
        # flight opens a new incarnation, and the late result is then dropped by the tracker.
        incarnation = tracker.incarnation
        result: ProbeResult = await probe.run()
        self.changed = True
        if tracker.record(result, time.time(), incarnation):
            self.store.add_event(
                "probe",
                f"{role} {tracker.status}: {result.reason}",
                component=self.name,
                data={"role": role, "status": tracker.status, "latency_s": result.latency_s},
            )
            self._wake.set()

    def next_due(self, now: float) -> float | None:
        """The earliest wall time this unit needs the loop: backoff end, a probe, a backoff reset."""
        times: list[float] = []
        if self.state in (State.BACKOFF, State.UNKNOWN) and self.backoff_until is not None:
            times.append(self.backoff_until)
        if (
            self.counters.consecutive_failures > 0
            and self.started_at is not None
            and self.state in (State.RUNNING, State.UNHEALTHY)
            and self._kill_reason is None
        ):
            # The stable-uptime reset of the backoff is due then (status shows the count).
            times.append(self.started_at + self.config.restart.backoff.reset_after)
        for _, tracker, _ in self._eligible_probes():
            times.append(tracker.next_due if tracker.next_due is not None else now)
        return min(times) if times else None

    def probe_history(self) -> list[dict[str, Any]]:
        """Recent probe results of every role, for incident capture."""
        out = []
        for role, (tracker, _) in self.probes.items():
            for at, result in tracker.recent():
                out.append({"role": role, "at": at, **result.to_dict()})
        return sorted(out, key=lambda r: r["at"])

    # ----------------------------------------------------------------- actions
    async def apply(self, action: Action, now: float) -> None:
        """Carry out one reconcile decision."""
        async with self._busy:
            await self._apply(action, now)

    async def _apply(self, action: Action, now: float) -> None:
        kind = action.kind
        if kind == "start":
            await self._start(action.reason, now)
        elif kind == "mark_running":
            self.set_state(State.RUNNING, action.reason)
        elif kind == "mark_unhealthy":
            self.set_state(State.UNHEALTHY, action.reason)
        elif kind == "kill":
            probe = getattr(self.config, action.probe) if action.probe else None
            await self._kill(action.reason, probe.kill_grace if probe is not None else None)
        elif kind == "backoff":
            exit_at = self._clear_exit()
            self.store.add_restart(self.name, action.reason, ts=now)
            self._save_counters(
                consecutive_failures=self.counters.consecutive_failures + 1,
                total_restarts=self.counters.total_restarts + 1,
                last_exit=action.exit or action.reason,
                last_exit_at=exit_at,
            )
            self.backoff_until = now + action.delay
            self.set_state(State.BACKOFF, action.reason, data=self._exit_data(action))
        elif kind == "fatal":
            stop_docker = bool(self.pending_exit and self.pending_exit.restarted_by)
            exit_at = self._clear_exit()
            self._save_counters(
                fatal_reason=action.reason,
                fatal_at=now,
                last_exit=action.exit or action.reason,
                last_exit_at=exit_at,
            )
            self.set_state(State.FATAL, self._with_log(action.reason), data=self._exit_data(action))
            if stop_docker:
                # Docker would go on restarting it: fatal means no more restarts by anyone.
                self._stop_task = asyncio.create_task(self.runtime.stop())
        elif kind == "exited":
            exit_at = self._clear_exit()
            self._save_counters(last_exit=action.exit or action.reason, last_exit_at=exit_at)
            self.set_state(State.EXITED, action.reason, data=self._exit_data(action))
        elif kind == "reset_failures":
            self._save_counters(consecutive_failures=0)
            self.store.add_event("backoff_reset", action.reason, component=self.name)
        elif kind == "mark_unknown":
            self._forget_run()
            self.backoff_until = None  # look again as soon as the engine answers
            self.set_state(State.UNKNOWN, action.reason)

    @property
    def log_file(self) -> str | None:
        """The component's current log file (where its stdout and stderr go), if it has one."""
        files = self.runtime.log_files()
        return str(files[0]) if files else None

    def _with_log(self, reason: str) -> str:
        """A final reason (fatal) says where to look next."""
        return f"{reason}; log: {self.log_file}" if self.log_file else reason

    def _exit_data(self, action: Action) -> dict[str, Any]:
        data: dict[str, Any] = {"exit": action.exit, "log_file": self.log_file}
        if action.kind == "backoff":
            data["delay_s"] = action.delay
        return data

    def _forget_run(self) -> None:
        """The run being followed can no longer be seen (its engine is gone): stop waiting for
        its exit; the next start finds out what became of it."""
        if self._exit_task is not None:
            self._exit_task.cancel()
            self._exit_task = None
        self.pending_exit = None
        self._kill_reason = None
        self.started_at = None
        self.monitor_restart = None

    def _clear_exit(self) -> float | None:
        """Forget the exit just handled; returns when it happened."""
        exit_at = self.pending_exit.at if self.pending_exit is not None else None
        self.pending_exit = None
        self._kill_reason = None
        self.started_at = None
        self.monitor_restart = None
        self.store.clear_child(self.name)
        return exit_at

    async def _start(self, reason: str, now: float) -> None:
        # A probe still in flight probes the old process: end it, so the new incarnation's
        # first run is not held up by it (a hanging probe would hold it for its timeout).
        for task in self._probe_tasks.values():
            task.cancel()
        self._probe_tasks.clear()
        if not self.managed:
            for tracker, _ in self.probes.values():
                # An external component was not started by the agent: it should already answer.
                tracker.start(now, grace=False)
            self.started_at = now
            self.set_state(State.STARTING, reason)
            return
        try:
            pid = await self.runtime.start()
        except RuntimeUnavailable as exc:
            # Not there (yet): `unknown` with the reason and an alert, never fatal; looked for
            # again after a moment.
            self.backoff_until = time.time() + UNKNOWN_RETRY
            self.set_state(State.UNKNOWN, str(exc))
            return
        except StartError as exc:
            message = f"cannot start: {exc}"
            self._save_counters(
                fatal_reason=message, fatal_at=now, last_exit=message, last_exit_at=now
            )
            self.set_state(State.FATAL, message)
            return
        now = time.time()  # a container start can take a while (Docker's own restart delay)
        grace = self.runtime.start_grace()
        for tracker, _ in self.probes.values():
            tracker.start(now, grace=True, start_period=grace)
        self.started_at = now
        self.backoff_until = None
        create_time = getattr(self.runtime, "create_time", None) or now
        if pid and self.runtime.owns_children:
            self.store.set_child(ChildRecord(self.name, pid, create_time, os.getpid(), now))
        how = getattr(self.runtime, "last_start", "")
        self.set_state(State.STARTING, f"{reason}; {how + ', ' if how else ''}pid {pid}")
        self._exit_task = asyncio.create_task(self._watch_exit())

    async def _watch_exit(self) -> None:
        info = await self.runtime.wait()
        if self._kill_reason is not None:
            # Killed by the agent for a health reason: that is a failure, not a requested stop.
            info = dataclasses.replace(info, expected=False)
            self.reason = self._kill_reason
        self.pending_exit = info
        self._wake.set()

    async def _kill(self, reason: str, grace: float | None = None) -> None:
        """Capture an incident, then stop the tree (after ``grace``; None: stop.grace)."""
        self._kill_reason = reason
        if self.state is State.STARTING or self.state is State.RUNNING:
            self.set_state(State.UNHEALTHY, reason)
        self.store.add_event("kill", reason, component=self.name)
        if self._before_kill is not None:
            try:
                await self._before_kill(self, reason)
            except Exception:  # noqa: BLE001 - capture must never block the recovery
                log.exception("%s: incident capture failed", self.name)
        # Kept: the loop holds only weak references to tasks.
        self._stop_task = asyncio.create_task(self.runtime.stop(grace))

    # ----------------------------------------------------------------- operator
    async def stop(self, reason: str) -> None:
        """Stop on purpose (operator or agent shutdown); stays stopped."""
        async with self._busy:
            self.desired_up = False
            if self.state in (State.STOPPED, State.FATAL, State.EXITED):
                if self.state is not State.STOPPED:
                    self.set_state(State.STOPPED, reason)
                return
            if self.state is State.BACKOFF:
                self._clear_exit()
                self.set_state(State.STOPPED, reason)
                return
            if not self.managed:
                # The agent never stops an external service; "stopping" would read, at 3 a.m.,
                # as "the agent stopped my database".
                self._clear_exit()
                self.set_state(
                    State.STOPPED, f"no longer watched ({reason}); the agent does not stop it"
                )
                return
            self.set_state(State.STOPPING, reason)
            await self.runtime.stop()
            if self._exit_task is not None:
                await asyncio.wait([self._exit_task], timeout=5)
            if self.pending_exit is not None:
                self._save_counters(
                    last_exit=f"{self.pending_exit.describe()} on {reason}",
                    last_exit_at=self.pending_exit.at,
                )
            self._clear_exit()
            self.set_state(State.STOPPED, reason)

    async def release(self, reason: str) -> None:
        """Agent shutdown for a component that outlives the agent (a container): stop watching
        it, leave it running. A restarted agent adopts it."""
        async with self._busy:
            self._forget_run()
            if self.state is not State.STOPPED:
                self.set_state(
                    State.STOPPED, f"no longer watched ({reason}); the container keeps running"
                )

    async def start(self, reason: str) -> None:
        """Operator start: clears fatal and crash counters; reconcile does the rest."""
        async with self._busy:
            self.desired_up = True
            if self.counters.fatal_reason or self.counters.consecutive_failures:
                self._save_counters(
                    fatal_reason=None, consecutive_failures=0, loop_reset_at=time.time()
                )
            if self.state in (State.FATAL, State.EXITED):
                self.set_state(State.STOPPED, reason)
            self.store.add_event("operator", reason, component=self.name)
        self._wake.set()

    def cancel_tasks(self) -> None:
        """Cancel probe tasks on shutdown."""
        for task in self._probe_tasks.values():
            task.cancel()

    def snapshot(self, now: float) -> dict[str, Any]:
        """The stable status shape of one component (see docs/status-json.md)."""
        pid = self.runtime.pid
        health = {role: tracker.snapshot() for role, (tracker, _) in self.probes.items()}
        return {
            "name": self.name,
            "runtime": self.config.runtime,
            "state": str(self.state),
            "reason": self.reason,
            "since": self.state_since,
            "pid": pid,
            "uptime_s": (now - self.started_at) if self.started_at and pid else None,
            "restarts": self.counters.total_restarts,
            "consecutive_failures": self.counters.consecutive_failures,
            "last_exit": self.counters.last_exit,
            "last_exit_at": self.counters.last_exit_at,
            "fatal_since": self.counters.fatal_at if self.state is State.FATAL else None,
            "log_file": self.log_file,
            "ready": self.ready,
            "depends_on": list(self.config.depends_on),
            "health": health,
            **({"docker": details} if (details := self.runtime.details()) else {}),
        }
