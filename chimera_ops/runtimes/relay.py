"""The log relay: one small process that owns every managed child's output.

Why a process of its own (Docker's containerd-shim and Podman's conmon do the same): a child
writes into a pipe, and a pipe whose reader is stopped fills in 64 KiB. When the agent itself
read the pipes, a SIGSTOPped, busy or restarting agent froze every chatty child within seconds.
The relay does nothing but drain pipes into size-rotated files, so it keeps draining while the
agent is stopped, and its work (about a core at full speed) is off the agent's event loop.

Runs as ``python -I -S`` (see ``relay_client._BOOT``): it imports only the standard library (no site-packages,
no chimera_ops), so its resident size stays a few MiB. FD is a SOCK_SEQPACKET socket to the
agent; the agent keeps a duplicate of every read end it hands over, so if the relay dies a
child's writes never meet a broken pipe, and a new relay is given the same pipes.

File format (read by ``ops/bundle/tail.py`` and ``ops/bundle/sources.py``): what one read of a
pipe brought is written as whole lines, the first one prefixed ``<UTC ISO ms>Z <stream> ``; the
lines after it carry no prefix and share that time and stream. So a chatty child costs one
``writev`` per read, not a prefix per line. A read whose lines could be mistaken for a prefix
(``Z stdout ``, ``Z stderr ``, ``Z agent `` inside) is written with a prefix on every line.

Messages (JSON, one per datagram). Agent -> relay: ``attach`` (with the two read fds),
``note`` (an agent line into a component's log), ``stats``. Relay -> agent: ``eof`` (both
streams of one start are drained; carries the last stderr lines), ``log_error`` (a write failed:
path, error, free bytes; once per failing streak), ``log_resumed`` (writes work again, with the
count of lines and bytes dropped meanwhile), ``stats`` (bytes and lines written and dropped).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import marshal
import os
import select
import signal
import socket
import sys
import time
from collections import deque

# Not `typing`: the relay imports only what it runs on (each import is resident memory).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

READ_SIZE = 256 * 1024  # one read of a pipe: the agent makes the pipes this big
MAX_LINE = 256 * 1024  # a longer line is split
MSG_SIZE = 64 * 1024
TAIL_LINES = 5
TAIL_CHARS = 1024
OUTBOX_MAX = 1000  # messages to a stopped agent wait here; the oldest are dropped beyond
VANISH_CHECK_S = 1.0  # how often a log file is checked to still be in place
AGENT_GONE_DRAIN_S = 5.0  # after the agent's end: drain what the children still write, then go
_SPOOF = (b"Z stdout ", b"Z stderr ", b"Z agent ")
F_SETPIPE_SZ = 1031


def stamp(now: float | None = None) -> bytes:
    """`2026-12-02T16:32:22.123Z`: the time the logs carry."""
    now = time.time() if now is None else now
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    ).encode()


def enlarge_pipe(fd: int, size: int = READ_SIZE) -> None:
    """Best effort: a bigger pipe means fewer wake-ups for a chatty child (capped by
    /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def free_bytes(path: str) -> int | None:
    """Free bytes of the file system holding `path` (or its nearest existing parent)."""
    probe = path
    while probe and probe != "/":
        try:
            st = os.statvfs(probe)
            return st.f_bavail * st.f_frsize
        except OSError:
            probe = os.path.dirname(probe)
    return None


def frame(
    stream: bytes, body: bytes | bytearray, end: int | None = None
) -> list[bytes | memoryview]:
    """The buffers to write for `body[:end]` (whole lines, ending in a newline) from `stream`.
    No copy of the body: a memoryview of it (the caller writes before reusing the buffer)."""
    end = len(body) if end is None else end
    head = stamp() + b" " + stream + b" "
    # One memchr pass in the usual case (no "Z" at all); the exact markers only when needed.
    if body.find(b"Z", 0, end) >= 0 and any(body.find(m, 0, end) >= 0 for m in _SPOOF):
        # A line inside that looks like a prefix would be read as one: prefix every line.
        text = bytes(body[:end])
        return [head + text[:-1].replace(b"\n", b"\n" + head) + b"\n"]
    return [head, memoryview(body)[:end]]


class LogWriter:
    """One component's log file: appends, rotates at `max_size` and keeps `keep` old files.

    A write that fails (disk full, I/O error, the folder gone) is dropped and counted, never
    retried in a loop and never blocking: the caller keeps draining the pipe. The first good
    write afterwards is preceded by a note saying what was lost.
    """

    def __init__(self, path: str, max_size: int, keep: int) -> None:
        self.path = path
        self.max_size = max_size
        self.keep = keep
        self.fd: int | None = None
        self.inode: int | None = None
        self.size = 0
        self.failing: str | None = None  # the error of the current failing streak
        self.failing_since = 0.0
        self.dropped_lines = 0  # in the current streak
        self.dropped_bytes = 0
        self.total_dropped_lines = 0
        self.total_written = 0
        self.bytes_since_check = 0  # written since the last look: lost if the file vanished
        self.torn = False  # a partial write left half a line: start the next on a new line
        self.events: list[dict[str, object]] = []  # for the relay to pass on to the agent

    # ------------------------------------------------------------------ file
    def open(self) -> None:
        """Open (and create, 0600) the log file; its folder is made 0700 if missing."""
        folder = os.path.dirname(self.path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        self.fd, self.inode, self.size = fd, st.st_ino, st.st_size

    def _close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None

    def rotate(self) -> None:
        """name.log -> name.log.1 -> ... -> name.log.<keep> (the oldest is dropped)."""
        self._close()
        oldest = f"{self.path}.{self.keep}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(oldest)
        for index in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{index}", f"{self.path}.{index + 1}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, f"{self.path}.1")
        self.open()

    def check_in_place(self) -> None:
        """The file was removed or replaced under us (`rm -rf` of the state dir): what was
        written since the last look went to a file nobody can read. Count it, open anew."""
        if self.fd is None:
            return
        try:
            same = os.stat(self.path).st_ino == self.inode
        except OSError:
            same = False
        if not same:
            lost = self.bytes_since_check
            self._close()
            # Lines are counted only where they are dropped (counting every read costs more
            # than relaying it): the bytes written into the removed file say the loss here.
            self._fail(f"{self.path} was removed", 0, lost)
        self.bytes_since_check = 0

    # ------------------------------------------------------------------ writes
    def write(self, parts: list[bytes | memoryview], lines: Callable[[], int]) -> bool:
        """Append the framed `parts`; False when dropped (then `lines()` are counted)."""
        size = sum(len(p) for p in parts)
        try:
            if self.fd is None:
                self.open()
            if self.failing is not None:
                self._resume()
            if self.size + size > self.max_size and self.size > 0:
                self.rotate()
            self._write_all(parts, size)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                self._close()  # the folder is gone: the next write makes it anew
            self._fail(f"{self.path}: {exc.strerror or exc}", lines(), size)
            return False
        self.bytes_since_check += size
        self.total_written += size
        return True

    def _write_all(self, parts: list[bytes | memoryview], size: int) -> None:
        assert self.fd is not None
        if self.torn:
            parts = [b"\n", *parts]
            size += 1
        done = 0
        views = [memoryview(p) for p in parts]
        while done < size:
            try:
                n = os.writev(self.fd, views)
            except OSError:
                self.torn = self.torn or done > 0
                raise
            done += n
            self.size += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]
                self.torn = True
        self.torn = False

    def _fail(self, error: str, lines: int, size: int) -> None:
        if self.failing is None:
            self.failing = error
            self.failing_since = time.time()
            self.events.append(
                {
                    "op": "log_error",
                    "path": self.path,
                    "error": error,
                    "free": free_bytes(self.path),
                }
            )
        self.dropped_lines += lines
        self.dropped_bytes += size
        self.total_dropped_lines += lines

    def _resume(self) -> None:
        lines, size, error = self.dropped_lines, self.dropped_bytes, self.failing
        since = stamp(self.failing_since).decode()
        text = f"log writes resumed: {lines} lines ({size} bytes) dropped since {since} ({error})"
        self.failing = None
        self.dropped_lines = self.dropped_bytes = 0
        note = stamp() + b" agent " + text.encode() + b"\n"
        self._write_all([note], len(note))
        self.events.append(
            {
                "op": "log_resumed",
                "path": self.path,
                "dropped_lines": lines,
                "dropped_bytes": size,
                "error": error,
            }
        )

    def note(self, text: str) -> None:
        """A line of the agent's own (start, exit) into the component's log."""
        line = text.replace("\n", " ").encode(errors="replace")
        self.write([stamp() + b" agent " + line + b"\n"], lambda: 1)

    def close(self) -> None:
        self._close()


