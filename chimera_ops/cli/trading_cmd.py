"""`chimera-ops halt-trading|resume-trading|trading-state`: the trading control contract.

Through the agent when one runs; straight to the engines when none does, and the output says
which (first line for people, `"via": "agent"|"direct"` in JSON). Halt and resume are audited
either way: by the agent, or here into the same store when we go direct.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

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
    stderr_console,
    stdout_console,
    unknown_component,
)

if TYPE_CHECKING:
    from rich.table import Table

    from chimera_ops.config import ChimeraConfig
    from chimera_ops.trading_spec import TradingConfig

Op = Literal["state", "halt", "resume"]
_PATHS = {"state": "/v1/trading", "halt": "/v1/trading/halt", "resume": "/v1/trading/resume"}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


def _targets(cfg: ChimeraConfig, component: str | None, as_json: bool) -> dict[str, TradingConfig]:
    """The engines to act on; exits 2 on an unknown component or when none is configured."""
    names = cfg.engines()
    if component is not None:
        if component not in cfg.components:
            unknown_component(component, list(cfg.components), as_json)
        if component not in names:
            fail(
                f"component {component!r} is not a trading engine (it has no `trading:` section)",
                EXIT_USAGE,
                f"trading engines: {', '.join(names) or '(none configured)'}",
                as_json,
            )
        names = [component]
    if not names:
        fail(
            "no trading engine is configured: no component has a `trading:` section",
            EXIT_USAGE,
            "add `trading: {control: {http: http://127.0.0.1:PORT}}` to the engine's component",
            as_json,
        )
    return {n: t for n in names if (t := cfg.components[n].trading) is not None}


def _via_agent(
    cfg: ChimeraConfig, op: Op, body: dict[str, Any], timeout: float, as_json: bool
) -> dict[str, Any] | None:
    """The agent's answer, or None when no agent runs (or it predates the trading routes)."""
    from chimera_ops.client import AgentClient, AgentError, AgentUnavailable

    client = AgentClient(cfg.agent.state_dir, timeout=timeout)
    try:
        if op == "state":
            query = f"?component={body['component']}" if body.get("component") else ""
            return client.request("GET", _PATHS[op] + query)
        return client.request("POST", _PATHS[op], body)
    except AgentUnavailable:
        return None
    except AgentError as exc:
        if exc.status == 404 and "known" in exc.body:
            unknown_component(str(body.get("component")), exc.body["known"], as_json)
        if exc.status == 404 and "error" not in exc.body:
            return None  # an older agent without /v1/trading: the engines are still reachable
        code = EXIT_USAGE if exc.status in (400, 409) else EXIT_PROBLEM
        # 423/503: the procedure lock is held (named) or cannot be read; the hint says what to do.
        fail(f"the agent refused {op}: {exc}", code, exc.body.get("hint"), as_json=as_json)
    except (TimeoutError, OSError) as exc:
        # The agent exists but did not answer in time: do not also go direct (double halt is
        # harmless, but a silent second path would hide a sick agent from the operator).
        fail(
            f"the agent on {cfg.agent.state_dir} did not answer {op}: {exc}",
            EXIT_PROBLEM,
            "check `chimera-ops status`; if the agent is hung, restart it and retry",
            as_json,
        )


def _direct(
    cfg: ChimeraConfig,
    targets: dict[str, TradingConfig],
    op: Op,
    reason: str,
    wait: bool,
    as_json: bool = False,
) -> dict[str, Any]:
    """Talk to the engines ourselves; halt/resume audited into the state dir's store."""
    from chimera_ops.store import Store
    from chimera_ops.trading import run_on_engines, summarize

    if op == "resume":
        _respect_lock(cfg, as_json)
    started = time.monotonic()
    rows = asyncio.run(run_on_engines(targets, op, reason, wait))
    ok = all(r["ok"] for r in rows)
    if op != "state":
        from chimera_ops.trading import record_trading

        store = Store.open_in(cfg.agent.state_dir)
        try:
            record_trading(store.add_event, op, rows, _user(), reason, via="direct")
            store.audit(
                f"{op}-trading",
                {"components": list(targets), "wait": wait, "via": "direct"},
                reason=reason,
                result=("ok: " if ok else "FAILED: ") + summarize(rows),
                duration_s=time.monotonic() - started,
            )
        finally:
            store.close()
    doc: dict[str, Any] = {"via": "direct", "ok": ok, "engines": rows}
    if op != "state":
        doc.update(action=op, reason=reason, wait=wait)
    return doc


def _respect_lock(cfg: ChimeraConfig, as_json: bool) -> None:
    """A direct resume respects the procedure lock as the agent's does: refused while a
    procedure (a restore, a maintenance fix) holds it or when it cannot be read."""
    from chimera_ops.ops.proclock import LockHeld, LockUnreadable, lock_for, record_cleared
    from chimera_ops.store import Store

    lock = lock_for(cfg)
    try:
        lock.check_free()
    except (LockHeld, LockUnreadable) as exc:
        fail(f"resume refused: {exc}", EXIT_PROBLEM, exc.hint, as_json)
    finally:
        if lock.cleared:
            store = Store.open_in(cfg.agent.state_dir)
            try:
                for line in record_cleared(lock, store.add_event):
                    click.echo(line, err=True)
            finally:
                store.close()


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    from chimera_ops.cli.render import plain

    table = Table(header_style="bold")
    for column in ("engine", "trading", "open orders", "since", "reason"):
        table.add_column(column)
    for r in rows:
        trading = r.get("trading")
        style = {"active": "green", "halted": "yellow"}.get(trading or "", "bold red")
        # Texts: the engine supplies the state and the reason; neither is read as markup.
        table.add_row(
            r["component"],
            plain(trading or "UNKNOWN", style=style),
            Text("-" if r.get("open_orders") is None else str(r["open_orders"])),
            Text(_when(r.get("since"))),
            plain(r.get("reason") or "-"),
        )
    return table


