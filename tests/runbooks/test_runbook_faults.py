"""Runbooks against real faults: a port held by a stray process, an injection attempt through
`--set`, `--dry-run` that changes nothing, a failing check that stops the run, `--from`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import AgentProcess, run_cli, wait_for
from tests.services import free_port, wait_tcp


def _server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@pytest.fixture
def stray(short_tmp: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A stray process listening on a free port."""
    port = free_port()
    proc = subprocess.Popen(_server(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_tcp("127.0.0.1", port)
    yield port, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.fixture
def web_agent(
    agent_factory: Callable[[dict[str, Any]], AgentProcess], stray: tuple[int, Any]
) -> AgentProcess:
    """An agent whose one component, `web`, needs the port the stray holds."""
    port, _ = stray
    config = {
        "components": {
            "web": {
                "runtime": "process",
                "command": _server(port),
                "readiness": {"tcp": f"127.0.0.1:{port}", "period": "1s"},
                "restart": {"policy": "always"},
            }
        }
    }
    agent = agent_factory(config)
    agent.start()
    wait_for(lambda: agent.component("web")["restarts"] >= 1, timeout=30, what="web fails to bind")
    return agent


def _run(agent: AgentProcess, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(agent.config_path, "runbook", "run", *args, "--json", timeout=300)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def _steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def _counts(state_dir: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{state_dir / 'chimera.db'}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: db.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}
    finally:
        db.close()


def test_port_conflict_names_holder_asks_then_frees_and_resumes(web_agent, stray) -> None:
    port, proc = stray
    sets = ("--set", f"port={port}", "--set", "component=web")
    code, doc = _run(web_agent, "port-conflict", *sets)
    assert code == 1, doc
    steps = _steps(doc)
    assert steps["port-held"]["status"] == "ok"
    assert str(proc.pid) in steps["port-held"]["output"] + steps["listener"]["output"]
    assert "python" in steps["listener"]["output"]
    # The destructive kill asked (stdin is not a terminal) and did not run.
    assert steps["kill-holder"]["status"] == "refused" and steps["kill-holder"]["exit_code"] is None
    assert doc["stopped_at"] == "kill-holder" and "--from kill-holder" in doc["message"]
    assert proc.poll() is None, "the stray must still run"
    code, doc = _run(web_agent, "port-conflict", *sets, "--from", "kill-holder", "--yes")
    assert code == 0, json.dumps(doc["steps"], indent=1)
    steps = _steps(doc)
    assert "port-held" not in steps  # resumed where it stopped
    assert steps["kill-holder"]["status"] == "ok"
    assert steps["answers"]["status"] == "ok" and steps["all-running"]["status"] == "ok"
    proc.wait(timeout=10)
    web = web_agent.component("web")
    assert web["state"] == "running" and psutil.Process(web["pid"]).is_running()


def test_dry_run_changes_nothing(web_agent, stray) -> None:
    port, proc = stray
    before = _counts(web_agent.state_dir)
    pid_before = web_agent.component("web")["restarts"]
    sets = ("--set", f"port={port}", "--set", "component=web")  # a component of this stack
    code, doc = _run(web_agent, "port-conflict", *sets, "--yes", "--dry-run")
    assert code == 0 and doc["state"] == "planned", doc
    assert {s["status"] for s in doc["steps"]} <= {"would-run", "skipped"}
    assert all(s["exit_code"] is None and s["attempts"] == 0 for s in doc["steps"])
    kill = _steps(doc)["kill-holder"]
    assert kill["command"] == f"fuser -k -TERM -n tcp {port}"  # variables filled in the plan
    after = _counts(web_agent.state_dir)
    assert after["procedures"] == before["procedures"] + 1
    assert (
        after["audit"] == before["audit"] and after["procedure_steps"] == before["procedure_steps"]
    )
    assert proc.poll() is None
    assert web_agent.component("web")["restarts"] >= pid_before


def test_failing_check_stops_with_the_runbook_advice(web_agent, stray) -> None:
    assert web_agent.cli("stop", "web").returncode == 0
    stray[1].kill()  # nothing listens on web's port now
    stray[1].wait()
    sets = ("--set", "db=web", "--set", "component=web")
    code, doc = _run(web_agent, "db-pool-exhaustion", *sets, "--dry-run", "--checks")
    assert code == 1, doc
    assert doc["stopped_at"] == "db-answers"
    assert "db-connection-failure.md" in doc["advice"]
    assert _steps(doc)["db-answers"]["exit_code"] == 1


def test_injection_through_a_variable_runs_nothing_harmful(web_agent, stray, short_tmp) -> None:
    target = short_tmp / "pwned"
    value = f"x; touch {target}"
    before = _counts(web_agent.state_dir)["procedures"]
    # `component` is typed: a value that is no component of the config is refused before any
    # step runs (it used to reach `chimera-ops start 'x; touch ...'`, one argv element).
    sets = ("--set", f"port={stray[0]}", "--set", f"component={value}")
    code, doc = _run(web_agent, "port-conflict", *sets, "--from", "start", "--yes")
    assert code == 2 and doc["hint"] == "nothing was run", doc
    assert "(component): a component name is lowercase" in doc["error"], doc
    code, doc = _run(web_agent, "server-freeze", "--set", f"component={value}", "--yes")
    assert code == 2 and doc["hint"] == "nothing was run", doc
    for bad in ("component=--all", "component=a\nb", "component=nope"):
        code, doc = _run(web_agent, "server-freeze", "--set", bad)
        assert code == 2 and doc["hint"] == "nothing was run", doc
    assert "known: web" in doc["error"], doc
    assert not target.exists()
    assert _counts(web_agent.state_dir)["procedures"] == before  # nothing journaled either


def test_bad_input(web_agent) -> None:
    result = run_cli(web_agent.config_path, "runbook", "run", "no-such-page")
    assert result.returncode == 2 and "server-freeze" in result.stderr
    before = _counts(web_agent.state_dir)["procedures"]
    code, doc = _run(web_agent, "port-conflict")
    assert code == 2 and "port" in doc["error"], doc
    assert _counts(web_agent.state_dir)["procedures"] == before
