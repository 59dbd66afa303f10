"""Streamed redaction: chunks of a file in, redacted chunks out, exact across chunk boundaries.

The rules of `redact.py` are line-local, so a chunk is cut after its last complete line and the
rest is carried into the next one: a secret split between two reads is seen whole. A PEM private
key block is multi-line: an unterminated one is carried whole while it is small, and past that
everything up to its END line is masked. A line with no newline for `MAX_CARRY` bytes is cut at
its last blank (a secret holds none), else where it is (stated in the module docs as the limit).

`TracebackFinder` picks the Python tracebacks out of the redacted stream for `report.md`.
"""

from __future__ import annotations

import re
from collections import deque

from chimera_ops.redact import MASK, Redactor

CHUNK = 1 << 20
MAX_CARRY = 1 << 20
PEM_CARRY = 64 << 10
_BEGIN = re.compile(rb"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----")
_END = re.compile(rb"-----END[A-Z0-9 ]*PRIVATE KEY-----")


def _open_pem(data: bytes) -> int:
    """Offset of a private key BEGIN with no END after it, else -1."""
    begin = -1
    for m in _BEGIN.finditer(data):
        begin = m.start()
    if begin < 0 or _END.search(data, begin):
        return -1
    return begin


class StreamScrubber:
    """Feed raw chunks, get redacted bytes; `flush()` at the end of the stream."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.tracebacks = TracebackFinder()
        self._carry = b""
        self._in_pem = False

    def feed(self, data: bytes) -> bytes:
        """Redacted output for everything up to the last safe cut of carry + `data`."""
        buf = self._carry + data
        cut = self._cut(buf)
        self._carry = buf[cut:]
        return self._emit(buf[:cut])

    def flush(self) -> bytes:
        """Whatever is still carried, redacted."""
        buf, self._carry = self._carry, b""
        return self._emit(buf) if buf else b""

    def _cut(self, buf: bytes) -> int:
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            if len(buf) < MAX_CARRY:
                return 0
            blank = max(buf.rfind(b" ", len(buf) - 65536), buf.rfind(b"\t", len(buf) - 65536))
            return blank + 1 if blank >= 0 else len(buf)
        if b"-----BEGIN" in buf:
            begin = _open_pem(buf[:cut])
            if begin >= 0 and len(buf) - begin <= PEM_CARRY:
                return buf.rfind(b"\n", 0, begin) + 1  # the block waits for its END line
        return cut

    def _emit(self, segment: bytes) -> bytes:
        if not segment:
            return b""
        if self._in_pem:  # the rest of a block too long to carry
            end = _END.search(segment)
            if end is None:
                return b""
            self._in_pem = False
            self.redactor.counts["pem_private_key"] += 1
            segment = MASK.encode() + segment[end.end() :]
        self._in_pem = b"-----BEGIN" in segment and _open_pem(segment) >= 0
        out = self.redactor.redact_bytes(segment)
        self.tracebacks.feed(out)
        return out


_PREFIX = re.compile(rb"^\S+Z (?:stdout|stderr|agent) ")
MARK = b"Traceback (most recent call last):"


class TracebackFinder:
    """The last `keep` Python tracebacks of a stream (each up to `max_lines` lines)."""

    def __init__(self, keep: int = 5, max_lines: int = 80) -> None:
        self.found: deque[str] = deque(maxlen=keep)
        self.max_lines = max_lines
        self._current: list[bytes] | None = None

    def feed(self, data: bytes) -> None:
        """Look at more (redacted) lines."""
        if self._current is None:
            start = data.find(MARK)
            if start < 0:
                return
            data = data[data.rfind(b"\n", 0, start) + 1 :]
        for raw in data.split(b"\n"):
            line = _PREFIX.sub(b"", raw)
            if self._current is None:
                if MARK in line:
                    self._current = [line]
                continue
            if not line:
                continue
            self._current.append(line)
            if not line[:1].isspace() or len(self._current) >= self.max_lines:
                self.found.append(b"\n".join(self._current).decode(errors="replace"))
                self._current = None
