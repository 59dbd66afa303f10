"""`chimera-ops doctor`: check the host for what incidents start with (ports, env, databases,
disk, clock). The plan comes from the config (ops/doctor/from_config.py), the checks from
ops/doctor/; this module asks the agent what it runs and renders."""

from __future__ import annotations

import sys

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


@click.command()
@json_option
@pass_cli
def doctor(cli_ctx: CliContext, as_json: bool) -> None:
    """Check ports (and who holds them), env vars (masked), databases, disk and clock.

    Exit 0 when nothing fails (warnings allowed), 1 when any check fails.
    """
    from chimera_ops.cli.status import fetch_status
    from chimera_ops.ops.doctor import plan_from_config, run_doctor
    from chimera_ops.ops.doctor.from_config import AGENT

    doc = fetch_status(cli_ctx)
    running = {c["name"]: c["pid"] for c in doc["components"] if c.get("pid")}
    if doc["agent"]["running"]:
        running[AGENT] = doc["agent"]["pid"]
    results = run_doctor(plan_from_config(cli_ctx.config(), running))
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
