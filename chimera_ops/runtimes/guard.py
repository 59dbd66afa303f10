"""The death guard: ends every child of an agent that died, even by `kill -9`.

PR_SET_PDEATHSIG kills a direct child when the agent dies, but not descendants that the child
started (least of all ones that called setsid). The guard is a tiny `sh` process in its own
session holding the read end of a pipe whose write end only the agent has. When the agent dies,
however it dies, the kernel closes that end, the guard reads EOF and SIGKILLs every process that
carries this agent's marker.
"""

from __future__ import annotations

import os
import subprocess

from chimera_ops.runtimes.tree import MARKER_ENV

_GUARD_SCRIPT = r"""
prefix="$1"
while IFS= read -r _line; do :; done
i=0
while [ $i -lt 5 ]; do
  pids=$(grep -lzs "^$2=$prefix" /proc/[0-9]*/environ 2>/dev/null | sed 's#^/proc/\([0-9]*\)/environ$#\1#')
  [ -z "$pids" ] && exit 0
  kill -9 $pids 2>/dev/null
  sleep 0.1
  i=$((i+1))
done
"""


class DeathGuard:
    """Starts the guard and holds the pipe; `close()` on a clean shutdown."""

    def __init__(self, marker_prefix: str) -> None:
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, False)
        self.process = subprocess.Popen(
            ["sh", "-c", _GUARD_SCRIPT, "chimera-ops-guard", marker_prefix, MARKER_ENV],
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        os.close(read_fd)
        self._write_fd: int | None = write_fd

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        """Let the guard sweep (a no-op when every child is already stopped) and exit."""
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
