"""`chimera-ops doctor`: check the host for what incidents start with (ports, env, databases,
disk, clock). Builds a DoctorPlan from the config; the checks live in ops/doctor.py."""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    CliContext,
    emit_json,
    json_option,
    pass_cli,
    stdout_console,
)

LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def _walk(value: Any) -> list[tuple[str, Any]]:
    """Every (key, value) pair in a nested dump of the config."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((str(key), item))
            out.extend(_walk(item))
    elif isinstance(value, list):
        for item in value:
            out.extend(_walk(item))
    return out


def _local_port(target: str) -> int | None:
    """The port of a loopback http URL or host:port, else None."""
    port: int | None
    if "://" in target:
        parts = urlsplit(target)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    else:
        host, _, raw = target.rpartition(":")
        port = int(raw) if raw.isdigit() else None
    return port if host in LOOPBACK else None


def build_plan(cli_ctx: CliContext, running: dict[str, int]) -> Any:
    """Ports of process components, env vars named by *_env fields, DSNs, URLs, the state dir."""
    from chimera_ops.ops.doctor import DoctorPlan, PortCheck, default_port_checks

    cfg = cli_ctx.config()
    checks = default_port_checks()
    known = {c.port for c in checks}
    env_vars: set[str] = set()
    dsns: set[str] = set()
    urls: set[str] = set()
    for name, comp in cfg.components.items():
        dump = comp.model_dump(mode="json")
        comp_env = {**os.environ, **comp.env}
        for key, value in _walk(dump):
            if key.endswith("_env") and isinstance(value, str):
                env_vars.add(value)
                resolved = comp_env.get(value)
                if resolved and key == "dsn_env":
                    dsns.add(resolved)
                elif resolved and key == "url_env" and resolved.startswith("redis"):
                    urls.add(resolved)
            elif key == "dsn" and isinstance(value, str):
                dsns.add(value)
            elif key == "url" and isinstance(value, str) and value.startswith("redis"):
                urls.add(value)
        if comp.runtime == "process" and comp.command:
            expected = " ".join(comp.command[1:]) or os.path.basename(comp.command[0])
            for probe in (comp.readiness, comp.liveness, comp.startup):
                target = (
                    probe.http.url
                    if probe and probe.http
                    else (probe.tcp.address if probe and probe.tcp else None)
                )
                port = _local_port(target) if target else None
                if port and port not in known:
                    known.add(port)
                    checks.append(
                        PortCheck(port, (expected,), name, must_be_free=name not in running)
                    )
    if cfg.agent.metrics.listen:
        port = _local_port(cfg.agent.metrics.listen)
        if port and port not in known:
            checks.append(
                PortCheck(
                    port,
                    ("chimera-ops", "chimera_ops"),
                    "agent metrics",
                    must_be_free="__agent__" not in running,
                )
            )
    # A variable set in a component's `env:` is as present as one in the shell.
    config_env: dict[str, str] = {}
    for comp in cfg.components.values():
        config_env.update(comp.env)
    return DoctorPlan(
        env={**os.environ, **config_env},
        ports=checks,
        env_vars=sorted(env_vars),
        postgres_dsns=sorted(dsns),
        redis_urls=sorted(urls),
        dirs=[cfg.agent.state_dir if cfg.agent.state_dir.exists() else cfg.agent.state_dir.parent],
    )


@click.command()
@json_option
@pass_cli
def doctor(cli_ctx: CliContext, as_json: bool) -> None:
    """Check ports (and who holds them), env vars (masked), databases, disk and clock.

    Exit 0 when nothing fails (warnings allowed), 1 when any check fails.
    """
    from chimera_ops.cli.status import fetch_status
    from chimera_ops.ops.doctor import run_doctor

    doc = fetch_status(cli_ctx)
    running = {c["name"]: c["pid"] for c in doc["components"] if c.get("pid")}
    if doc["agent"]["running"]:
        running["__agent__"] = doc["agent"]["pid"]
    results = run_doctor(build_plan(cli_ctx, running))
    code = EXIT_PROBLEM if any(r.status == "fail" for r in results) else EXIT_OK
    if as_json:
        emit_json({"ok": code == EXIT_OK, "checks": [r.to_dict() for r in results]})
        sys.exit(code)
    from rich.table import Table
    from rich.text import Text

    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    table = Table(header_style="bold")
    for column in ("check", "status", "summary", "next step"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.name,
            Text(r.status, style=style[r.status]),
            r.summary,
            r.hint if r.status != "ok" else "",
        )
    stdout_console().print(table)
    sys.exit(code)
