"""A component's log files across rotations, and the part of each inside `--since` and a cap.

The log relay (`runtimes/relay.py`) writes what one read of a child's pipe brought as whole
lines, the first prefixed `<UTC ISO> <stream> ` (a record's head) and the rest bare: a bare line
has the time and stream of the head before it. Heads are in time order within a file and across
`name.log.N .. name.log.1, name.log`, so the first line of a window is found by bisecting byte
offsets, and a rotation wholly older than the window is skipped without reading it. A line whose
time is unknown (no head before it in its file) counts as inside the window (never cut).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

TS_LEN = 24  # 2024-05-01T12:00:00.123Z
_ROTATED = re.compile(r"^(?P<base>.+\.log)\.(?P<n>\d+)$")
BISECT_LIMIT = 64 * 1024


@dataclass(frozen=True)
class LogFile:
    """One file of a component's log: its place in the rotation (0 = current, newest)."""

    path: Path
    index: int
    inode: int
    size: int


@dataclass(frozen=True)
class Slice:
    """The bytes [start, end) of a file to keep, and why the rest was left out."""

    start: int
    end: int
    since_cut: int  # bytes before the window
    cap_cut: int  # bytes inside the window dropped by the size cap (the oldest)

    @property
    def kept(self) -> int:
        """Bytes kept."""
        return self.end - self.start


def rotated_files(log_dir: Path, name: str) -> list[LogFile]:
    """`name.log` and its rotations `name.log.1 .. .N` that exist, newest first."""
    found: list[LogFile] = []
    base = f"{name}.log"
    try:
        entries = list(os.scandir(log_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name == base:
            index = 0
        else:
            match = _ROTATED.match(entry.name)
            if not match or match.group("base") != base:
                continue
            index = int(match.group("n"))
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.is_file(follow_symlinks=False):
            found.append(LogFile(Path(entry.path), index, st.st_ino, st.st_size))
    return sorted(found, key=lambda f: f.index)


def iso_ms(ts: float) -> str:
    """An epoch time as the logs write it (`2024-05-01T12:00:00.000Z`, UTC)."""
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(ts % 1 * 1000):03d}Z"
    )


_HEAD = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?:stdout|stderr|agent) ")
HEAD_SCAN_LINES = 4096  # a bisect that lands on bare lines looks this far for the next head


def line_time(line: bytes) -> str | None:
    """The ISO UTC stamp of a record's head line (`<stamp> <stream> ...`), else None."""
    if _HEAD.match(line):
        return line[:TS_LEN].decode("ascii", "replace")
    return None


def _next_head(fh: IO[bytes], offset: int) -> tuple[int, bytes]:
    """From `offset`: the first head line (its offset and bytes); (offset, b"") if none near."""
    start, line = _line_at(fh, offset)
    for _ in range(HEAD_SCAN_LINES):
        if not line or line_time(line) is not None:
            return start, line
        start = fh.tell()
        line = fh.readline()
    return start, b""


def _line_at(fh: IO[bytes], offset: int) -> tuple[int, bytes]:
    """The first line that starts at or after `offset`: (its offset, its bytes)."""
    fh.seek(offset)
    if offset > 0:
        fh.readline()  # the rest of the line `offset` fell into
    start = fh.tell()
    return start, fh.readline()


def window_start(fh: IO[bytes], size: int, since_iso: str | None) -> int:
    """Offset of the first line whose time is at or after `since_iso` (size: none is)."""
    if since_iso is None or size == 0:
        return 0
    lo, hi = 0, size  # lo: 0 or the start of a line older than the window
    while hi - lo > BISECT_LIMIT:
        mid = (lo + hi) // 2
        start, line = _next_head(fh, mid)
        stamp = line_time(line)
        if not line or stamp is None or stamp >= since_iso:
            hi = mid
        else:
            lo = start
    fh.seek(lo)
    known: str | None = None  # the time of the last head: bare lines share it
    while True:
        offset = fh.tell()
        if offset >= size:
            return size
        line = fh.readline()
        if not line:
            return size
        stamp = line_time(line) or known
        known = stamp
        if stamp is None or stamp >= since_iso:
            return offset


def plan_slice(fh: IO[bytes], size: int, since_iso: str | None, cap: int) -> Slice:
    """What to keep of one file: the window, then at most `cap` bytes of its newest lines."""
    start = window_start(fh, size, since_iso)
    since_cut = start
    cap_cut = 0
    if size - start > cap:
        fh.seek(size - cap - 1)
        fh.readline()  # begin at a line start (the newest part, whole lines)
        new_start = min(fh.tell(), size)
        cap_cut = new_start - start
        start = new_start
    return Slice(start, size, since_cut, cap_cut)


def iter_range(fh: IO[bytes], start: int, end: int, chunk: int) -> Iterator[bytes]:
    """Chunks of [start, end) of an open file (stops early if the file shrank)."""
    fh.seek(start)
    left = end - start
    while left > 0:
        data = fh.read(min(chunk, left))
        if not data:
            return
        left -= len(data)
        yield data
