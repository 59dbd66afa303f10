"""Log-size monitor: files under the given directories bigger than `max_size` (1 GiB)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from chimera_ops.monitors.base import Finding, Monitor
from chimera_ops.monitors.spec import LogsMonitorConfig
from chimera_ops.units import format_size


def big_files(paths: list[str], max_size: int, pattern: str = "*") -> list[tuple[str, int]]:
    """Blocking: (path, size) of regular files matching `pattern` over `max_size`, largest first.

    Symlinks are not followed: a link into a huge tree must not make the walk unbounded.
    """
    found: list[tuple[str, int]] = []
    for root in paths:
        base = Path(root)
        candidates = [base] if base.is_file() else base.rglob(pattern)
        for path in candidates:
            try:
                st = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink() and st.st_size > max_size:
                found.append((os.fspath(path), st.st_size))
    return sorted(found, key=lambda item: -item[1])


class LogsMonitor(Monitor):
    """One finding: warning listing the oversized files, ok when none."""

    name = "logs"

    def __init__(self, component: str, config: LogsMonitorConfig) -> None:
        super().__init__(component)
        self.config = config
        self.last: list[tuple[str, int]] = []

    def evaluate(self, files: list[tuple[str, int]]) -> list[Finding]:
        """Pure verdict over `big_files` output."""
        self.last = files
        limit = format_size(self.config.max_size)
        values = {
            "files_over": float(len(files)),
            "largest_bytes": float(files[0][1] if files else 0),
        }
        if not files:
            return [self.finding("size", "ok", f"no log file over {limit}", values)]
        listed = ", ".join(f"{path} ({format_size(size)})" for path, size in files[:5])
        return [
            self.finding("size", "warning", f"{len(files)} file(s) over {limit}: {listed}", values)
        ]

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Walk the directories and evaluate."""
        files = await asyncio.to_thread(
            big_files, self.config.paths, self.config.max_size, self.config.pattern
        )
        return self.evaluate(files)

    def snapshot(self) -> dict[str, Any]:
        """Oversized files found by the last walk."""
        return {"files_over": [{"path": p, "size": s} for p, s in self.last]}
