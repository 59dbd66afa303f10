"""Supervision, side by side with supervisord 4.2 on the same child programs.

1. recovery: `kill -9` of an HTTP child -> its /health answers 200 again (N trials, 10 ms poll);
2. footprint: the supervisor's own CPU and RSS while it supervises 20 idle children for 60 s;
3. `chimera-ops status` vs `supervisorctl status` wall time with 20 children.

Writes bench/results/supervision.md; exits 2 when supervisord is missing (its rows say so).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    NOT_INSTALLED,
    SUPERVISORCTL,
    SUPERVISORD,
    SUPERVISORD_PROGRAM_SETTINGS,
    ChimeraAgent,
    Section,
    Supervisord,
    Usage,
    child_argv,
    chimera_cli,
    end_tagged,
    fmt,
    free_port,
    listener_pid,
    measure,
    measure_groups,
    median,
    mib,
    p90,
    temp_dir,
    verdict,
    wait_health,
    write_results,
)

TRIALS = 10
IDLE_CHILDREN = 20
IDLE_SECONDS = 60.0
STATUS_RUNS = 20
SETTLE_BETWEEN_TRIALS = 3.5
"""Seconds of stable uptime between kills (longer than the agent's backoff.reset_after)."""

CHIMERA_RESTART_DEFAULT: dict[str, Any] = {
    "policy": "always",
    "backoff": {"reset_after": "2s"},
    "crash_loop": {"max_restarts": 100, "window": "5m"},
}


# --------------------------------------------------------------------------- recovery


def _kill_and_time(port: int, pid_of: Callable[[], int]) -> float:
    """kill -9 the listener; seconds until /health answers 200 again from a new process."""
    old = pid_of()
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    t1 = wait_health(port, timeout=60, poll=0.01)
    new = listener_pid(port)
    if new == old:
        raise RuntimeError(f"pid {old} still listening after kill -9")
    return t1 - t0


def recovery_chimera(restart: dict[str, Any]) -> list[float]:
    """N kill -9 trials under the chimera-ops agent."""
    tmp = temp_dir("rec")
    tag = str(tmp)
    port = free_port()
    agent = ChimeraAgent(
        tmp,
        {
            "agent": {},
            "components": {
                "web": {
                    "runtime": "process",
                    "command": child_argv("http", port, tag=tag),
                    "restart": restart,
                    "stop": {"grace": "2s"},
                }
            },
        },
    )
    times: list[float] = []
    try:
        agent.start()
        wait_health(port, timeout=30)
        time.sleep(SETTLE_BETWEEN_TRIALS)
        for _ in range(TRIALS):
            times.append(_kill_and_time(port, lambda: _pid(listener_pid(port))))
            time.sleep(SETTLE_BETWEEN_TRIALS)
    finally:
        agent.stop()
        end_tagged(tag)
    return times


def recovery_supervisord() -> list[float]:
    """N kill -9 trials under supervisord."""
    tmp = temp_dir("rec-sd")
    tag = str(tmp)
    port = free_port()
    sup = Supervisord(tmp, {"web": child_argv("http", port, tag=tag)})
    times: list[float] = []
    try:
        sup.start()
        wait_health(port, timeout=30)
        time.sleep(SETTLE_BETWEEN_TRIALS)
        for _ in range(TRIALS):
            times.append(_kill_and_time(port, lambda: sup.pid_of("web")))
            time.sleep(SETTLE_BETWEEN_TRIALS)
    finally:
        sup.stop()
        end_tagged(tag)
    return times


def _pid(pid: int | None) -> int:
    if pid is None:
        raise RuntimeError("nobody listens on the port")
    return pid


# --------------------------------------------------------------------------- idle footprint + status


def _time_runs(argv: list[str], runs: int | None = None) -> list[float]:
    """Wall time of `runs` runs of argv (after 2 warm-up runs)."""
    for _ in range(2):
        subprocess.run(argv, capture_output=True, timeout=60)
    times = []
    for _ in range(runs or STATUS_RUNS):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t0)
    return times


