"""A component the agent watches but never starts, stops or restarts (a shared database)."""

from __future__ import annotations

import asyncio
import time

from chimera_ops.runtimes.base import ExitInfo, Runtime


class ExternalRuntime(Runtime):
    """Nothing to run; probes tell whether it is there."""

    def __init__(self) -> None:
        self._never = asyncio.Event()

    async def start(self) -> int | None:
        return None

    async def stop(self, grace: float | None = None) -> None:
        return None

    async def wait(self) -> ExitInfo:
        await self._never.wait()
        return ExitInfo(code=None, signal=None, at=time.time(), expected=True)  # pragma: no cover

    @property
    def pid(self) -> int | None:
        return None

    @property
    def manages_process(self) -> bool:
        return False
