"""Pure decisions: (component view, now) -> the one action to take. No I/O here.

The agent loop builds a `UnitView` for each component every tick (and at once when a child
exits), asks `decide()` what to do, and carries the action out. Because nothing here touches a
clock, a process or a socket, every rule is unit-tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from chimera_ops.config import BackoffConfig, CrashLoopConfig
from chimera_ops.runtimes.base import ExitInfo
from chimera_ops.states import State

ProbeStatus = Literal["unknown", "passing", "failing"]
ActionKind = Literal[
    "none",
    "start",  # spawn (or, for external, begin watching)
    "mark_running",
    "mark_unhealthy",
    "kill",  # stop the tree now; the exit then goes through the crash path
    "backoff",  # wait `delay` before the next start
    "fatal",
    "exited",  # ended and the policy says leave it
    "reset_failures",  # stable long enough: forget earlier crashes
    "mark_unknown",  # the runtime cannot see it (Docker engine unreachable, no such container)
]


@dataclass(frozen=True)
class Action:
    """What to do, and why (the reason is recorded with the event)."""

    kind: ActionKind
    reason: str = ""
    delay: float = 0.0
    probe: str | None = None  # the probe role behind a kill (its kill_grace applies)
    exit: str = ""  # for exit actions: what the exit was (kept as `last_exit`, no promise)


NOTHING = Action("none")


@dataclass(frozen=True)
class UnitView:
    """Everything `decide` needs to know about one component at one moment."""

    name: str
    managed: bool  # False for external components: watched, never started or restarted
    state: State
    desired_up: bool
    policy: Literal["always", "on-failure", "never"]
    backoff: BackoffConfig
    crash_loop: CrashLoopConfig
    now: float
    state_since: float
    started_at: float | None = None
    pending_exit: ExitInfo | None = None
    consecutive_failures: int = 0
    restart_times: tuple[float, ...] = ()
    backoff_until: float | None = None
    waiting_for: tuple[str, ...] = ()  # dependencies not ready yet
    startup: ProbeStatus | None = None  # None: no such probe configured
    readiness: ProbeStatus | None = None
    liveness: ProbeStatus | None = None
    probe_reason: str = ""  # every failing probe's reason (for states that sum them up)
    probe_reasons: dict[str, str] = field(default_factory=dict)  # role -> its failing reason
    monitor_restart: str | None = None  # a monitor asks for a restart (memory, cpu)
    kill_in_progress: bool = False  # the agent is already ending it; wait for the exit
    kill_reason: str | None = None  # why the agent is ending it (the exit's cause)
    unavailable: str | None = None  # why the runtime cannot see it now (None: it can)
    extra: dict[str, str] = field(default_factory=dict)


def backoff_delay(consecutive_failures: int, cfg: BackoffConfig) -> float:
    """0 failures -> no delay; the first -> ``first``; then initial * 2^(n-2), capped at max."""
    if consecutive_failures <= 0:
        return 0.0
    if consecutive_failures == 1:
        return cfg.first
    exponent = min(consecutive_failures - 2, 32)  # avoid float overflow on long crash series
    return min(cfg.max, cfg.initial * (2.0**exponent))


def restarts_in_window(restart_times: tuple[float, ...], now: float, window: float) -> int:
    """How many restarts happened within the last `window` seconds."""
    return sum(1 for ts in restart_times if now - ts <= window)


def _exit_action(view: UnitView, exit_info: ExitInfo) -> Action:
    what = exit_info.summary()
    if view.kill_reason:
        what = f"{what}, ended by the agent: {view.kill_reason}"
    if exit_info.expected:
        return Action("exited", f"stopped by the agent ({what})", exit=what)
    if exit_info.restarted_by:
        # Docker brings it back by itself: record that restart (it counts for the crash loop),
        # never race it with a start of our own.
        recent = restarts_in_window(view.restart_times, view.now, view.crash_loop.window)
        if recent >= view.crash_loop.max_restarts:
            return Action(
                "fatal",
                f"crash loop: {what} after {recent} restarts within "
                f"{view.crash_loop.window:g}s (restarted by {exit_info.restarted_by}); "
                "stopped, no more restarts until an operator starts it",
                exit=what,
            )
        return Action(
            "backoff", f"{what}; restarted by {exit_info.restarted_by}, not by the agent", exit=what
        )
    # A health kill is a failure whatever the exit code: a process (or container) that handles
    # SIGTERM and exits 0 after its liveness probe failed must still come back.
    failed = not exit_info.clean or view.kill_reason is not None
    wants_restart = view.policy == "always" or (view.policy == "on-failure" and failed)
    if not wants_restart:
        return Action(
            "exited", f"{what}; restart policy '{view.policy}' leaves it stopped", exit=what
        )
    recent = restarts_in_window(view.restart_times, view.now, view.crash_loop.window)
    if recent >= view.crash_loop.max_restarts:
        return Action(
            "fatal",
            f"crash loop: {what} after {recent} restarts within "
            f"{view.crash_loop.window:g}s; no more restarts until an operator starts it",
            exit=what,
        )
    delay = backoff_delay(view.consecutive_failures + 1, view.backoff)
    return Action("backoff", f"{what}; restarting in {delay:g}s", delay=delay, exit=what)


def _probe_failed(view: UnitView, role: str) -> Action:
    """A kill for one probe, with that probe's own reason (not every failing probe's)."""
    why = view.probe_reasons.get(role) or view.probe_reason
    return Action("kill", f"{role} probe failed: {why}", probe=role)


def decide(view: UnitView) -> Action:
    """The next action for one component."""
    if not view.desired_up or view.state in (State.FATAL, State.STOPPING):
        return NOTHING

    if not view.managed:
        return _decide_external(view)

    if view.unavailable is not None:
        if view.state is State.UNKNOWN:
            return NOTHING
        return Action("mark_unknown", view.unavailable)
    if (
        view.state is State.UNKNOWN
        and view.backoff_until is not None
        and view.now < view.backoff_until
    ):
        return NOTHING  # looked a moment ago (no such container): look again later

    if view.pending_exit is not None and view.state in (
        State.STARTING,
        State.RUNNING,
        State.UNHEALTHY,
    ):
        return _exit_action(view, view.pending_exit)
    if view.kill_in_progress:
        return NOTHING

    if view.state in (State.STOPPED, State.EXITED, State.UNKNOWN):
        if view.state is State.EXITED and view.pending_exit is None:
            return NOTHING  # ended on purpose; only an operator starts it again
        if view.waiting_for:
            return NOTHING
        return Action("start", "start requested")

    if view.state is State.BACKOFF:
        if view.backoff_until is not None and view.now < view.backoff_until:
            return NOTHING
        if view.waiting_for:
            return NOTHING
        return Action("start", "backoff elapsed")

    if view.state is State.STARTING:
        if view.startup == "failing":
            return _probe_failed(view, "startup")
        if view.startup in ("unknown",):
            return NOTHING  # the startup probe protects a slow start; others wait for it
        if view.liveness == "failing":
            return _probe_failed(view, "liveness")
        if view.readiness is None or view.readiness == "passing":
            return Action("mark_running", "ready" if view.readiness else "started")
        return NOTHING

    if view.state in (State.RUNNING, State.UNHEALTHY):
        if view.liveness == "failing":
            return _probe_failed(view, "liveness")
        if view.monitor_restart:
            return Action("kill", view.monitor_restart)
        if view.state is State.RUNNING and view.readiness == "failing":
            why = view.probe_reasons.get("readiness") or view.probe_reason
            return Action("mark_unhealthy", f"readiness probe failing: {why}")
        if view.state is State.UNHEALTHY and view.readiness in (None, "passing"):
            return Action("mark_running", "readiness probe passing again")
        if (
            view.consecutive_failures > 0
            and view.started_at is not None
            and view.now - view.started_at >= view.backoff.reset_after
        ):
            return Action(
                "reset_failures", f"stable for {view.backoff.reset_after:g}s; backoff reset"
            )
    return NOTHING


def container_exit_cause(
    exit_code: int | None,
    oom_killed: bool,
    oom_event: bool,
    oom_kills_delta: int | None,
    limit_bytes: int | None,
) -> str:
    """The proven cause of a container's exit, or "" when the exit code says it all.

    `State.OOMKilled` alone is unreliable (cgroup v2 and current kernels miss it) and exit code
    137 is any SIGKILL (`docker kill -s KILL` too), so an OOM kill needs evidence from the
    kernel or the engine: the cgroup's `oom_kill` counter went up during this run, Docker's
    `oom` event came, or `OOMKilled` is set. With evidence and a SIGKILL exit (137), the main
    process was OOM-killed; with evidence and another exit, a process inside was.
    """
    from chimera_ops.units import format_size

    evidence = oom_killed or oom_event or bool(oom_kills_delta and oom_kills_delta > 0)
    if not evidence:
        return ""
    at = f" at limit {format_size(limit_bytes)}" if limit_bytes else ""
    if exit_code == 137:
        return f"OOM-killed{at} (exit code 137)"
    return f"exit code {exit_code} after an OOM kill inside the container{at}"


def docker_restarts(
    policy: str,
    max_retries: int,
    restart_count: int,
    exit_code: int | None,
    stopped_by_agent: bool,
    restarting: bool,
) -> str:
    """Who restarts a container that just died: "Docker (restart policy 'X')" or "".

    Docker's restart manager restarts a container that died on its own under `always` and
    `unless-stopped`, and under `on-failure` when the exit code is not 0 and fewer than
    `max_retries` restarts were made (0: no limit). It never restarts one stopped through the
    API (the agent's own `docker stop`). `restarting` is what the engine itself says
    (`State.Restarting`): when it is set, Docker restarts it whatever the policy looks like.
    """
    label = f"Docker (restart policy '{policy}')"
    if stopped_by_agent:
        return ""
    if restarting:
        return label
    if policy in ("always", "unless-stopped"):
        return label
    failed = exit_code not in (0, None)
    if policy == "on-failure" and failed and (max_retries == 0 or restart_count < max_retries):
        return label
    return ""


def _decide_external(view: UnitView) -> Action:
    """External components are reported, never restarted."""
    if view.state in (State.STOPPED, State.EXITED, State.UNKNOWN, State.BACKOFF):
        return Action("start", "watching")
    failing = view.liveness == "failing" or view.readiness == "failing"
    if view.state in (State.STARTING, State.RUNNING) and failing:
        return Action("mark_unhealthy", view.probe_reason or "probe failing")
    if view.state in (State.STARTING, State.UNHEALTHY) and not failing:
        passing = view.readiness in (None, "passing") and view.liveness in (None, "passing")
        if passing:
            return Action("mark_running", "probes passing")
    return NOTHING
