"""`chimera-ops install-service [--dry-run] [--user]`: the agent as a systemd service."""

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
)


@click.command("install-service")
@click.option("--dry-run", is_flag=True, help="Print the unit and the plan; write nothing.")
@click.option("--user", "user_mode", is_flag=True, help="A user unit (systemctl --user), no root.")
@click.option(
    "--no-enable", is_flag=True, help="Write the unit only (no daemon-reload, no enable --now)."
)
@click.option(
    "--watchdog",
    default=30,
    show_default=True,
    type=click.IntRange(2, 3600),
    help="WatchdogSec in seconds (the agent pings every half of it).",
)
@click.option("--run-as", metavar="USER", help="User= of a system unit (default root).")
@json_option
@pass_cli
def install_service(
    cli_ctx: CliContext,
    dry_run: bool,
    user_mode: bool,
    no_enable: bool,
    watchdog: int,
    run_as: str | None,
    as_json: bool,
) -> None:
    """Write chimera-ops-agent.service for the current config and enable it.

    Type=notify with a watchdog fed by the agent's loop, Restart=on-failure, KillMode=mixed
    (a stop goes through the agent's ordered shutdown), and sandboxing with the state dir
    writable. A system unit needs root; --user writes ~/.config/systemd/user instead.
    """
    from chimera_ops.ops import service

    config = cli_ctx.config()
    try:
        spec = service.spec_for(config, user_mode=user_mode, watchdog_s=watchdog, run_as=run_as)
        plan = service.plan_install(spec, enable=not no_enable)
    except service.NotPermitted as exc:
        fail(str(exc), EXIT_PROBLEM, "nothing was written", as_json)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    if dry_run:
        if as_json:
            emit_json({**plan.to_dict(), "dry_run": True, "written": False})
        else:
            click.echo(f"# would write {plan.path}")
            click.echo(plan.unit, nl=False)
            for command in plan.to_dict()["commands"]:
                click.echo(f"# then: {command}")
            for warning in plan.warnings:
                click.echo(f"warning: {warning}", err=True)
        sys.exit(EXIT_OK)
    try:
        results = service.install(plan)
    except OSError as exc:
        fail(f"cannot write {plan.path}: {exc}", EXIT_PROBLEM, as_json=as_json)
    failed = next((r for r in results if r.exit_code != 0), None)
    if as_json:
        emit_json(
            {
                **plan.to_dict(),
                "dry_run": False,
                "written": True,
                "results": [vars(r) for r in results],
                "enabled": bool(plan.commands) and failed is None,
            }
        )
    else:
        click.echo(f"wrote {plan.path}")
        for warning in plan.warnings:
            click.echo(f"warning: {warning}", err=True)
        for result in results:
            click.echo(f"ran: {result.command} (exit {result.exit_code})")
    if failed is not None:
        if not as_json:
            click.echo(f"error: `{failed.command}` failed: {failed.output}", err=True)
            click.echo(
                "next: the unit is written; run the command once systemd is running "
                "(or use --no-enable)",
                err=True,
            )
        sys.exit(EXIT_PROBLEM)
    sys.exit(EXIT_OK)