def _finish(cfg: ChimeraConfig, op: Op, doc: dict[str, Any], as_json: bool) -> None:
    # Each row is the engine's answer to this command, read now: `at` says when, so a saved
    # or piped answer is never mistaken for a current one later.
    read_at = time.time()
    for row in doc.get("engines") or []:
        row.setdefault("at", read_at)
    if as_json:
        emit_json(doc)
        sys.exit(EXIT_OK if doc["ok"] else EXIT_PROBLEM)
    out = stdout_console()
    if doc["via"] == "agent":
        out.print("via agent", highlight=False)
    else:
        out.print(
            f"via direct: no agent running on {cfg.agent.state_dir}, talking to the engines"
            " directly",
            highlight=False,
        )
    out.print(f"read from the engines at {_when(read_at)}", highlight=False)
    out.print(_table(doc["engines"]))
    if op == "halt":
        from chimera_ops.trading import describe_drain

        # The drain is what --wait waited for: say what it was, engine by engine.
        for r in doc["engines"]:
            if r.get("drain"):
                out.print(f"{r['component']}: {describe_drain(r['drain'])}", highlight=False)
    if doc["ok"]:
        sys.exit(EXIT_OK)
    from rich.text import Text

    from chimera_ops.cli.render import plain

    err = stderr_console()
    for r in doc["engines"]:
        if r.get("error"):
            err.print(Text("error: ", style="bold red") + plain(r["error"]))
            if op == "halt" and r.get("trading") != "halted":
                err.print(
                    f"[bold red]{r['component']} may STILL BE TRADING[/]: stop the engine"
                    f" (`chimera-ops stop {r['component']}`) if it cannot be halted",
                    highlight=False,
                )
    sys.exit(EXIT_PROBLEM)


def _run(
    cli_ctx: CliContext,
    op: Op,
    component: str | None,
    reason: str | None,
    wait: bool,
    as_json: bool,
    dry_run: bool = False,
) -> None:
    cfg = cli_ctx.config()
    targets = _targets(cfg, component, as_json)
    if dry_run:
        _dry_run(cli_ctx, cfg, op, component, targets, wait, as_json)
    user = _user()
    reason = (reason or "").strip() or f"{op}-trading by {user} (no reason given)"
    body: dict[str, Any] = {"component": component}
    if op != "state":
        body.update(reason=reason, user=user)
    if op == "halt":
        body["wait"] = wait
    # The agent may wait for the drain: give it the longest drain plus the calls around it.
    longest = max(t.drain_timeout + 2 * t.control.timeout for t in targets.values())
    doc = _via_agent(cfg, op, body, longest + 10.0, as_json)
    if doc is None:
        doc = _direct(cfg, targets, op, reason, wait, as_json)
    _finish(cfg, op, doc, as_json)


def _dry_run(
    cli_ctx: CliContext,
    cfg: ChimeraConfig,
    op: Op,
    component: str | None,
    targets: dict[str, TradingConfig],
    wait: bool,
    as_json: bool,
) -> None:
    """What a halt or resume would do to each engine, from its current state; changes nothing."""
    body: dict[str, Any] = {"component": component}
    longest = max(t.control.timeout for t in targets.values())
    doc = _via_agent(cfg, "state", body, longest + 10.0, as_json)
    if doc is None:
        doc = _direct(cfg, targets, "state", "", False)
    plan = []
    for r in doc["engines"]:
        name, now = r["component"], r.get("trading")
        if not r.get("ok"):
            plan.append(f"{name}: its state cannot be read ({r.get('error')}); {op} it anyway")
        elif op == "halt":
            plan.append(
                f"{name}: halt trading (now {now}), cancelling {r.get('open_orders') or 0} open"
                " orders"
                + (f"; wait up to {targets[name].drain_timeout:g} s for 0 open" if wait else "")
            )
        else:
            plan.append(
                f"{name}: resume trading (now {now})"
                + ("; nothing to do" if now == "active" else "")
            )
    from chimera_ops.cli import touch

    touch.dry_run({"action": f"{op}-trading", "via": doc["via"], **doc, "plan": plan}, as_json)


_component = click.option("--component", help="Only this engine (default: every engine).")
_dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print what would be done to each engine; change nothing."
)
_reason = click.option("--reason", help="Why (sent to the engine and written to the audit log).")


@click.command("halt-trading")
@_reason
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until open orders reach 0 (up to trading.drain_timeout); print the drain.",
)
@_component
@_dry_run_option
@json_option
@pass_cli
def halt_trading(
    cli_ctx: CliContext,
    reason: str | None,
    wait: bool,
    component: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Halt trading: engines stop placing orders and cancel open ones (idempotent).

    Exit 1 when an engine could not be halted or (with --wait) did not drain in time.
    """
    _run(cli_ctx, "halt", component, reason, wait, as_json, dry_run)


@click.command("resume-trading")
@_reason
@_component
@_dry_run_option
@json_option
@pass_cli
def resume_trading(
    cli_ctx: CliContext, reason: str | None, component: str | None, dry_run: bool, as_json: bool
) -> None:
    """Resume trading on the engines (idempotent)."""
    _run(cli_ctx, "resume", component, reason, False, as_json, dry_run)


@click.command("trading-state")
@_component
@json_option
@pass_cli
def trading_state(cli_ctx: CliContext, component: str | None, as_json: bool) -> None:
    """Show each engine's trading state and open orders."""
    _run(cli_ctx, "state", component, None, False, as_json)
