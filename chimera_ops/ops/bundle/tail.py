"""A component's log lines for `chimera-ops logs`: the last N across rotations, and follow.

Process components: `name.log` and `name.log.1 .. .N` read backwards from the newest file until
N lines (inside `--since`) are found, returned oldest first. A bare line (not a record's head,
see `sources.py`) gets the time and stream of the head before it: reading backwards goes on past
the N lines until that head is found (at most one pipe read back). Following polls the open file and
notices a rotation (the name points at a new file): the rest of the old file is read first, then
the new one from its start, so no line is lost or repeated. Docker components: the engine's
`logs` (`tail`, `since`, `follow`), with Docker's timestamps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chimera_ops.ops.bundle.sources import iso_ms, line_time, rotated_files, window_start

__all__ = ["Line", "docker_lines", "follow_lines", "iso_ms", "tail_lines"]

BLOCK = 64 * 1024
POLL_S = 0.2


@dataclass(frozen=True)
class Line:
    """One log line: its time, stream and text (as `runtimes/logfile.py` wrote it)."""

    ts: str | None
    stream: str
    text: str
    file: str

    @classmethod
    def parse(cls, raw: bytes, file: str, head: Line | None = None) -> Line:
        """Split a head `<UTC ISO> <stream> <text>`; a bare line takes `head`'s time and
        stream (with no head it is all text)."""
        text = raw.rstrip(b"\r\n").decode(errors="replace")
        stamp = line_time(raw)
        if stamp is None:
            if head is not None:
                return cls(head.ts, head.stream, text, file)
            return cls(None, "", text, file)
        _, _, rest = text.partition(" ")
        stream, _, body = rest.partition(" ")
        return cls(stamp, stream, body, file)

    def render(self) -> str:
        """The line as stored."""
        return f"{self.ts} {self.stream} {self.text}" if self.ts else self.text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ts": self.ts, "stream": self.stream, "text": self.text, "file": self.file}


def _backwards(fh: IO[bytes], start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Complete lines of [start, end) with their offsets, newest first."""
    pos, rest = end, b""
    while pos > start:
        step = min(BLOCK, pos - start)
        pos -= step
        fh.seek(pos)
        block = fh.read(step) + rest
        lines = block.split(b"\n")
        rest = lines[0]
        offset = pos + len(block)
        for line in reversed(lines[1:]):
            offset -= len(line) + 1  # the newline before the line
            if line:
                yield offset + 1, line
    if rest:
        yield start, rest


def _file_tail(fh: IO[bytes], start: int, size: int, count: int, file: str) -> list[Line]:
    """Up to `count` newest lines of [start, size) of one file, oldest first, bare lines
    dated by their head (looked for before `start` too: a window may begin on a bare line)."""
    raws: list[bytes] = []
    head: Line | None = None
    need_head = False  # the oldest line kept is bare: its head is further back
    for offset, raw in _backwards(fh, 0, size):
        is_head = line_time(raw) is not None
        if offset >= start and len(raws) < count:
            raws.append(raw)
            need_head = not is_head
            continue
        if not need_head:
            break
        if is_head:
            head = Line.parse(raw, file)
            break
    lines: list[Line] = []
    for raw in reversed(raws):
        line = Line.parse(raw, file, head)
        if line_time(raw) is not None:
            head = line
        lines.append(line)
    return lines


def tail_lines(log_dir: Path, name: str, count: int, since_iso: str | None = None) -> list[Line]:
    """The last `count` lines (inside the window) across rotations, oldest first."""
    found: list[Line] = []
    for log in rotated_files(log_dir, name):
        try:
            fh = open(log.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # rotated away meanwhile: its lines are in the next name
        with fh:
            size = os.fstat(fh.fileno()).st_size
            start = window_start(fh, size, since_iso)
            found = _file_tail(fh, start, size, count - len(found), log.path.name) + found
            if len(found) >= count:
                return found
        if start > 0:
            break  # the window began inside this file: older rotations are outside it
    return found


def follow_lines(log_dir: Path, name: str, stop: Any = None) -> Iterator[Line]:
    """New lines of `name.log` as they are written, across rotations (until `stop()`)."""
    path = log_dir / f"{name}.log"
    fh = _open_at_end(path)
    rest = b""
    head: Line | None = None
    while stop is None or not stop():
        data = fh.read() if fh is not None else b""
        if data:
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                line = Line.parse(raw, path.name, head)
                if line_time(raw) is not None:
                    head = line
                yield line
            continue
        try:
            inode = os.stat(path).st_ino
        except FileNotFoundError:
            inode = None
        if fh is None or (inode is not None and inode != os.fstat(fh.fileno()).st_ino):
            if fh is not None:
                fh.close()
            fh = open(path, "rb") if inode is not None else None  # noqa: SIM115
            continue
        time.sleep(POLL_S)
    if fh is not None:
        fh.close()


def _open_at_end(path: Path) -> IO[bytes] | None:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - owned by follow_lines
    except FileNotFoundError:
        return None
    fh.seek(0, os.SEEK_END)
    return fh


def docker_lines(
    host: str, config: Any, count: int | None, since_ts: float | None, follow: bool = False
) -> Iterator[Line]:
    """A docker component's log lines from the engine (`docker logs --timestamps`)."""
    import docker

    from chimera_ops.ops.bundle.logparts import container_ident

    client = docker.DockerClient(base_url=host, timeout=30)
    try:
        ident = container_ident(client.api, config)
        kwargs: dict[str, Any] = {"timestamps": True, "tail": count if count is not None else "all"}
        if since_ts:
            kwargs["since"] = int(since_ts)
        if not follow:
            lines = []
            for stream in ("stdout", "stderr"):
                raw = client.api.logs(
                    ident, stdout=stream == "stdout", stderr=stream == "stderr", **kwargs
                )
                lines += [_docker_line(r, stream) for r in raw.split(b"\n") if r]
            lines.sort(key=lambda line: line.ts or "")
            yield from lines[-count:] if count else lines
            return
        rest = b""
        for chunk in client.api.logs(ident, stream=True, follow=True, **kwargs):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for raw in parts:
                yield _docker_line(raw, "docker")
    finally:
        client.close()


def _docker_line(raw: bytes, stream: str) -> Line:
    """Docker's `2024-05-01T12:00:00.123456789Z text` -> a Line with a millisecond stamp."""
    text = raw.rstrip(b"\r").decode(errors="replace")
    stamp, _, body = text.partition(" ")
    if len(stamp) >= 20 and stamp.endswith("Z") and "T" in stamp:
        head, _, frac = stamp[:-1].partition(".")
        return Line(f"{head}.{(frac + '000')[:3]}Z", stream, body, "docker")
    return Line(None, stream, text, "docker")