class Stream:
    """One pipe of one start of a component."""

    def __init__(self, fd: int, name: bytes, attach: Attachment) -> None:
        self.fd = fd
        self.name = name
        self.attach = attach
        self.rest = b""
        self.tail: deque[bytes] | None = deque(maxlen=TAIL_LINES) if name == b"stderr" else None

    def feed(self, buf: bytearray, n: int) -> None:
        """Whole lines of `buf[:n]` go to the log; a partial last line waits for its end."""
        if self.rest:  # a line began in the last read: join (a copy, but only of this read)
            data = self.rest + buf[:n]
            self.rest = b""
            self._feed_bytes(data)
            return
        cut = buf.rfind(b"\n", 0, n) + 1
        if cut:
            self._emit(buf, cut)
        if cut < n:
            self.rest = bytes(buf[cut:n])
            if len(self.rest) >= MAX_LINE:
                data, self.rest = self.rest + b"\n", b""
                self._emit(data, len(data))

    def _feed_bytes(self, data: bytes) -> None:
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < MAX_LINE:
            self.rest = data
            return
        if cut == 0:
            data, cut = data + b"\n", len(data) + 1
        body, self.rest = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        if len(self.rest) >= MAX_LINE:
            body, self.rest = body + self.rest + b"\n", b""
        self._emit(body, len(body))

    def finish(self) -> None:
        """EOF: a last line without a newline is still a line."""
        if self.rest:
            body, self.rest = self.rest + b"\n", b""
            self._emit(body, len(body))

    def _emit(self, body: bytes | bytearray, end: int) -> None:
        self.attach.writer.write(frame(self.name, body, end), lambda: body.count(b"\n", 0, end))
        if self.tail is not None:
            last = bytes(body[max(0, end - 4 * TAIL_CHARS) : end])
            for line in last.split(b"\n")[-TAIL_LINES - 1 :]:
                if line.strip():
                    self.tail.append(line[-TAIL_CHARS:])


