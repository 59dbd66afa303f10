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
@click.argument("name", shell_complete=complete_component)
@_reason
@json_option
@pass_cli
def start(cli_ctx: CliContext, name: str, reason: str | None, as_json: bool) -> None:
    """Start a component (clears `fatal` and the crash counters)."""
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
@click.argument("name", shell_complete=complete_component)
@_reason
@json_option
@pass_cli
def restart(cli_ctx: CliContext, name: str, reason: str | None, as_json: bool) -> None:
    """Restart a component."""
    _act(cli_ctx, name, "restart", reason, as_json)
