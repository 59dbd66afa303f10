"""Shared fixtures: an agent factory that always cleans up, and service checks that fail loudly."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AgentProcess


def _require(host: str, port: int, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        # Fail, never skip: CI must not pass silently without the services it needs.
        pytest.fail(f"{what} is required at {host}:{port} and does not answer ({exc})")


@pytest.fixture(scope="session")
def postgres_service() -> str:
    _require("127.0.0.1", 5432, "PostgreSQL")
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def redis_service() -> str:
    _require("127.0.0.1", 6379, "Redis")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: the agent's unix socket path must stay under 108 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="co-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent_factory(short_tmp: Path) -> Iterator[Callable[[dict[str, Any]], AgentProcess]]:
    agents: list[AgentProcess] = []

    def make(config: dict[str, Any]) -> AgentProcess:
        agent = AgentProcess(short_tmp, config)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()
