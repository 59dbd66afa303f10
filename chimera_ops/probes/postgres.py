"""PostgreSQL probe: connect and run `SELECT 1`; the password never reaches a reason."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict

from chimera_ops.probes.base import Probe, ProbeResult
from chimera_ops.probes.spec import PostgresProbeSpec
from chimera_ops.redact import dsn_password, redact_dsn, redact_text


def resolve_secret(
    value: str | None, env_name: str | None, env: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Return (value, None) from the literal or the named env var, or (None, why-not)."""
    if value:
        return value, None
    if env_name:
        found = env.get(env_name)
        if found:
            return found, None
        return None, f"environment variable {env_name} is not set"
    return None, "no value configured"


def dsn_target(dsn: str) -> str:
    """host:port/dbname of a DSN, for people; never the credentials."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return redact_dsn(dsn)
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    db = info.get("dbname") or info.get("user") or ""
    return f"{host}:{port}/{db}"


class PostgresProbe(Probe):
    """Connect with `connect_timeout` and run `SELECT 1`."""

    kind = "postgres"

    def __init__(
        self, spec: PostgresProbeSpec, timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(timeout)
        self.spec = spec
        self.env = env if env is not None else os.environ

    def _dsn(self) -> tuple[str | None, str | None]:
        return resolve_secret(self.spec.dsn, self.spec.dsn_env, self.env)

    def describe(self) -> str:
        dsn, _ = self._dsn()
        return dsn_target(dsn) if dsn else f"${self.spec.dsn_env}"

    async def check(self) -> ProbeResult:
        dsn, why = self._dsn()
        if dsn is None:
            return ProbeResult(ok=False, reason=f"postgres DSN unavailable: {why}")
        target = dsn_target(dsn)
        secrets = [dsn_password(dsn), os.environ.get("PGPASSWORD")]
        # libpq's connect_timeout is whole seconds (minimum 2 is enforced by libpq itself);
        # the probe timeout in run() still bounds the whole check.
        connect_timeout = max(1, math.ceil(self.timeout))
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=connect_timeout, autocommit=True
            )
        except Exception as exc:  # noqa: BLE001 - any failure is a reason, never a raise
            message = redact_text(" ".join(str(exc).split()), secrets)
            return ProbeResult(ok=False, reason=f"postgres {target} unreachable: {message}")
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                await cur.fetchone()
            details = {"server_version": conn.info.server_version}
        except Exception as exc:  # noqa: BLE001
            message = redact_text(" ".join(str(exc).split()), secrets)
            return ProbeResult(ok=False, reason=f"postgres {target} SELECT 1 failed: {message}")
        finally:
            await conn.close()
        return ProbeResult(ok=True, reason=f"postgres {target} answers", details=details)
