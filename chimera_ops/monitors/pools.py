"""Pool saturation: PostgreSQL, Redis and an app's own pool gauges.

Samplers do the I/O and return plain dataclasses (or an error string when the server cannot
be asked: an exhausted server refusing our own connection is itself the finding); the
`evaluate_*` functions are pure and return (check, severity, message, values) verdicts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from chimera_ops.errors import describe_exception
from chimera_ops.monitors.base import Finding, Monitor, Severity, grade
from chimera_ops.monitors.spec import (
    AppPoolConfig,
    PoolsConfig,
    PostgresPoolConfig,
    RedisPoolConfig,
    Thresholds,
)
from chimera_ops.probes.postgres import dsn_target, resolve_secret
from chimera_ops.probes.redis import redis_figures, url_target
from chimera_ops.redact import dsn_password, redact_text
from chimera_ops.units import format_duration

Verdict = tuple[str, Severity, str, dict[str, float]]
QUERY_CHARS = 200


# -- PostgreSQL ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PgPoolSample:
    """Client backends by state, plus the sessions worth naming."""

    max_connections: int
    reserved: int
    by_state: dict[str, int]
    idle_in_transaction: list[tuple[int, float]]
    """(pid, seconds in that state)."""
    long_queries: list[tuple[int, float, str]]
    """(pid, seconds running, query truncated)."""

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


_PG_STATES = """
SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' GROUP BY 1
"""
_PG_IDLE_TX = """
SELECT pid, extract(epoch FROM now() - state_change)::float8 FROM pg_stat_activity
WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')
ORDER BY state_change
"""
_PG_LONG = """
SELECT pid, extract(epoch FROM now() - query_start)::float8, left(query, %s)
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND now() - query_start > make_interval(secs => %s)
ORDER BY query_start
"""


async def sample_postgres(dsn: str, long_query: float, timeout: float = 5.0) -> PgPoolSample:
    """Read pg_stat_activity and the connection limits (raises psycopg.Error)."""
    async with (
        await psycopg.AsyncConnection.connect(
            dsn, connect_timeout=max(2, math.ceil(timeout)), autocommit=True
        ) as conn,
        conn.cursor() as cur,
    ):
        await cur.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
        )
        row = await cur.fetchone()
        assert row is not None
        max_connections, reserved = row
        await cur.execute(_PG_STATES)
        by_state = {str(state): int(n) for state, n in await cur.fetchall()}
        await cur.execute(_PG_IDLE_TX)
        idle = [(int(pid), float(age or 0)) for pid, age in await cur.fetchall()]
        await cur.execute(_PG_LONG, (QUERY_CHARS, long_query))
        long_rows = [
            (int(p), float(s or 0), " ".join(str(q).split())) for p, s, q in await cur.fetchall()
        ]
    return PgPoolSample(max_connections, reserved, by_state, idle, long_rows)


def evaluate_postgres(sample: PgPoolSample, config: PostgresPoolConfig) -> list[Verdict]:
    """Usage vs max_connections, stale idle-in-transaction sessions, long-running queries."""
    verdicts: list[Verdict] = []
    ratio = sample.total / sample.max_connections if sample.max_connections else 0.0
    values = {
        f"connections_{state.replace(' ', '_')}": float(n) for state, n in sample.by_state.items()
    }
    values.update(
        connections=float(sample.total),
        max_connections=float(sample.max_connections),
        ratio=ratio,
        idle_in_transaction=float(len(sample.idle_in_transaction)),
        long_queries=float(len(sample.long_queries)),
    )
    states = ", ".join(f"{n} {state}" for state, n in sorted(sample.by_state.items()))
    verdicts.append(
        (
            "postgres",
            grade(ratio, config.warn, config.critical),
            f"postgres: {sample.total} of {sample.max_connections} connections ({ratio:.0%}; {states})",
            values,
        )
    )
    stale = [
        (pid, age) for pid, age in sample.idle_in_transaction if age >= config.idle_in_transaction
    ]
    idle_values = {
        "idle_in_transaction": float(len(sample.idle_in_transaction)),
        "stale": float(len(stale)),
    }
    if stale:
        oldest = max(age for _, age in stale)
        idle_values["oldest_s"] = oldest
        pids = ", ".join(str(pid) for pid, _ in stale[:10])
        verdicts.append(
            (
                "postgres:idle_in_transaction",
                "warning",
                f"postgres: {len(stale)} session(s) idle in transaction for over "
                f"{format_duration(config.idle_in_transaction)} (oldest "
                f"{format_duration(oldest)}; pids {pids})",
                idle_values,
            )
        )
    else:
        verdicts.append(
            (
                "postgres:idle_in_transaction",
                "ok",
                "postgres: no stale idle-in-transaction session",
                idle_values,
            )
        )
    if sample.long_queries:
        pid, secs, query = sample.long_queries[0]
        verdicts.append(
            (
                "postgres:long_query",
                "warning",
                f"postgres: {len(sample.long_queries)} query(ies) running over "
                f"{format_duration(config.long_query)}; longest pid {pid} for "
                f"{format_duration(secs)}: {query}",
                {
                    "long_queries": float(len(sample.long_queries)),
                    "longest_s": secs,
                    "longest_pid": float(pid),
                },
            )
        )
    else:
        verdicts.append(
            ("postgres:long_query", "ok", "postgres: no long-running query", {"long_queries": 0.0})
        )
    return verdicts


# -- Redis --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisPoolSample:
    """INFO clients/stats and maxclients (None when CONFIG GET is refused and not configured)."""

    connected_clients: int
    maxclients: int | None
    rejected_connections: int
    blocked_clients: int


async def sample_redis(url: str, timeout: float = 5.0) -> RedisPoolSample:
    """INFO + CONFIG GET maxclients on a fresh connection (raises RedisError/OSError)."""
    client = aioredis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, single_connection_client=True
    )
    try:
        figures = await redis_figures(client)
    finally:
        await client.aclose()
    return RedisPoolSample(
        connected_clients=int(figures.get("connected_clients", 0)),
        maxclients=figures.get("maxclients"),
        rejected_connections=int(figures.get("rejected_connections", 0)),
        blocked_clients=int(figures.get("blocked_clients", 0)),
    )


def evaluate_redis(
    sample: RedisPoolSample, previous: RedisPoolSample | None, config: RedisPoolConfig
) -> list[Verdict]:
    """Clients vs maxclients, rejected connections since the previous sample, blocked clients."""
    verdicts: list[Verdict] = []
    maxclients = sample.maxclients or config.maxclients
    values = {
        "connected_clients": float(sample.connected_clients),
        "rejected_connections": float(sample.rejected_connections),
        "blocked_clients": float(sample.blocked_clients),
    }
    if maxclients:
        ratio = sample.connected_clients / maxclients
        values.update(maxclients=float(maxclients), ratio=ratio)
        verdicts.append(
            (
                "redis",
                grade(ratio, config.warn, config.critical),
                f"redis: {sample.connected_clients} of {maxclients} clients ({ratio:.0%})",
                values,
            )
        )
    else:
        verdicts.append(
            (
                "redis",
                "ok",
                f"redis: {sample.connected_clients} clients "
                "(maxclients unknown: set pools.redis.maxclients)",
                values,
            )
        )
    # The counter only grows; a drop means the server restarted, so there is no delta to judge.
    if previous is not None and sample.rejected_connections > previous.rejected_connections:
        delta = sample.rejected_connections - previous.rejected_connections
        verdicts.append(
            (
                "redis:rejected",
                "critical",
                f"redis: {delta} connection(s) rejected since the last sample (maxclients reached)",
                {"rejected_delta": float(delta)},
            )
        )
    else:
        verdicts.append(
            ("redis:rejected", "ok", "redis: no rejected connection", {"rejected_delta": 0.0})
        )
    blocked_sev: Severity = "warning" if sample.blocked_clients > config.blocked_clients else "ok"
    verdicts.append(
        (
            "redis:blocked",
            blocked_sev,
            f"redis: {sample.blocked_clients} blocked client(s)",
            {"blocked_clients": float(sample.blocked_clients)},
        )
    )
    return verdicts


# -- the app's own pools ------------------------------------------------------------------
@dataclass
class AppPoolGauges:
    """One pool's gauges, by the `pool` label."""

    size: float | None = None
    in_use: float | None = None
    waiting: float | None = None
    max: float | None = None


