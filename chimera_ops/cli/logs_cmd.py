"""`chimera-ops logs NAME [--tail 100] [--since 10m] [--follow] [--json]` and `logs --all`:
a component's log lines across rotations, process and docker components alike."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliContext,
    emit_json,
    fail,
    json_option,
    pass_cli,
    unknown_component,
)


def _lines(cfg: Any, name: str, tail: int, since_ts: float | None, follow: bool) -> Iterator[Any]:
    from chimera_ops.agent.paths import log_dir
    from chimera_ops.ops.bundle import tail as logtail

    comp = cfg.components[name]
    if comp.runtime == "docker":
        from chimera_ops.docker.engine import resolve_host

        yield from logtail.docker_lines(
            resolve_host(cfg.agent.docker.host), comp, tail, since_ts, follow
        )
        return
    since_iso = logtail.iso_ms(since_ts) if since_ts else None
    logs = log_dir(cfg.agent.state_dir)
    yield from logtail.tail_lines(logs, name, tail, since_iso)
    if follow:
        yield from logtail.follow_lines(logs, name)


@click.command()
@click.argument("name", required=False)
@click.option("--all", "all_components", is_flag=True, help="Every component's tail in turn.")
@click.option(
    "--tail",
    "-n",
    default=100,
    show_default=True,
    type=click.IntRange(min=0),
    help="The last N lines (across rotated files).",
)
@click.option("--since", help="Only lines newer than this ('10m', '1h', or an ISO time).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@json_option
@pass_cli
def logs(
    cli_ctx: CliContext,
    name: str | None,
    all_components: bool,
    tail: int,
    since: str | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Show a component's log lines (`<UTC time> <stream> <text>`), oldest first.

    Process components: the agent's files, rotations included; docker components: `docker
    logs`. External components have no log here. Exit 2 for an unknown component.
    """
    from chimera_ops.cli.events import parse_since

    since_ts = parse_since(since, time.time())
    cfg = cli_ctx.config()
    if all_components == bool(name):
        fail(
            "give one component NAME, or --all",
            EXIT_USAGE,
            "chimera-ops logs engine --tail 100",
            as_json,
        )
    if name and name not in cfg.components:
        unknown_component(name, list(cfg.components), as_json)
    if all_components and follow:
        fail("--follow takes one component", EXIT_USAGE, None, as_json)
    names = (
        [name]
        if name
        else [n for n in cfg.start_order() if cfg.components[n].runtime != "external"]
    )
    if name and cfg.components[name].runtime == "external":
        fail(
            f"{name} is an external component: chimera-ops has no log of it",
            EXIT_USAGE,
            "read the service's own log",
            as_json,
        )
    try:
        if follow:
            _follow(cfg, names[0], tail, since_ts, as_json)
        elif as_json:
            emit_json(
                {
                    "components": [
                        {
                            "name": n,
                            "lines": [
                                line.to_dict() for line in _lines(cfg, n, tail, since_ts, False)
                            ],
                        }
                        for n in names
                    ]
                }
            )
        else:
            for n in names:
                if all_components:
                    click.secho(f"===== {n} =====", bold=True)
                for line in _lines(cfg, n, tail, since_ts, False):
                    click.echo(_shown(line.render()))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - the docker engine is gone, the file unreadable
        from chimera_ops.errors import describe_exception

        fail(f"cannot read the log: {describe_exception(exc)}", 1, None, as_json)
    sys.exit(EXIT_OK)


def _follow(cfg: Any, name: str, tail: int, since_ts: float | None, as_json: bool) -> None:
    for line in _lines(cfg, name, tail, since_ts, True):
        click.echo(json.dumps(line.to_dict()) if as_json else _shown(line.render()))


def _shown(text: str) -> str:
    """A log line for a terminal: what the child wrote, with its control characters escaped
    (`\\x1b[2J` shown, not obeyed). A tab stays a tab. `--json` keeps the bytes as written
    (JSON escapes them)."""
    from chimera_ops.cli.render import printable

    return printable(text, multiline=True).replace("\n", "\\n")
