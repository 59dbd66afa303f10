"""`chimera-ops probe NAME`: run a component's probes once, now, without an agent."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    CliContext,
    emit_json,
    fail,
    json_option,
    pass_cli,
    stdout_console,
    unknown_component,
)
from chimera_ops.cli.complete import complete_component


def _recorded_pid(cli_ctx: CliContext, name: str) -> int | None:
    """The component's live pid as the agent recorded it (pid and start time must match)."""
    import psutil

    from chimera_ops.store import Store

    db = cli_ctx.config().agent.state_dir / "chimera.db"
    if not db.exists():
        return None
    store = Store(db, readonly=True)
    try:
        record = next((c for c in store.children() if c.component == name), None)
    finally:
        store.close()
    if record is None:
        return None
    try:
        if abs(psutil.Process(record.pid).create_time() - record.create_time) < 1.0:
            return record.pid
    except psutil.Error:
        return None
    return None


async def run_probes(cli_ctx: CliContext, name: str) -> list[dict[str, Any]]:
    """Every configured probe of the component, run concurrently, each under its own timeout."""
    from chimera_ops.probes.factory import build_probe

    component = cli_ctx.config().components[name]
    pid = _recorded_pid(cli_ctx, name)
    env = {**os.environ, **component.env}
    roles = [(role, getattr(component, role)) for role in ("startup", "readiness", "liveness")]
    configured = [(role, cfg) for role, cfg in roles if cfg is not None]
    probes = [build_probe(cfg, pid_provider=lambda: pid, env=env) for _, cfg in configured]
    results = await asyncio.gather(*(probe.run() for probe in probes))
    return [
        {"role": role, "kind": cfg.kind, "target": probe.describe(), **result.to_dict()}
        for (role, cfg), probe, result in zip(configured, probes, results, strict=True)
    ]


@click.command()
@click.argument("name", shell_complete=complete_component)
@json_option
@pass_cli
def probe(cli_ctx: CliContext, name: str, as_json: bool) -> None:
    """Run the probes of component NAME once and print each result (no agent needed).

    Exit 0 when every probe passes, 1 when any fails.
    """
    cfg = cli_ctx.config()
    if name not in cfg.components:
        unknown_component(name, list(cfg.components), as_json)
    results = asyncio.run(run_probes(cli_ctx, name))
    if not results:
        fail(
            f"component {name!r} has no probes configured",
            EXIT_USAGE,
            "add readiness/liveness/startup to its config",
            as_json,
        )
    code = EXIT_OK if all(r["ok"] for r in results) else EXIT_PROBLEM
    if as_json:
        emit_json({"component": name, "results": results, "ok": code == EXIT_OK})
        sys.exit(code)
    from rich.table import Table
    from rich.text import Text

    from chimera_ops.cli.render import plain

    table = Table(title=f"probes of {name}", header_style="bold")
    for column in ("role", "kind", "target", "result", "latency", "reason"):
        table.add_column(column, overflow="fold")
    for r in results:
        verdict = Text("ok", style="green") if r["ok"] else Text("FAIL", style="bold red")
        table.add_row(
            r["role"],
            r["kind"],
            plain(r["target"]),
            verdict,
            f"{r['latency_s'] * 1000:.0f}ms",
            plain(r["reason"]),  # may quote what the service answered: shown literally
        )
    stdout_console().print(table)
    sys.exit(code)
