"""Run an argv (no shell) in its own process group and always reap it, even when cancelled.

Shared by the exec and rabbitmq probes: a probe whose timeout fires must not leave the command
(or anything it forked) running, so the whole process group is SIGKILLed in a `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chimera_ops.aio import within

OUTPUT_TAIL = 4096
"""Bytes of output kept: enough for a reason, bounded even for a command that prints forever."""


@dataclass(frozen=True)
class Completed:
    """Exit code and the tail of the combined stdout/stderr."""

    returncode: int
    output: str


async def run_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Completed:
    """Run `argv`, return its exit code and output tail; kill its process group on cancel."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env=dict(env) if env is not None else None,
    )
    try:
        tail = bytearray()
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail += chunk
            del tail[:-OUTPUT_TAIL]
        returncode = await proc.wait()
        return Completed(returncode, tail.decode("utf-8", "replace"))
    finally:
        # The group id is the leader's pid; it stays reserved while any member lives, so this
        # cannot hit an unrelated group. Kill stragglers even after a normal exit.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # Reap it so no zombie is left; shielded so a second cancel cannot skip the wait.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(within(proc.wait(), timeout=5))
