"""Executable runbooks: `runbook run server-freeze --yes` vs the agent's own liveness recovery.

Not a speed feature: the runbook is for when a person is in the loop, and it must not be
slower than the agent by more than its own confirmation prompts. Both on the demo stack (the
machine's PostgreSQL and Redis, the paper engine on a scratch database, trading):

1. agent alone: liveness `period 1s, timeout 1s, failure_threshold 2, kill_grace 1s`; SIGSTOP of
   the engine at t0 -> seconds until a new engine pid answers /health;
2. runbook: the same engine, liveness failure_threshold 600 (the agent does not act); SIGSTOP at
   t0 and `chimera-ops runbook run server-freeze --yes` started at once -> seconds until a new
   pid answers /health, and until the run ends (it goes on to verify, resume trading and check
   the trading state); the median of each step's duration.

Writes bench/results/runbooks.md; exits 2 when a part could not run (its rows say why).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402
    PY,
    REDIS_URL,
    SERVER_DSN,
    ChimeraAgent,
    Section,
    alive,
    chimera_cli,
    free_port,
    health_ok,
    listener_pid,
    median,
    temp_dir,
    wait_health,
    write_results,
)

from chimera_ops.paper.harness import scratch_database  # noqa: E402

TRIALS = 3
SETTLE = 3.0


def stack(
    tmp: Path, dsn: str, port: int, failure_threshold: int, control_timeout: str = "5s"
) -> dict[str, Any]:
    """The demo stack's config with the engine's liveness as asked."""
    health = f"http://127.0.0.1:{port}/health"
    engine = {
        "runtime": "process",
        "command": [
            PY,
            "-m",
            "chimera_ops.paper",
            "--port",
            str(port),
            "--rate",
            "50",
            "--redis-prefix",
            f"bench-{uuid.uuid4().hex[:8]}",
        ],
        "env": {"CHIMERA_PG_DSN": dsn, "CHIMERA_REDIS_URL": REDIS_URL},
        "depends_on": ["postgres", "redis"],
        "readiness": {"http": health, "period": "1s"},
        "liveness": {
            "http": health,
            "period": "1s",
            "timeout": "1s",
            "failure_threshold": failure_threshold,
            "kill_grace": "1s",
        },
        "restart": {
            "policy": "always",
            "backoff": {"reset_after": "2s"},
            "crash_loop": {"max_restarts": 100, "window": "5m"},
        },
        "stop": {"grace": "5s"},
        "trading": {
            "control": {"http": f"http://127.0.0.1:{port}", "timeout": control_timeout},
            "drain_timeout": "5s",
        },
    }
    return {
        "agent": {"state_dir": str(tmp / "var")},
        "components": {
            "postgres": {"runtime": "external", "readiness": {"tcp": "127.0.0.1:5432"}},
            "redis": {"runtime": "external", "readiness": {"tcp": "127.0.0.1:6379"}},
            "engine": engine,
        },
    }


def replaced(port: int, old: int, t0: float, limit: float = 120.0) -> float:
    """Seconds from t0 until a pid other than `old` answers /health."""
    while time.monotonic() < t0 + limit:
        if health_ok(port, timeout=0.25) and listener_pid(port) not in (None, old):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise TimeoutError(f"the frozen engine was not replaced within {limit:.0f} s")


def agent_alone(dsn: str) -> list[float]:
    """SIGSTOP trials recovered by the agent's liveness probe."""
    tmp = temp_dir("rbA")
    port = free_port()
    agent = ChimeraAgent(tmp, stack(tmp, dsn, port, failure_threshold=2))
    try:
        agent.start()
        wait_health(port, timeout=90)
        times = []
        for _ in range(TRIALS):
            time.sleep(SETTLE)
            wait_health(port, timeout=60)
            old = listener_pid(port)
            assert old is not None
            os.kill(old, signal.SIGSTOP)
            t0 = time.monotonic()
            try:
                times.append(replaced(port, old, t0))
            finally:
                if alive(old):
                    os.kill(old, signal.SIGCONT)
        return times
    finally:
        agent.stop()


