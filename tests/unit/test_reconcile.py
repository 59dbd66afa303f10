"""Pure decisions with plain values: backoff, crash loop, probes, external components."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from chimera_ops.agent.reconcile import UnitView, backoff_delay, decide
from chimera_ops.config import BackoffConfig, CrashLoopConfig
from chimera_ops.runtimes.base import ExitInfo
from chimera_ops.states import State

BACKOFF = BackoffConfig(first=0.1, initial=1.0, max=60.0, reset_after=60.0)
LOOP = CrashLoopConfig(max_restarts=5, window=300.0)


def view(**changes: object) -> UnitView:
    base = UnitView(
        name="engine",
        managed=True,
        state=State.RUNNING,
        desired_up=True,
        policy="on-failure",
        backoff=BACKOFF,
        crash_loop=LOOP,
        now=1000.0,
        state_since=900.0,
        started_at=900.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


CRASH = ExitInfo(code=1, signal=None, at=1000.0, expected=False)
CLEAN = ExitInfo(code=0, signal=None, at=1000.0, expected=False)


def test_first_crash_after_a_stable_run_restarts_fast_then_backoff_doubles_and_caps():
    delays = [backoff_delay(n, BACKOFF) for n in range(0, 10)]
    assert delays == [0, 0.1, 1, 2, 4, 8, 16, 32, 60, 60]


@given(st.integers(min_value=2, max_value=10_000))
def test_backoff_never_exceeds_the_cap(failures: int):
    assert 1.0 <= backoff_delay(failures, BACKOFF) <= 60.0


def test_crash_goes_to_backoff_with_growing_delay():
    first = decide(view(pending_exit=CRASH))
    assert first.kind == "backoff" and first.delay == 0.1 and "exit code 1" in first.reason
    second = decide(view(pending_exit=CRASH, consecutive_failures=1))
    assert second.delay == 1.0
    third = decide(view(pending_exit=CRASH, consecutive_failures=2))
    assert third.delay == 2.0


def test_crash_loop_goes_fatal_after_max_restarts_in_window():
    recent = tuple(1000.0 - 10 * i for i in range(5))
    action = decide(view(pending_exit=CRASH, restart_times=recent))
    assert action.kind == "fatal" and "crash loop" in action.reason
    old = tuple(1000.0 - 400 - i for i in range(5))  # outside the 300 s window
    assert decide(view(pending_exit=CRASH, restart_times=old)).kind == "backoff"


def test_policies():
    assert decide(view(pending_exit=CLEAN)).kind == "exited"  # on-failure, exit 0
    assert decide(view(pending_exit=CLEAN, policy="always")).kind == "backoff"
    assert decide(view(pending_exit=CRASH, policy="never")).kind == "exited"


def test_backoff_waits_then_starts_unless_dependencies_are_not_ready():
    waiting = view(state=State.BACKOFF, backoff_until=1005.0)
    assert decide(waiting).kind == "none"
    assert decide(dataclasses.replace(waiting, now=1006.0)).kind == "start"
    blocked = dataclasses.replace(waiting, now=1006.0, waiting_for=("postgres",))
    assert decide(blocked).kind == "none"


def test_liveness_failure_kills_and_readiness_failure_marks_unhealthy():
    assert decide(view(liveness="failing", probe_reason="timeout")).kind == "kill"
    assert decide(view(readiness="failing")).kind == "mark_unhealthy"
    assert decide(view(state=State.UNHEALTHY, readiness="passing")).kind == "mark_running"
    assert decide(view(liveness="failing", kill_in_progress=True)).kind == "none"


def test_startup_probe_holds_back_liveness():
    starting = view(state=State.STARTING, startup="unknown", liveness="failing")
    assert decide(starting).kind == "none"
    assert decide(dataclasses.replace(starting, startup="failing")).kind == "kill"
    ready = dataclasses.replace(
        starting, startup="passing", liveness="passing", readiness="passing"
    )
    assert decide(ready).kind == "mark_running"


def test_stable_uptime_resets_failures():
    action = decide(view(consecutive_failures=3, started_at=1000.0 - 61))
    assert action.kind == "reset_failures"
    assert decide(view(consecutive_failures=3, started_at=1000.0 - 30)).kind == "none"


def test_fatal_and_stopped_on_purpose_are_left_alone():
    assert decide(view(state=State.FATAL)).kind == "none"
    assert decide(view(state=State.STOPPED, desired_up=False)).kind == "none"
    assert decide(view(state=State.EXITED)).kind == "none"


def test_external_components_are_reported_never_restarted():
    ext = view(managed=False, state=State.RUNNING, liveness="failing", probe_reason="refused")
    assert decide(ext).kind == "mark_unhealthy"
    assert decide(dataclasses.replace(ext, state=State.UNHEALTHY)).kind == "none"
    back = dataclasses.replace(ext, state=State.UNHEALTHY, liveness="passing")
    assert decide(back).kind == "mark_running"


def test_a_probe_kill_names_its_probe_so_its_kill_grace_applies():
    live = decide(view(state=State.RUNNING, liveness="failing", probe_reason="timed out"))
    assert live.kind == "kill" and live.probe == "liveness"
    start = decide(view(state=State.STARTING, startup="failing", probe_reason="refused"))
    assert start.kind == "kill" and start.probe == "startup"
    memory = decide(view(state=State.RUNNING, monitor_restart="memory: over the limit"))
    assert memory.kind == "kill" and memory.probe is None
