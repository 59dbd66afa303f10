"""PostgreSQL and Redis reachability; DSNs and URLs always redacted, passwords scrubbed."""

from __future__ import annotations

import time

from chimera_ops.ops.doctor.result import CheckResult
from chimera_ops.redact import redact_dsn, redact_text


def password_of(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
        return str(password) if password else None
    except Exception:  # noqa: BLE001 - an unparsable DSN just has no known password
        return None


def check_postgres(dsn: str, timeout: float) -> CheckResult:
    """Connect, `SELECT 1`, report the server version; the DSN is always shown redacted."""
    import psycopg

    shown = redact_dsn(dsn)
    started = time.monotonic()
    try:
        # libpq's connect_timeout is whole seconds, minimum 2.
        with psycopg.connect(dsn, connect_timeout=max(2, int(timeout + 0.999))) as conn:
            conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            conn.execute("SELECT 1").fetchone()
            version = conn.info.server_version
    except Exception as exc:  # noqa: BLE001 - every failure is a result
        reason = redact_text(str(exc).strip(), [password_of(dsn)]).splitlines()
        return CheckResult(
            f"postgres:{shown}",
            "fail",
            f"cannot reach PostgreSQL at {shown}: {reason[0] if reason else type(exc).__name__}",
            {"dsn": shown, "error": " | ".join(reason[:4])},
            "is the server up (`pg_isready`)? is the DSN (host, port, db, user) right? "
            "see runbooks/db-connection-failure.md",
        )
    latency = time.monotonic() - started
    return CheckResult(
        f"postgres:{shown}",
        "ok",
        f"PostgreSQL {version // 10000}.{version % 10000} answers at {shown}",
        {"dsn": shown, "server_version": version, "latency_s": round(latency, 4)},
    )


def check_redis(url: str, timeout: float) -> CheckResult:
    """PING with connect and socket timeouts; the URL is always shown redacted."""
    import redis

    shown = redact_dsn(url)
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    started = time.monotonic()
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        password = client.connection_pool.connection_kwargs.get("password")
        reason = redact_text(str(exc), [password])
        return CheckResult(
            f"redis:{shown}",
            "fail",
            f"cannot reach Redis at {shown}: {reason}",
            {"url": shown, "error": reason},
            "is redis-server up (`redis-cli ping`)? see runbooks/redis-pool-exhaustion.md",
        )
    finally:
        client.close()
    latency = time.monotonic() - started
    return CheckResult(
        f"redis:{shown}",
        "ok",
        f"Redis answers PING at {shown}",
        {"url": shown, "latency_s": round(latency, 4)},
    )
