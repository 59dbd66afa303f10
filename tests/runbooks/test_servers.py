"""Runbooks against broken servers: a private PostgreSQL stopped (db-connection-failure) and a
private Redis whose `maxclients` a leaking component holds (redis-pool-exhaustion)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import AgentProcess, wait_for
from tests.procedures.conftest import stack_config
from tests.runbooks.conftest import runbook
from tests.services import free_port, private_postgres, private_redis

# A client that leaked connections over its life: its first run holds n, a fresh one holds 1.
HOLD = (
    "import os, socket, sys, time\n"
    "port, n, mark = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "n = 1 if os.path.exists(mark) else n\n"
    "open(mark, 'a').close()\n"
    "held = [socket.create_connection(('127.0.0.1', port)) for _ in range(n)]\n"
    "print('holding', len(held), flush=True)\n"
    "while True:\n"
    "    time.sleep(1)\n"
)


def _stack(
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
    short_tmp: Path,
    dsn: str,
    redis_url: str,
    extra: dict[str, Any],
) -> AgentProcess:
    config = stack_config(short_tmp, dsn, redis_url, free_port())
    config["components"].update(extra)
    agent = agent_factory(config)
    agent.start()
    agent.wait_state("engine", "running", timeout=60)
    return agent


def _steps_done(state_dir: Path, run_state: str = "running") -> set[str]:
    db = sqlite3.connect(f"file:{state_dir / 'chimera.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT s.name FROM procedure_steps s JOIN procedures p ON p.id = s.procedure"
            " WHERE p.kind = 'runbook' AND p.state = ?",
            (run_state,),
        ).fetchall()
    finally:
        db.close()
    return {r[0] for r in rows}


def test_db_connection_failure_waits_for_the_server_and_resumes(
    agent_factory, engine_dsn, redis_service, short_tmp
) -> None:
    with private_postgres() as pg:
        db = {"runtime": "external", "readiness": {"postgres": pg.dsn, "period": "1s"}}
        agent = _stack(agent_factory, short_tmp, engine_dsn, redis_service, {"db": db})
        agent.wait_state("db", "running", timeout=30)
        pg.stop("immediate")  # the fault: the server is gone
        wait_for(lambda: agent.component("db")["state"] == "unhealthy", 30, "db seen down")
        result: dict[str, Any] = {}

        def run() -> None:
            result["out"] = runbook(
                agent, "run", "db-connection-failure", "--set", "db=db", "--yes"
            )

        thread = threading.Thread(target=run)
        thread.start()
        # The operator's manual step (restart the server) once the runbook has halted trading.
        wait_for(lambda: "halt" in _steps_done(agent.state_dir), 60, "the runbook's halt")
        pg.start()
        thread.join(180)
        code, doc = result["out"]
    assert code == 0, doc
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["status-first"]["status"] == "ok"  # status exit 1: something is down
    assert steps["probe-reason"]["status"] == "ok" and "db" in steps["probe-reason"]["command"]
    assert steps["db-answers"]["status"] == "ok" and steps["db-answers"]["attempts"] >= 1
    assert steps["all-running"]["status"] == "ok" and steps["resume"]["status"] == "ok"


def test_redis_maxclients_held_by_a_component_is_released(
    agent_factory, engine_dsn, redis_service, short_tmp
) -> None:
    with private_redis(maxclients=8) as redis2:
        extra = {
            "cache": {"runtime": "external", "readiness": {"redis": redis2.url, "period": "1s"}},
            "leaker": {
                "runtime": "process",
                "command": [
                    sys.executable,
                    "-c",
                    HOLD,
                    str(redis2.port),
                    "8",
                    str(short_tmp / "ran"),
                ],
                "restart": {"policy": "always"},
                "stop": {"grace": "2s"},
            },
        }
        agent = _stack(agent_factory, short_tmp, engine_dsn, redis_service, extra)
        wait_for(lambda: agent.component("cache")["state"] == "unhealthy", 30, "cache full")
        probe = subprocess.run(
            ["redis-cli", "-p", str(redis2.port), "ping"], capture_output=True, text=True
        )
        assert "max number of clients" in probe.stdout + probe.stderr  # the fault is real
        old_pid = agent.component("leaker")["pid"]
        code, doc = runbook(
            agent,
            "run",
            "redis-pool-exhaustion",
            "--set",
            "redis=cache",
            "--set",
            "component=leaker",
            "--yes",
        )
        assert code == 0, doc
        steps = {s["id"]: s for s in doc["steps"]}
        assert steps["status-first"]["status"] == "ok"  # something is unhealthy
        assert steps["redis-answers"]["status"] == "not-held"  # the full server: go on
        assert "engine-pool" not in steps  # else=halt skipped the diagnosis
        assert steps["restart"]["status"] == "ok" and agent.component("leaker")["pid"] != old_pid
        assert steps["all-running"]["status"] == "ok" and steps["resume"]["status"] == "ok"
        clients = subprocess.run(
            ["redis-cli", "-p", str(redis2.port), "info", "clients"], capture_output=True, text=True
        )
        assert "connected_clients:" in clients.stdout  # the server takes connections again
