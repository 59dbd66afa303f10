"""HTTP probe: GET a URL; healthy on the expected status and optional body substring."""

from __future__ import annotations

import asyncio
import time

from chimera_ops.probes import http11
from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import HttpProbeSpec
from chimera_ops.redact import redact_text

_BODY_IN_REASON = 200
"""Characters of an unhealthy body quoted in the reason: a /health 503 usually says why."""


class HttpProbe(Probe):
    """GET `spec.url` on a fresh connection, so a stale keep-alive connection cannot hide a hang."""

    kind = "http"

    def __init__(self, spec: HttpProbeSpec, timeout: float) -> None:
        super().__init__(timeout)
        self.spec = spec

    def describe(self) -> str:
        return redact_text(self.spec.url)

    async def check(self) -> ProbeResult:
        url = self.describe()
        started = time.monotonic()
        try:
            response = await http11.get(self.spec.url, dict(self.spec.headers))
        except (OSError, http11.HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            why = redact_text(str(exc)) or type(exc).__name__
            return ProbeResult(ok=False, reason=f"GET {url} failed: {type(exc).__name__}: {why}")
        latency = time.monotonic() - started
        details = {"status": response.status, "latency_s": round(latency, 6)}
        body = response.text
        if response.status != self.spec.expect_status:
            snippet = redact_text(body.strip()[:_BODY_IN_REASON])
            reason = f"GET {url} returned {response.status} (expected {self.spec.expect_status})"
            return ProbeResult(
                ok=False,
                reason=f"{reason}: {snippet}" if snippet else reason,
                latency_s=latency,
                details=details,
            )
        if self.spec.body_contains is not None and self.spec.body_contains not in body:
            return ProbeResult(
                ok=False,
                reason=f"GET {url} body does not contain {self.spec.body_contains!r}",
                latency_s=latency,
                details=details,
            )
        return ProbeResult(
            ok=True,
            reason=f"{response.status} in {latency * 1000:.0f}ms",
            latency_s=latency,
            details=details,
        )