def parse_app_pools(text: str, prefix: str = "paper_pool") -> dict[str, AppPoolGauges]:
    """`<prefix>_{size,in_use,waiting,max}{pool=...}` from Prometheus text exposition."""
    pools: dict[str, AppPoolGauges] = {}
    fields = {f"{prefix}_{name}": name for name in ("size", "in_use", "waiting", "max")}
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            attr = fields.get(metric.name)
            if attr is None:
                continue
            pool = metric.labels.get("pool", "default")
            setattr(pools.setdefault(pool, AppPoolGauges()), attr, float(metric.value))
    return pools


def evaluate_app(pools: Mapping[str, AppPoolGauges], config: AppPoolConfig) -> list[Verdict]:
    """In-use vs max (or size) per pool; anyone waiting for a connection is at least a warning."""
    verdicts: list[Verdict] = []
    for name, g in sorted(pools.items()):
        limits: Thresholds = config.pools.get(name, config)
        cap = g.max if g.max else g.size
        in_use = g.in_use or 0.0
        ratio = in_use / cap if cap else 0.0
        severity = grade(ratio, limits.warn, limits.critical)
        waiting = g.waiting or 0.0
        if waiting > 0 and severity == "ok":
            severity = "warning"
        values = {"in_use": in_use, "waiting": waiting, "ratio": ratio}
        if cap:
            values["max"] = cap
        if g.size is not None:
            values["size"] = g.size
        message = f"app pool {name}: {in_use:.0f} of {cap or 0:.0f} in use ({ratio:.0%}), {waiting:.0f} waiting"
        verdicts.append((f"app:{name}", severity, message, values))
    return verdicts


