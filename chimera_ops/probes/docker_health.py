"""docker_health probe: the container's own HEALTHCHECK status, as Docker reports it.

The status comes from the docker runtime (an inspect, off the loop); a `health_status` event
makes the agent run this probe at once, so Docker's `unhealthy` is acted on within
milliseconds, not at the next period (docker-autoheal polls every 5 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import DockerHealthProbeSpec


class HealthSource(Protocol):
    """What the probe reads: `(status or None without a HEALTHCHECK, last check output)`."""

    async def health(self) -> tuple[str | None, str]: ...


class DockerHealthProbe(Probe):
    """Passes on `healthy`; fails on `unhealthy`, and on `starting` (no verdict yet: the
    container's start_period is the probe's start grace, so those failures do not count)."""

    kind = "docker_health"

    def __init__(
        self,
        spec: DockerHealthProbeSpec,
        timeout: float,
        source: Callable[[], HealthSource | None] | None = None,
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.source = source

    def describe(self) -> str:
        return "Docker HEALTHCHECK"

    async def check(self) -> ProbeResult:
        source = self.source() if self.source is not None else None
        if source is None:
            return ProbeResult(ok=False, reason="no container to read a HEALTHCHECK from")
        status, output = await source.health()
        output = " ".join(output.split())[:300]
        details = {"status": status, "output": output}
        if status is None:
            return ProbeResult(
                ok=False,
                reason="the container has no HEALTHCHECK (add one, or use another probe kind)",
                details=details,
            )
        if status == "healthy":
            return ProbeResult(ok=True, reason="Docker HEALTHCHECK: healthy", details=details)
        if status == "starting":
            return ProbeResult(
                ok=False, reason="Docker HEALTHCHECK: starting (no verdict yet)", details=details
            )
        tail = f": {output}" if output else ""
        return ProbeResult(ok=False, reason=f"Docker HEALTHCHECK: {status}{tail}", details=details)
