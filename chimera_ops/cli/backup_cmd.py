"""`chimera-ops backup [list|verify|prune]` and `chimera-ops restore`: parse, call ops, render.

Exit codes: 0 ok; 1 the backup, verification or restore failed or was refused (the message says
why and what to do); 2 usage or config error (no `backup:` section, an unknown set id: the
known ones are listed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
)
from chimera_ops.cli.complete import complete_backup_set


def _store(cli_ctx: CliContext) -> Any:
    from chimera_ops.store import Store

    return Store.open_in(cli_ctx.config().agent.state_dir)


def _section(cli_ctx: CliContext, as_json: bool) -> Any:
    from chimera_ops.ops.backup.create import backup_section
    from chimera_ops.ops.backup.sets import BackupError

    try:
        return backup_section(cli_ctx.config())
    except BackupError as exc:
        fail(str(exc), EXIT_USAGE, None, as_json)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], None]]:
    """A rich progress display on a terminal (a line per step, bytes as they are written)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda step, nbytes: None
        return
    from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        DownloadColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=__import__("rich.console").console.Console(stderr=True),
    ) as bar:

        def update(step: str, nbytes: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=None)
            if nbytes:
                bar.advance(tasks[step], nbytes)

        yield update
        for task in tasks.values():
            bar.update(task, total=bar.tasks[task].completed or 1, completed=None)


def _audit(cli_ctx: CliContext, command: str, args: dict[str, Any], result: str, t0: float) -> None:
    store = _store(cli_ctx)
    try:
        store.audit(command, args, None, result, time.monotonic() - t0)
    finally:
        store.close()


@click.group(invoke_without_command=True)
@json_option
@click.option("--reason", help="Why this backup is taken (kept in the manifest and the audit).")
@click.pass_context
def backup(ctx: click.Context, as_json: bool, reason: str | None) -> None:
    """Write one backup set (PostgreSQL dumps, Redis snapshot, config, manifest).

    Subcommands: list, verify, prune. See docs/backups.md.
    """
    if ctx.invoked_subcommand is not None:
        return
    from chimera_ops.ops.backup import catalog, housekeeping
    from chimera_ops.ops.backup.create import create_backup
    from chimera_ops.ops.backup.sets import BackupError

    cli_ctx: CliContext = ctx.obj
    section = _section(cli_ctx, as_json)
    t0 = time.monotonic()
    try:
        with _progress(not as_json) as progress:
            result = create_backup(cli_ctx.config(), reason, progress)
    except BackupError as exc:
        _audit(cli_ctx, "backup", {"reason": reason}, f"failed: {exc}", t0)
        fail(str(exc), EXIT_PROBLEM, None, as_json)
    store = _store(cli_ctx)
    try:
        catalog.record_set(
            store, result.backup_set.id, str(result.backup_set.path), result.backup_set.manifest
        )
        pruned = housekeeping.prune(section, store)
        result.pruned = [d.id for d in pruned.deleted]
        store.audit(
            "backup",
            {"reason": reason},
            reason,
            f"set {result.backup_set.id}",
            time.monotonic() - t0,
        )
    finally:
        store.close()
    summary = result.summary()
    if as_json:
        emit_json(summary)
    else:
        from chimera_ops.units import format_size

        out = stdout_console()
        out.print(
            f"[bold green]backup set {summary['id']}[/] {format_size(summary['size_bytes'])} "
            f"in {summary['duration_s']:.1f} s -> {summary['path']}",
            highlight=False,
        )
        for name, figures in summary["databases"].items():
            out.print(f"  postgres {name}: {figures['tables']} tables, {figures['rows']} rows")
        if summary["redis_keys"] is not None:
            out.print(f"  redis: {summary['redis_keys']} keys")
        if summary["pruned"]:
            out.print(f"  retention removed: {', '.join(summary['pruned'])}")
        out.print("  next: `chimera-ops backup verify latest` proves it restores")
    sys.exit(EXIT_OK)


