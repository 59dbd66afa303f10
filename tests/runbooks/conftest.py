"""The demo stack for the runbook tests: the machine's PostgreSQL and Redis, watched, the paper
engine as a managed child whose liveness is slow to act, so the runbook, not the agent, is what
recovers it."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chimera_ops.paper.harness import scratch_database
from tests.harness import AgentProcess
from tests.procedures.conftest import stack_config
from tests.services import free_port


@pytest.fixture
def engine_dsn(postgres_service: str, redis_service: str) -> Iterator[str]:
    with scratch_database(postgres_service) as dsn:
        yield dsn


@pytest.fixture
def slow_liveness_stack(
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
    engine_dsn: str,
    redis_service: str,
    short_tmp: Path,
) -> AgentProcess:
    """A started agent; the engine's liveness needs 10 minutes of failures to kill it."""
    port = free_port()
    config = stack_config(short_tmp, engine_dsn, redis_service, port)
    engine = config["components"]["engine"]
    engine["liveness"] = {
        "http": f"http://127.0.0.1:{port}/health",
        "period": "1s",
        "timeout": "1s",
        "failure_threshold": 600,
    }
    engine["stop"] = {"grace": "3s"}
    agent = agent_factory(config)
    agent.engine_port = port  # type: ignore[attr-defined]
    agent.start()
    agent.wait_state("engine", "running", timeout=60)
    return agent


def runbook(agent: AgentProcess, *args: str, timeout: float = 300) -> tuple[int, dict[str, Any]]:
    """`chimera-ops runbook ARGS --json` against the agent's config."""
    from tests.harness import run_cli

    result = run_cli(agent.config_path, "runbook", *args, "--json", timeout=timeout)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def freeze(pid: int) -> None:
    """SIGSTOP: the process stays, answers nothing."""
    import os

    os.kill(pid, signal.SIGSTOP)
