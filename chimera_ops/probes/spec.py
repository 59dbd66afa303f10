"""Config models of the probes: `{<kind>: <target>, period, timeout, failure_threshold, ...}`.

Each probe kind accepts a short form (a string or a list) and a long form (a mapping), e.g.
`{http: "http://127.0.0.1:8701/health"}` or `{http: {url: ..., body_contains: "ok"}}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from chimera_ops.fields import Duration, NonNegDuration, StrictModel


class HttpProbeSpec(StrictModel):
    """GET a URL; healthy on the expected status (and body substring, if given)."""

    url: str
    expect_status: int = 200
    body_contains: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class TcpProbeSpec(StrictModel):
    """Open a TCP connection to host:port."""

    address: str

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"address": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> TcpProbeSpec:
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected 'host:port', got {self.address!r}")
        return self

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


class ExecProbeSpec(StrictModel):
    """Run a command (argv list, no shell); healthy on the expected exit code."""

    argv: list[str] = Field(min_length=1)
    expect_exit: int = 0

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"argv": value} if isinstance(value, list) else value


class PostgresProbeSpec(StrictModel):
    """Connect and run `SELECT 1`. DSN from `dsn`, or from the env var named by `dsn_env`."""

    dsn: str | None = None
    dsn_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"dsn": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> PostgresProbeSpec:
        if not self.dsn and not self.dsn_env:
            raise ValueError("needs 'dsn' or 'dsn_env'")
        return self


class RedisProbeSpec(StrictModel):
    """PING and INFO. URL from `url`, or from the env var named by `url_env`."""

    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> RedisProbeSpec:
        if not self.url and not self.url_env:
            raise ValueError("needs 'url' or 'url_env'")
        return self


class RabbitmqProbeSpec(StrictModel):
    """Queue depth: from the management API when `management_url` is set, else rabbitmqctl."""

    management_url: str | None = None
    user: str = "guest"
    password_env: str | None = None
    vhost: str = "/"
    queues: list[str] = Field(default_factory=list)
    max_depth: int | None = Field(default=None, gt=0)


class ProcessProbeSpec(StrictModel):
    """The component's own process (or `pid_file`): exists, not a zombie, not stopped."""

    pid_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        if value is None or value is True or value == {}:
            return {}
        return {"pid_file": value} if isinstance(value, str) else value


class DockerHealthProbeSpec(StrictModel):
    """The container's own HEALTHCHECK status as Docker reports it (`healthy` passes;
    `unhealthy` fails; `starting` fails, inside the container's own start grace).

    Docker has already applied the healthcheck's `retries`, so this probe's
    `failure_threshold` defaults to 1: one `unhealthy` from Docker is a verdict.
    """


DEFAULT_START_PERIOD = 30.0
"""Seconds after a (re)start during which a probe's failures do not count until it first passes
(Docker's `start_period`); a startup probe's default is its Kubernetes budget instead."""
DEFAULT_START_INTERVAL = 0.1
"""Seconds between runs until the first verdict after a (re)start (Docker's `start_interval`)."""

PROBE_KINDS = (
    "http",
    "tcp",
    "exec",
    "postgres",
    "redis",
    "rabbitmq",
    "process",
    "docker_health",
)
_FLAG_KINDS = ("process", "docker_health")  # kinds with nothing to configure: `{kind: {}}`


class ProbeConfig(StrictModel):
    """One probe with Kubernetes timing semantics. Exactly one probe kind must be set."""

    http: HttpProbeSpec | None = None
    tcp: TcpProbeSpec | None = None
    exec: ExecProbeSpec | None = None
    postgres: PostgresProbeSpec | None = None
    redis: RedisProbeSpec | None = None
    rabbitmq: RabbitmqProbeSpec | None = None
    process: ProcessProbeSpec | None = None
    docker_health: DockerHealthProbeSpec | None = None

    period: Duration = 10.0
    timeout: Duration = 1.0
    failure_threshold: int = Field(default=3, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    initial_delay: NonNegDuration = 0.0
    # Like Kubernetes' probe-level terminationGracePeriodSeconds: how long a kill by this probe
    # waits after the stop signal before SIGKILL. A frozen process cannot act on SIGTERM, so
    # waiting out a long stop.grace only delays the restart. Unset: stop.grace.
    kill_grace: Duration | None = None
    # Docker's rules on top of Kubernetes' (ARCHITECTURE.md, "Health model"): until the first
    # success after a (re)start, failures do not count for `start_period` (unset: 30 s; for a
    # startup probe its budget, initial_delay + failure_threshold x period), and the probe runs
    # every `start_interval`, growing toward `period`, until its first verdict.
    start_period: NonNegDuration | None = None
    start_interval: Duration = DEFAULT_START_INTERVAL

    @model_validator(mode="before")
    @classmethod
    def _process_flag(cls, value: Any) -> Any:
        # `{process: {}}` / `{process: true}` must survive as "set" even though empty.
        if not isinstance(value, dict):
            return value
        for kind in _FLAG_KINDS:
            if kind in value and value[kind] in (None, True):
                value = {**value, kind: {}}
        if "docker_health" in value and "failure_threshold" not in value:
            # Docker counted the healthcheck's retries already: its `unhealthy` is a verdict.
            value = {**value, "failure_threshold": 1}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ProbeConfig:
        chosen = [kind for kind in PROBE_KINDS if getattr(self, kind) is not None]
        if len(chosen) != 1:
            found = ", ".join(chosen) if chosen else "none"
            raise ValueError(
                f"a probe needs exactly one of {', '.join(PROBE_KINDS)} (found: {found})"
            )
        return self

    @model_validator(mode="after")
    def _start_interval_fits(self) -> ProbeConfig:
        if "start_interval" in self.model_fields_set and self.start_interval > self.period:
            raise ValueError(
                f"start_interval ({self.start_interval:g}s) must not be longer than period "
                f"({self.period:g}s): it is the fast cadence used before the first verdict"
            )
        return self

    def effective_start_period(self, role: str) -> float:
        """The start grace in seconds for a probe in ``role`` (see `start_period`)."""
        if self.start_period is not None:
            return self.start_period
        if role == "startup":
            return self.initial_delay + self.failure_threshold * self.period
        return DEFAULT_START_PERIOD

    @property
    def kind(self) -> str:
        """The probe kind that is set."""
        return next(kind for kind in PROBE_KINDS if getattr(self, kind) is not None)

    @property
    def target(self) -> Any:
        """The spec of the chosen kind."""
        return getattr(self, self.kind)
