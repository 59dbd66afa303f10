"""The demo stack for the procedure tests: the machine's PostgreSQL and Redis, watched, and the
paper engine on a scratch database as a managed child, with a backup section."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chimera_ops.paper.harness import scratch_database
from tests.harness import AgentProcess
from tests.services import free_port


def engine_component(port: int, dsn: str, redis_url: str, **extra: Any) -> dict[str, Any]:
    """The paper engine (with fault routes) as a managed, trading component."""
    return {
        "runtime": "process",
        "command": [
            sys.executable,
            "-m",
            "chimera_ops.paper",
            "--port",
            str(port),
            "--rate",
            "50",
            "--faults",
            "--redis-prefix",
            f"test-{uuid.uuid4().hex[:8]}",
        ],
        "env": {"CHIMERA_PG_DSN": dsn, "CHIMERA_REDIS_URL": redis_url},
        "depends_on": ["postgres", "redis"],
        "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
        "liveness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s", "timeout": "2s"},
        "restart": {"policy": "on-failure"},
        "stop": {"grace": "10s"},
        "trading": {"control": {"http": f"http://127.0.0.1:{port}"}, "drain_timeout": "5s"},
        **extra,
    }


def stack_config(
    directory: Path, dsn: str, redis_url: str, port: int, **overrides: Any
) -> dict[str, Any]:
    dbname = dsn.rsplit("/", 1)[1]
    config: dict[str, Any] = {
        "components": {
            "postgres": {"runtime": "external", "readiness": {"tcp": "127.0.0.1:5432"}},
            "redis": {"runtime": "external", "readiness": {"tcp": "127.0.0.1:6379"}},
            "engine": engine_component(port, dsn, redis_url),
        },
        "backup": {
            "dir": str(directory / "backups"),
            "postgres": {
                "dsn": "postgresql://postgres@127.0.0.1:5432/postgres",
                "databases": [dbname],
            },
        },
        "procedures": {"settle": "2s", "ready_timeout": "60s"},
    }
    config.update(overrides)
    return config


@pytest.fixture
def engine_dsn(postgres_service: str, redis_service: str) -> Iterator[str]:
    with scratch_database(postgres_service) as dsn:
        yield dsn


@pytest.fixture
def demo(
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
    engine_dsn: str,
    redis_service: str,
    short_tmp: Path,
) -> Callable[..., AgentProcess]:
    """A started agent over the demo stack (keyword overrides replace config sections;
    `drain_timeout` is the engine's, `lock` the procedures' lock section, `engine` fields of
    the engine component)."""

    def make(
        drain_timeout: str | None = None,
        lock: dict[str, Any] | None = None,
        engine: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> AgentProcess:
        port = free_port()
        config = stack_config(short_tmp, engine_dsn, redis_service, port, **overrides)
        config["components"]["engine"].update(engine or {})
        if drain_timeout is not None:
            config["components"]["engine"]["trading"]["drain_timeout"] = drain_timeout
        if lock is not None:
            config["procedures"]["lock"] = lock
        agent = agent_factory(config)
        agent.engine_port = port  # type: ignore[attr-defined]
        agent.start()
        agent.wait_state("engine", "running", timeout=60)
        return agent

    return make


def run_json(agent: AgentProcess, *args: str) -> tuple[int, dict[str, Any]]:
    result = agent.cli(*args, "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)
