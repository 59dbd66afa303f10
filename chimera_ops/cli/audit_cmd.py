"""`chimera-ops audit [--since 1d] [--command NAME] [--user NAME] [--limit N]`: operator actions.

The store's `audit` table, oldest first: who did what, when, from which host, why, how it
ended and how long it took (start/stop/restart, halt/resume of trading, each procedure step,
procedure aborts, backups, restores, runbook steps, maintenance fixes). Read-only: it works
without an agent.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    CliContext,
    emit_json,
    json_option,
    pass_cli,
    stdout_console,
)
from chimera_ops.cli.events import clean, open_store, parse_since

MAX_ENTRIES = 100_000


def _args_text(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items() if v not in (None, "", [], {}))


@click.command()
@click.option("--since", help="Only entries newer than this ('1h', '7d', or an ISO time).")
@click.option("--command", "command", help="Only this command (e.g. restart, halt-trading).")
@click.option("--user", help="Only this user's actions.")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, MAX_ENTRIES),
    help="At most this many (newest).",
)
@json_option
@pass_cli
def audit(
    cli_ctx: CliContext,
    since: str | None,
    command: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List operator actions (who, what, why, result, duration), oldest first."""
    cfg = cli_ctx.config()
    since_ts = parse_since(since, time.time())
    store = open_store(cfg.agent.state_dir, as_json)
    try:
        rows = store.audit_entries(limit, since_ts, command, user)
    finally:
        store.close()
    if as_json:
        emit_json({"audit": rows})
        sys.exit(EXIT_OK)
    if not rows:
        matches = " that matches" if since or command or user else ""
        stdout_console().print(f"no operator action recorded{matches}", highlight=False)
        sys.exit(EXIT_OK)
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    for column in ("time (UTC)", "user", "command", "reason", "result", "took"):
        table.add_column(column, overflow="fold")
    for row in rows:
        what = " ".join(p for p in (row["command"], _args_text(row["args"])) if p)
        took = f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "-"
        # Reasons and results may quote what a child or an engine said: plain Text (no
        # markup), control characters escaped.
        cells = (
            datetime.fromtimestamp(row["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            f"{row['user']}@{row['host']}",
            what,
            row["reason"] or "",
            row["result"] or "",
            took,
        )
        table.add_row(*(Text(clean(cell)) for cell in cells))
    stdout_console().print(table)
    sys.exit(EXIT_OK)
