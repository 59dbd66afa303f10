"""The doctor plan of a config: its ports, env vars, databases and state dir.

Ports come from what the config itself names, never a fixed list (a stack without RabbitMQ
has no business with 5672): each component's probe targets on this host (`http`, `tcp`, a
`postgres` DSN, a `redis` URL), its trading control URL, and the agent's own TCP listeners
(`agent.metrics.listen`, `agent.api.listen`). Who should hold each port:

- a port of a `process` component: that component, matched on its command line; when no agent
  runs it, the port must be free (we are about to start it);
- a PostgreSQL or Redis server port (named by a probe of that kind, or the well-known port of
  a component named after one): the server (or `docker-proxy`);
- any other port of an `external` component: whoever holds it is reported; nobody is a warning;
- the agent's listeners: chimera-ops, or free when no agent runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chimera_ops.ops.doctor.plan import DoctorPlan
from chimera_ops.ops.doctor.ports import SERVICE_OWNERS, PortCheck

if TYPE_CHECKING:
    from chimera_ops.config import ChimeraConfig, ComponentConfig

LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
WELL_KNOWN = {5432: "postgres", 6379: "redis", 5672: "rabbitmq"}
NAMED = {"postgres": ("postgres", "timescale"), "redis": ("redis",), "rabbitmq": ("rabbit",)}
AGENT = "__agent__"  # key of the agent itself in `running`


def plan_from_config(
    cfg: ChimeraConfig, running: Mapping[str, int], environ: Mapping[str, str] | None = None
) -> DoctorPlan:
    """Everything doctor checks for ``cfg``; ``running`` names what this config's agent runs."""
    base_env = os.environ if environ is None else environ
    env_vars: set[str] = set()
    dsns: set[str] = set()
    urls: set[str] = set()
    for comp in cfg.components.values():
        found = _secrets(comp.model_dump(mode="json"), {**base_env, **comp.env})
        env_vars |= found[0]
        dsns |= found[1]
        urls |= found[2]
    # A variable set in a component's `env:` is as present as one in the shell.
    config_env: dict[str, str] = {}
    for comp in cfg.components.values():
        config_env.update(comp.env)
    state_dir = cfg.agent.state_dir
    return DoctorPlan(
        env={**base_env, **config_env},
        ports=port_checks(cfg, running),
        env_vars=sorted(env_vars),
        postgres_dsns=sorted(dsns),
        redis_urls=sorted(urls),
        dirs=[state_dir if state_dir.exists() else state_dir.parent],
        state_dir=state_dir,
    )


def port_checks(cfg: ChimeraConfig, running: Mapping[str, int]) -> list[PortCheck]:
    """One check per local port the config names, in start order, the agent's last."""
    checks: dict[int, PortCheck] = {}
    for name in cfg.start_order():
        for check in _component_ports(name, cfg.components[name], name in running):
            checks.setdefault(check.port, check)
    for listen in (cfg.agent.metrics.listen, cfg.agent.api.listen):
        port = local_port(listen) if listen else None
        if port is not None:
            checks.setdefault(
                port,
                PortCheck(port, ("chimera-ops", "chimera_ops"), "agent", AGENT not in running),
            )
    return list(checks.values())


def _component_ports(name: str, comp: ComponentConfig, running: bool) -> list[PortCheck]:
    targets: list[tuple[str, str]] = []  # (kind, target)
    for probe in (comp.startup, comp.readiness, comp.liveness):
        if probe is None:
            continue
        if probe.http is not None:
            targets.append(("http", probe.http.url))
        if probe.tcp is not None:
            targets.append(("tcp", probe.tcp.address))
        if probe.postgres is not None and probe.postgres.dsn:
            targets.append(("postgres", probe.postgres.dsn))
        if probe.redis is not None and probe.redis.url:
            targets.append(("redis", probe.redis.url))
    if comp.trading is not None and comp.trading.control.http:
        targets.append(("http", comp.trading.control.http))
    checks = []
    for kind, target in targets:
        port = local_port(target, kind)
        if port is None:
            continue
        service = kind if kind in SERVICE_OWNERS else _named_service(name, port)
        if kind in SERVICE_OWNERS and comp.runtime == "process":
            # A database probe on an app points at the database server, not at the app.
            checks.append(PortCheck(port, SERVICE_OWNERS[kind], kind))
        elif comp.runtime == "process" and comp.command:
            own = " ".join(comp.command[1:]) or os.path.basename(comp.command[0])
            checks.append(PortCheck(port, (own,), name, must_be_free=not running))
        else:
            checks.append(PortCheck(port, SERVICE_OWNERS.get(service or "", ()), name))
    return checks


def _named_service(name: str, port: int) -> str | None:
    """The server a component is, when its name or port says so (`postgres`, `redis-cache`)."""
    by_name = next((kind for kind, words in NAMED.items() if any(w in name for w in words)), None)
    return by_name or WELL_KNOWN.get(port)


def local_port(target: str, kind: str = "tcp") -> int | None:
    """The port of a target on this host (URL, `host:port`, or libpq DSN), else None."""
    port: int | None
    if kind == "postgres":
        return _dsn_port(target)
    if "://" in target:
        parts = urlsplit(target)
        if parts.scheme == "unix":
            return None
        default = {"https": 443, "redis": 6379, "rediss": 6379}.get(parts.scheme, 80)
        try:
            host, port = parts.hostname, parts.port or default
        except ValueError:  # a port that is not a number
            return None
    else:
        host, _, raw = target.rpartition(":")
        host = host.strip("[]")
        port = int(raw) if raw.isdigit() else None
    return port if host in LOOPBACK else None


def _dsn_port(dsn: str) -> int | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN names no port
        return None
    host = str(params.get("host") or params.get("hostaddr") or "")
    port = str(params.get("port") or "5432")
    # No host, or a directory, is a unix socket: no TCP port to check.
    return int(port) if host in LOOPBACK and port.isdigit() else None


def _secrets(dump: Any, env: Mapping[str, str]) -> tuple[set[str], set[str], set[str]]:
    """(env var names, PostgreSQL DSNs, Redis URLs) named anywhere in a component's config."""
    env_vars: set[str] = set()
    dsns: set[str] = set()
    urls: set[str] = set()
    for key, value in _walk(dump):
        if key.endswith("_env") and isinstance(value, str):
            env_vars.add(value)
            resolved = env.get(value)
            if resolved and key == "dsn_env":
                dsns.add(resolved)
            elif resolved and key == "url_env" and resolved.startswith("redis"):
                urls.add(resolved)
        elif key == "dsn" and isinstance(value, str):
            dsns.add(value)
        elif key == "url" and isinstance(value, str) and value.startswith("redis"):
            urls.add(value)
    return env_vars, dsns, urls


def _walk(value: Any) -> Iterable[tuple[str, Any]]:
    """Every (key, value) pair in a nested dump of the config."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key), item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)