class Attachment:
    """The two pipes of one start of a component (`key` = name and start generation)."""

    def __init__(self, key: str, writer: LogWriter) -> None:
        self.key = key
        self.writer = writer
        self.streams: list[Stream] = []

    def stderr_tail(self) -> list[str]:
        for stream in self.streams:
            if stream.tail is not None:
                return [line.decode("utf-8", "replace") for line in stream.tail]
        return []


class Relay:
    """The selector loop: the agent's socket plus every attached pipe."""

    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.ctl.setblocking(False)
        # select.epoll, not selectors: every import is resident memory of the relay.
        self.poll = select.epoll()
        self.poll.register(ctl.fileno(), select.EPOLLIN)
        self.streams: dict[int, Stream] = {}
        self.writers: dict[str, LogWriter] = {}
        self.open: dict[str, Attachment] = {}
        self.outbox: deque[dict[str, object]] = deque(maxlen=OUTBOX_MAX)
        self.agent_gone_at: float | None = None
        self.next_check = time.monotonic() + VANISH_CHECK_S
        self.buf = bytearray(READ_SIZE)

    # ------------------------------------------------------------------ to the agent
    def send(self, message: dict[str, object]) -> None:
        self.outbox.append(message)
        self._flush()

    def _flush(self) -> None:
        while self.outbox and self.agent_gone_at is None:
            data = marshal.dumps(self.outbox[0])
            try:
                self.ctl.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._agent_gone()
                return
            self.outbox.popleft()
        want = select.EPOLLIN | (select.EPOLLOUT if self.outbox else 0)
        if self.agent_gone_at is None:
            self.poll.modify(self.ctl.fileno(), want)

    def _agent_gone(self) -> None:
        if self.agent_gone_at is None:
            self.agent_gone_at = time.monotonic()
            with contextlib.suppress(OSError, ValueError):
                self.poll.unregister(self.ctl.fileno())

    # ------------------------------------------------------------------ from the agent
    def _on_ctl(self) -> None:
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.ctl, MSG_SIZE, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._agent_gone()
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                self._agent_gone()
                return
            try:
                message = marshal.loads(data)
            except (ValueError, EOFError, TypeError):
                for fd in fds:
                    os.close(fd)
                continue
            self._handle(message, fds)

    def _writer(self, message: dict[str, object]) -> LogWriter:
        path = str(message["path"])
        writer = self.writers.get(path)
        if writer is None:
            max_size, keep = message.get("max_size"), message.get("keep")
            writer = self.writers[path] = LogWriter(
                path,
                max_size if isinstance(max_size, int) and max_size > 0 else 10 << 20,
                keep if isinstance(keep, int) and keep > 0 else 3,
            )
            with contextlib.suppress(OSError):  # the file exists from the first start on
                writer.open()
        return writer

    def _handle(self, message: dict[str, object], fds: list[int]) -> None:
        op = message.get("op")
        if op == "attach" and len(fds) == 2:
            key = str(message["key"])
            attach = Attachment(key, self._writer(message))
            for fd, name in zip(fds, (b"stdout", b"stderr"), strict=True):
                os.set_blocking(fd, False)
                stream = Stream(fd, name, attach)
                attach.streams.append(stream)
                self.streams[fd] = stream
                self.poll.register(fd, select.EPOLLIN)
            self.open[key] = attach
            return
        for fd in fds:
            os.close(fd)
        if op == "note":
            writer = self._writer(message)
            writer.note(str(message.get("text", "")))
            self._pass_events(writer)
        elif op == "stats":
            self.send({"op": "stats", "logs": {p: self._stats(w) for p, w in self.writers.items()}})

    @staticmethod
    def _stats(writer: LogWriter) -> dict[str, object]:
        return {
            "written_bytes": writer.total_written,
            "dropped_lines": writer.total_dropped_lines,
            "failing": writer.failing,
        }

    def _pass_events(self, writer: LogWriter) -> None:
        while writer.events:
            self.send(writer.events.pop(0))

    # ------------------------------------------------------------------ pipes
    def _on_pipe(self, stream: Stream) -> None:
        try:
            # Into one reused buffer: os.read(fd, 1 MiB) would map and unmap a fresh MiB for
            # every read, which cost more than the copying itself.
            n = os.readv(stream.fd, [self.buf])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n:
            stream.feed(self.buf, n)
        else:
            stream.finish()
            self.poll.unregister(stream.fd)
            del self.streams[stream.fd]
            os.close(stream.fd)
            stream.fd = -1
            attach = stream.attach
            if all(s.fd == -1 for s in attach.streams):
                self.open.pop(attach.key, None)
                self.send({"op": "eof", "key": attach.key, "stderr_tail": attach.stderr_tail()})
        if stream.attach.writer.events:
            self._pass_events(stream.attach.writer)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        while True:
            if self.agent_gone_at is not None and (
                not self.open or time.monotonic() - self.agent_gone_at > AGENT_GONE_DRAIN_S
            ):
                return 0
            timeout = max(0.0, self.next_check - time.monotonic())
            for fd, mask in self.poll.poll(timeout):
                stream = self.streams.get(fd)
                if stream is not None:
                    self._on_pipe(stream)
                    continue
                if mask & select.EPOLLIN or mask & (select.EPOLLHUP | select.EPOLLERR):
                    self._on_ctl()
                if mask & select.EPOLLOUT and self.agent_gone_at is None:
                    self._flush()
            if time.monotonic() >= self.next_check:
                self.next_check = time.monotonic() + VANISH_CHECK_S
                for writer in self.writers.values():
                    writer.check_in_place()
                    self._pass_events(writer)


def main(argv: list[str]) -> int:
    """`... FD` (the last argument): serve the agent on socket FD until it is gone and the
    pipes are drained."""
    # The agent decides when the relay ends (its socket closes); a terminal's Ctrl-C or a
    # stray SIGTERM to the group must not cut the children's logs short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(argv[-1]))
    return Relay(ctl).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
