"""What `start`/`stop`/`restart` NAME and `stop --all` will do, said before they do it.

A stop of a trading engine cancels its open orders (the agent halts it first and counts them),
so it is never silent: with open orders the command says what will happen, asks on a terminal
and needs `--yes` elsewhere (exit 2 without it, nothing changed). `--dry-run` prints the same
plan and changes nothing. Everything here only reads (the agent's status and `GET /v1/trading`).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    emit_json,
    fail,
    stdout_console,
)

if TYPE_CHECKING:
    from chimera_ops.client import AgentClient
    from chimera_ops.config import ChimeraConfig

SAFE_HINT = "use `restart --safe` to back up and resume only on a healthy stack"
# States in which no process runs: nothing to halt, nothing a stop would cancel.
DOWN = ("stopped", "exited", "fatal", "backoff", "unknown")


@dataclass
class Touch:
    """One component as a stop or restart would find it."""

    component: str
    state: str
    pid: int | None
    engine: bool
    trading: str | None = None  # "active" | "halted"; None when not an engine or unreadable
    open_orders: int | None = None
    error: str | None = None  # why the engine's trading state could not be read

    @property
    def up(self) -> bool:
        return self.state not in DOWN

    def warning(self) -> str | None:
        """What a stop does to trading, when it does something (None: nothing to confirm)."""
        if not self.engine or not self.up:
            return None
        if self.error is not None:
            # Fail closed: an engine whose state cannot be read may hold open orders.
            return (
                f"{self.component} is a trading engine whose state cannot be read"
                f" ({self.error}); it may have open orders that this cancels"
            )
        if not self.open_orders:
            return None
        return f"halts trading on {self.component}, cancels {self.open_orders} open orders"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def survey(
    client: AgentClient, cfg: ChimeraConfig, names: list[str], as_json: bool
) -> dict[str, Touch]:
    """Each named component's state, pid and (for a running engine) trading state."""
    from chimera_ops.client import AgentError, AgentUnavailable

    try:
        doc = client.status()
    except (AgentUnavailable, AgentError, OSError) as exc:
        fail(f"the agent does not answer: {exc}", EXIT_PROBLEM, None, as_json)
    by_name = {c["name"]: c for c in doc.get("components", [])}
    touches: dict[str, Touch] = {}
    for name in names:
        comp = by_name.get(name, {})
        touch = Touch(
            name,
            str(comp.get("state", "unknown")),
            comp.get("pid"),
            cfg.components[name].trading is not None,
        )
        if touch.engine and touch.up:
            try:
                answer = client.request("GET", f"/v1/trading?component={name}")
                [row] = answer["engines"]
            except (AgentUnavailable, AgentError, OSError, KeyError, ValueError) as exc:
                touch.error = str(exc) or "no answer"
            else:
                touch.trading, touch.open_orders = row.get("trading"), row.get("open_orders")
                touch.error = None if row.get("ok") else (row.get("error") or "no answer")
        touches[name] = touch
    return touches


def confirm(touches: list[Touch], verb: str, yes: bool, as_json: bool) -> None:
    """Say what touching these engines does; ask on a terminal, need --yes elsewhere (exit 2)."""
    warnings = [w for t in touches if (w := t.warning()) is not None]
    if not warnings or yes:
        return
    message = f"{verb}: {'; '.join(warnings)}; {SAFE_HINT}"
    if not sys.stdin.isatty():
        fail(
            message,
            EXIT_USAGE,
            f"nothing was changed: add --yes to {verb} anyway, or use `chimera-ops restart --safe`",
            as_json,
        )
    click.echo(message, err=True)
    if not click.confirm(f"{verb} now?", err=True):
        fail("cancelled; nothing was changed", EXIT_PROBLEM, None, as_json)


def stop_lines(cfg: ChimeraConfig, touch: Touch) -> list[str]:
    """What a stop of one component does, in order."""
    name = touch.component
    if not touch.up:
        return [f"{name} is {touch.state}: nothing runs, nothing to stop"]
    lines = []
    if touch.engine:
        if touch.error is not None:
            lines.append(f"halt trading on {name} (its state cannot be read: {touch.error})")
        else:
            lines.append(
                f"halt trading on {name} (now {touch.trading}): cancels"
                f" {touch.open_orders or 0} open orders"
            )
    stop = cfg.components[name].stop
    lines.append(
        f"stop {name} (pid {touch.pid or '-'}): {stop.signal.name} to its process tree,"
        f" {stop.grace:g} s grace, then SIGKILL"
    )
    return lines


def plan(cfg: ChimeraConfig, touch: Touch, verb: str) -> list[str]:
    """What `verb` NAME does to one component, line by line."""
    name = touch.component
    if verb == "start":
        return [f"start {name} (now {touch.state}); a fatal state and the crash counters clear"]
    lines = stop_lines(cfg, touch)
    if verb == "stop":
        if touch.engine and touch.up:
            lines.append(f"trading on {name} stays halted (resume with `resume-trading`)")
        return lines
    lines.append(f"start {name} again and wait until it is running")
    if touch.engine and touch.up and touch.trading != "halted":
        lines.append(f"resume trading on {name} once it is running; else it stays halted")
    return lines


def dry_run(doc: dict[str, Any], as_json: bool) -> NoReturn:
    """Print a plan (`doc["plan"]`), change nothing, exit 0."""
    doc = {"dry_run": True, **doc}
    if as_json:
        emit_json(doc)
        sys.exit(EXIT_OK)
    out = stdout_console()
    out.print("dry run: nothing is changed; this would:", highlight=False)
    for n, line in enumerate(doc["plan"], 1):
        out.print(f"  {n}. {line}", markup=False, highlight=False)
    sys.exit(EXIT_OK)
