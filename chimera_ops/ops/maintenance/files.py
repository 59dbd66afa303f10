"""Files: log sizes (weekly) and old logs, bundles and incidents (monthly, `--fix` deletes).

`oversized` and `select_old` are pure; the walks and `open_paths` (every file a running process
holds open, from psutil) are the I/O. A file a process holds open is never deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from chimera_ops.agent.paths import log_dir
from chimera_ops.monitors.logs import big_files
from chimera_ops.ops.maintenance.base import Check, Context, Result
from chimera_ops.units import format_duration, format_size

SYSTEM_LOG_DIRS = (Path("/var/log/journal"), Path("/var/log"))


def log_roots(ctx: Context) -> list[Path]:
    """Component logs, the state dir, configured extra dirs, the system's log dir if readable."""
    state = ctx.config.agent.state_dir
    roots = [log_dir(state), state, *ctx.config.maintenance.log_paths]
    system = [d for d in SYSTEM_LOG_DIRS if d.is_dir() and os.access(d, os.R_OK | os.X_OK)]
    roots += system[-1:] if ctx.config.maintenance.system_logs else []
    seen: list[Path] = []
    for root in roots:
        if root.exists() and root not in seen:
            seen.append(root)
    return seen


class LogSizeCheck(Check):
    """Weekly: any log file over `maintenance.log_max_size` is critical."""

    name = "log_sizes"
    runbook = "disk-full.md"

    def decide(self, files: list[tuple[str, int]], limit: int, roots: list[Path]) -> Result:
        """Pure verdict over (path, size) of the files over the limit."""
        threshold = f"< {format_size(limit)} per file"
        data = {"files": [{"path": p, "size": s} for p, s in files], "roots": list(map(str, roots))}
        if not files:
            return self.result("ok", "no file over the limit", threshold, "nothing to do", data)
        path, size = files[0]
        listed = f"{path} ({format_size(size)})" + (
            f" and {len(files) - 1} more" if files[1:] else ""
        )
        return self.result(
            "critical",
            listed,
            threshold,
            "rotate or truncate the file and lower the component's logs.max_size",
            data,
        )

    def run(self, ctx: Context) -> Result:
        limit = ctx.config.maintenance.log_max_size
        roots = log_roots(ctx)
        found: dict[str, int] = {}
        for root in roots:
            found.update(big_files([str(root)], limit))
        files = sorted(found.items(), key=lambda item: -item[1])
        return self.decide(files, limit, roots)


@dataclass(frozen=True)
class Entry:
    """A file or directory (an incident) that may be old."""

    path: str
    mtime: float
    size: int
    files: tuple[str, ...]  # the regular files it is made of (itself, for a file)


def select_old(
    entries: list[Entry], now: float, max_age: float, open_files: set[str]
) -> tuple[list[Entry], list[Entry]]:
    """(to delete, kept because a process holds one of its files open): entries older than
    `max_age`; an entry of exactly max_age is not older."""
    old = [e for e in entries if now - e.mtime > max_age]
    held = [e for e in old if any(f in open_files for f in e.files)]
    return [e for e in old if e not in held], held


def open_paths() -> set[str]:
    """Every regular file some process on this host holds open (those we may read)."""
    found: set[str] = set()
    for proc in psutil.process_iter():
        try:
            found.update(os.path.realpath(f.path) for f in proc.open_files())
        except (psutil.Error, OSError):
            continue
    return found


def _entry(path: Path) -> Entry | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    if path.is_dir() and not path.is_symlink():
        files = tuple(os.path.realpath(p) for p in path.rglob("*") if p.is_file())
        size = sum(os.path.getsize(p) for p in files)
        return Entry(str(path), st.st_mtime, size, files)
    if path.is_file() and not path.is_symlink():
        return Entry(str(path), st.st_mtime, st.st_size, (os.path.realpath(path),))
    return None


def old_candidates(ctx: Context) -> list[Entry]:
    """Component log files, support bundles and incident directories of this state dir."""
    state = ctx.config.agent.state_dir
    paths: list[Path] = []
    logs = log_dir(state)
    if logs.is_dir():
        paths += [p for p in logs.rglob("*") if p.is_file()]
    incidents = state / "incidents"
    if incidents.is_dir():
        paths += [p for p in incidents.iterdir() if not p.name.startswith(".")]
    for where in (state, state / "bundles"):
        if where.is_dir():
            paths += sorted(where.glob("chimera-bundle-*.tar.gz"))
    return [e for e in map(_entry, paths) if e is not None]


def remove(entry: Entry) -> None:
    """Delete a file or an incident directory."""
    if os.path.isdir(entry.path):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


class OldFilesCheck(Check):
    """Monthly: logs, bundles and incidents older than `maintenance.max_age`."""

    name = "old_files"
    runbook = "disk-full.md"

    def decide(
        self, old: list[Entry], held: list[Entry], deleted: list[Entry], max_age: float
    ) -> Result:
        """Pure verdict: what is old, what was deleted, what is kept because it is open."""
        threshold = f"none older than {format_duration(max_age)}"
        left = [e for e in old if e not in deleted]
        size = sum(e.size for e in left)
        data: dict[str, object] = {
            "old": [e.path for e in left],
            "deleted": [e.path for e in deleted],
            "kept_open": [e.path for e in held],
            "bytes": size,
        }
        if held and not left:
            return self.result(
                "warning",
                f"{len(held)} old file(s) kept: open by a running process",
                threshold,
                "kept open: " + ", ".join(e.path for e in held[:3]),
                data,
            )
        if left:
            return self.result(
                "warning",
                f"{len(left)} old ({format_size(size)})"
                + (f", {len(held)} open (kept)" if held else ""),
                threshold,
                "`chimera-ops maintenance monthly --fix` deletes them (`--dry-run` lists them)",
                data,
            )
        done = f"deleted {len(deleted)}" if deleted else "nothing old"
        return self.result("ok", done, threshold, "nothing to do", data)

    def run(self, ctx: Context) -> Result:
        max_age = ctx.config.maintenance.max_age
        delete, held = select_old(old_candidates(ctx), ctx.now, max_age, open_paths())
        deleted: list[Entry] = []
        if ctx.fix and not ctx.dry_run:
            for entry in delete:
                try:
                    remove(entry)
                    deleted.append(entry)
                except OSError:
                    continue
        result = self.decide(delete, held, deleted, max_age)
        result.fixed = [e.path for e in deleted]
        return result
