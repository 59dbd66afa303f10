"""`build_probe`: a Probe from its ProbeConfig."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from chimera_ops.probes.base import Probe
from chimera_ops.probes.spec import ProbeConfig

if TYPE_CHECKING:
    from chimera_ops.probes.docker_health import HealthSource
    from chimera_ops.probes.process import PidProvider


def build_probe(
    config: ProbeConfig,
    *,
    pid_provider: PidProvider | None = None,
    env: Mapping[str, str] | None = None,
    health_source: Callable[[], HealthSource | None] | None = None,
) -> Probe:
    """Build the probe of `config.kind` with `config.timeout`.

    `pid_provider` feeds the process probe (the runtime's current pid), `health_source` the
    docker_health probe (the docker runtime); `env` resolves the
    `*_env` fields (default: os.environ, read at check time so a changed secret is picked up).
    """
    env = env if env is not None else os.environ
    timeout = config.timeout
    # Each kind is imported only when used: an agent that probes nothing over PostgreSQL
    # should not carry psycopg in memory (the agent's RSS is benchmarked).
    if config.http is not None:
        from chimera_ops.probes.http import HttpProbe

        return HttpProbe(config.http, timeout)
    if config.tcp is not None:
        from chimera_ops.probes.tcp import TcpProbe

        return TcpProbe(config.tcp, timeout)
    if config.exec is not None:
        from chimera_ops.probes.exec import ExecProbe

        return ExecProbe(config.exec, timeout)
    if config.postgres is not None:
        from chimera_ops.probes.postgres import PostgresProbe

        return PostgresProbe(config.postgres, timeout, env)
    if config.redis is not None:
        from chimera_ops.probes.redis import RedisProbe

        return RedisProbe(config.redis, timeout, env)
    if config.rabbitmq is not None:
        from chimera_ops.probes.rabbitmq import RabbitmqProbe

        return RabbitmqProbe(config.rabbitmq, timeout, env)
    if config.process is not None:
        from chimera_ops.probes.process import ProcessProbe

        return ProcessProbe(config.process, timeout, pid_provider)
    if config.docker_health is not None:
        from chimera_ops.probes.docker_health import DockerHealthProbe

        return DockerHealthProbe(config.docker_health, timeout, health_source)
    raise ValueError(f"unknown probe kind in {config!r}")  # pragma: no cover - validated
