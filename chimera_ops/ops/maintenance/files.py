"""Files: log sizes (weekly) and old logs, bundles and incidents (monthly, `--fix` deletes).

`oversized`, `own_kind` and `select_old` are pure; the walks and `open_paths` (every file a
running process holds open, from psutil) are the I/O. A file a process holds open is never
deleted. `--fix` deletes only its own kinds of files (rotated component logs, bundles,
incidents), each only directly in its own folder of the state dir, and never looks through a
symlink: a `logs` dir that links elsewhere would otherwise hand it someone else's files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
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


# The kinds of files `--fix` may delete, by name, each in its own directory of the state dir:
# a component log the relay rotated (`engine.log.3`, never the live `engine.log`), a support
# bundle, an incident directory (`20261001T000000Z-engine`). Nothing else is ours to delete.
ROTATED_LOG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\.log\.[1-9][0-9]{0,3}$")
BUNDLE = re.compile(r"^chimera-bundle-[A-Za-z0-9_.-]+\.tar\.gz$")
INCIDENT = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9_.-]+$")


def own_kind(where: str, name: str) -> bool:
    """Is `name`, found in the state dir's `where` (`logs`, `incidents`, `bundles` or `.`),
    one of the kinds of file maintenance owns? Pure."""
    if where == "logs":
        return ROTATED_LOG.match(name) is not None
    if where == "incidents":
        return INCIDENT.match(name) is not None
    return where in (".", "bundles") and BUNDLE.match(name) is not None


def _entry(parent: Path, name: str, st: os.stat_result) -> Entry | None:
    """An entry from its `lstat`: a regular file, or an incident directory walked without
    following a symlink (the files a process may hold open, for `select_old`)."""
    path = parent / name
    if stat.S_ISREG(st.st_mode):
        return Entry(str(path), st.st_mtime, st.st_size, (os.path.realpath(path),))
    if not stat.S_ISDIR(st.st_mode):
        return None  # a symlink, a FIFO, a socket: never ours to delete
    files: list[str] = []
    size = 0
    for root, _dirs, names in os.walk(path, followlinks=False):
        for one in names:
            inner = os.path.join(root, one)
            try:
                inner_st = os.lstat(inner)
            except OSError:
                continue
            if stat.S_ISREG(inner_st.st_mode):
                files.append(os.path.realpath(inner))
                size += inner_st.st_size
    return Entry(str(path), st.st_mtime, size, tuple(files))


def _own_dir(path: Path) -> bool:
    """A real directory, not a symlink to one: the only kind maintenance looks into."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def old_candidates(ctx: Context) -> tuple[list[Entry], list[str]]:
    """(entries of the kinds maintenance owns, directories not followed because they are
    symlinks): rotated component logs, support bundles and incident directories of this state
    dir, each only directly in its own directory, never through a symlink."""
    state = ctx.config.agent.state_dir
    found: list[Entry] = []
    not_followed: list[str] = []
    for where in ("logs", "incidents", ".", "bundles"):
        folder = state / where if where != "." else state
        if where != "." and folder.is_symlink():
            not_followed.append(str(folder))
            continue
        if not folder.is_dir():
            continue
        try:
            listing = sorted(os.scandir(folder), key=lambda d: d.name)
        except OSError:
            continue
        for item in listing:
            if not own_kind(where, item.name):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if (entry := _entry(folder, item.name, st)) is not None:
                found.append(entry)
    return found, not_followed


def remove(entry: Entry) -> None:
    """Delete a file or an incident directory through a descriptor of its parent opened with
    O_NOFOLLOW: a parent swapped for a symlink meanwhile is refused (ELOOP), not followed, and
    `rmtree` on a descriptor never follows a symlink inside the incident."""
    parent, name = os.path.split(entry.path)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        st = os.lstat(name, dir_fd=fd)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=fd)
        elif stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=fd)
        else:
            raise OSError(f"{entry.path} is no longer a regular file or directory")
    finally:
        os.close(fd)


class OldFilesCheck(Check):
    """Monthly: logs, bundles and incidents older than `maintenance.max_age`."""

    name = "old_files"
    runbook = "disk-full.md"

    def decide(
        self,
        old: list[Entry],
        held: list[Entry],
        deleted: list[Entry],
        max_age: float,
        not_followed: list[str] | None = None,
    ) -> Result:
        """Pure verdict: what is old, what was deleted, what is kept because it is open, and
        which of the state dir's folders are symlinks, never looked into."""
        threshold = f"none older than {format_duration(max_age)}"
        left = [e for e in old if e not in deleted]
        size = sum(e.size for e in left)
        links = not_followed or []
        data: dict[str, object] = {
            "old": [e.path for e in left],
            "deleted": [e.path for e in deleted],
            "kept_open": [e.path for e in held],
            "not_followed": links,
            "bytes": size,
        }
        if links and not left:
            return self.result(
                "warning",
                f"{links[0]} is a symlink: not looked into",
                threshold,
                "maintenance deletes only in the state dir's own folders: make it a directory "
                "(or move agent.state_dir to where the link points)",
                data,
            )
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
        candidates, not_followed = old_candidates(ctx)
        delete, held = select_old(candidates, ctx.now, max_age, open_paths())
        deleted: list[Entry] = []
        if ctx.fix and not ctx.dry_run:
            for entry in delete:
                try:
                    remove(entry)
                    deleted.append(entry)
                except OSError:
                    continue
        result = self.decide(delete, held, deleted, max_age, not_followed)
        result.fixed = [e.path for e in deleted]
        return result
