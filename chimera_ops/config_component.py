"""A `components.<name>:` section: runtime, command, restart and stop policy, logs, probes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from chimera_ops.fields import Duration, Signal, Size, StrictModel
from chimera_ops.monitors.spec import MonitorsConfig
from chimera_ops.probes.spec import ProbeConfig
from chimera_ops.trading_spec import TradingConfig


class BackoffConfig(StrictModel):
    """Restart delays: ``first`` after a crash from a stable run, then initial * 2^n, capped.

    A component that ran stably and crashes once is back after ``first`` (like systemd's
    RestartSec=100ms; supervisord restarts at once); only a repeat failure, before
    ``reset_after`` of uptime, backs off from ``initial``.
    """

    first: Duration = 0.1
    initial: Duration = 1.0
    max: Duration = 60.0
    reset_after: Duration = 60.0

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.max < self.initial:
            raise ValueError("'max' must be at least 'initial'")
        if self.max < self.first:
            raise ValueError("'max' must be at least 'first'")
        return self


class CrashLoopConfig(StrictModel):
    """N restarts within a window -> fatal."""

    max_restarts: int = Field(default=5, ge=1)
    window: Duration = 300.0


class RestartConfig(StrictModel):
    """When and how fast a process component is restarted."""

    policy: Literal["always", "on-failure", "never"] = "on-failure"
    backoff: BackoffConfig = BackoffConfig()
    crash_loop: CrashLoopConfig = CrashLoopConfig()


class StopConfig(StrictModel):
    """Stop signal and grace period before SIGKILL of the whole tree."""

    signal: Signal = Field(default="SIGTERM", validate_default=True)
    grace: Duration = 10.0


class LogsConfig(StrictModel):
    """Size-rotated stdout/stderr capture."""

    max_size: Size = 50 * 1024 * 1024
    keep: int = Field(default=5, ge=1)


class ComposeRef(StrictModel):
    """A compose service, found by the labels compose puts on its containers
    (`com.docker.compose.project` / `com.docker.compose.service`)."""

    project: str = Field(min_length=1)
    service: str = Field(min_length=1)


class ComponentConfig(StrictModel):
    """One component of the stack."""

    runtime: Literal["process", "docker", "external"]
    command: list[str] | None = None
    # docker runtime: an existing container, by name (or id), or a compose service by labels.
    container: str | None = Field(default=None, min_length=1)
    compose: ComposeRef | None = None
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    restart: RestartConfig = RestartConfig()
    stop: StopConfig = StopConfig()
    logs: LogsConfig = LogsConfig()
    startup: ProbeConfig | None = None
    readiness: ProbeConfig | None = None
    liveness: ProbeConfig | None = None
    trading: TradingConfig | None = None
    monitors: MonitorsConfig | None = None

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError("must be a non-empty argv list, e.g. ['python', '-m', 'app']")
        return value

    @field_validator("readiness")
    @classmethod
    def _readiness_never_kills(cls, value: ProbeConfig | None) -> ProbeConfig | None:
        if value is not None and value.kill_grace is not None:
            raise ValueError(
                "a readiness probe never kills, so 'kill_grace' has no effect here; "
                "set it on the liveness or startup probe"
            )
        return value

    @model_validator(mode="after")
    def _runtime_fields(self) -> ComponentConfig:
        if self.runtime == "process" and not self.command:
            raise ValueError("a 'process' component needs 'command' (an argv list)")
        if self.runtime == "docker":
            self._docker_fields()
        elif self.container is not None or self.compose is not None:
            raise ValueError("'container' and 'compose' belong to 'runtime: docker' components")
        if self.runtime == "external" and self.command:
            raise ValueError("an 'external' component is watched, never started: remove 'command'")
        if self.runtime != "docker":
            for role in ("startup", "readiness", "liveness"):
                probe = getattr(self, role)
                if probe is not None and probe.kind == "docker_health":
                    raise ValueError(
                        f"{role}: 'docker_health' reads a container's HEALTHCHECK; it needs "
                        "'runtime: docker'"
                    )
        return self

    def _docker_fields(self) -> None:
        if self.container is not None and self.compose is not None:
            raise ValueError(
                "set one of 'container' (a container name) or 'compose' ({project, service}), "
                "not both"
            )
        if self.container is None and self.compose is None:
            raise ValueError(
                "a 'docker' component needs 'container: NAME' or "
                "'compose: {project: P, service: S}'"
            )
        if self.command:
            raise ValueError(
                "a 'docker' component runs its image's command (compose created the container): "
                "remove 'command'"
            )

    @property
    def container_ref(self) -> str:
        """How the container is named in messages: `NAME` or `compose PROJECT/SERVICE`."""
        if self.compose is not None:
            return f"compose {self.compose.project}/{self.compose.service}"
        return str(self.container)
