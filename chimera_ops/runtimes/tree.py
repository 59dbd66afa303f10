"""Finding and killing a component's whole process tree.

A tree is: the child, its process group, every recursive descendant, and every process that
carries the component's marker in its environment. The marker catches descendants that called
setsid() and were re-parented away (to init), which neither the process group nor the
parent/child links still reach. Jenkins' ProcessTreeKiller uses the same idea.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil

MARKER_ENV = "CHIMERA_OPS_UNIT"


def marker_value(instance: str, agent_pid: int, component: str) -> str:
    """`<state-dir id>/<agent pid>/<component>`: unique to one agent run and component."""
    return f"{instance}/{agent_pid}/{component}"


def markers_with_prefix(prefix: str) -> dict[int, str]:
    """{pid: marker value} of processes whose CHIMERA_OPS_UNIT starts with `prefix`."""
    needle = f"{MARKER_ENV}={prefix}".encode()
    found: dict[int, str] = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                found[int(entry.name)] = item.split(b"=", 1)[1].decode(errors="replace")
                break
    return found


def pids_with_marker(prefix: str) -> list[int]:
    """Pids whose environment has CHIMERA_OPS_UNIT starting with `prefix`."""
    return list(markers_with_prefix(prefix))


def live_agents(instance: str) -> set[int]:
    """Pids of other agents still alive whose children carry this state_dir's marker.

    The flock on agent.pid normally keeps a second agent out; this catches the case where the
    state_dir was deleted under a running agent (its lock went with the file).
    """
    owners: set[int] = set()
    for value in markers_with_prefix(f"{instance}/").values():
        parts = value.split("/")
        if len(parts) >= 2 and parts[1].isdigit():
            owners.add(int(parts[1]))
    owners.discard(os.getpid())
    alive_agents = set()
    for pid in owners:
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if "chimera" in cmdline and "agent" in cmdline:
            alive_agents.add(pid)
    return alive_agents


def tree_pids(root_pid: int | None, marker: str | None) -> set[int]:
    """Every live pid of a component's tree (root, descendants, marker carriers)."""
    pids: set[int] = set()
    if root_pid:
        try:
            root = psutil.Process(root_pid)
            pids.add(root_pid)
            pids.update(child.pid for child in root.children(recursive=True))
        except psutil.Error:
            pass
    if marker:
        pids.update(pids_with_marker(marker))
    pids.discard(os.getpid())
    return pids


def signal_tree(pids: set[int], pgid: int | None, sig: int) -> None:
    """Send `sig` to the process group and to each pid; vanished processes are fine."""
    if pgid and pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(OSError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def kill_tree(root_pid: int | None, pgid: int | None, marker: str | None) -> set[int]:
    """SIGKILL the whole tree (a stopped process dies from SIGKILL too). Returns pids hit."""
    pids = tree_pids(root_pid, marker)
    signal_tree(pids, pgid, signal.SIGKILL)
    # A process may have forked between the scan and the kill: sweep the marker once more.
    if marker:
        late = set(pids_with_marker(marker)) - pids
        signal_tree(late, None, signal.SIGKILL)
        pids |= late
    return pids


def alive(pids: set[int]) -> set[int]:
    """The subset of pids that still exist and are not zombies."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            continue
    return out
