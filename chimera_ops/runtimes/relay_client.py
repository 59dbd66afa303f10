"""The agent's side of the log relay (`relay.py`): start it, hand it pipes, hear back.

The agent creates each child's stdout and stderr pipes, gives the read ends to the relay over a
SOCK_SEQPACKET socket (SCM_RIGHTS) and keeps a duplicate of each read end until the relay says
both are drained. So a relay that dies (killed, crashed) costs at most what it held in memory:
the children never meet a broken pipe, and a new relay is started and given the same pipes.
Nothing here blocks the event loop: sends that do not fit wait in a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimera_ops.runtimes.relay import READ_SIZE, enlarge_pipe

log = logging.getLogger("chimera_ops.relay")

RELAY_NAME = "chimera-ops-relay"  # in its argv: how `ps`, the tests and the benches find it
# Imported from its folder (not run as a script) so that its compiled .pyc is used: compiling
# the source at every start would cost the relay about 1 MiB of resident memory for good.
_BOOT = "import sys; sys.path.insert(0, sys.argv[2]); import relay; sys.exit(relay.main(sys.argv))"
# A chatty child rides out a busy moment of the relay without blocking, and the ring still fits
# a CPU cache (1 MiB pipes measured no faster; see bench/results/resilience.md).
PIPE_SIZE = READ_SIZE
FINISHED_KEPT = 256
OUTBOX_MAX = 10_000  # notes and attaches to a relay that does not read; oldest notes dropped
Trouble = Callable[[str, dict[str, Any]], None]
"""`on_trouble(op, message)`: a `log_error` or `log_resumed` from the relay, or `relay_restarted`."""


@dataclass
class _Attached:
    key: str
    path: Path
    max_size: int
    keep: int
    fds: tuple[int, int]  # the agent's duplicates of the read ends
    done: asyncio.Future[list[str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class OutputPipes:
    """The write ends a child gets as stdout and stderr, and the start's relay key."""

    key: str
    stdout: int
    stderr: int

    def close(self) -> None:
        """Close the agent's copies of the write ends (the child holds its own)."""
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


class LogRelay:
    """One relay process per agent; every process component's output goes through it."""

    def __init__(self, on_trouble: Trouble | None = None) -> None:
        self.on_trouble = on_trouble
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._attached: dict[str, _Attached] = {}
        # Drained starts whose waiter has not asked yet (the eof can come first): bounded.
        self._finished: dict[str, list[str]] = {}
        self._outbox: deque[tuple[bytes, list[int]]] = deque()
        self._generation = 0
        self._closing = False
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Its own session: a terminal's Ctrl-C reaches the agent, which ends the relay by
            # closing the socket once the children are stopped. A clean environment: the
            # relay needs nothing of the agent's (and must carry none of its secrets).
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _BOOT,
                    RELAY_NAME,
                    str(Path(__file__).parent),
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={"PATH": os.defpath},
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        loop = asyncio.get_running_loop()
        loop.add_reader(ours.fileno(), self._on_readable)

    def ensure_running(self) -> None:
        """Start the relay if it is not running (first use, or it died)."""
        if self._sock is None:
            self._spawn()

    @property
    def pid(self) -> int | None:
        """The relay's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    async def aclose(self, timeout: float = 5.0) -> None:
        """Close the socket: the relay drains what is left and exits."""
        self._closing = True
        sock, proc = self._sock, self._proc
        self._drop_socket()
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except TimeoutError:
                proc.kill()
        for attached in self._attached.values():
            self._close_fds(attached)
        self._attached.clear()

    def _drop_socket(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
                asyncio.get_running_loop().remove_writer(self._sock.fileno())
        self._sock = None

    def _relay_died(self) -> None:
        """The relay is gone: start another and hand it every pipe still open."""
        sock, proc = self._sock, self._proc
        self._drop_socket()
        if sock is not None:
            sock.close()
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        if self._closing:
            return
        code = proc.returncode if proc is not None else None
        self.restarts += 1
        self._outbox = deque(item for item in self._outbox if not item[1])  # stale attaches
        self._spawn()
        for attached in self._attached.values():
            self._send_attach(attached)
        self._trouble(
            "relay_restarted",
            {"exit": code, "reattached": sorted(self._attached), "restarts": self.restarts},
        )

    # ------------------------------------------------------------------ to the relay
    def open_pipes(self, name: str, path: Path, max_size: int, keep: int) -> OutputPipes:
        """Two new pipes for one start of `name`; the read ends go to the relay."""
        self.ensure_running()
        self._generation += 1
        key = f"{name}#{self._generation}"
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            enlarge_pipe(fd, PIPE_SIZE)
        attached = _Attached(key, path, max_size, keep, (out_r, err_r))
        self._attached[key] = attached
        self._send_attach(attached)
        return OutputPipes(key, out_w, err_w)

    def _send_attach(self, attached: _Attached) -> None:
        message = {
            "op": "attach",
            "key": attached.key,
            "path": str(attached.path),
            "max_size": attached.max_size,
            "keep": attached.keep,
        }
        self._send(message, list(attached.fds))

    def note(self, path: Path, max_size: int, keep: int, text: str) -> None:
        """An agent line into a component's log, in order with its output."""
        self.ensure_running()
        self._send(
            {"op": "note", "path": str(path), "max_size": max_size, "keep": keep, "text": text},
            [],
        )

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        if len(self._outbox) >= OUTBOX_MAX:
            # Keep attaches (they carry pipes); drop the oldest note.
            for index, (_, held) in enumerate(self._outbox):
                if not held:
                    del self._outbox[index]
                    break
        self._outbox.append((marshal.dumps(message), fds))
        self._flush()

    def _flush(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while self._outbox:
            data, fds = self._outbox[0]
            try:
                socket.send_fds(sock, [data], fds) if fds else sock.send(data)
            except (BlockingIOError, InterruptedError):
                asyncio.get_running_loop().add_writer(sock.fileno(), self._on_writable)
                return
            except OSError:
                self._relay_died()
                return
            self._outbox.popleft()

    def _on_writable(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_writer(self._sock.fileno())
        self._flush()

    # ------------------------------------------------------------------ from the relay
    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._relay_died()
                return
            try:
                message = marshal.loads(data)
            except (ValueError, EOFError, TypeError):
                continue
            if not isinstance(message, dict):
                continue
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "eof":
            key = str(message.get("key"))
            attached = self._attached.pop(key, None)
            if attached is not None:
                self._close_fds(attached)
                tail = [str(line) for line in message.get("stderr_tail") or []]
                if not attached.done.done():
                    attached.done.set_result(tail)
                self._finished[key] = tail
                while len(self._finished) > FINISHED_KEPT:
                    del self._finished[next(iter(self._finished))]
        elif op in ("log_error", "log_resumed"):
            self._trouble(op, message)

    def _trouble(self, op: str, message: dict[str, Any]) -> None:
        if self.on_trouble is None:
            return
        try:
            self.on_trouble(op, message)
        except Exception:  # noqa: BLE001 - a report that fails must not stop the relay's news
            log.exception("log relay report %s failed", op)

    @staticmethod
    def _close_fds(attached: _Attached) -> None:
        for fd in attached.fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------------ waiting
    async def drained(self, key: str, timeout: float) -> list[str] | None:
        """The last stderr lines once both pipes of `key` are drained; None on timeout (a
        stray holder keeps a pipe open: the relay goes on draining it)."""
        attached = self._attached.get(key)
        if attached is None:
            return self._finished.pop(key, [])
        try:
            return await asyncio.wait_for(asyncio.shield(attached.done), timeout)
        except TimeoutError:
            return None
