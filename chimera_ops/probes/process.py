"""Process probe: the pid exists, is not a zombie and is not stopped (SIGSTOP / traced)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import ProcessProbeSpec

PidProvider = Callable[[], int | None]

# A stopped process holds its port and pid but answers nothing: it must fail the probe.
_BAD_STATUS = {
    psutil.STATUS_ZOMBIE: "is a zombie (exited, not reaped)",
    psutil.STATUS_DEAD: "is dead",
    psutil.STATUS_STOPPED: "is stopped (SIGSTOP?)",
    psutil.STATUS_TRACING_STOP: "is stopped by a tracer",
}


def read_pid_file(path: str) -> int | None:
    """The pid in a pid file, or None when missing or unreadable."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class ProcessProbe(Probe):
    """Check the pid from `pid_provider` (the runtime) or from the spec's pid_file."""

    kind = "process"

    def __init__(
        self, spec: ProcessProbeSpec, timeout: float, pid_provider: PidProvider | None = None
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.pid_provider = pid_provider

    def describe(self) -> str:
        return f"pid file {self.spec.pid_file}" if self.spec.pid_file else "component process"

    def _pid(self) -> tuple[int | None, str]:
        if self.pid_provider is not None:
            return self.pid_provider(), "process is not running (no pid)"
        if self.spec.pid_file:
            return read_pid_file(self.spec.pid_file), f"no pid in {self.spec.pid_file}"
        return None, "no pid source (neither a runtime pid nor pid_file)"

    async def check(self) -> ProbeResult:
        pid, why = self._pid()
        if pid is None:
            return ProbeResult(ok=False, reason=why)
        try:
            proc = psutil.Process(pid)
            status = proc.status()
            name = proc.name()
        except psutil.NoSuchProcess:
            return ProbeResult(ok=False, reason=f"pid {pid} does not exist", details={"pid": pid})
        except psutil.AccessDenied:
            # Exists but not ours to inspect: existence is all we can vouch for.
            return ProbeResult(ok=True, reason=f"pid {pid} exists", details={"pid": pid})
        details = {"pid": pid, "status": status, "name": name}
        if status in _BAD_STATUS:
            return ProbeResult(
                ok=False, reason=f"pid {pid} ({name}) {_BAD_STATUS[status]}", details=details
            )
        return ProbeResult(ok=True, reason=f"pid {pid} ({name}) {status}", details=details)
