"""high-cpu and memory-leak against the real faults: a busy-looping child, a leaking child."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from tests.harness import AgentProcess, child, wait_for
from tests.procedures.conftest import stack_config
from tests.runbooks.conftest import runbook
from tests.services import free_port

SPIN = "while True:\n    pass\n"


@pytest.mark.parametrize(
    ("page", "command"),
    [
        ("high-cpu", [sys.executable, "-c", SPIN]),
        ("memory-leak", child("leak", 20)),
    ],
)
def test_runbook_restarts_the_faulty_child_and_resumes(
    page, command, agent_factory, engine_dsn, redis_service, short_tmp
) -> None:
    config = stack_config(short_tmp, engine_dsn, redis_service, free_port())
    config["components"]["worker"] = {
        "runtime": "process",
        "command": command,
        "readiness": {"process": True, "period": "1s"},
        "liveness": {"process": True, "period": "1s"},
        "stop": {"grace": "2s"},
    }
    agent: AgentProcess = agent_factory(config)
    agent.start()
    agent.wait_state("engine", "running", timeout=60)
    agent.wait_state("worker", "running", timeout=30)
    old = psutil.Process(agent.component("worker")["pid"])
    if page == "high-cpu":
        old.cpu_percent(None)
        time.sleep(1.0)
        assert old.cpu_percent(None) > 50  # the fault is real: it spins
    else:
        first = old.memory_info().rss
        wait_for(lambda: old.memory_info().rss > first + 20 * 1024**2, 20, "the child leaks")
    code, doc = runbook(agent, "run", page, "--set", "component=worker", "--yes")
    assert code == 0, doc
    steps = {s["id"]: s for s in doc["steps"]}
    assert steps["halt"]["status"] == "ok"  # the engine halted before the restart
    assert steps["restart"]["status"] == "ok" and steps["resume"]["status"] == "ok"
    assert steps["halt"]["n"] < steps["restart"]["n"] < steps["all-running"]["n"]
    new_pid = agent.component("worker")["pid"]
    assert new_pid != old.pid and not (old.is_running() and old.status() != "zombie")
