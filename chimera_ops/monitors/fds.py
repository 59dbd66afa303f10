"""Open file descriptors of each process of the tree vs its RLIMIT_NOFILE soft limit."""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Any

import psutil

from chimera_ops.monitors.base import Finding, Monitor, grade
from chimera_ops.monitors.spec import FdsMonitorConfig
from chimera_ops.monitors.tree import tree_processes


@dataclass(frozen=True)
class FdSample:
    """The fullest process of the tree (the limit is per process) and the tree total."""

    pid: int
    open_fds: int
    soft_limit: int
    total_fds: int

    @property
    def ratio(self) -> float:
        return self.open_fds / self.soft_limit if self.soft_limit > 0 else 0.0


def sample_fds(pids: list[int]) -> FdSample | None:
    """Blocking: fds of every process of the tree; None when nothing could be read."""
    worst: FdSample | None = None
    total = 0
    for proc in tree_processes(pids):
        try:
            n = proc.num_fds()
            soft, _hard = proc.rlimit(psutil.RLIMIT_NOFILE)
        except (psutil.Error, OSError):
            continue
        if soft == resource.RLIM_INFINITY or soft <= 0:
            continue
        total += n
        candidate = FdSample(proc.pid, n, soft, 0)
        if worst is None or candidate.ratio > worst.ratio:
            worst = candidate
    return None if worst is None else FdSample(worst.pid, worst.open_fds, worst.soft_limit, total)


class FdsMonitor(Monitor):
    """Warns as any process nears its open-files limit (the next accept() would fail)."""

    name = "fds"

    def __init__(self, component: str, config: FdsMonitorConfig) -> None:
        super().__init__(component)
        self.config = config
        self.last: FdSample | None = None

    def evaluate(self, sample: FdSample) -> list[Finding]:
        """Pure verdict over one sample."""
        self.last = sample
        severity = grade(sample.ratio, self.config.warn, self.config.critical)
        values = {
            "open_fds": float(sample.open_fds),
            "soft_limit": float(sample.soft_limit),
            "ratio": sample.ratio,
            "total_fds": float(sample.total_fds),
        }
        message = (
            f"pid {sample.pid}: {sample.open_fds} of {sample.soft_limit} file descriptors "
            f"({sample.ratio:.0%})"
        )
        return [self.finding("usage", severity, message, values)]

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Sample the tree and evaluate."""
        sample = await asyncio.to_thread(sample_fds, pids) if pids else None
        return self.evaluate(sample) if sample else []

    def snapshot(self) -> dict[str, Any]:
        """Latest figures of the fullest process."""
        s = self.last
        if s is None:
            return {}
        return {
            "pid": s.pid,
            "open_fds": s.open_fds,
            "soft_limit": s.soft_limit,
            "total_fds": s.total_fds,
        }
