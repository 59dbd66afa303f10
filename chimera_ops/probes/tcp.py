"""TCP probe: open (and close) a connection to host:port."""

from __future__ import annotations

import asyncio
import contextlib

from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import TcpProbeSpec


class TcpProbe(Probe):
    """Healthy when host:port accepts a TCP connection."""

    kind = "tcp"

    def __init__(self, spec: TcpProbeSpec, timeout: float) -> None:
        super().__init__(timeout)
        self.spec = spec

    def describe(self) -> str:
        return self.spec.address

    async def check(self) -> ProbeResult:
        try:
            _reader, writer = await asyncio.open_connection(self.spec.host, self.spec.port)
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            return ProbeResult(ok=False, reason=f"cannot connect to {self.spec.address}: {why}")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeResult(ok=True, reason=f"{self.spec.address} accepts connections")
