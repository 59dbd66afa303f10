"""One agent per state_dir: an flock'd pid file. A second agent refuses with the first's pid."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AgentAlreadyRunning(RuntimeError):
    """Another agent holds the state_dir."""

    def __init__(self, state_dir: Path, pid: int | None, lock_lost: bool = False) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        lost = (
            " (its lock file was removed: was the state_dir deleted under it?)" if lock_lost else ""
        )
        super().__init__(
            f"another chimera-ops agent ({who}) already runs on {state_dir}{lost}; "
            f"stop it first (kill -TERM {pid or '<pid>'}) or use another state_dir"
        )


class AgentLock:
    """Holds `state_dir/agent.pid` locked for the agent's lifetime (released by the kernel on death)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "agent.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock or raise AgentAlreadyRunning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentAlreadyRunning(self.path.parent, read_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def renew(self) -> None:
        """The pid file was removed (with the state dir): write and lock a new one, so that a
        second agent on this state_dir is still refused."""
        if self._fd is None:
            return
        try:
            held, now = os.fstat(self._fd), os.stat(self.path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                return
        except FileNotFoundError:
            pass
        old, self._fd = self._fd, None
        try:
            self.acquire()
        except AgentAlreadyRunning:
            self._fd = old  # another agent took the new file: it says so, keep ours
            raise
        os.close(old)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_pid(path: Path) -> int | None:
    """The pid written in a pid file, if any."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def agent_running(state_dir: Path) -> int | None:
    """The pid of the agent holding state_dir, or None (checks the lock, not just the file)."""
    path = state_dir / "agent.pid"
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path)
    finally:
        os.close(fd)
    return None
