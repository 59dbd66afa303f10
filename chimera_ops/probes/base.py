"""The probe contract: `async check() -> ProbeResult`; `run()` applies the timeout.

A probe observes one thing once. It never raises out of `run()`: every exception, including a
timeout, becomes a failed ProbeResult with a reason a person can act on.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from chimera_ops.aio import within
from chimera_ops.errors import describe_exception


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe run."""

    ok: bool
    reason: str
    latency_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, used by the API, the store and `chimera-ops probe`."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "latency_s": round(self.latency_s, 6),
            "details": self.details,
            "at": self.at,
        }


class Probe(ABC):
    """One kind of health observation. Subclasses implement `check`; callers use `run`."""

    kind: ClassVar[str] = "probe"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    @abstractmethod
    async def check(self) -> ProbeResult:
        """Observe once. May raise; `run` turns exceptions into failures."""

    def describe(self) -> str:
        """A short human target description, e.g. 'http://127.0.0.1:8701/health'."""
        return self.kind

    async def run(self) -> ProbeResult:
        """Run `check` under the timeout; never raises (except CancelledError)."""
        started = time.monotonic()
        try:
            result = await within(self.check(), timeout=self.timeout)
        except TimeoutError:
            return ProbeResult(
                ok=False,
                reason=f"{self.kind} probe timed out after {self.timeout:g}s ({self.describe()})",
                latency_s=time.monotonic() - started,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure must become a result
            return ProbeResult(
                ok=False,
                reason=f"{self.kind} probe error: {describe_exception(exc)}",
                latency_s=time.monotonic() - started,
            )
        if result.latency_s == 0.0:
            result = ProbeResult(
                ok=result.ok,
                reason=result.reason,
                latency_s=time.monotonic() - started,
                details=result.details,
                at=result.at,
            )
        return result
