"""Collectors of the servers the stack uses: PostgreSQL, Redis, RabbitMQ, Docker.

Each one connects with short timeouts of its own (a stopped server is a fast error), reads
only, and never returns a secret it can avoid: settings whose name looks secret are left out,
query texts have their string literals removed, container environments keep only names.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from chimera_ops.ops.bundle.collectors import Output, to_json
from chimera_ops.redact import redact_dsn

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000
LONG_QUERY_S = 300
MAX_ROWS = 500
_SECRET_SETTING = re.compile(r"pass|key|secret|token|credential", re.IGNORECASE)
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'")

_QUERIES = {
    "version": "SELECT version()",
    "connections": (
        "SELECT state, count(*) AS n FROM pg_stat_activity GROUP BY state ORDER BY n DESC"
    ),
    "max_connections": "SELECT setting::int FROM pg_settings WHERE name = 'max_connections'",
    "databases": (
        "SELECT datname, pg_database_size(datname) AS bytes FROM pg_database"
        " WHERE datallowconn ORDER BY bytes DESC"
    ),
    "activity": (
        "SELECT pid, usename, datname, application_name, client_addr::text, state,"
        " wait_event_type, wait_event, backend_start, xact_start, query_start, state_change,"
        " backend_type, left(query, 2000) AS query FROM pg_stat_activity ORDER BY pid"
        f" LIMIT {MAX_ROWS}"
    ),
    "long_running": (
        "SELECT pid, datname, state, now() - query_start AS running_for, left(query, 2000)"
        " AS query FROM pg_stat_activity WHERE state <> 'idle' AND query_start <"
        f" now() - interval '{LONG_QUERY_S} seconds' AND pid <> pg_backend_pid()"
        f" ORDER BY query_start LIMIT {MAX_ROWS}"
    ),
    "locks_waited": (
        "SELECT l.pid, l.locktype, l.mode, l.relation::regclass::text AS relation,"
        " pg_blocking_pids(l.pid) AS blocked_by, now() - a.query_start AS waiting_for,"
        " left(a.query, 2000) AS query FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        f" WHERE NOT l.granted LIMIT {MAX_ROWS}"
    ),
    "settings": (
        "SELECT name, setting, unit, source FROM pg_settings WHERE source <> 'default'"
        " OR name IN ('max_connections', 'shared_buffers', 'work_mem', 'statement_timeout',"
        " 'idle_in_transaction_session_timeout') ORDER BY name"
    ),
}


def mask_sql(query: Any) -> Any:
    """A query text without its string literals (values are data, and sometimes secrets)."""
    return _SQL_LITERAL.sub("'?'", query) if isinstance(query, str) else query


def postgres(dsn: str) -> Output:
    """Version, connections by state, sizes, activity, long queries, locks waited on."""
    import psycopg
    from psycopg.rows import dict_row

    data: dict[str, Any] = {"target": redact_dsn(dsn)}
    with psycopg.connect(
        dsn,
        connect_timeout=CONNECT_TIMEOUT_S,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        application_name="chimera-ops collect-logs",
        autocommit=True,
        row_factory=dict_row,
    ) as conn:
        for name, sql in _QUERIES.items():
            try:
                rows = conn.execute(sql).fetchall()
            except psycopg.Error as exc:
                data[name] = {"error": str(exc).strip()}
                continue
            for row in rows:
                if "query" in row:
                    row["query"] = mask_sql(row["query"])
            if name == "settings":
                rows = [r for r in rows if not _SECRET_SETTING.search(str(r["name"]))]
            data[name] = rows
    version = data.get("version")
    data["server_version"] = version[0]["version"] if isinstance(version, list) else None
    return Output({f"postgres/{_slug(dsn)}.json": to_json(data)}, data)


def redis_info(url: str) -> Output:
    """`INFO all`, `CONFIG GET maxclients`, the client count."""
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
    )
    try:
        info = client.info("all")
        try:
            maxclients: Any = client.config_get("maxclients").get("maxclients")
        except redis.RedisError as exc:  # CONFIG may be renamed away
            maxclients = {"error": str(exc)}
        clients = len(client.client_list())
    finally:
        client.close()
    data = {
        "target": redact_dsn(url),
        "server_version": info.get("redis_version"),
        "maxclients": maxclients,
        "connected_clients": info.get("connected_clients"),
        "client_list_count": clients,
        "rejected_connections": info.get("rejected_connections"),
        "blocked_clients": info.get("blocked_clients"),
        "info": info,
    }
    return Output({f"redis/{_slug(url)}.json": to_json(data)}, data)


def rabbitmq(url: str, user: str, password: str, vhost: str) -> Output:
    """Overview and queue depths from the management API."""
    import httpx

    with httpx.Client(base_url=url.rstrip("/"), auth=(user, password), timeout=5.0) as client:
        overview = client.get("/api/overview")
        overview.raise_for_status()
        queues = client.get("/api/queues")
        queues.raise_for_status()
    info = overview.json()
    data = {
        "target": redact_dsn(url),
        "server_version": info.get("rabbitmq_version"),
        "queues": [
            {k: q.get(k) for k in ("vhost", "name", "messages", "messages_ready", "consumers")}
            for q in queues.json()
        ],
    }
    return Output({f"rabbitmq/{_slug(url)}.json": to_json(data)}, data)


def docker_engine(host: str, containers: dict[str, Any]) -> Output:
    """`docker version`, `docker ps -a`, and `inspect` of each component's container (by name
    or compose labels; the environment's values removed: only the names are kept)."""
    import docker

    from chimera_ops.ops.bundle.logparts import container_ident

    client = docker.DockerClient(base_url=host, timeout=10)
    try:
        version = client.version()
        ps = [
            {
                "id": c.get("Id", "")[:12],
                "names": c.get("Names"),
                "image": c.get("Image"),
                "state": c.get("State"),
                "status": c.get("Status"),
                "labels": {k: v for k, v in (c.get("Labels") or {}).items() if "compose" in k},
            }
            for c in client.api.containers(all=True)
        ]
        parts = {"docker/version.json": to_json(version), "docker/ps.json": to_json(ps)}
        for component, config in containers.items():
            try:
                info = client.api.inspect_container(container_ident(client.api, config))
            except (docker.errors.DockerException, LookupError) as exc:
                parts[f"docker/inspect-{component}.json"] = to_json({"error": str(exc)})
                continue
            config = info.get("Config") or {}
            config["Env"] = [str(e).split("=", 1)[0] + "=***" for e in config.get("Env") or []]
            parts[f"docker/inspect-{component}.json"] = json.dumps(info, indent=2, default=str)
    finally:
        client.close()
    return Output(parts, {"server_version": version.get("Version"), "containers": len(ps)})


def _slug(target: str) -> str:
    from urllib.parse import urlsplit

    if "://" in target:
        parts = urlsplit(target)
        host = parts.hostname or "local"
        port = parts.port or ""
        path = parts.path.strip("/").replace("/", "_")
        return re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{host}_{port}_{path}".strip("_"))
    # A key/value DSN may hold `password=`: a member's name is never made from its text.
    return "dsn-" + hashlib.sha256(target.encode()).hexdigest()[:10]
