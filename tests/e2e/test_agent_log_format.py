"""`agent --log-format json`: every line the agent writes is one JSON object, and the lines
about a component carry component, event and reason; the default stays human-readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.harness import REPO, child


def test_json_log_lines_carry_component_event_reason(agent_factory) -> None:
    agent = agent_factory(
        {"components": {"worker": {"runtime": "process", "command": child("sleep")}}}
    ).start(env={**os.environ, "CHIMERA_OPS_LOG_FORMAT": "json"})
    agent.wait_state("worker", "running")
    assert agent.stop() == 0
    lines = [line for line in agent.output().splitlines() if line.strip()]
    assert lines, "the agent logged nothing"
    docs = [json.loads(line) for line in lines]  # every line parses, or this raises
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= doc.keys(), doc
    running = [d for d in docs if d.get("component") == "worker" and d.get("to_state") == "running"]
    assert running, docs
    assert running[0]["event"] == "state" and running[0]["reason"]
    assert running[0]["level"] == "info"


def test_default_log_format_is_text_and_the_flag_is_checked(agent_factory) -> None:
    agent = agent_factory(
        {"components": {"worker": {"runtime": "process", "command": child("sleep")}}}
    ).start()
    agent.wait_state("worker", "running")
    agent.stop()
    first = agent.output().splitlines()[0]
    assert not first.startswith("{") and " INFO " in first, first
    bad = subprocess.run(
        [sys.executable, "-m", "chimera_ops", "agent", "--log-format", "xml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert bad.returncode == 2 and "xml" in bad.stderr