@backup.command("list")
@json_option
@pass_cli
def backup_list(cli_ctx: CliContext, as_json: bool) -> None:
    """Every backup set: id, time, size, databases, verified or not, age."""
    from chimera_ops.ops.backup import catalog
    from chimera_ops.ops.backup.sets import list_sets

    section = _section(cli_ctx, as_json)
    store = _store(cli_ctx)
    try:
        known = catalog.by_id(store)
    finally:
        store.close()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for s in list_sets(section.dir):
        entry = known.get(s.id)
        rows.append(
            {
                "id": s.id,
                "created_at": s.created_at,
                "age_s": now - s.created_at,
                "size_bytes": s.size,
                "databases": s.databases,
                "redis": "redis" in s.manifest,
                "reason": s.manifest.get("reason"),
                "verified": None
                if entry is None or entry.verified_ok is None
                else entry.verified_ok,
                "verified_at": entry.verified_at if entry else None,
                "verify_detail": entry.verify_detail if entry else None,
            }
        )
    if as_json:
        emit_json({"dir": str(section.dir), "sets": rows})
        sys.exit(EXIT_OK)
    from rich.table import Table

    from chimera_ops.units import format_duration, format_size

    table = Table(header_style="bold", title=f"backup sets in {section.dir}")
    # The id carries the UTC time it was taken; nothing here is cut at 80 columns.
    for column in ("id", "age", "size", "databases", "redis", "verified"):
        table.add_column(column, no_wrap=column != "databases", overflow="fold")
    for r in rows:
        verified = (
            "never"
            if r["verified"] is None
            else (f"ok {format_duration(now - r['verified_at'])} ago" if r["verified"] else "BAD")
        )
        table.add_row(
            r["id"],
            format_duration(r["age_s"]),
            format_size(r["size_bytes"]),
            ", ".join(r["databases"]) or "-",
            "yes" if r["redis"] else "-",
            verified,
        )
    out = stdout_console()
    out.print(table if rows else f"no backup sets in {section.dir}: `chimera-ops backup`")
    sys.exit(EXIT_OK)


def _find(section: Any, ref: str, as_json: bool) -> Any:
    from chimera_ops.ops.backup.sets import UnknownSet, find_set

    try:
        return find_set(section.dir, ref)
    except UnknownSet as exc:
        listing = ", ".join(exc.known) if exc.known else "(none yet: `chimera-ops backup`)"
        fail(f"no backup set {ref!r}", EXIT_USAGE, f"known sets: {listing}", as_json)


@backup.command("verify")
@click.argument("ref", default="latest", metavar="[ID|latest]", shell_complete=complete_backup_set)
@json_option
@pass_cli
def backup_verify(cli_ctx: CliContext, ref: str, as_json: bool) -> None:
    """Check every sha256, restore into scratch databases, compare row and key counts.

    Exit 0 when the set restores as recorded, 1 with what failed.
    """
    from chimera_ops.ops.backup import catalog
    from chimera_ops.ops.backup.verify import verify_set

    section = _section(cli_ctx, as_json)
    target = _find(section, ref, as_json)
    t0 = time.monotonic()
    with _progress(not as_json) as progress:
        report = verify_set(cli_ctx.config(), target, lambda step: progress(step, 0))
    store = _store(cli_ctx)
    try:
        catalog.record_verify(store, target.id, report.ok, report.detail())
        store.audit(
            "backup verify",
            {"set": target.id},
            None,
            "ok" if report.ok else f"failed: {report.detail()}",
            time.monotonic() - t0,
        )
    finally:
        store.close()
    if as_json:
        emit_json(report.to_dict())
    else:
        out = stdout_console()
        for check in report.checks:
            mark = "[green]ok[/]  " if check.ok else "[bold red]BAD[/] "
            out.print(f"{mark} {check.what}: {check.detail}", highlight=False)
        if report.ok:
            out.print(f"[bold green]set {target.id} restores as recorded[/]")
        else:
            out.print(
                f"[bold red]set {target.id} does NOT restore as recorded[/]; take a new backup "
                "and verify it (runbooks/data-restore.md)"
            )
    sys.exit(EXIT_OK if report.ok else EXIT_PROBLEM)


@backup.command("prune")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@json_option
@pass_cli
def backup_prune(cli_ctx: CliContext, dry_run: bool, as_json: bool) -> None:
    """Apply retention now (keep/max_age; never the newest verified set or the newest set)."""
    from chimera_ops.ops.backup import housekeeping

    section = _section(cli_ctx, as_json)
    store = _store(cli_ctx)
    try:
        result = housekeeping.prune(section, store, dry_run=dry_run)
        if not dry_run:
            store.audit("backup prune", result.to_dict(), None, "ok", None)
    finally:
        store.close()
    if as_json:
        emit_json(result.to_dict())
        sys.exit(EXIT_OK)
    out = stdout_console()
    verb = "would delete" if dry_run else "deleted"
    for d in result.deleted:
        out.print(f"{verb} {d.id} ({d.why})", highlight=False)
    for path in result.garbage:
        out.print(f"{verb} partial set {path} (no manifest, no live writer)", highlight=False)
    if not result.deleted and not result.garbage:
        out.print("nothing to prune")
    sys.exit(EXIT_OK)