# -- the monitor --------------------------------------------------------------------------
@dataclass
class _State:
    redis_previous: RedisPoolSample | None = None
    last: dict[str, Any] = field(default_factory=dict)


class PoolMonitor(Monitor):
    """Every configured pool of one component; each source failing is a critical finding."""

    name = "pool"
    needs_ready = True

    def __init__(
        self, component: str, config: PoolsConfig, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(component)
        self.config = config
        self.env = env if env is not None else os.environ
        self.state = _State()

    def _findings(self, verdicts: list[Verdict]) -> list[Finding]:
        return [self.finding(check, sev, msg, values) for check, sev, msg, values in verdicts]

    async def _postgres(self, cfg: PostgresPoolConfig) -> list[Verdict]:
        dsn, why = resolve_secret(cfg.dsn, cfg.dsn_env, self.env)
        if dsn is None:
            return [("postgres", "critical", f"postgres pool: DSN unavailable: {why}", {})]
        try:
            sample = await sample_postgres(dsn, cfg.long_query)
        except (psycopg.Error, OSError) as exc:
            text = redact_text(" ".join(str(exc).split()), [dsn_password(dsn)])
            return [
                ("postgres", "critical", f"postgres {dsn_target(dsn)}: cannot sample: {text}", {})
            ]
        self.state.last["postgres"] = {
            "connections": sample.total,
            "by_state": sample.by_state,
            "max_connections": sample.max_connections,
        }
        return evaluate_postgres(sample, cfg)

    async def _redis(self, cfg: RedisPoolConfig) -> list[Verdict]:
        url, why = resolve_secret(cfg.url, cfg.url_env, self.env)
        if url is None:
            return [("redis", "critical", f"redis pool: URL unavailable: {why}", {})]
        try:
            sample = await sample_redis(url)
        except (RedisError, OSError) as exc:
            # "max number of clients reached" lands here: the pool is exhausted right now.
            text = redact_text(str(exc))
            return [("redis", "critical", f"redis {url_target(url)}: cannot sample: {text}", {})]
        verdicts = evaluate_redis(sample, self.state.redis_previous, cfg)
        self.state.redis_previous = sample
        self.state.last["redis"] = sample.__dict__.copy()
        return verdicts

    async def _app(self, cfg: AppPoolConfig) -> list[Verdict]:
        try:
            async with httpx.AsyncClient(timeout=cfg.timeout) as client:
                response = await client.get(cfg.metrics_url)
            response.raise_for_status()
            pools = parse_app_pools(response.text, cfg.prefix)
        except (httpx.HTTPError, ValueError) as exc:
            text = redact_text(describe_exception(exc))
            return [
                (
                    "app",
                    "warning",
                    f"app pools: cannot scrape {redact_text(cfg.metrics_url)}: {text}",
                    {},
                )
            ]
        self.state.last["app"] = {name: g.__dict__.copy() for name, g in pools.items()}
        url = redact_text(cfg.metrics_url)
        if not pools:
            found: Verdict = (
                "app",
                "warning",
                f"app pools: no {cfg.prefix}_* gauges at {url}; check pools.app.prefix",
                {},
            )
        else:
            # The same key as a failed scrape, so a scrape that works again resolves that alert.
            found = ("app", "ok", f"app pools: {len(pools)} scraped from {url}", {})
        return [found, *evaluate_app(pools, cfg)]

    async def observe(self, pids: list[int], now: float) -> list[Finding]:
        """Sample every configured source (pids are not needed)."""
        verdicts: list[Verdict] = []
        if self.config.postgres:
            verdicts += await self._postgres(self.config.postgres)
        if self.config.redis:
            verdicts += await self._redis(self.config.redis)
        if self.config.app:
            verdicts += await self._app(self.config.app)
        return self._findings(verdicts)

    def snapshot(self) -> dict[str, Any]:
        """Latest raw figures per source."""
        return dict(self.state.last)
