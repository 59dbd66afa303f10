"""`chimera-ops runbook list|show|run|history`: the runbooks of runbooks/, read and executed.

Exit codes: 0 ok (a run that finished, a dry run); 1 a step failed, a check did not hold, a
destructive step was refused, the lock is held, a runbook is malformed (list), a runbook file is
not trusted (run: another user's, writable by others, a symlink; ops/runbook/trust.py); 2 usage
(unknown runbook: the known ones are listed; a missing, refused or mistyped `--set` variable;
unknown `--from`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
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
)
from chimera_ops.cli.complete import complete_runbook

STATUS_STYLE = {
    "ok": "green",
    "failed": "bold red",
    "refused": "bold red",
    "not-held": "yellow",
    "allowed-failure": "yellow",
    "skipped": "dim",
    "would-run": "cyan",
}


def runbook_dir() -> Path:
    """$CHIMERA_OPS_RUNBOOKS, else the runbooks/ beside the package."""
    env = os.environ.get("CHIMERA_OPS_RUNBOOKS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "runbooks"


def _load(name: str, as_json: bool, trusted: bool = False) -> Any:
    """The page NAME, parsed; with `trusted`, only a file that passes ops/runbook/trust.py
    (refused with the reason, exit 1: nothing is run)."""
    from chimera_ops.ops.runbook.parse import RunbookError, parse_runbook, runbook_paths
    from chimera_ops.ops.runbook.trust import HINT, UntrustedRunbook, read_trusted

    paths = runbook_paths(runbook_dir())
    stem = name.removesuffix(".md")
    match = [p for p in paths if p.stem == stem]
    if not match:
        known = ", ".join(p.stem for p in paths) or "(none)"
        fail(f"unknown runbook {name!r}", EXIT_USAGE, f"known runbooks: {known}", as_json)
    try:
        text = read_trusted(match[0]) if trusted else None
        return parse_runbook(match[0], text)
    except UntrustedRunbook as exc:
        fail(f"refused: {exc}", EXIT_PROBLEM, HINT, as_json)
    except RunbookError as exc:
        fail(f"malformed runbook: {exc}", EXIT_PROBLEM, None, as_json)


@click.group()
def runbook() -> None:
    """Runbooks: read them (`list`, `show`), execute their steps (`run`), see past runs."""


@runbook.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every runbook: name, title, the alerts and incidents it covers, its steps."""
    from chimera_ops.ops.runbook.parse import load_all

    books, errors = load_all(runbook_dir())
    rows: list[dict[str, Any]] = [
        {
            "name": b.name,
            "title": b.title,
            "alerts": list(b.alerts),
            "incidents": list(b.incidents),
            "steps": len(b.steps),
            "planned_steps": sum(s.planned for s in b.steps),
        }
        for b in books
    ]
    bad = [{"file": str(e.path), "line": e.line, "error": e.message} for e in errors]
    if as_json:
        emit_json({"runbooks": rows, "errors": bad})
    else:
        from rich.table import Table

        table = Table("runbook", "steps", "alerts", "incidents", "title")
        table.columns[0].no_wrap = True
        for r in rows:
            planned = f" ({r['planned_steps']} planned)" if r["planned_steps"] else ""
            table.add_row(
                r["name"],
                f"{r['steps']}{planned}",
                ", ".join(r["alerts"]) or "-",
                ", ".join(r["incidents"]) or "-",
                r["title"],
            )
        out = stdout_console()
        out.print(table)
        for e in errors:
            out.print(f"[bold red]malformed:[/] {e}", highlight=False)
    sys.exit(EXIT_PROBLEM if errors else EXIT_OK)


@runbook.command("show")
@click.argument("name", shell_complete=complete_runbook)
@json_option
def show(name: str, as_json: bool) -> None:
    """Render one runbook in the terminal, its steps listed after it."""
    book = _load(name, as_json)
    if as_json:
        emit_json(
            {
                "name": book.name,
                "title": book.title,
                "when": book.when,
                "alerts": list(book.alerts),
                "incidents": list(book.incidents),
                "variables": book.defaults,
                "types": book.types,
                "steps": [_step_doc(s) for s in book.steps],
            }
        )
        return
    from rich.markdown import Markdown

    out = stdout_console()
    out.print(Markdown(book.path.read_text()))
    out.rule("steps `chimera-ops runbook run` executes")
    for s in book.steps:
        out.print(f"{s.n:>2}. {s.id} [{s.kind}{_flags(s)}]  {s.body}", markup=False)


def _flags(step: Any) -> str:
    flags = [
        f
        for f, on in (
            ("destructive", step.destructive),
            ("shell", step.shell),
            ("planned", step.planned),
            ("may-fail", step.may_fail),
        )
        if on
    ]
    return "".join(f", {f}" for f in flags)


def _step_doc(step: Any) -> dict[str, Any]:
    return {
        "n": step.n,
        "id": step.id,
        "kind": step.kind,
        "command": step.body,
        "destructive": step.destructive,
        "shell": step.shell,
        "planned": step.planned,
        "expect": "fail" if step.expect_fail else "ok",
        "else": step.on_fail,
        "may_fail": step.may_fail,
        "retry_s": step.retry,
        "timeout_s": step.timeout,
        "line": step.line,
        "advice": step.advice,
    }


