"""The `backup:` section: where backup sets go, what they hold, how long they are kept.

```yaml
backup:
  dir: ./backups                    # relative to the config file
  postgres:
    dsn_env: CHIMERA_PG_DSN          # or dsn: "postgresql://postgres@127.0.0.1:5432/postgres"
    databases: [chimera]            # each dumped on its own
    jobs: 2                          # parallel dump/restore workers
  redis: {url: "redis://127.0.0.1:6379/0"}   # optional
  retention: {keep: 7, max_age: 30d}          # never deletes the newest verified set
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, model_validator

from chimera_ops.fields import Duration, StrictModel

DB_NAME_MAX = 63  # PostgreSQL's NAMEDATALEN - 1


class BackupPostgresConfig(StrictModel):
    """The PostgreSQL server and the databases dumped from it (each on its own)."""

    dsn: str | None = None
    dsn_env: str | None = None
    databases: list[str] = Field(min_length=1)
    jobs: int = Field(default=2, ge=1, le=16)

    @model_validator(mode="after")
    def _check(self) -> BackupPostgresConfig:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("needs exactly one of 'dsn' or 'dsn_env'")
        for name in self.databases:
            if not name or len(name) > DB_NAME_MAX or "\x00" in name:
                raise ValueError(f"not a PostgreSQL database name: {name!r}")
        if len(set(self.databases)) != len(self.databases):
            raise ValueError("a database is listed twice")
        return self

    def resolve_dsn(self, environ: Mapping[str, str] | None = None) -> str:
        """The DSN, from `dsn` or the env var `dsn_env` names; ValueError when unset."""
        if self.dsn:
            return self.dsn
        env = os.environ if environ is None else environ
        assert self.dsn_env is not None
        value = env.get(self.dsn_env)
        if not value:
            raise ValueError(f"backup.postgres.dsn_env: ${self.dsn_env} is not set")
        return value


class BackupRedisConfig(StrictModel):
    """The Redis whose data (one logical database, from the URL) is backed up."""

    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: object) -> object:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> BackupRedisConfig:
        if bool(self.url) == bool(self.url_env):
            raise ValueError("needs exactly one of 'url' or 'url_env'")
        return self

    def resolve_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL, from `url` or the env var `url_env` names; ValueError when unset."""
        if self.url:
            return self.url
        env = os.environ if environ is None else environ
        assert self.url_env is not None
        value = env.get(self.url_env)
        if not value:
            raise ValueError(f"backup.redis.url_env: ${self.url_env} is not set")
        return value


class RetentionConfig(StrictModel):
    """Keep the newest `keep` sets and none older than `max_age` (the newest verified set is
    always kept, whatever its age)."""

    keep: int = Field(default=7, ge=1)
    max_age: Duration = 30 * 86400.0


class BackupConfig(StrictModel):
    """Backup sets: what they hold and where they go."""

    dir: Path = Path("./backups")
    postgres: BackupPostgresConfig | None = None
    redis: BackupRedisConfig | None = None
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _something(self) -> BackupConfig:
        if self.postgres is None and self.redis is None:
            raise ValueError("a backup needs 'postgres', 'redis' or both")
        return self
