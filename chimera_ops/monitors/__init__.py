"""Monitors: trends and saturation over samples. `build_monitors` turns config into monitors.

Names are resolved lazily (PEP 562): importing `chimera_ops.monitors.spec` for the config must not
import psycopg and redis.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_monitors": "factory",
    "monitor_period": "factory",
    "Finding": "base",
    "Monitor": "base",
    "CpuMonitor": "cpu",
    "DiskMonitor": "disk",
    "FdsMonitor": "fds",
    "LogsMonitor": "logs",
    "MemoryMonitor": "memory",
    "tree_memory": "memory",
    "PoolMonitor": "pools",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"chimera_ops.monitors.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'chimera_ops.monitors' has no attribute {name!r}")