@runbook.command("run")
@click.argument("name", shell_complete=complete_runbook)
@click.option("--dry-run", is_flag=True, help="Print the plan, variables filled; run nothing.")
@click.option("--checks", is_flag=True, help="With --dry-run: run the read-only steps.")
@click.option("--yes", is_flag=True, help="Do not ask before destructive steps.")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="A variable (repeatable).")
@click.option("--from", "from_step", metavar="STEP", help="Start at this step (id or number).")
@click.option("--allow-shell", is_flag=True, help="Run the steps marked `shell`.")
@json_option
@pass_cli
def run(
    cli_ctx: CliContext,
    name: str,
    dry_run: bool,
    checks: bool,
    yes: bool,
    sets: tuple[str, ...],
    from_step: str | None,
    allow_shell: bool,
    as_json: bool,
) -> NoReturn:
    """Execute a runbook's steps in order; stop at the first failure with its advice."""
    from chimera_ops.ops.runbook.runner import Recorder, Runner, RunOptions
    from chimera_ops.ops.runbook.variables import (
        VariableError,
        config_variables,
        parse_sets,
        scope_of,
    )
    from chimera_ops.ops.runbook.variables import resolve as resolve_vars

    if checks and not dry_run:
        fail("--checks goes with --dry-run", EXIT_USAGE, None, as_json)
    book = _load(name, as_json, trusted=True)
    cfg = cli_ctx.config()
    config_path = cli_ctx.config_path
    try:
        values = resolve_vars(
            book, parse_sets(sets), config_variables(cfg, config_path), scope_of(cfg)
        )
    except VariableError as exc:
        fail(str(exc), EXIT_USAGE, "nothing was run", as_json)
    from chimera_ops.ops.proclock import lock_for
    from chimera_ops.store import Store

    confirm = None if (yes or not sys.stdin.isatty() or as_json) else _confirm
    options = RunOptions(dry_run, checks, yes, allow_shell, from_step, config_path, confirm)
    printer = _Printer(as_json)
    store = Store.open_in(cfg.agent.state_dir)
    from chimera_ops.ops.procedures.journal import config_secrets

    recorder = Recorder(store, config_secrets(cfg))  # the journal is redacted like a bundle
    runner = Runner(book, values, options, recorder, printer, lock_for(cfg))
    try:
        runner.start_index()
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, None, as_json)
    if not as_json:
        printer.header(book, values, options)
    result = runner.run()
    store.close()
    printer.footer(result)
    sys.exit(EXIT_OK if result.state in ("succeeded", "planned") else EXIT_PROBLEM)


def _confirm(step: Any, command: Any) -> bool:
    return click.confirm(f"destructive step {step.id}: run `{command.display()}`?", default=False)


class _Printer:
    """Prints each step as it runs (rich), or collects nothing and prints JSON at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.out = stdout_console()

    def header(self, book: Any, values: dict[str, str], options: Any) -> None:
        self.out.print(f"[bold]runbook {book.name}[/]: {book.title}", highlight=False)
        if values:
            shown = "  ".join(f"{k}={v}" for k, v in values.items() if k != "python")
            self.out.print(f"variables: {shown}", markup=False, highlight=False)
        if options.dry_run:
            what = "read-only steps run, actions are not" if options.checks else "nothing is run"
            self.out.print(f"[cyan]dry run: {what}[/]")

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.as_json:
            return
        step = data["step"]
        if event == "step":
            self.out.print(
                f"\n[bold]{step.n}. {step.kind}[/] {step.id}{_flags(step)}", highlight=False
            )
            self.out.print(f"  $ {data['command']}", markup=False, highlight=False)
            return
        res = data["result"]
        from rich.markup import escape

        from chimera_ops.cli.render import printable

        # What the step printed (and a note quoting it) is shown, never obeyed: control
        # characters escaped, and no markup read in it.
        for line in res.output.rstrip().splitlines()[-40:]:
            self.out.print(f"  | {printable(line, multiline=True)}", markup=False, highlight=False)
        style = STATUS_STYLE.get(res.status, "white")
        note = f" ({escape(printable(res.note))})" if res.note else ""
        code = "" if res.exit_code is None else f" exit {res.exit_code}"
        took = f" in {res.duration_s:.2f} s" if res.attempts else ""
        self.out.print(f"  [{style}]{res.status}[/]{code}{took}{note}", highlight=False)

    def footer(self, result: Any) -> None:
        if self.as_json:
            emit_json(result.to_dict())
            return
        if result.state in ("succeeded", "planned"):
            self.out.print(f"\n[green]{result.state}[/] run {result.run_id}", highlight=False)
            return
        from rich.markup import escape

        from chimera_ops.cli.render import printable

        message = escape(printable(result.message, multiline=True))  # may quote a step's output
        self.out.print(f"\n[bold red]{result.state}[/]: {message}", highlight=False)
        if result.advice:
            advice = escape(printable(result.advice, multiline=True))
            self.out.print(f"[yellow]the runbook says:[/] {advice}", highlight=False)


@runbook.command("history")
@click.option("--limit", default=20, show_default=True, help="Newest N runs.")
@json_option
@pass_cli
def history(cli_ctx: CliContext, limit: int, as_json: bool) -> None:
    """Past runs, newest first: runbook, state, where it stopped, who."""
    from chimera_ops.ops.procedures.journal import Journal
    from chimera_ops.store import Store

    cfg = cli_ctx.config()
    db = cfg.agent.state_dir / "chimera.db"
    runs: list[dict[str, Any]] = []
    if db.exists():
        store = Store.open_in(cfg.agent.state_dir, readonly=True)
        runs = [r for r in Journal(store).recent(10_000) if r["kind"] == "runbook"][:limit]
        store.close()
    if as_json:
        emit_json({"runs": runs})
        return
    import time

    from rich.table import Table

    table = Table("run", "runbook", "state", "started", "stopped at", "user")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    for r in runs:
        params, res = r["params"], r["result"] or {}
        state = r["state"] + (" (dry run)" if params.get("dry_run") else "")
        table.add_row(
            r["id"],
            params.get("runbook", "?"),
            state,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"])),
            res.get("stopped_at") or "-",
            r["user"] or "-",
        )
    stdout_console().print(table)