def idle_chimera() -> tuple[Usage, Usage, list[float]]:
    """Agent alone, agent + guard over IDLE_SECONDS with 20 idle children; status wall times."""
    tmp = temp_dir("idle")
    tag = str(tmp)
    components = {
        f"idle{i:02d}": {
            "runtime": "process",
            "command": child_argv("sleep", tag=tag),
            "restart": {"policy": "always"},
            "stop": {"grace": "2s"},
        }
        for i in range(IDLE_CHILDREN)
    }
    agent = ChimeraAgent(tmp, {"agent": {}, "components": components})
    try:
        agent.start()
        agent.wait_all("running")
        time.sleep(2)
        usage = measure_groups(
            {"agent": lambda: [agent.pid], "both": lambda: [agent.pid, *agent.helper_pids()]},
            IDLE_SECONDS,
        )
        agent_only, both = usage["agent"], usage["both"]
        status = _time_runs([*chimera_cli(), "--config", str(agent.config_path), "status"])
        ok = agent.cli("status")
        if ok.returncode != 0:
            raise RuntimeError(f"chimera-ops status failed: {ok.stderr}")
        return agent_only, both, status
    finally:
        agent.stop()
        end_tagged(tag)


def idle_supervisord() -> tuple[Usage, list[float]]:
    """supervisord over IDLE_SECONDS with 20 idle children; supervisorctl status wall times."""
    tmp = temp_dir("idle-sd")
    tag = str(tmp)
    programs = {f"idle{i:02d}": child_argv("sleep", tag=tag) for i in range(IDLE_CHILDREN)}
    sup = Supervisord(tmp, programs)
    try:
        sup.start()
        time.sleep(2)
        usage = measure(lambda: [sup.pid], IDLE_SECONDS)
        assert SUPERVISORCTL is not None
        status = _time_runs([SUPERVISORCTL, "-c", str(sup.conf), "status"])
        return usage, status
    finally:
        sup.stop()
        end_tagged(tag)


# --------------------------------------------------------------------------- main


