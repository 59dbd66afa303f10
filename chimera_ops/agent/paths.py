"""Where an agent keeps its files in state_dir (shared by the agent and the CLI)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SOCKET_NAME = "agent.sock"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; keep a margin


def socket_path(state_dir: Path) -> Path:
    """The control socket of the agent on this state_dir."""
    return state_dir / SOCKET_NAME


def log_dir(state_dir: Path) -> Path:
    """Where component logs are written."""
    return state_dir / "logs"


def instance_id(state_dir: Path) -> str:
    """A stable id of a state_dir: the prefix of every child's marker."""
    return hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:12]
