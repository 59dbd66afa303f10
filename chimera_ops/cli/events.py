"""`chimera-ops events [--component NAME] [--since 1h] [-f]`.

Trading changes are events too (halt, resume, orders cancelled, drained: kinds `trading`,
`orders_cancelled`, `drained`, with who and why in `data`), so `events -f` is the place to watch
a stack. `-f` prints the newest events, then each new one as it is recorded (one line each, or
one JSON object a line with `--json`) until Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    from pathlib import Path

    from chimera_ops.store import Event, Store

FOLLOW_POLL = 0.5  # seconds between reads of new events with -f: a read-only query by id
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


def open_store(state_dir: Path, as_json: bool) -> Store:
    """The state dir's store, read-only (the CLI never writes what it only shows); exit 2 when
    the agent has never run there."""
    from chimera_ops.store import Store

    db = state_dir / "chimera.db"
    if not db.exists():
        fail(
            f"no store at {db} (the agent has never run here)",
            EXIT_USAGE,
            "start the agent with `chimera-ops agent`",
            as_json,
        )
    return Store(db, readonly=True)


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
@click.option(
    "--follow", "-f", is_flag=True, help="Then print new events as they come, until Ctrl-C."
)
@json_option
@pass_cli
def events(
    cli_ctx: CliContext,
    component: str | None,
    since: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
) -> None:
    """Show recorded events (state changes, trading halts and resumes, with their reasons and
    who asked), oldest first."""
    cfg = cli_ctx.config()
    if component and component not in cfg.components:
        unknown_component(component, list(cfg.components), as_json)
    since_ts = parse_since(since, time.time())
    store = open_store(cfg.agent.state_dir, as_json)
    try:
        found = [e.to_dict() for e in newest_events(store, limit, component, since_ts)]
        if follow:
            _follow(store, found, component, as_json)
    finally:
        store.close()
    if as_json:
        emit_json({"events": found})
        sys.exit(EXIT_OK)
    from chimera_ops.cli.render import events_table

    stdout_console().print(events_table(found))
    sys.exit(EXIT_OK)


_CONTROL = {c: f"\\x{c:02x}" for c in range(32) if c not in (9,)} | {127: "\\x7f"}


def event_line(event: dict[str, Any]) -> str:
    """One event on one line (for -f); control characters a child wrote are shown escaped."""
    when = datetime.fromtimestamp(event["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    change = ""
    if event.get("from_state") or event.get("to_state"):
        change = f" {event.get('from_state') or '?'} -> {event.get('to_state') or '?'}"
    text = f"{when}  {event.get('component') or 'agent'}  {event['kind']}{change}  "
    return clean(text + (event.get("reason") or ""))


def clean(text: str) -> str:
    """`text` with its control characters shown escaped (no terminal escape gets through)."""
    return text.translate(_CONTROL)


def _follow(
    store: Store, shown: list[dict[str, Any]], component: str | None, as_json: bool
) -> None:
    """Print `shown`, then every newer event as it is recorded, until Ctrl-C (exit 0)."""
    import json

    def say(event: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(event, default=str))
        else:
            click.echo(event_line(event))

    last = shown[-1]["id"] if shown else _newest_id(store)
    try:
        for event in shown:
            say(event)
        while True:
            page, _ = store.events_page(PAGE, component, None, after=last)
            for found in page:
                say(found.to_dict())
                last = found.id
            if not page:
                time.sleep(FOLLOW_POLL)
    except KeyboardInterrupt:
        sys.exit(EXIT_OK)


def _newest_id(store: Store) -> int:
    page, _ = store.events_page(1)
    return page[-1].id if page else 0
