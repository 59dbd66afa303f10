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
    from chimera_ops.cli.common import agent_client

    return agent_client(cli_ctx.config(), f"{what} runs inside the agent", as_json, timeout=30)


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
                        out.print(_step_line(step), markup=False, highlight=False)
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
    """One step, to print with markup off: its detail may quote a child or an engine (an
    exit reason, an error), so control characters in it are escaped."""
    from chimera_ops.cli.render import printable

    state = step["state"]
    took = ""
    if step.get("finished_at"):
        took = f" ({step['finished_at'] - step['started_at']:.1f} s)"
    mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip", "running": " .. "}.get(state, state)
    detail = f": {printable(step['detail'])}" if step.get("detail") and state != "running" else ""
    return f"  [{mark}] {step['n']}. {step['name']}{took}{detail}"


def _render_result(doc: dict[str, Any]) -> None:
    from rich.text import Text

    from chimera_ops.cli.render import plain

    out = stdout_console()
    result = doc.get("result") or {}
    style = "bold green" if doc["state"] in ("succeeded", "planned") else "bold red"
    # The summary, the plan and the log tails quote what components and engines said: Texts
    # with control characters escaped, never markup.
    out.print(
        Text(f"{doc['kind']} {doc['state']}", style=style)
        + plain(f": {result.get('summary', '')}", multiline=True)
    )
    for line in result.get("plan") or []:
        out.print(plain(f"  {line}"))
    for line in summary_lines(result.get("summary_figures")):
        out.print(plain(f"  {line}"))
    for name, lines in (result.get("log_tails") or {}).items():
        out.print(Text(f"--- last {len(lines)} log lines of {name}", style="bold"))
        for line in lines:
            out.print(plain(line, multiline=True))


def summary_lines(figures: dict[str, Any] | None) -> list[str]:
    """A safe restart's summary: seconds halted, orders the halt cancelled, each step's time."""
    if not figures:
        return []
    halted = figures.get("halted_s")
    cancelled = figures.get("orders_cancelled")
    lines = [
        "trading halted for "
        + (f"{halted:.1f} s" if halted is not None else "0 s (nothing was halted)")
        + "; "
        + (
            f"{cancelled} open order{'' if cancelled == 1 else 's'} cancelled by the halt"
            if cancelled is not None
            else "the engines did not say how many orders the halt cancelled"
        )
    ]
    times = ", ".join(f"{s['name']} {s['seconds']:.1f} s" for s in figures.get("steps") or [])
    if times:
        lines.append(f"steps: {times}")
    return lines


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


class StoreJournal:
    """The journal read from the store itself (read-only) when no agent answers: `procedure
    list` and `show` still work on a stack whose agent is stopped, which is when the last
    procedure's steps are most needed. Same answers as the agent's routes."""

    def __init__(self, state_dir: Any) -> None:
        self.state_dir = state_dir

    def _read(self, query: Any) -> Any:
        from chimera_ops.ops.procedures.journal import Journal
        from chimera_ops.store import Store

        if not (self.state_dir / "chimera.db").exists():
            return None
        store = Store.open_in(self.state_dir, readonly=True)
        try:
            return query(Journal(store))
        finally:
            store.close()

    def procedures(self, limit: int) -> dict[str, Any]:
        rows = self._read(lambda journal: journal.recent(limit))
        return {"procedures": rows or []}

    def procedure(self, ref: str) -> dict[str, Any]:
        """The procedure `ref` (an id or a unique prefix); AgentError 404 listing recent ids."""
        from chimera_ops.client import AgentError

        def query(journal: Any) -> dict[str, Any]:
            doc = journal.get(ref)
            if doc is None:
                matches = journal.ids_like(ref, limit=2)
                doc = journal.get(matches[0]) if len(matches) == 1 else None
            if doc is None:
                known = [j["id"] for j in journal.recent(10)]
                raise AgentError(404, {"error": f"no procedure {ref!r}", "known": known})
            return doc

        found = self._read(query)
        if found is None:
            raise AgentError(404, {"error": f"no procedure {ref!r}", "known": []})
        return found


