"""`chimera-ops init --from-compose FILE`: a working config from a docker compose file.

Each service becomes a `runtime: docker` component found by its compose labels; `depends_on`
is kept; a HEALTHCHECK becomes a `docker_health` liveness probe (Docker's `unhealthy` restarts
it, which Docker alone never does); PostgreSQL/TimescaleDB, Redis and RabbitMQ images get their
native probes, with credentials referenced through env variables (`dsn_env`, `url_env`,
`password_env`), never copied into the file; other published ports get a tcp readiness probe.
Where a person must decide (which service is the trading engine), the output says so in a
comment. Pure text in, text out (plus the file read): the CLI validates the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimera_ops.config_errors import ConfigError, ConfigIssue, parse_yaml

_NAME_RE = re.compile(r"[^a-z0-9_-]+")
POSTGRES_IMAGES = ("postgres", "timescale", "postgis")
REDIS_IMAGES = ("redis", "valkey", "keydb")
RABBIT_IMAGES = ("rabbitmq",)


@dataclass
class Service:
    """What the import keeps of one compose service."""

    name: str
    image: str
    depends_on: list[str] = field(default_factory=list)
    healthcheck: bool = False
    ports: list[tuple[str, int, int]] = field(default_factory=list)  # (host ip, host, container)
    restart: str | None = None
    mem_limit: str | None = None


def project_name(data: dict[str, Any], path: Path) -> str:
    """Compose's project name: the file's top-level `name:`, else its folder's name,
    lowercased with anything but [a-z0-9_-] removed (compose's own normalisation)."""
    raw = data.get("name") or path.resolve().parent.name
    return _NAME_RE.sub("", str(raw).lower()) or "default"


def component_name(service: str) -> str:
    """A compose service name as a chimera-ops component name."""
    name = _NAME_RE.sub("-", service.lower()).strip("-_") or "service"
    return name if name[0].isalnum() else f"s{name}"


def _ports(spec: Any) -> list[tuple[str, int, int]]:
    out = []
    for item in spec or []:
        if isinstance(item, dict):
            published, target = item.get("published"), item.get("target")
            host_ip = str(item.get("host_ip") or "127.0.0.1")
        else:
            text = str(item).split("/", 1)[0]
            parts = text.rsplit(":", 2)
            target = parts[-1]
            published = parts[-2] if len(parts) >= 2 else None
            host_ip = parts[0] if len(parts) == 3 else "127.0.0.1"
        if published is None or not str(published).isdigit() or not str(target).isdigit():
            continue  # a range or an unpublished port: nothing to probe from the host
        host_ip = "127.0.0.1" if host_ip in ("0.0.0.0", "", "::") else host_ip.strip("[]")
        out.append((host_ip, int(str(published)), int(str(target))))
    return out


def parse_services(data: dict[str, Any]) -> list[Service]:
    """The services of a parsed compose document, in file order."""
    services = []
    for name, spec in (data.get("services") or {}).items():
        spec = spec or {}
        deps = spec.get("depends_on") or []
        health = spec.get("healthcheck") or {}
        limits = ((spec.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        services.append(
            Service(
                name=str(name),
                image=str(spec.get("image") or f"(built from {spec.get('build', '?')})"),
                depends_on=[str(d) for d in (deps if isinstance(deps, list) else list(deps))],
                healthcheck=bool(health) and not health.get("disable", False),
                ports=_ports(spec.get("ports")),
                restart=str(spec["restart"]) if spec.get("restart") else None,
                mem_limit=str(spec.get("mem_limit") or limits.get("memory") or "") or None,
            )
        )
    return services


_COMPOSE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_UNITS = {"": "B", "b": "B", "k": "KiB", "m": "MiB", "g": "GiB"}


def compose_size(value: str) -> str | None:
    """Compose's byte sizes (`64m`, `1g`, `512M`, `1gb`: binary units) in our notation
    (`64MiB`); None when it is not one."""
    match = _COMPOSE_SIZE.match(value)
    if not match:
        return None
    number, unit = match.groups()
    return f"{number}{_UNITS[unit.lower()]}"


def _kind(image: str) -> str:
    base = image.rsplit("/", 1)[-1].split(":", 1)[0].lower()
    if any(base.startswith(p) or p in image.lower() for p in POSTGRES_IMAGES):
        return "postgres"
    if any(base.startswith(p) for p in REDIS_IMAGES):
        return "redis"
    if any(base.startswith(p) for p in RABBIT_IMAGES):
        return "rabbitmq"
    return "app"


def _env_name(component: str, what: str) -> str:
    return f"CHIMERA_{component.upper().replace('-', '_')}_{what}"


def _port_for(service: Service, container_port: int) -> tuple[str, int] | None:
    for host_ip, published, target in service.ports:
        if target == container_port:
            return host_ip, published
    return None


def _service_block(service: Service, project: str, names: dict[str, str]) -> list[str]:
    comp = names[service.name]
    kind = _kind(service.image)
    lines = [f"  {comp}:"]
    lines.append(f"    # compose service {service.name!r}, image {service.image}")
    if kind == "app":
        lines.append(
            "    # DECIDE: is this the trading engine? If so add a `trading:` section "
            "(docs/architecture.md), so halt-trading and restart --safe can quiesce it."
        )
    if service.restart and service.restart != "no":
        lines.append(
            f"    # compose `restart: {service.restart}`: Docker restarts it when it dies; the "
            "agent records those restarts (crash loop included) and never races them."
        )
    lines += [
        "    runtime: docker",
        f"    compose: {{project: {project}, service: {service.name}}}",
    ]
    deps = [names[d] for d in service.depends_on if d in names]
    if deps:
        lines.append(f"    depends_on: [{', '.join(deps)}]")
    lines.append("    stop: {grace: 10s}")
    readiness: list[str] = []
    if kind == "postgres":
        env = _env_name(comp, "DSN")
        where = _port_for(service, 5432)
        host = f"{where[0]}:{where[1]}" if where else "127.0.0.1:5432"
        lines.append(
            f"    # export {env}=postgresql://USER:PASSWORD@{host}/DB (from your .env; the "
            "password is never written here)"
        )
        readiness = ["    readiness:", f"      postgres: {{dsn_env: {env}}}", "      period: 10s"]
    elif kind == "redis":
        env = _env_name(comp, "URL")
        where = _port_for(service, 6379)
        host = f"{where[0]}:{where[1]}" if where else "127.0.0.1:6379"
        lines.append(f"    # export {env}=redis://{host}/0 (add :PASSWORD@ if it has one)")
        readiness = ["    readiness:", f"      redis: {{url_env: {env}}}", "      period: 10s"]
    elif kind == "rabbitmq":
        env = _env_name(comp, "PASSWORD")
        where = _port_for(service, 15672)
        if where:
            lines.append(f"    # export {env}=... (the management user's password)")
            readiness = [
                "    readiness:",
                "      rabbitmq:",
                f"        management_url: http://{where[0]}:{where[1]}",
                f"        password_env: {env}",
                "      period: 10s",
            ]
        elif (amqp := _port_for(service, 5672)) is not None:
            readiness = ["    readiness:", f"      tcp: {amqp[0]}:{amqp[1]}", "      period: 10s"]
    elif service.ports:
        host_ip, published, _ = service.ports[0]
        readiness = ["    readiness:", f"      tcp: {host_ip}:{published}", "      period: 10s"]
    elif service.healthcheck:
        readiness = ["    readiness:", "      docker_health: {}"]
    lines += readiness
    if service.healthcheck:
        lines += [
            "    # its HEALTHCHECK: Docker's `unhealthy` restarts it (Docker alone never does)",
            "    liveness:",
            "      docker_health: {}",
        ]
    size = compose_size(service.mem_limit) if service.mem_limit else None
    if service.mem_limit and size:
        lines += [
            f"    # mem_limit {service.mem_limit}: the leak forecast is against the container's",
            "    # own limit, read from its cgroup; `limit` here restarts it earlier",
            "    monitors:",
            f"      memory: {{limit: {size}, period: 10s}}",
        ]
    return lines


def config_from_compose(text: str, source: str, path: Path) -> str:
    """The chimera-ops config text for compose file `text`; ConfigError (file:line) when the
    compose file cannot be used."""
    data, _lines, issues = parse_yaml(text, source)
    if issues:
        raise ConfigError(issues)
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ConfigError([ConfigIssue(source, 1, "services", "no `services:` mapping here")])
    project = project_name(data, path)
    services = parse_services(data)
    names = {s.name: component_name(s.name) for s in services}
    out = [
        f"# Written by `chimera-ops init --from-compose {path.name}` (project {project!r}).",
        "# compose creates the containers (`docker compose up -d`); chimera-ops watches, restarts",
        "# and records them. Check it: `chimera-ops --config THIS config check`.",
        "agent:",
        "  state_dir: ./var",
        "  # docker: {host: unix:///var/run/docker.sock}   # unset: $DOCKER_HOST, else this",
        "components:",
    ]
    for service in services:
        out += _service_block(service, project, names)
    return "\n".join(out) + "\n"


def read_compose(path: Path) -> str:
    """The compose file's text; ConfigError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(str(path), None, "", f"cannot read: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue(str(path), None, "", f"not UTF-8 text ({exc.reason})")]
        ) from None
