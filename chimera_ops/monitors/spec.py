"""Config models of the monitors (the `monitors:` section of a component).

All StrictModel (frozen, unknown keys are errors) over the shared field types, so a config
error names its path, e.g. `components.engine.monitors.memory.leak.window`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from chimera_ops.fields import Duration, Size, StrictModel


class Thresholds(StrictModel):
    """Usage-ratio thresholds: warning at `warn`, critical at `critical` (0 < warn <= critical)."""

    warn: float = Field(default=0.80, gt=0, le=1)
    critical: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warn > self.critical:
            raise ValueError(f"warn ({self.warn}) must not exceed critical ({self.critical})")
        return self


class LeakConfig(StrictModel):
    """Leak detection: robust slope over `window`, alert if the limit is < `horizon` away.

    The defaults judge after `min_span` (90 s) of at least `min_samples` samples, so at a 1 s
    or 5 s period a 5 MB/s leak towards a 1 GiB limit is flagged ~110 s before the limit.
    A process that saws around a flat level is not a leak once the window holds a couple of
    its periods; a sawtooth whose single ramp is longer than `min_span` is indistinguishable
    from a leak until it first drops (raise `min_span` for such a process).
    """

    window: Duration = 600.0
    horizon: Duration = 3600.0
    min_samples: int = Field(default=12, ge=3)
    min_span: Duration = 90.0
    min_slope: Size = 64 * 1024
    """Bytes per second below which growth is never a leak."""
    p_value: float = Field(default=0.01, gt=0, lt=1)
    """Mann–Kendall one-sided significance level."""
    min_positive_fraction: float = Field(default=0.8, gt=0.5, le=1)
    """Share of rising sample pairs required: a sawtooth stays near 0.5, a steady leak near 1."""

    @model_validator(mode="after")
    def _span_fits_window(self) -> LeakConfig:
        # A window shorter than min_span never holds enough history: no leak would ever fire.
        if self.min_span > self.window:
            raise ValueError(
                f"'min_span' ({self.min_span:g}s) is longer than 'window' ({self.window:g}s): "
                "the detector would never judge; lower min_span or widen window"
            )
        return self


class MemoryMonitorConfig(StrictModel):
    """RSS of the whole process tree: `for` samples over `limit` -> restart; leak -> alert."""

    limit: Size
    for_: int = Field(default=3, ge=1, alias="for")
    period: Duration = 5.0
    leak: LeakConfig = Field(default_factory=LeakConfig)

    model_config = StrictModel.model_config | {"populate_by_name": True}


class CpuMonitorConfig(StrictModel):
    """CPU % of the tree (100 = one core) above `threshold` for `for` -> finding."""

    threshold: float = Field(default=90.0, gt=0)
    for_: Duration = Field(default=300.0, alias="for")
    period: Duration = 5.0
    action: Literal["alert", "restart"] = "alert"

    model_config = StrictModel.model_config | {"populate_by_name": True}


class FdsMonitorConfig(Thresholds):
    """Open fds of each process of the tree vs its RLIMIT_NOFILE soft limit."""

    period: Duration = 30.0


class PostgresPoolConfig(Thresholds):
    """Connections by state vs max_connections, idle in transaction, long queries."""

    dsn: str | None = None
    dsn_env: str | None = None
    long_query: Duration = 300.0
    idle_in_transaction: Duration = 60.0
    """An idle-in-transaction session older than this is a warning."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"dsn": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _source(self) -> PostgresPoolConfig:
        if not self.dsn and not self.dsn_env:
            raise ValueError("needs 'dsn' or 'dsn_env'")
        return self


class RedisPoolConfig(Thresholds):
    """connected_clients vs maxclients, rejected_connections growth, blocked_clients."""

    url: str | None = None
    url_env: str | None = None
    maxclients: int | None = Field(default=None, gt=0)
    """Used when CONFIG GET is forbidden (managed Redis)."""
    blocked_clients: int = Field(default=0, ge=0)
    """Warn when more clients than this are blocked (BLPOP...)."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _source(self) -> RedisPoolConfig:
        if not self.url and not self.url_env:
            raise ValueError("needs 'url' or 'url_env'")
        return self


class AppPoolConfig(Thresholds):
    """An app's own pool gauges scraped from its /metrics (`<prefix>_in_use{pool=...}` ...)."""

    metrics_url: str
    prefix: str = "paper_pool"
    timeout: Duration = 2.0
    pools: dict[str, Thresholds] = Field(default_factory=dict)
    """Per-pool threshold overrides by the `pool` label."""

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"metrics_url": value} if isinstance(value, str) else value


class PoolsConfig(StrictModel):
    """Pool saturation of the servers and of the app itself."""

    postgres: PostgresPoolConfig | None = None
    redis: RedisPoolConfig | None = None
    app: AppPoolConfig | None = None
    period: Duration = 15.0


class DiskMonitorConfig(Thresholds):
    """Used-space ratio of the filesystems holding `paths`."""

    paths: list[str] = Field(min_length=1)
    period: Duration = 60.0


class LogsMonitorConfig(StrictModel):
    """Files under `paths` (recursively) bigger than `max_size`."""

    paths: list[str] = Field(min_length=1)
    max_size: Size = 1024**3
    pattern: str = "*"
    period: Duration = 300.0


class MonitorsConfig(StrictModel):
    """The `monitors:` section of one component; every monitor is optional."""

    memory: MemoryMonitorConfig | None = None
    cpu: CpuMonitorConfig | None = None
    fds: FdsMonitorConfig | None = None
    pools: PoolsConfig | None = None
    disk: DiskMonitorConfig | None = None
    logs: LogsMonitorConfig | None = None
