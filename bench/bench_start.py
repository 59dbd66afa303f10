"""Start semantics (issue 7), side by side with supervisord and Monit on the same victim.

1. ten `kill -9` a few seconds apart of an HTTP child with a readiness probe (default period):
   time until a new pid answers /health, and until the supervisor says it runs
   (chimera-ops: the `running` event; supervisord: its `entered RUNNING state` log line);
2. ten SIGSTOPs with Monit's settings (HTTP every 1 s, 1 s timeout, one failure restarts):
   time until the replacement answers, and how many crash loops (`fatal`) that cost.

Writes bench/results/start.md; exits 2 when supervisord or Monit is missing (rows say so).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MONIT,
    NOT_INSTALLED,
    SUPERVISORD,
    Monit,
    Section,
    Supervisord,
    child_argv,
    end_tagged,
    fmt,
    free_port,
    freeze_trials,
    health_ok,
    listener_pid,
    median,
    monit_http_check,
    p90,
    temp_dir,
    verdict,
    wait_health,
    web_agent,
    write_results,
)

TRIALS = 10
KILL_EVERY = 3.0
"""Seconds between kills (measured from the previous kill's recovery)."""
FREEZE_SETTLE = 3.0
RESTART: dict[str, Any] = {
    "policy": "always",
    "backoff": {"reset_after": "1s"},
    "crash_loop": {"max_restarts": 100, "window": "5m"},
}
MONIT_LIVENESS = {"period": "1s", "timeout": "1s", "failure_threshold": 1}
SUPERVISORD_RUNNING = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO success: (\S+) entered RUNNING state"
)


class NotRun(Exception):
    """A part that could not run; the message goes into its table row."""


def _kill_until_answer(port: int) -> tuple[float, float]:
    """kill -9 the listener; (wall time of the kill, seconds until a new pid answers)."""
    old = listener_pid(port)
    if old is None:
        raise RuntimeError("nobody listens before the kill")
    killed_at = time.time()
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    deadline = t0 + 90
    while time.monotonic() < deadline:
        if health_ok(port, timeout=0.25) and listener_pid(port) not in (None, old):
            return killed_at, time.monotonic() - t0
        time.sleep(0.01)
    raise TimeoutError("no new pid answered within 90 s")


def _first_after(stamps: list[float], t: float) -> float | None:
    later = [s for s in stamps if s >= t]
    return min(later) - t if later else None


def kills_chimera() -> dict[str, Any]:
    """Ten kills under chimera-ops with an HTTP readiness probe at its default period."""
    tmp = temp_dir("st")
    tag = str(tmp)
    port = free_port()
    agent = web_agent(
        tmp,
        port,
        tag,
        readiness={"http": f"http://127.0.0.1:{port}/health"},
        restart=RESTART,
    )
    answers: list[float] = []
    kills: list[float] = []
    try:
        agent.start()
        agent.wait_all("running", timeout=60)
        time.sleep(KILL_EVERY)
        for _ in range(TRIALS):
            killed_at, answered = _kill_until_answer(port)
            kills.append(killed_at)
            answers.append(answered)
            time.sleep(KILL_EVERY)
        events = agent.events("web")
    finally:
        agent.stop()
        end_tagged(tag)
    running = [e["ts"] for e in events if e["to_state"] == "running"]
    says = [_first_after(running, k) for k in kills]
    delays = [e["data"]["delay_s"] for e in events if e["to_state"] == "backoff" and e["data"]]
    return {
        "answer": answers,
        "running": [s for s in says if s is not None],
        "missing": sum(1 for s in says if s is None),
        "delays": delays,
        "fatal": sum(1 for e in events if e["to_state"] == "fatal"),
    }


def _supervisord_running_stamps(log: Path, program: str) -> list[float]:
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        match = SUPERVISORD_RUNNING.match(line)
        if match and match.group(3) == program:
            base = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            stamps.append(base + int(match.group(2)) / 1000)
    return stamps


