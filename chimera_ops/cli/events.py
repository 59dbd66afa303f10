"""`chimera-ops events [--component NAME] [--since 1h]`."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from chimera_ops.store import Event, Store

PAGE = 1000  # events per query, as many as `GET /v1/events` answers at once
MAX_EVENTS = 100_000  # for more, narrow with --since or page `GET /v1/events` by its cursor


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


def newest_events(
    store: Store, limit: int, component: str | None, since: float | None
) -> list[Event]:
    """The newest `limit` events, oldest first, read PAGE at a time by the id cursor (as
    `GET /v1/events` pages them), never in one unbounded query."""
    pages: list[list[Event]] = []
    before: int | None = None
    wanted = limit
    while wanted > 0:
        page, more = store.events_page(min(wanted, PAGE), component, since, before=before)
        pages.append(page)
        wanted -= len(page)
        if not more or not page:
            break
        before = page[0].id
    return [event for page in reversed(pages) for event in page]


@click.command()
@click.option("--component", "-c", help="Only this component.", shell_complete=complete_component)
@click.option("--since", help="Only events newer than this ('1h', '30m', or an ISO time).")
@click.option(
    "--limit",
    default=200,
    show_default=True,
    type=click.IntRange(1, MAX_EVENTS),
    help="At most this many (newest), read a page at a time.",
)
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
    try:
        found = [e.to_dict() for e in newest_events(store, limit, component, since_ts)]
    finally:
        store.close()
    if as_json:
        emit_json({"events": found})
        sys.exit(EXIT_OK)
    from chimera_ops.cli.render import events_table

    stdout_console().print(events_table(found))
    sys.exit(EXIT_OK)
