"""The `agent:` section of the config: state dir, tick, metrics and control API, incidents."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from chimera_ops.alerts_spec import AlertsConfig
from chimera_ops.fields import Duration, StrictModel


class MetricsConfig(StrictModel):
    """Prometheus /metrics on an optional loopback TCP listener."""

    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected 'host:port', got {value!r}")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ValueError("the metrics listener must be on loopback (127.0.0.1 or ::1)")
        return value


class ApiConfig(StrictModel):
    """Control API. Always on a 0600 unix socket; TCP only with a token."""

    listen: str | None = None
    token_env: str | None = None

    @model_validator(mode="after")
    def _token_for_tcp(self) -> ApiConfig:
        if self.listen and not self.token_env:
            raise ValueError("a TCP control listener needs 'token_env' (the API changes state)")
        return self


class IncidentsConfig(StrictModel):
    """What the agent saves before it kills a component for liveness, memory or CPU."""

    enabled: bool = True
    stack_dump: bool = True  # py-spy dump of every thread of Python processes
    tail_lines: int = Field(default=200, ge=0)


class DockerConfig(StrictModel):
    """The Docker engine of `runtime: docker` components. Unset `host`: `$DOCKER_HOST`, else
    the default socket `unix:///var/run/docker.sock`."""

    host: str | None = None

    @field_validator("host")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("unix://", "tcp://", "ssh://", "npipe://")):
            raise ValueError(
                f"expected a Docker host URL (unix:///var/run/docker.sock, tcp://host:2375), "
                f"got {value!r}"
            )
        return value


class RetentionConfig(StrictModel):
    """How much history the store keeps. The agent prunes it in the background (its own SQLite
    connection, off the event loop, small batches) every `interval`; never what is running."""

    events_max_age: Duration = 30 * 86400.0
    events_max_rows: int = Field(default=200_000, ge=1000)
    restarts_max_age: Duration = 30 * 86400.0  # far longer than any crash-loop window
    audit_max_age: Duration = 365 * 86400.0
    procedures_max_age: Duration = 180 * 86400.0  # finished procedures and their steps
    interval: Duration = 3600.0


class AgentConfig(StrictModel):
    """The agent's own settings."""

    state_dir: Path = Path("./var")
    # A safety net only: exits, probe verdicts, backoff ends and due probes wake the loop.
    tick: Duration = 5.0
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()
    alerts: AlertsConfig = AlertsConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    docker: DockerConfig = DockerConfig()
    retention: RetentionConfig = RetentionConfig()