def by_runbook(
    dsn: str, control_timeout: str
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """SIGSTOP trials recovered by `runbook run server-freeze --yes`."""
    tmp = temp_dir("rbR")
    port = free_port()
    agent = ChimeraAgent(tmp, stack(tmp, dsn, port, 600, control_timeout))
    healthy, whole = [], []
    steps: dict[str, list[float]] = {}
    try:
        agent.start()
        wait_health(port, timeout=90)
        for _ in range(TRIALS):
            time.sleep(SETTLE)
            wait_health(port, timeout=60)
            old = listener_pid(port)
            assert old is not None
            os.kill(old, signal.SIGSTOP)
            t0 = time.monotonic()
            run = subprocess.Popen(
                [
                    *chimera_cli(),
                    "--config",
                    str(agent.config_path),
                    "runbook",
                    "run",
                    "server-freeze",
                    "--yes",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                healthy.append(replaced(port, old, t0))
                out, _ = run.communicate(timeout=300)
                whole.append(time.monotonic() - t0)
            finally:
                if alive(old):
                    os.kill(old, signal.SIGCONT)
                if run.poll() is None:
                    run.kill()
            doc = json.loads(out)
            if doc["state"] != "succeeded":
                raise RuntimeError(f"the runbook run {doc['state']}: {doc.get('message')}")
            for step in doc["steps"]:
                if step["attempts"]:
                    steps.setdefault(step["id"], []).append(step["duration_s"])
        return healthy, whole, steps
    finally:
        agent.stop()


def fmt(values: list[float]) -> str:
    return f"{median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    """Run both parts; write bench/results/runbooks.md; 2 when a part could not run."""
    rows: list[list[str]] = []
    step_rows: list[list[str]] = []
    incomplete = []
    alone: list[float] = []
    healthy: list[float] = []
    try:
        with scratch_database(SERVER_DSN) as dsn:
            print("runbooks: agent alone", flush=True)
            alone = agent_alone(dsn)
        rows.append(["agent alone (liveness 2 x 1 s, kill_grace 1 s)", fmt(alone), "-"])
    except Exception as exc:  # noqa: BLE001 - a part that cannot run is reported, not hidden
        incomplete.append(f"agent alone: {exc}")
        rows.append(["agent alone", f"could not run: {exc}", "-"])
    for control in ("5s", "1s"):
        label = f"`runbook run server-freeze --yes`, trading.control.timeout {control}"
        try:
            with scratch_database(SERVER_DSN) as dsn:
                print(f"runbooks: {label}", flush=True)
                got, whole, steps = by_runbook(dsn, control)
            rows.append([label, fmt(got), fmt(whole)])
            if control == "5s":
                healthy = got
                step_rows = [[f"`{k}`", f"{statistics.median(v):.2f} s"] for k, v in steps.items()]
        except Exception as exc:  # noqa: BLE001
            incomplete.append(f"runbook {control}: {exc}")
            rows.append([label, f"could not run: {exc}", "-"])
    if alone and healthy:
        gap = median(healthy) - median(alone)
        verdict = (
            f"with the default control timeout the runbook's engine is healthy {gap:+.2f} s vs "
            f"the agent alone ({'not slower' if gap <= 0.5 else 'slower'}; no prompts with "
            "--yes): the difference is what the agent skips, the halt it attempts first and the "
            "bundle it captures (see the steps)"
        )
    else:
        verdict = "incomplete"
    sections = [
        Section(
            title="Frozen engine (SIGSTOP) -> a new engine answers /health",
            aim="the runbook no slower than the agent's own recovery, prompts aside",
            headers=["recovered by", "freeze -> healthy new engine", "freeze -> run finished"],
            rows=rows,
            verdict=verdict,
            notes=[
                f"{TRIALS} trials each; the paper engine trading on a scratch database, the "
                "machine's PostgreSQL and Redis watched.",
                "The runbook is started the moment the engine is frozen (a person would start "
                "it later: from the page, not from t0). With the agent alone the liveness "
                "threshold is 2 x 1 s; under the runbook it is 600, so the agent does not act.",
                "'run finished' includes the verify steps (probe, status), resume-trading and "
                "trading-state after the engine is back.",
                "The agent alone never halts trading before its kill; the runbook does (its "
                "`halt` step, `may-fail`), and against a frozen engine that call waits out "
                "`trading.control.timeout` (default 5 s): the second runbook row sets it to 1 s.",
            ],
        ),
        Section(
            title="Where the runbook's time goes (median per step, control timeout 5 s)",
            aim="each step's share visible",
            headers=["step", "duration"],
            rows=step_rows or [["-", "-"]],
            verdict="see the rows",
            notes=[
                "`halt` fails against the frozen engine (its HTTP call times out) and is "
                "`may-fail`; `capture-bundle` is `collect-logs` of the engine before the "
                "restart; `capture` (`incidents capture`) is planned and never run."
            ],
        ),
    ]
    write_results(
        "runbooks",
        "Runbooks: `runbook run server-freeze` vs the agent's liveness recovery",
        "`bench/bench_runbooks.py` - the wall time of the executable runbook next to the "
        "recovery the agent does by itself.",
        sections,
    )
    if incomplete:
        print("incomplete: " + "; ".join(incomplete), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