@click.command()
@click.argument("ref", metavar="ID", shell_complete=complete_backup_set)
@click.option("--only", type=click.Choice(["postgres", "redis"]), help="Restore only this part.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--no-safety-backup", is_flag=True, help="Skip the backup of the current data taken first."
)
@json_option
@pass_cli
def restore(
    cli_ctx: CliContext,
    ref: str,
    only: str | None,
    dry_run: bool,
    yes: bool,
    no_safety_backup: bool,
    as_json: bool,
) -> None:
    """Restore a backup set: never under a live engine, checksums first, a safety backup first.

    Each database is restored beside the live one and swapped in only once its row counts match;
    Redis is restored into the running server (FLUSHDB of its database, then RESTORE).
    """
    from chimera_ops.ops.backup import catalog
    from chimera_ops.ops.backup.guard import restore_blockers
    from chimera_ops.ops.backup.restore import RestoreRefused, plan, restore_set
    from chimera_ops.ops.backup.sets import BackupError

    section = _section(cli_ctx, as_json)
    target = _find(section, ref, as_json)
    cfg = cli_ctx.config()
    steps = plan(cfg, target, only, not no_safety_backup)  # type: ignore[arg-type]
    if dry_run:
        if as_json:
            emit_json({"id": target.id, "dry_run": True, "plan": steps})
        else:
            out = stdout_console()
            out.print(f"restore of set {target.id} would (nothing is changed by --dry-run):")
            for i, line in enumerate(steps, 1):
                out.print(f"  {i}. {line}", highlight=False)
        sys.exit(EXIT_OK)
    blockers = restore_blockers(cfg)
    if blockers:
        fail(
            "restore refused: " + "; ".join(blockers),
            EXIT_PROBLEM,
            "halt trading and stop the engine, then run the restore again",
            as_json,
        )
    if not yes:
        if not sys.stdin.isatty():
            fail(
                "restore replaces live data and needs confirmation",
                EXIT_USAGE,
                "run it on a terminal, or add --yes",
                as_json,
            )
        click.echo("\n".join(f"  {i}. {s}" for i, s in enumerate(steps, 1)), err=True)
        if not click.confirm(f"Restore set {target.id} over the live data?", err=True):
            fail("restore cancelled; nothing was changed", EXIT_PROBLEM, None, as_json)
    from chimera_ops.ops.proclock import LockHeld, LockUnreadable, lock_for, record_cleared

    lock = lock_for(cfg)  # one procedure at a time: never a restore under a safe restart
    try:
        holder = lock.acquire("restore", target.id)
    except (LockHeld, LockUnreadable) as exc:  # unreadable: fail closed, never "nobody holds it"
        fail(f"restore refused: {exc}", EXIT_PROBLEM, exc.hint, as_json)
    store = _store(cli_ctx)
    for line in record_cleared(lock, store.add_event):  # a dead holder's lock, released
        click.echo(line, err=True)

    def audit(step: str, result: str, seconds: float) -> None:
        store.audit("restore", {"set": target.id, "step": step}, None, result, seconds)

    t0 = time.monotonic()
    try:
        with _progress(not as_json) as progress:
            report = restore_set(
                cfg,
                target,
                only,  # type: ignore[arg-type]
                blockers,
                safety=not no_safety_backup,
                audit=audit,
                progress=lambda step: progress(step, 0),
            )
        if report.safety_backup:
            from chimera_ops.ops.backup.sets import find_set

            safety = find_set(section.dir, report.safety_backup)
            catalog.record_set(store, safety.id, str(safety.path), safety.manifest)
        store.audit("restore", {"set": target.id}, None, "ok", time.monotonic() - t0)
    except RestoreRefused as exc:
        fail(f"restore refused: {exc}", EXIT_PROBLEM, None, as_json)
    except BackupError as exc:
        fail(
            f"restore failed: {exc}",
            EXIT_PROBLEM,
            "the live data is as it was before the failed step (see the audit: "
            "`chimera-ops events`); runbooks/data-restore.md",
            as_json,
        )
    finally:
        store.close()
        lock.release(holder)
    if as_json:
        emit_json(report.to_dict())
    else:
        out = stdout_console()
        for item in report.steps:
            out.print(f"[green]ok[/] {item['step']}: {item['result']} ({item['seconds']} s)")
        out.print(f"[bold green]restored set {target.id}[/]; start the engine when ready")
    sys.exit(EXIT_OK)