def kills_supervisord() -> dict[str, Any]:
    """Ten kills under supervisord (startsecs=1: RUNNING one second after the spawn)."""
    if SUPERVISORD is None:
        raise NotRun(NOT_INSTALLED)
    tmp = temp_dir("st-sd")
    tag = str(tmp)
    port = free_port()
    sup = Supervisord(tmp, {"web": child_argv("http", port, tag=tag)})
    answers: list[float] = []
    kills: list[float] = []
    try:
        sup.start()
        wait_health(port, timeout=30)
        time.sleep(KILL_EVERY)
        for _ in range(TRIALS):
            killed_at, answered = _kill_until_answer(port)
            kills.append(killed_at)
            answers.append(answered)
            time.sleep(KILL_EVERY)
    finally:
        sup.stop()
        end_tagged(tag)
    running = _supervisord_running_stamps(tmp / "supervisord.log", "web")
    says = [_first_after(running, k) for k in kills]
    return {
        "answer": answers,
        "running": [s for s in says if s is not None],
        "missing": sum(1 for s in says if s is None),
        "fatal": 0,
    }


def freezes_chimera() -> dict[str, Any]:
    """Ten SIGSTOPs under chimera-ops with Monit's settings as its liveness probe."""
    tmp = temp_dir("stf")
    tag = str(tmp)
    port = free_port()
    # The default crash-loop rule (5 in 5 min) would end ten freezes in `fatal` however fast
    # each recovery is; supervisord and Monit have no such rule.
    agent = web_agent(
        tmp,
        port,
        tag,
        liveness={"http": f"http://127.0.0.1:{port}/health", **MONIT_LIVENESS},
        restart=RESTART,
    )
    try:
        agent.start()
        times = freeze_trials(port, TRIALS, FREEZE_SETTLE)
        events = agent.events("web")
    finally:
        agent.stop()
        end_tagged(tag)
    return {
        "answer": times,
        "kills": sum(1 for e in events if e["kind"] == "kill"),
        "fatal": sum(1 for e in events if e["to_state"] == "fatal"),
    }


def freezes_monit() -> dict[str, Any]:
    """Ten SIGSTOPs under Monit (`set daemon 1`, HTTP check with a 1 s timeout)."""
    if MONIT is None:
        raise NotRun(NOT_INSTALLED)
    tmp = temp_dir("stf-m")
    tag = str(tmp)
    port = free_port()
    monit = Monit(tmp, monit_http_check("web", port, tag))
    try:
        monit.start()
        times = freeze_trials(port, TRIALS, FREEZE_SETTLE)
    finally:
        monit.stop()
        end_tagged(tag)
    return {"answer": times, "kills": len(times), "fatal": 0}


def _stats(values: list[float]) -> list[str]:
    if not values:
        return ["n/a", "n/a", "n/a"]
    return [
        fmt(median(values), 3, " s"),
        fmt(p90(values), 3, " s"),
        f"{fmt(min(values), 3)} .. {fmt(max(values), 3)} s",
    ]


def _run(label: str, func: Any, incomplete: list[str]) -> dict[str, Any] | str:
    print(f"{label}", flush=True)
    try:
        result: dict[str, Any] = func()
        return result
    except NotRun as exc:
        incomplete.append(f"{label}: {exc}")
        return str(exc)


