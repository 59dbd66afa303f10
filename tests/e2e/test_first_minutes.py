"""Issue 8, items 1, 2, 3, 7 and 8, as a new user meets them: a failing child says why, the shown
reason is the current one, `fatal` across an agent restart is said, external components are
"no longer watched" (never "stopping"), and every step of a freeze kill is an event."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import psutil

from chimera_ops.errors import describe_exception
from tests.harness import AgentProcess, child, wait_for
from tests.services import free_port

MISSING = "import chimera_no_such_module_xyz"
WHY = "ModuleNotFoundError: No module named 'chimera_no_such_module_xyz'"


def _crasher(**restart: object) -> dict:
    return {
        "runtime": "process",
        "command": [sys.executable, "-c", MISSING],
        "restart": {
            "policy": "on-failure",
            "backoff": {"first": "0.1s", "initial": "0.1s", "max": "0.2s"},
            "crash_loop": {"max_restarts": 2, "window": "5m"},
            **restart,
        },
    }


def test_failing_child_says_why_and_where_its_log_is(agent_factory):
    agent = agent_factory({"components": {"engine": _crasher()}}).start()
    comp = agent.wait_state("engine", "fatal", timeout=30)
    assert f"exit code 1: {WHY}" in comp["reason"], comp["reason"]
    assert comp["last_exit"] == f"exit code 1: {WHY}"
    assert comp["last_exit_at"] is not None
    log_file = comp["log_file"]
    assert log_file and Path(log_file).exists() and f"log: {log_file}" in comp["reason"]
    assert WHY in Path(log_file).read_text()
    backoffs = [e for e in agent.events("engine") if e["to_state"] == "backoff"]
    assert backoffs and all(f"exit code 1: {WHY}" in e["reason"] for e in backoffs)
    assert backoffs[0]["data"]["log_file"] == log_file
    human = agent.cli("status")
    assert WHY in human.stdout, human.stdout


def test_python_placeholder_runs_the_agents_own_interpreter(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    # Needs the project's packages: fails under any other interpreter.
                    "command": ["{python}", "-c", "import psycopg, time; time.sleep(60)"],
                    "restart": {"policy": "never"},
                }
            }
        }
    )
    # As `.venv/bin/chimera-ops agent` with the venv not on PATH: bare `python` would be another.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"
    agent.start(env=env)
    comp = agent.wait_state("engine", "running")
    exe = psutil.Process(comp["pid"]).exe()
    assert os.path.realpath(exe) == os.path.realpath(sys.executable)


def test_reason_is_current_and_last_exit_says_what_it_was(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("http", port),
                    "readiness": {"http": f"http://127.0.0.1:{port}/health"},
                    "restart": {"policy": "always"},
                    "stop": {"grace": "2s"},
                }
            }
        }
    ).start()
    first = agent.wait_state("engine", "running")
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(
        lambda: (c := agent.component("engine"))["state"] == "running" and c["pid"] != first["pid"],
        what="engine back after kill -9",
    )
    assert agent.component("engine")["last_exit"] == "killed by SIGKILL"
    result = agent.cli("restart", "engine", "--reason", "deploy")
    assert result.returncode == 0, result.stderr
    comp = agent.wait_state("engine", "running")
    assert "restarting" not in comp["reason"] and "SIGKILL" not in comp["reason"], comp
    assert comp["last_exit"].endswith("on operator restart: deploy"), comp["last_exit"]
    assert "restarting" not in comp["last_exit"]
    assert comp["last_exit_at"] is not None
    # With the agent gone, nothing promises a restart.
    agent.stop()
    direct = agent.cli("status")
    assert "restarting in" not in direct.stdout, direct.stdout


def test_fatal_across_an_agent_restart_is_said(agent_factory, short_tmp):
    config = {"components": {"engine": _crasher()}}
    first = agent_factory(config).start()
    first.wait_state("engine", "fatal", timeout=30)
    assert first.stop() == 0
    second = AgentProcess(short_tmp, config)
    second.start()
    try:
        carried = wait_for(
            lambda: [e for e in second.events("engine") if e["kind"] == "fatal_carried"],
            what="fatal_carried event",
        )
        text = carried[-1]["reason"]
        assert "engine is fatal since" in text and "`chimera-ops start engine` clears it" in text
        assert WHY in text
        assert "engine is fatal since" in wait_for(
            lambda: "is fatal since" in second.output() and second.output(), what="agent log"
        )
        comp = second.component("engine")
        assert comp["state"] == "fatal" and comp["fatal_since"] is not None
        human = second.cli("status").stdout
        lines = human.splitlines()
        assert lines[1].startswith("FATAL engine since"), lines[:3]  # first, under the header
        assert "`chimera-ops start engine` clears it" in " ".join(human.split())
        assert comp["alerts"].get("engine:state") == "critical"
        starts = [e for e in second.events("engine") if e["to_state"] == "starting"]
        assert len(starts) == 3  # the first agent's three; the new one did not start it
    finally:
        second.stop()


def test_external_components_are_no_longer_watched_not_stopping(agent_factory, postgres_service):
    agent = agent_factory(
        {
            "components": {
                "postgres": {"runtime": "external", "readiness": {"tcp": "127.0.0.1:5432"}},
            }
        }
    ).start()
    agent.wait_state("postgres", "running")
    assert agent.stop() == 0
    events = agent.events("postgres")
    assert not [e for e in events if e["to_state"] == "stopping"], events
    last = events[-1]
    assert last["to_state"] == "stopped" and "no longer watched" in last["reason"]
    assert "running -> stopping" not in agent.output().split("postgres")[-1]


def test_freeze_kill_steps_are_events_and_the_reason_is_the_liveness_one(agent_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    agent = agent_factory(
        {
            "components": {
                "engine": {
                    "runtime": "process",
                    "command": child("stubborn", port),  # ignores SIGTERM
                    "readiness": {"http": url, "period": "0.5s", "timeout": "0.4s"},
                    "liveness": {
                        "http": url,
                        "period": "0.5s",
                        "timeout": "0.7s",
                        "failure_threshold": 2,
                    },
                    "restart": {"policy": "always"},
                    "stop": {"grace": "1s"},
                }
            }
        }
    ).start()
    agent.wait_state("engine", "running")
    frozen = wait_for(
        lambda: (c := agent.component("engine"))["health"]["liveness"]["status"] == "passing" and c,
        what="liveness passing (a freeze inside the start grace waits for start_period)",
    )
    os.kill(frozen["pid"], signal.SIGSTOP)
    wait_for(
        lambda: (
            (c := agent.component("engine"))["state"] == "running" and c["pid"] != frozen["pid"]
        ),
        timeout=30,
        what="frozen engine replaced",
    )
    events = agent.events("engine")
    kinds = [e["kind"] for e in events]
    kill = kinds.index("kill")
    assert kinds.index("stop_signal", kill) < kinds.index("stop_escalated", kill), kinds
    kill_reason = events[kill]["reason"]
    assert kill_reason.startswith("liveness probe failed: ")
    assert "0.7s" in kill_reason and "0.4s" not in kill_reason, kill_reason  # not readiness'
    signal_event = events[kinds.index("stop_signal", kill)]
    assert f"SIGTERM sent to pid {frozen['pid']}" in signal_event["reason"]
    escalated = events[kinds.index("stop_escalated", kill)]
    assert "ignored SIGTERM for 1s: SIGKILL" in escalated["reason"]


def test_an_exception_with_no_message_still_says_something():
    text = describe_exception(httpx.ReadTimeout(""))
    assert text == "ReadTimeout (no answer in time)"
    assert not text.endswith(": ")
    assert describe_exception(ValueError("bad port")) == "ValueError: bad port"

    class Odd(Exception):
        """A failure of an odd kind."""

    assert describe_exception(Odd()) == "Odd (A failure of an odd kind)"
