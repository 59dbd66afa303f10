"""Process trees: the one place that walks a component's descendants. Blocking, meant for
`asyncio.to_thread`.

The walk reads each process's own /proc/<pid>/task/*/children file. psutil's
children(recursive=True) rescans the whole process table on every call, which made most of an
idle agent's CPU when it ran for every component every few seconds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import psutil


def tree_processes(pids: Iterable[int]) -> list[psutil.Process]:
    """The given processes and all their recursive children, each once; gone ones skipped."""
    seen: dict[int, psutil.Process] = {}
    for root in pids:
        for pid in tree_pids(root):
            if pid not in seen:
                with contextlib.suppress(psutil.Error):
                    seen[pid] = psutil.Process(pid)
    return list(seen.values())


def tree_identity(pids: Iterable[int]) -> frozenset[tuple[int, float]]:
    """(pid, create_time) of the roots: changes when the component was restarted."""
    ident = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            ident.add((pid, psutil.Process(pid).create_time()))
    return frozenset(ident)


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


HAS_CHILDREN_FILE = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    """Direct children from /proc/<pid>/task/*/children (no scan of the whole process table);
    psutil's scan where the kernel lacks that file (CONFIG_PROC_CHILDREN)."""
    if not HAS_CHILDREN_FILE:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                out += [int(c) for c in handle.read().split()]
        except OSError:
            continue
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def tree_pids(root: int) -> list[int]:
    """`root` and every descendant, root first."""
    out: list[int] = []
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        stack.extend(_children(pid))
    return out


def tree_rss(roots: dict[str, int]) -> dict[str, int]:
    """RSS of each named root's whole tree (for the agent's per-component gauge)."""
    return {name: sum(_rss(pid) for pid in tree_pids(root)) for name, root in roots.items()}
