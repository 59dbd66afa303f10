"""Disk monitor: used-space ratio of the filesystems that hold the given paths."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

from chimera_ops.monitors.base import Finding, Monitor, grade
from chimera_ops.monitors.spec import DiskMonitorConfig
from chimera_ops.units import format_size


def disk_usage(paths: list[str]) -> dict[str, tuple[int, int, int] | str]:
    """Blocking: (total, used, free) per path, or the error text for a path that fails."""
    out: dict[str, tuple[int, int, int] | str] = {}
    for path in paths:
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            out[path] = exc.strerror or str(exc)
            continue
        out[path] = (usage.total, usage.used, usage.free)
    return out


class DiskMonitor(Monitor):
    """One finding per path, keyed by the path."""

    name = "disk"

    def __init__(self, component: str, config: DiskMonitorConfig) -> None:
        super().__init__(component)
        self.config = config
        self.last: dict[str, Any] = {}

    def evaluate(self, usage: dict[str, tuple[int, int, int] | str]) -> list[Finding]:
        """Pure verdict over `disk_usage` output."""
        findings = []
        for path, figures in usage.items():
            check = f"free:{os.path.normpath(path)}"
            if isinstance(figures, str):
                findings.append(self.finding(check, "warning", f"{path}: cannot stat: {figures}"))
                continue
            total, used, free = figures
            # Root-reserved blocks are in neither used nor free for users: judge what users see.
            ratio = used / (used + free) if used + free else 0.0
            self.last[path] = {"total": total, "used": used, "free": free, "ratio": ratio}
            severity = grade(ratio, self.config.warn, self.config.critical)
            message = f"{path}: {format_size(free)} free ({ratio:.0%} used)"
            values = {"free_bytes": float(free), "total_bytes": float(total), "ratio": ratio}
            findings.append(self.finding(check, severity, message, values))
        return findings

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Stat the paths (pids are not needed) and evaluate."""
        return self.evaluate(await asyncio.to_thread(disk_usage, self.config.paths))

    def snapshot(self) -> dict[str, Any]:
        """Latest figures per path."""
        return dict(self.last)