def main() -> int:
    """Run every part; write bench/results/supervision.md; 2 when supervisord is missing."""
    have_sd = SUPERVISORD is not None and SUPERVISORCTL is not None
    sections: list[Section] = []

    # 1. recovery ------------------------------------------------------------------------
    print("recovery: chimera-ops (default backoff)", flush=True)
    rec_default = recovery_chimera(CHIMERA_RESTART_DEFAULT)
    rec_sd: list[float] = []
    if have_sd:
        print("recovery: supervisord", flush=True)
        rec_sd = recovery_supervisord()

    def rec_row(label: str, values: list[float]) -> list[str]:
        if not values:
            return [label, NOT_INSTALLED, NOT_INSTALLED, NOT_INSTALLED, NOT_INSTALLED]
        return [
            label,
            fmt(median(values), 3, " s"),
            fmt(p90(values), 3, " s"),
            f"{fmt(min(values), 3)} .. {fmt(max(values), 3)} s",
            str(len(values)),
        ]

    sd_med = median(rec_sd) if rec_sd else None
    met_default = None if sd_med is None else median(rec_default) <= sd_med
    sections.append(
        Section(
            title="Recovery after kill -9 (time until /health answers 200 again)",
            aim="chimera-ops median no slower than supervisord's",
            headers=["supervisor", "median", "p90", "min .. max", "trials"],
            rows=[
                rec_row("chimera-ops, default backoff (first restart after 0.1 s)", rec_default),
                rec_row("supervisord 4.2", rec_sd),
            ],
            verdict=verdict(met_default),
            notes=[
                "Child: `tests/children.py http PORT` (Python ThreadingHTTPServer, GET /health 200).",
                "kill -9 of the listening pid at t0; /health polled every 10 ms (250 ms timeout per "
                "request) until 200 from a new pid.",
                f"{TRIALS} trials each, {SETTLE_BETWEEN_TRIALS} s of stable uptime between kills.",
                "chimera-ops: agent tick 5 s (default); restart policy always; default backoff "
                "(first 0.1 s, then initial 1 s doubling); "
                "backoff.reset_after 2 s (so every kill is a *first* crash, as supervisord's "
                "is); crash_loop.max_restarts 100 (the default 5/5 min would make the 6th trial "
                "`fatal`); no readiness probe (recovery is the process coming back).",
                "supervisord: "
                + ", ".join(f"{k}={v}" for k, v in SUPERVISORD_PROGRAM_SETTINGS.items())
                + " (supervisord restarts a process that ran longer than startsecs at once, "
                "with no backoff).",
            ],
        )
    )

    # 2 + 3. idle footprint and status ----------------------------------------------------
    print("idle: chimera-ops", flush=True)
    agent_only, agent_guard, st_chimera = idle_chimera()
    sd_usage: Usage | None = None
    st_sd: list[float] = []
    if have_sd:
        print("idle: supervisord", flush=True)
        sd_usage, st_sd = idle_supervisord()

    def use_row(label: str, usage: Usage | None) -> list[str]:
        if usage is None:
            return [label, NOT_INSTALLED, NOT_INSTALLED, NOT_INSTALLED]
        return [label, fmt(usage.cpu_percent, 2, " %"), mib(usage.rss_mean), mib(usage.rss_max)]

    cpu_met = None if sd_usage is None else agent_only.cpu_percent <= sd_usage.cpu_percent
    rss_met = None if sd_usage is None else agent_only.rss_mean <= 1.5 * sd_usage.rss_mean
    ratio = "" if sd_usage is None else f" (ratio {agent_only.rss_mean / sd_usage.rss_mean:.2f}x)"
    sections.append(
        Section(
            title=f"Footprint while supervising {IDLE_CHILDREN} idle children for {IDLE_SECONDS:.0f} s",
            aim="agent CPU no higher than supervisord's; agent RSS at most 1.5x supervisord's",
            headers=["process(es)", "CPU (% of one core)", "RSS mean", "RSS max"],
            rows=[
                use_row("chimera-ops agent alone", agent_only),
                use_row("chimera-ops agent + sh death guard", agent_guard),
                use_row("supervisord 4.2", sd_usage),
            ],
            verdict=f"CPU: {verdict(cpu_met)}; RSS: {verdict(rss_met)}{ratio}",
            notes=[
                f"Children: {IDLE_CHILDREN} x `tests/children.py sleep` (Python, sleep(1) loop).",
                "CPU = (user+system CPU time delta of the process, children excluded) / wall time, "
                "sampled with psutil every 1 s; RSS = mean / max of those samples (both rows from the "
                "same 60 s window).",
                "chimera-ops: agent tick 5 s (default), no probes, metrics listener off, "
                "restart policy always.",
                "supervisord: nodaemon=true, loglevel=info, own unix socket; program settings as in "
                "the recovery table. supervisord's own poll loop wakes at most once per second.",
            ],
        )
    )

    sd_st = median(st_sd) if st_sd else None
    st_met = None if sd_st is None else median(st_chimera) <= sd_st
    sections.append(
        Section(
            title=f"`status` wall time with {IDLE_CHILDREN} children",
            aim="`chimera-ops status` at most as slow as `supervisorctl status`",
            headers=["command", "median", "p90", "runs"],
            rows=[
                [
                    "`chimera-ops --config F status`",
                    fmt(median(st_chimera) * 1000, 1, " ms"),
                    fmt(p90(st_chimera) * 1000, 1, " ms"),
                    str(len(st_chimera)),
                ],
                [
                    "`supervisorctl -c F status`",
                    *(
                        [
                            fmt(median(st_sd) * 1000, 1, " ms"),
                            fmt(p90(st_sd) * 1000, 1, " ms"),
                            str(len(st_sd)),
                        ]
                        if st_sd
                        else [NOT_INSTALLED] * 3
                    ),
                ],
            ],
            verdict=verdict(st_met),
            notes=[
                f"Own loop: 2 warm-up runs, then {STATUS_RUNS} runs timed with perf_counter "
                "(hyperfine not used, so the bench needs nothing beyond apt supervisor/monit).",
                "Both talk to the running supervisor over its unix socket; the chimera-ops CLI is "
                "the venv console script (Python start-up + click + httpx import included, as a "
                "user pays it).",
            ],
        )
    )

    write_results(
        "supervision",
        "Supervision: chimera-ops vs supervisord",
        "`bench/bench_supervision.py` - recovery after kill -9, footprint with 20 idle "
        "children, status latency. Same child programs, loopback only.",
        sections,
    )
    if not have_sd:
        print("supervisord/supervisorctl not installed: rows marked, exiting 2", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
