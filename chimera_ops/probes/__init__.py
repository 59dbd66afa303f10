"""Probes: one class per kind, built from a ProbeConfig by `build_probe`.

Names are resolved lazily (PEP 562) so that importing `chimera_ops.probes.spec` for the config
does not import the HTTP, PostgreSQL and Redis clients: the CLI must start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_probe": "factory",
    "Probe": "base",
    "ProbeResult": "base",
    "DockerHealthProbe": "docker_health",
    "ExecProbe": "exec",
    "HttpProbe": "http",
    "PostgresProbe": "postgres",
    "PidProvider": "process",
    "ProcessProbe": "process",
    "RabbitmqProbe": "rabbitmq",
    "RedisProbe": "redis",
    "TcpProbe": "tcp",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"chimera_ops.probes.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'chimera_ops.probes' has no attribute {name!r}")
