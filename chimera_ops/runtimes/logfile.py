"""Size-rotated log files for a component's stdout and stderr.

Each line is stored as `<UTC ISO time> <stream> <text>` so that log tails and `--since` filters
work even for programs that print no timestamps. Rotation keeps `name.log.1 .. name.log.<keep>`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

from chimera_ops.filemodes import make_private_dir, open_private


def _stamp() -> bytes:
    now = time.time()
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    ).encode()


def _open_append(path: Path) -> BinaryIO:
    """The log opened for appending; created 0600 (a child's output may hold secrets)."""
    return open(open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")  # noqa: SIM115


class RotatingLog:
    """An append-only file that rotates when it would pass `max_size` bytes."""

    def __init__(self, path: Path, max_size: int, keep: int) -> None:
        self.path = path
        self.max_size = max_size
        self.keep = keep
        make_private_dir(path.parent)
        self._file: BinaryIO = _open_append(path)
        self._size = self._file.tell()

    def write_line(self, stream: str, line: bytes) -> None:
        """Append one line (without its newline) from `stream` ('stdout' or 'stderr')."""
        record = _stamp() + b" " + stream.encode() + b" " + line.rstrip(b"\r\n") + b"\n"
        if self._size + len(record) > self.max_size and self._size > 0:
            self.rotate()
        self._file.write(record)
        self._file.flush()
        self._size += len(record)

    def note(self, text: str) -> None:
        """A line from the agent itself (start, exit), so the log tells the whole story."""
        self.write_line("agent", text.encode())

    def rotate(self) -> None:
        """name.log -> name.log.1 -> ... -> name.log.<keep> (the oldest is dropped)."""
        self._file.close()
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        oldest.unlink(missing_ok=True)
        for index in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{index}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._file = _open_append(self.path)
        self._size = 0

    def files(self) -> list[Path]:
        """The current file and its rotations, newest first."""
        rotated = [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]
        return [self.path] + [p for p in rotated if p.exists()]

    def close(self) -> None:
        self._file.close()


async def pump(
    reader: asyncio.StreamReader,
    log: RotatingLog,
    stream: str,
    tail: deque[bytes] | None = None,
) -> None:
    """Copy a child's pipe into the log, line by line, until EOF. Long lines are split.

    ``tail`` (a bounded deque) also keeps the last non-blank lines: the runtime puts the last
    stderr line into the exit reason, so a crash says why without opening the log.
    """
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.write_line(stream, exc.partial)
                if tail is not None and exc.partial.strip():
                    tail.append(exc.partial)
            return
        except asyncio.LimitOverrunError as exc:
            line = await reader.readexactly(exc.consumed)
        log.write_line(stream, line)
        if tail is not None and line.strip():
            tail.append(line)
