"""`chimera-ops start|stop|restart NAME`: through the agent's control API."""

from __future__ import annotations

import sys

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
    unknown_component,
)
from chimera_ops.cli.complete import complete_component


def _act(cli_ctx: CliContext, name: str, verb: str, reason: str | None, as_json: bool) -> None:
    cfg = cli_ctx.config()
    if name not in cfg.components:
        unknown_component(name, list(cfg.components), as_json)
    from chimera_ops.client import AgentClient, AgentError, AgentUnavailable

    try:
        result = AgentClient(cfg.agent.state_dir, timeout=180).action(name, verb, reason)
    except AgentUnavailable:
        fail(
            f"no agent is running on {cfg.agent.state_dir}; cannot {verb} {name!r}",
            EXIT_PROBLEM,
            "start it with `chimera-ops agent` (or your service manager), then retry",
            as_json,
        )
    except AgentError as exc:
        if exc.status == 404 and "known" in exc.body:
            unknown_component(name, exc.body["known"], as_json)
        fail(str(exc), EXIT_USAGE if exc.status == 409 else EXIT_PROBLEM, as_json=as_json)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{name}: {verb} done, now {result['state']} ({result.get('reason', '')})")
    ok = (
        result["state"] in ("running", "stopped")
        if verb != "stop"
        else result["state"] == "stopped"
    )
    sys.exit(EXIT_OK if ok else EXIT_PROBLEM)


_reason = click.option("--reason", help="Why (written to the audit log).")


@click.command()
@click.argument("name", required=False, shell_complete=complete_component)
@click.option(
    "--all", "all_", is_flag=True, help="Staged start of every component; trading stays halted."
)
@_reason
@json_option
@pass_cli
def start(
    cli_ctx: CliContext, name: str | None, all_: bool, reason: str | None, as_json: bool
) -> None:
    """Start a component (clears `fatal` and the crash counters), or `--all`: the staged start
    in dependency order, each gated on readiness, trading left halted until `resume-trading`."""
    if all_:
        if name:
            fail("give a NAME or --all, not both", EXIT_USAGE, as_json=as_json)
        from chimera_ops.cli.procedure_cmd import start_and_follow

        start_and_follow(cli_ctx, "staged-start", {"reason": reason or "start --all"}, as_json)
    if not name:
        fail("which component? give a NAME (or --all)", EXIT_USAGE, as_json=as_json)
    _act(cli_ctx, name, "start", reason, as_json)


@click.command()
@click.argument("name", shell_complete=complete_component)
@_reason
@json_option
@pass_cli
def stop(cli_ctx: CliContext, name: str, reason: str | None, as_json: bool) -> None:
    """Stop a component (stop signal, grace, then SIGKILL of its whole tree)."""
    _act(cli_ctx, name, "stop", reason, as_json)


@click.command()
@click.argument("name", required=False, shell_complete=complete_component)
@click.option("--safe", is_flag=True, help="The safe restart of the stack (runs in the agent).")
@click.option(
    "--component", "components", multiple=True, help="With --safe: only these (repeatable)."
)
@click.option("--no-backup", is_flag=True, help="With --safe: skip the backup step.")
@click.option("--dry-run", is_flag=True, help="With --safe: preflight and plan only.")
@click.option("--yes", is_flag=True, help="With --safe: do not ask for confirmation.")
@click.option("--timeout", default="10m", show_default=True, help="With --safe: overall limit.")
@_reason
@json_option
@pass_cli
def restart(
    cli_ctx: CliContext,
    name: str | None,
    safe: bool,
    components: tuple[str, ...],
    no_backup: bool,
    dry_run: bool,
    yes: bool,
    timeout: str,
    reason: str | None,
    as_json: bool,
) -> None:
    """Restart a component; or `--safe`: halt trading, drain, back up, stop and start in
    dependency order gated on readiness, settle, resume trading only on a healthy stack.

    Exit 0 when it succeeded (or --dry-run planned it); 1 when it failed (trading stays halted
    if anything was restarted), was refused or aborted; 2 usage error.
    """
    if not safe:
        if not name:
            fail("which component? give a NAME (or --safe)", EXIT_USAGE, as_json=as_json)
        _act(cli_ctx, name, "restart", reason, as_json)
    if name:
        fail("--safe restarts the stack: use --component NAME", EXIT_USAGE, as_json=as_json)
    from chimera_ops.units import parse_duration

    cfg = cli_ctx.config()
    for comp in components:
        if comp not in cfg.components:
            unknown_component(comp, list(cfg.components), as_json)
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        fail(f"--timeout: {exc}", EXIT_USAGE, as_json=as_json)
    params = {
        "components": list(components),
        "no_backup": no_backup,
        "dry_run": dry_run,
        "timeout": seconds,
        "reason": reason or "restart --safe",
    }
    from chimera_ops.cli.procedure_cmd import confirm_or_exit, start_and_follow

    if not dry_run:
        confirm_or_exit("Halt trading and restart the stack?", yes, as_json)
    start_and_follow(cli_ctx, "safe-restart", params, as_json)


@click.command("emergency-stop")
@_reason
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_cli
def emergency_stop(cli_ctx: CliContext, reason: str | None, yes: bool, as_json: bool) -> None:
    """Halt trading now (orders cancelled), capture an incident for each component, stop every
    managed component in reverse order, print the last 100 log lines of each. The agent keeps
    running; nothing restarts until `chimera-ops start --all` (or `start NAME`)."""
    cli_ctx.config()
    from chimera_ops.cli.procedure_cmd import confirm_or_exit, start_and_follow

    confirm_or_exit("Halt trading and stop every managed component NOW?", yes, as_json)
    start_and_follow(cli_ctx, "emergency-stop", {"reason": reason or "emergency stop"}, as_json)
