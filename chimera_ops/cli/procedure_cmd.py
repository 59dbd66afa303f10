"""`chimera-ops procedure list|show`, and following a procedure the agent runs.

`restart --safe`, `emergency-stop` and `start --all` start a job in the agent and follow its
journal here. Ctrl-C only detaches: the job goes on in the agent.
Exit codes: 0 the procedure succeeded (or a dry run planned it); 1 it failed, was aborted,
was interrupted, or the CLI detached; 2 usage error.
"""

from __future__ import annotations

import getpass
import sys
import time
from typing import Any, NoReturn

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
    unknown_component,
)

POLL = 0.25
RUNNING = "running"


def _client(cli_ctx: CliContext, as_json: bool, what: str) -> Any:
    from chimera_ops.client import AgentClient

    cfg = cli_ctx.config()
    client = AgentClient(cfg.agent.state_dir, timeout=30)
    if not client.path.exists():
        fail(
            f"no agent is running on {cfg.agent.state_dir}; {what} runs inside the agent",
            EXIT_PROBLEM,
            "start it with `chimera-ops agent` (or your service manager), then retry",
            as_json,
        )
    return client


def start_and_follow(
    cli_ctx: CliContext, kind: str, params: dict[str, Any], as_json: bool
) -> NoReturn:
    """Start `kind` in the agent, follow it to its end, exit with its verdict."""
    from chimera_ops.client import AgentError, AgentUnavailable

    client = _client(cli_ctx, as_json, kind)
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = None
    try:
        job = client.start_procedure(kind, params, user)["id"]
    except AgentUnavailable as exc:
        fail(f"the agent does not answer: {exc}", EXIT_PROBLEM, None, as_json)
    except AgentError as exc:
        if exc.status == 404 and "known" in exc.body:
            unknown_component(exc.body["error"].split("'")[1], exc.body["known"], as_json)
        if exc.status == 409:
            fail(f"refused: {exc}", EXIT_PROBLEM, None, as_json)
        fail(str(exc), EXIT_USAGE if exc.status == 400 else EXIT_PROBLEM, None, as_json)
    follow(client, job, as_json)


def follow(client: Any, job: str, as_json: bool) -> NoReturn:
    """Print each step as the journal shows it; the final report; exit 0/1."""
    out = stdout_console()
    shown: dict[int, str] = {}
    doc: dict[str, Any] = {}
    if not as_json:
        out.print(f"procedure {job} (runs in the agent; Ctrl-C only detaches)", highlight=False)
    try:
        while True:
            doc = client.procedure(job)
            if not as_json:
                for step in doc.get("steps", []):
                    if shown.get(step["n"]) != step["state"]:
                        shown[step["n"]] = step["state"]
                        out.print(_step_line(step), highlight=False)
            if doc["state"] != RUNNING:
                break
            time.sleep(POLL)
    except KeyboardInterrupt:
        click.echo(
            f"\ndetached; {job} goes on in the agent. Follow it: chimera-ops procedure show {job}",
            err=True,
        )
        sys.exit(EXIT_PROBLEM)
    if as_json:
        emit_json(doc)
    else:
        _render_result(doc)
    sys.exit(EXIT_OK if doc["state"] in ("succeeded", "planned") else EXIT_PROBLEM)


def _step_line(step: dict[str, Any]) -> str:
    state = step["state"]
    took = ""
    if step.get("finished_at"):
        took = f" ({step['finished_at'] - step['started_at']:.1f} s)"
    mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip", "running": " .. "}.get(state, state)
    detail = f": {step['detail']}" if step.get("detail") and state != "running" else ""
    return f"  [{mark}] {step['n']}. {step['name']}{took}{detail}"


def _render_result(doc: dict[str, Any]) -> None:
    out = stdout_console()
    result = doc.get("result") or {}
    style = "bold green" if doc["state"] in ("succeeded", "planned") else "bold red"
    out.print(
        f"[{style}]{doc['kind']} {doc['state']}[/]: {result.get('summary', '')}", highlight=False
    )
    for line in result.get("plan") or []:
        out.print(f"  {line}", highlight=False)
    for name, lines in (result.get("log_tails") or {}).items():
        out.print(f"[bold]--- last {len(lines)} log lines of {name}[/]", highlight=False)
        for line in lines:
            out.print(line, markup=False, highlight=False)


def confirm_or_exit(question: str, yes: bool, as_json: bool) -> None:
    """Destructive procedures ask on a terminal; elsewhere they need --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(
            f"{question} needs confirmation",
            EXIT_USAGE,
            "run it on a terminal, or add --yes",
            as_json,
        )
    if not click.confirm(question, err=True):
        fail("cancelled; nothing was started", EXIT_PROBLEM, None, as_json)


@click.group()
def procedure() -> None:
    """The agent's procedures (restart --safe, emergency-stop, start --all): list, show."""


@procedure.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_cli
def procedure_list(cli_ctx: CliContext, limit: int, as_json: bool) -> None:
    """Recent procedures, newest first."""
    rows = _client(cli_ctx, as_json, "the journal").procedures(limit)["procedures"]
    if as_json:
        emit_json({"procedures": rows})
        sys.exit(EXIT_OK)
    from rich.table import Table

    table = Table(header_style="bold")
    for column in ("id", "state", "started (UTC)", "took", "summary"):
        table.add_column(column, no_wrap=column != "summary", overflow="fold")
    for row in rows:
        took = f"{row['finished_at'] - row['started_at']:.1f} s" if row["finished_at"] else "-"
        table.add_row(
            row["id"],
            row["state"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["started_at"])),
            took,
            (row.get("result") or {}).get("summary", ""),
        )
    stdout_console().print(table if rows else "no procedure has run yet")
    sys.exit(EXIT_OK)


@procedure.command("show")
@click.argument("job")
@json_option
@pass_cli
def procedure_show(cli_ctx: CliContext, job: str, as_json: bool) -> None:
    """One procedure's steps; follows it while it runs."""
    from chimera_ops.client import AgentError

    client = _client(cli_ctx, as_json, "the journal")
    try:
        client.procedure(job)
    except AgentError as exc:
        known = ", ".join(exc.body.get("known") or []) or "(none yet)"
        fail(str(exc), EXIT_USAGE, f"recent procedures: {known}", as_json)
    follow(client, job, as_json)
