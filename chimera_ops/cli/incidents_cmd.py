"""`chimera-ops incidents [show ID]`: what the agent saved before it killed a component."""

from __future__ import annotations

import sys

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliContext,
    emit_json,
    fail,
    json_option,
    pass_cli,
    stdout_console,
)


@click.group(invoke_without_command=True)
@json_option
@click.option("--limit", default=20, show_default=True, help="Newest N incidents.")
@click.pass_context
def incidents(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List captured incidents (newest first); `incidents show ID` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from chimera_ops.incidents import list_incidents

    cli_ctx: CliContext = ctx.obj
    base = cli_ctx.config().agent.state_dir / "incidents"
    found = list_incidents(base, limit=limit) if base.exists() else []
    if as_json:
        emit_json({"incidents": [i.to_dict() for i in found]})
        sys.exit(EXIT_OK)
    if not found:
        click.echo(f"no incidents in {base}")
        sys.exit(EXIT_OK)
    from rich.table import Table

    from chimera_ops.cli.render import plain

    table = Table(header_style="bold")
    for column in ("id", "component", "at (UTC)", "reason"):
        table.add_column(column, overflow="fold")
    for item in found:
        # The reason may quote a probe's answer or a child's stderr: shown literally.
        table.add_row(plain(item.id), plain(item.component), plain(item.at), plain(item.reason))
    stdout_console().print(table)
    sys.exit(EXIT_OK)


@incidents.command("show")
@click.argument("incident_id")
@json_option
@pass_cli
def show(cli_ctx: CliContext, incident_id: str, as_json: bool) -> None:
    """Show one incident: reason, probe history, process tree, log tail, stack dump."""
    from chimera_ops.incidents import IncidentNotFound, load_incident

    base = cli_ctx.config().agent.state_dir / "incidents"
    try:
        data = load_incident(base, incident_id)
    except IncidentNotFound as exc:
        fail(
            str(exc.args[0] if exc.args else exc),
            EXIT_USAGE,
            "list them with `chimera-ops incidents`",
            as_json,
        )
    if as_json:
        emit_json(data)
        sys.exit(EXIT_OK)
    from rich.rule import Rule

    from chimera_ops.cli.render import plain

    console = stdout_console()
    info = data.get("incident") or {}
    # Everything below but the rules is what children said or ran as (reasons, command
    # lines, log lines, stacks): Texts with control characters escaped, never markup.
    console.print(Rule(plain(f"incident {incident_id}")))
    console.print(plain(f"component: {info.get('component')}   at: {info.get('at')}"))
    console.print(plain(f"reason: {info.get('reason')}"))
    console.print(Rule("last probe results"))
    for probe in (data.get("probes") or [])[-10:]:
        console.print(
            plain(f"  {probe.get('role', '?'):9} ok={probe.get('ok')} {probe.get('reason', '')}")
        )
    console.print(Rule("processes"))
    for proc in data.get("processes") or []:
        console.print(plain(f"  {proc}"))
    console.print(Rule("log tail"))
    console.print(plain(data.get("logs") or "(none)", multiline=True))
    console.print(Rule("stack dump"))
    console.print(plain(data.get("stack") or "(none)", multiline=True))
    sys.exit(EXIT_OK)
