"""`chimera-ops events [--component NAME] [--since 1h]`."""

from __future__ import annotations

import sys
import time
from datetime import datetime

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
    unknown_component,
)
from chimera_ops.cli.complete import complete_component


def parse_since(value: str | None, now: float) -> float | None:
    """'1h' / '30m' ago, or an ISO time; None for no limit."""
    if not value:
        return None
    from chimera_ops.units import parse_duration

    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"expected a duration like '1h' or an ISO time, got {value!r}"
        ) from None


@click.command()
@click.option("--component", "-c", help="Only this component.", shell_complete=complete_component)
@click.option("--since", help="Only events newer than this ('1h', '30m', or an ISO time).")
@click.option("--limit", default=200, show_default=True, help="At most this many (newest).")
@json_option
@pass_cli
def events(
    cli_ctx: CliContext, component: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """Show recorded events (state changes with their reasons), oldest first."""
    cfg = cli_ctx.config()
    if component and component not in cfg.components:
        unknown_component(component, list(cfg.components), as_json)
    since_ts = parse_since(since, time.time())
    from chimera_ops.store import Store

    db = cfg.agent.state_dir / "chimera.db"
    if not db.exists():
        fail(
            f"no event store at {db} (the agent has never run here)",
            EXIT_USAGE,
            "start the agent with `chimera-ops agent`",
            as_json,
        )
    store = Store(db, readonly=True)
    found = [e.to_dict() for e in store.events(component=component, since=since_ts, limit=limit)]
    store.close()
    if as_json:
        emit_json({"events": found})
        sys.exit(EXIT_OK)
    from chimera_ops.cli.render import events_table

    stdout_console().print(events_table(found))
    sys.exit(EXIT_OK)
