"""Tell a live chimera-ops agent (or a component it supervises) from a stale process.

A port held by another agent's engine is not a leftover to kill: that agent would restart it,
and killing the agent's own listener stops its supervision. So before doctor calls a port owner
stale it asks, from the process itself:

- is it an agent? An agent holds `<state_dir>/agent.pid` open and flock'd with its pid in it,
  and listens on `<state_dir>/agent.sock`; either path names the state dir, and the lock
  (`agent_running`) confirms that this pid, alive now, is the one holding it;
- is it a component of one? Every child an agent starts carries
  `CHIMERA_OPS_UNIT=<state-dir id>/<agent pid>/<component>` in its environment (descendants
  inherit it); the agent pid must then itself pass the test above. A marked process whose agent
  is gone is a real leftover and stays "stale".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from chimera_ops.agent.lock import agent_running
from chimera_ops.agent.paths import SOCKET_NAME
from chimera_ops.runtimes.tree import MARKER_ENV

LOCK_NAME = "agent.pid"


@dataclass(frozen=True)
class AgentOwner:
    """A process that belongs to a live chimera-ops agent."""

    agent_pid: int
    state_dir: Path
    component: str | None = None  # None: the agent process itself

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the port owner's details."""
        return {
            "agent_pid": self.agent_pid,
            "state_dir": str(self.state_dir),
            "component": self.component,
        }


def chimera_owner(pid: int) -> AgentOwner | None:
    """The live agent `pid` is, or whose component it runs; None for anything else."""
    state_dir = agent_state_dir(pid)
    if state_dir is not None:
        return AgentOwner(pid, state_dir)
    try:
        marker = psutil.Process(pid).environ().get(MARKER_ENV, "")
    except psutil.Error:
        return None
    parts = marker.split("/")
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    agent_pid = int(parts[1])
    state_dir = agent_state_dir(agent_pid)
    if state_dir is None:
        return None  # its agent is gone: a real leftover
    return AgentOwner(agent_pid, state_dir, "/".join(parts[2:]))


def agent_state_dir(pid: int) -> Path | None:
    """The state dir whose lock `pid` holds (found from its open lock file or its socket)."""
    try:
        proc = psutil.Process(pid)
        paths = [Path(f.path) for f in proc.open_files()]
        # A unix socket's laddr is its path (a str), never an (ip, port) pair.
        paths += [
            Path(str(conn.laddr))
            for conn in proc.net_connections(kind="unix")
            if isinstance(conn.laddr, str) and conn.laddr
        ]
    except psutil.Error:
        return None
    for candidate in {p.parent for p in paths if p.name in (LOCK_NAME, SOCKET_NAME)}:
        # The lock is what makes it an agent: the pid file alone may be a leftover.
        if agent_running(candidate) == pid:
            return candidate
    return None
