"""`chimera-ops maintenance weekly|monthly|history|install|uninstall` (thin: ops/maintenance).

Exit codes: 0 every check ok; 1 any check warning, critical or unknown (or a run overlapped);
2 usage or config error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
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
    refuse_flags,
    stderr_console,
    stdout_console,
)

STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "unknown": "magenta"}


class MaintenanceGroup(click.Group):
    """Names the schedules when the subcommand is unknown."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            raise click.UsageError(
                f"unknown schedule {args[0]!r}: weekly | monthly (or history, install, uninstall)",
                ctx,
            )
        return super().resolve_command(ctx, args)


@click.group(cls=MaintenanceGroup)
def maintenance() -> None:
    """Weekly and monthly maintenance checks, their history, and their schedule."""


def _run(
    cli_ctx: CliContext,
    schedule: str,
    *,
    fix: bool,
    dry_run: bool,
    yes: bool,
    only_checks: tuple[str, ...],
    as_json: bool,
) -> None:
    from chimera_ops.ops.maintenance.runner import CHECKS, RunOverlap, run_schedule

    only = set(only_checks) or None
    known = [cls.name for cls in CHECKS[schedule]]
    if only and (unknown := sorted(only - set(known))):
        fail(
            f"unknown {schedule} check {', '.join(unknown)}: known are {', '.join(known)}",
            EXIT_USAGE,
            None,
            as_json,
        )
    if not fix:
        refuse_flags(["yes"], "only applies with --fix", as_json)
    config = cli_ctx.config()
    if fix and not dry_run and not yes:
        if not sys.stdin.isatty():
            fail(
                "--fix changes files and restarts components: add --yes", EXIT_USAGE, None, as_json
            )
        if not click.confirm(f"{schedule} --fix may delete files and restart components; go on?"):
            fail("nothing changed", EXIT_USAGE, None, as_json)
    # A spinner naming the check that runs (the monthly audit and restore take minutes);
    # only for a person at a terminal, never in --json or cron output.
    live = not as_json and sys.stderr.isatty()
    spinner = stderr_console().status(f"maintenance {schedule}") if live else None
    try:
        with spinner or contextlib.nullcontext():
            report = run_schedule(
                config,
                schedule,
                fix=fix,
                dry_run=dry_run,
                user=os.environ.get("USER"),
                only=only,
                progress=lambda name: (
                    spinner.update(f"maintenance {schedule}: {name}") if spinner else None
                ),
            )
    except RunOverlap as exc:
        fail(str(exc), EXIT_PROBLEM, "wait for it to finish", as_json)
    code = EXIT_OK if report.ok else EXIT_PROBLEM
    if as_json:
        emit_json(report.to_dict() | {"exit_code": code})
        sys.exit(code)
    _render(report.to_dict())
    sys.exit(code)


def _render(doc: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"maintenance {doc['schedule']}: {doc['status']}")
    for column in ("check", "status", "value", "threshold", "advice", "runbook"):
        table.add_column(column, overflow="fold")
    for check in doc["checks"]:
        status = check["status"]
        table.add_row(
            check["check"],
            f"[{STYLE[status]}]{status}[/]",
            check["value"],
            check["threshold"],
            check["advice"],
            check["runbook"] or "-",
        )
    out = stdout_console()
    out.print(table)
    for check in doc["checks"]:
        for line in check.get("fixed", []):
            out.print(f"fixed: {line}", highlight=False, markup=False)
        for path in check["data"].get("old", []) if check["check"] == "old_files" else []:
            out.print(f"old: {path}", highlight=False, markup=False)
        for path in check["data"].get("kept_open", []):
            out.print(f"kept (open): {path}", highlight=False, markup=False)
    for note in doc["notes"]:
        out.print(f"[yellow]{note}[/]", highlight=False)


def _schedule_command(schedule: str) -> click.Command:
    @click.option("--fix", is_flag=True, help="Repair what the checks may repair.")
    @click.option("--dry-run", is_flag=True, help="List what --fix would change; change nothing.")
    @click.option("--yes", is_flag=True, help="Do not ask before --fix.")
    @click.option(
        "--only",
        multiple=True,
        metavar="CHECK",
        help="Run only this check (repeatable); shown, not recorded as the schedule's run.",
    )
    @json_option
    @pass_cli
    def command(
        cli_ctx: CliContext,
        fix: bool,
        dry_run: bool,
        yes: bool,
        only: tuple[str, ...],
        as_json: bool,
    ) -> None:
        _run(
            cli_ctx,
            schedule,
            fix=fix,
            dry_run=dry_run,
            yes=yes,
            only_checks=only,
            as_json=as_json,
        )

    command.__doc__ = f"Run every {schedule} check (exit 0 all ok, 1 any not ok, 2 usage)."
    return click.command(schedule)(command)