def main() -> int:
    """Run both parts; write bench/results/start.md; 2 when a part could not run."""
    incomplete: list[str] = []
    kill_results = {
        "chimera-ops (readiness http, default 10 s period)": _run(
            "kills: chimera-ops", kills_chimera, incomplete
        ),
        "supervisord 4.2": _run("kills: supervisord", kills_supervisord, incomplete),
    }
    rows = []
    for label, res in kill_results.items():
        if isinstance(res, str):
            rows.append([label, res, res, res, res, "0"])
            continue
        answer, running = _stats(res["answer"]), _stats(res["running"])
        rows.append([label, answer[0], answer[2], running[0], running[2], str(len(res["answer"]))])
    chim = next(iter(kill_results.values()))
    met_a: bool | None = None
    if not isinstance(chim, str) and chim["answer"] and chim["running"]:
        met_a = (
            median(chim["answer"]) <= 0.2
            and median(chim["running"]) <= 0.3
            and chim["missing"] == 0
            and chim["fatal"] == 0
        )
    kill_notes = [
        "Child: `tests/children.py http PORT` (answers /health ~0.06 s after its spawn). kill -9 "
        "of the listening pid; /health polled every 10 ms (250 ms timeout) until 200 from a new "
        "pid ('answers'); 'says running' is the supervisor's own word: chimera-ops' first "
        "`running` event after the kill, supervisord's `entered RUNNING state` log line.",
        f"{TRIALS} kills each, {KILL_EVERY:g} s after the previous recovery.",
        "chimera-ops: readiness `{http: /health}` with the default period (10 s), default "
        "start_interval (0.1 s) and start_period (30 s); restart always; backoff.reset_after 1 s; "
        "crash_loop.max_restarts 100; agent tick 5 s (default).",
        "supervisord: settings as in supervision.md (startsecs=1, so RUNNING is said 1 s after "
        "the spawn by design).",
    ]
    if not isinstance(chim, str):
        kill_notes.append(
            f"chimera-ops backoff delays of the {len(chim['delays'])} restarts: "
            f"{sorted(set(chim['delays']))} s (no growth means the backoff reset after each "
            f"stable run); `fatal`: {chim['fatal']}; kills with no `running` event: "
            f"{chim['missing']}."
        )
    sections = [
        Section(
            title="Ten kill -9 a few seconds apart: new pid answers / supervisor says running",
            aim="chimera-ops median <= 0.2 s to answer and <= 0.3 s to `running`, 0 crash loops",
            headers=[
                "supervisor",
                "answers: median",
                "answers: min .. max",
                "says running: median",
                "says running: min .. max",
                "trials",
            ],
            rows=rows,
            verdict=verdict(met_a),
            notes=kill_notes,
        )
    ]

    freeze_results = {
        "chimera-ops (liveness: http, period 1 s, timeout 1 s, failure_threshold 1)": _run(
            "freezes: chimera-ops", freezes_chimera, incomplete
        ),
        "Monit 5.33 (`set daemon 1`, http check, timeout 1 s)": _run(
            "freezes: Monit", freezes_monit, incomplete
        ),
    }
    rows = []
    for label, res in freeze_results.items():
        if isinstance(res, str):
            rows.append([label, res, res, res, res, res, "0"])
            continue
        rows.append(
            [
                label,
                *_stats(res["answer"]),
                str(res["kills"]),
                str(res["fatal"]),
                str(len(res["answer"])),
            ]
        )
    chim_f, monit_f = freeze_results.values()
    met_b: bool | None = None
    if not isinstance(chim_f, str) and not isinstance(monit_f, str):
        met_b = (
            median(chim_f["answer"]) <= median(monit_f["answer"])
            and chim_f["fatal"] == 0
            and chim_f["kills"] == TRIALS
        )
    sections.append(
        Section(
            title="Ten SIGSTOPs with Monit's settings: the replacement answers /health",
            aim="chimera-ops median <= Monit's, exactly one kill per freeze, 0 crash loops",
            headers=["watchdog", "median", "p90", "min .. max", "kills", "fatal", "trials"],
            rows=rows,
            verdict=verdict(met_b),
            notes=[
                "Child: `tests/children.py http PORT`. SIGSTOP of the listening pid at t0; "
                "/health polled every 10 ms (250 ms timeout) until 200 from a new pid.",
                f"{TRIALS} freezes each, {FREEZE_SETTLE:g} s of healthy uptime between them.",
                "chimera-ops: liveness `{http: /health, period: 1s, timeout: 1s, "
                "failure_threshold: 1}` (Monit's settings), default start grace; stop grace 2 s "
                "(SIGCONT is sent with the stop signal); restart always, backoff.reset_after 1 s, "
                "crash_loop.max_restarts 100. 'kills' counts the agent's `kill` events: one per "
                "freeze means no new process was killed before it could answer.",
                "Monit: as in freeze_leak.md (one failed cycle restarts; stop = kill -9).",
            ],
        )
    )
    path = write_results(
        "start",
        "Start semantics: chimera-ops vs supervisord and Monit",
        "`bench/bench_start.py` - how soon a restarted component is back and said to be, and "
        "that liveness never kills a process before it could answer. Loopback only.",
        sections,
    )
    print(f"wrote {path}")
    if incomplete:
        print("incomplete: " + "; ".join(incomplete), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