def _journal(cli_ctx: CliContext, as_json: bool) -> tuple[Any, bool]:
    """(where to read the journal, whether an agent answers): the agent when one runs, else
    the store read-only (said on stderr, so --json stays one document)."""
    from chimera_ops.client import AgentClient

    cfg = cli_ctx.config()
    client = AgentClient(cfg.agent.state_dir, timeout=30)
    if client.path.exists():
        return client, True
    click.echo(
        f"no agent running on {cfg.agent.state_dir}: reading its store (read-only)", err=True
    )
    return StoreJournal(cfg.agent.state_dir), False


@click.group()
def procedure() -> None:
    """The agent's procedures (restart --safe, emergency-stop, start --all): list, show."""


@procedure.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_cli
def procedure_list(cli_ctx: CliContext, limit: int, as_json: bool) -> None:
    """Recent procedures, newest first."""
    from chimera_ops.client import AgentUnavailable

    source, _ = _journal(cli_ctx, as_json)
    try:
        rows = source.procedures(limit)["procedures"]
    except AgentUnavailable:  # a socket left behind by a dead agent: the store still answers
        rows = StoreJournal(cli_ctx.config().agent.state_dir).procedures(limit)["procedures"]
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
    """One procedure's steps; follows it while it runs (with no agent: as the store has it)."""
    from chimera_ops.client import AgentError, AgentUnavailable

    source, live = _journal(cli_ctx, as_json)
    try:
        try:
            doc = source.procedure(job)
        except AgentUnavailable:  # a socket left behind by a dead agent
            source, live = StoreJournal(cli_ctx.config().agent.state_dir), False
            doc = source.procedure(job)
    except AgentError as exc:
        known = ", ".join(exc.body.get("known") or []) or "(none yet)"
        fail(str(exc), EXIT_USAGE, f"recent procedures: {known}", as_json)
    if live:
        follow(source, doc["id"], as_json)
    if as_json:
        emit_json(doc)
    else:
        out = stdout_console()
        out.print(f"procedure {doc['id']} (from the store; no agent runs)", highlight=False)
        for step in doc.get("steps", []):
            out.print(_step_line(step), markup=False, highlight=False)
        if doc["state"] == RUNNING:
            # Nobody runs it any more: the next agent marks it interrupted at start.
            out.print(
                f"[bold red]{doc['kind']} is marked running but no agent runs it[/]: the next"
                " agent marks it interrupted; trading stays as the engines report"
                " (`chimera-ops trading-state`)",
                highlight=False,
            )
        else:
            _render_result(doc)
    sys.exit(EXIT_OK if doc["state"] in ("succeeded", "planned") else EXIT_PROBLEM)


@procedure.command("abort")
@click.argument("job")
@click.option("--reason", help="Why (written to the journal, events and audit).")
@json_option
@pass_cli
def procedure_abort(cli_ctx: CliContext, job: str, reason: str | None, as_json: bool) -> None:
    """End a running procedure at its next step boundary (a step is never cut in half).

    Nothing stopped yet: trading is resumed and nothing is restarted. Anything stopped:
    trading stays halted. Follows the procedure to its end; exit 0 once it ended aborted.
    """
    from chimera_ops.client import AgentError, AgentUnavailable

    client = _client(cli_ctx, as_json, "a procedure")
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = None
    try:
        answer = client.abort_procedure(job, user, reason)
    except AgentUnavailable as exc:
        fail(f"the agent does not answer: {exc}", EXIT_PROBLEM, None, as_json)
    except AgentError as exc:
        fail(
            f"cannot abort: {exc}",
            EXIT_PROBLEM if exc.status == 409 else EXIT_USAGE,
            "running procedures: `chimera-ops status`; past ones: `chimera-ops procedure list`",
            as_json,
        )
    if not as_json:
        click.echo(
            f"abort asked at {answer.get('step') or 'its start'}; waiting for the step to end"
        )
    doc: dict[str, Any] = client.procedure(answer["id"])
    while doc["state"] == RUNNING:
        time.sleep(POLL)
        doc = client.procedure(answer["id"])
    if as_json:
        emit_json(doc)
    else:
        _render_result(doc)
    sys.exit(EXIT_OK if doc["state"] == "aborted" else EXIT_PROBLEM)
