"""dockerd killed with SIGKILL under a running agent, then started again: the docker components
go `unknown` with the reason and an alert, the agent stays up, and they come back.

This test kills an engine, so it starts its own private dockerd (never the session's)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.conftest import (
    Docker,
    build_image,
    start_private_dockerd,
    stop_private_dockerd,
)
from tests.harness import AgentProcess


@pytest.fixture
def own_engine(docker_host: str) -> Iterator[tuple[Docker, str]]:
    directory = tempfile.mkdtemp(prefix="cdk-kill-", dir="/tmp")
    host = start_private_dockerd(directory)
    try:
        build_image(host)
        yield Docker(host), directory
    finally:
        Docker(host)("rm", "-f", "co-engine", check=False)
        stop_private_dockerd(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_dockerd_kill9_unknown_then_back(
    own_engine: tuple[Docker, str], agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    docker, directory = own_engine
    docker.run("co-engine", "--restart", "always")
    agent = agent_factory(
        {
            "agent": {"docker": {"host": docker.host}},
            "components": {"box": {"runtime": "docker", "container": "co-engine"}},
        }
    ).start()
    agent.wait_state("box", "running")
    pid = int(Path(directory, "docker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    comp = agent.wait_state("box", "unknown")
    assert "does not answer" in comp["reason"]
    assert "box:state" in comp["alerts"]
    assert any(e["kind"] == "docker_engine" for e in agent.events())
    assert agent.proc is not None and agent.proc.poll() is None

    start_private_dockerd(directory)
    comp = agent.wait_state("box", "running", timeout=60)
    assert docker.state("co-engine")["Running"]
    assert agent.proc.poll() is None
    assert not comp["alerts"].get("box:state")
    ups = [e for e in agent.events() if e["kind"] == "docker_engine"]
    assert ups[-1]["data"]["reachable"] is True
