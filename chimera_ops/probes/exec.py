"""Exec probe: run a command (argv, no shell); healthy on the expected exit code."""

from __future__ import annotations

from collections.abc import Mapping

from chimera_ops.probes._subproc import run_argv
from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import ExecProbeSpec
from chimera_ops.redact import redact_text


class ExecProbe(Probe):
    """Run `spec.argv` in its own process group; killed (with its group) on timeout."""

    kind = "exec"

    def __init__(
        self, spec: ExecProbeSpec, timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.env = env

    def describe(self) -> str:
        return redact_text(" ".join(self.spec.argv))

    async def check(self) -> ProbeResult:
        try:
            done = await run_argv(self.spec.argv, self.env)
        except OSError as exc:
            return ProbeResult(ok=False, reason=f"cannot run {self.describe()}: {exc.strerror}")
        output = redact_text(done.output.strip())
        details = {"exit_code": done.returncode, "output": output[-1024:]}
        if done.returncode == self.spec.expect_exit:
            return ProbeResult(ok=True, reason=f"exit {done.returncode}", details=details)
        last_line = output.splitlines()[-1] if output else ""
        reason = f"{self.describe()} exited {done.returncode} (expected {self.spec.expect_exit})"
        if last_line:
            reason += f": {last_line[:200]}"
        return ProbeResult(ok=False, reason=reason, details=details)