maintenance.add_command(_schedule_command("weekly"))
maintenance.add_command(_schedule_command("monthly"))


@maintenance.command("history")
@click.option("--schedule", type=click.Choice(["weekly", "monthly"]), default=None)
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_cli
def history(cli_ctx: CliContext, schedule: str | None, limit: int, as_json: bool) -> None:
    """Past runs and their check results, newest first."""
    from rich.table import Table

    from chimera_ops.ops.maintenance.history import runs
    from chimera_ops.store import Store

    store = Store.open_in(cli_ctx.config().agent.state_dir)
    try:
        found = runs(store, schedule, limit)
    finally:
        store.close()
    if as_json:
        emit_json({"runs": [r.to_dict() for r in found]})
        sys.exit(EXIT_OK)
    import time

    table = Table(title="maintenance history")
    for column in ("run", "schedule", "finished", "status", "checks"):
        table.add_column(column, overflow="fold")
    for run in found:
        checks = ", ".join(f"{c['check']} {c['status']}" for c in run.results)
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(run.finished_at))
        style = STYLE.get(run.status, "white")
        table.add_row(str(run.id), run.schedule, when, f"[{style}]{run.status}[/]", checks)
    stdout_console().print(table if found else "no maintenance run recorded yet")
    sys.exit(EXIT_OK)


def _kind(cron: bool, systemd: bool) -> str:
    if cron and systemd:
        raise click.UsageError("choose one of --cron or --systemd")
    return "systemd" if systemd else "cron"


def _install_options(func: Any) -> Any:
    for option in (
        click.option("--cron", is_flag=True, help="/etc/cron.d/chimera-ops (the default)."),
        click.option("--systemd", is_flag=True, help="A service + timer pair per schedule."),
        click.option("--dry-run", is_flag=True, help="Show the files; write nothing."),
        click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False)),
        json_option,
        pass_cli,
    ):
        func = option(func)
    return func


def _remember_schedule(state_dir: Path, kind: str, installed: bool) -> None:
    """Tell the agent (through the store) that runs are expected from now on, or no more."""
    import time

    from chimera_ops.ops.maintenance.base import SCHEDULES
    from chimera_ops.ops.maintenance.history import forget_schedule, record_schedule
    from chimera_ops.store import Store

    store = Store.open_in(state_dir)
    try:
        if installed:
            record_schedule(store, SCHEDULES, kind, time.time())
        else:
            forget_schedule(store, kind)
    finally:
        store.close()


@maintenance.command("install")
@_install_options
def install(
    cli_ctx: CliContext, cron: bool, systemd: bool, dry_run: bool, root: str, as_json: bool
) -> None:
    """Schedule both runs with cron or systemd timers; show what was written."""
    from chimera_ops.ops.maintenance import install as inst

    kind = _kind(cron, systemd)
    # Validated now (exit 2 on an error): a schedule that runs a broken config only fails later.
    state_dir = cli_ctx.config().agent.state_dir
    config = str(Path(cli_ctx.config_path or "chimera-ops.yaml").resolve())
    files = inst.plan(kind, Path(root), config)
    if not dry_run:
        inst.write(files)
        _remember_schedule(state_dir, kind, installed=True)
    if as_json:
        emit_json(
            {
                "kind": kind,
                "dry_run": dry_run,
                "files": [{"path": str(f.path), "content": f.content} for f in files],
            }
        )
        sys.exit(EXIT_OK)
    for item in files:
        click.echo(f"# {'would write' if dry_run else 'wrote'} {item.path}")
        click.echo(item.content)
    if kind == "systemd" and not dry_run:
        click.echo(
            "next: systemctl daemon-reload && systemctl enable --now "
            "chimera-ops-maintenance-weekly.timer chimera-ops-maintenance-monthly.timer"
        )
    sys.exit(EXIT_OK)


@maintenance.command("uninstall")
@_install_options
def uninstall(
    cli_ctx: CliContext, cron: bool, systemd: bool, dry_run: bool, root: str, as_json: bool
) -> None:
    """Remove the crontab entry or the timer units."""
    from chimera_ops.ops.maintenance import install as inst

    kind = _kind(cron, systemd)
    files = inst.plan(kind, Path(root))
    gone = [f.path for f in files if f.path.exists()] if dry_run else inst.remove(files)
    if not dry_run:
        _remember_schedule(cli_ctx.config().agent.state_dir, kind, installed=False)
    if as_json:
        emit_json({"dry_run": dry_run, "removed": [str(p) for p in gone]})
    else:
        for path in gone:
            click.echo(f"{'would remove' if dry_run else 'removed'} {path}")
        if not gone:
            click.echo("nothing installed")
    sys.exit(EXIT_OK)
