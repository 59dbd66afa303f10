"""`chimera-ops start|stop|restart NAME`: through the agent's control API."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    CliContext,
    agent_client,
    emit_json,
    fail,
    json_option,
    pass_cli,
    refuse_flags,
    unknown_component,
)
from chimera_ops.cli.complete import complete_component


def _act(
    cli_ctx: CliContext,
    name: str,
    verb: str,
    reason: str | None,
    as_json: bool,
    dry_run: bool = False,
    yes: bool = False,
) -> None:
    cfg = cli_ctx.config()
    if name not in cfg.components:
        unknown_component(name, list(cfg.components), as_json)
    from chimera_ops.cli import touch
    from chimera_ops.client import AgentError, AgentUnavailable

    if cfg.components[name].runtime == "external":
        fail(
            f"{name!r} is an external component: chimera-ops watches it and never starts,"
            " stops or restarts it",
            EXIT_USAGE,
            f"act on the service itself, then `chimera-ops probe {name}`",
            as_json,
        )
    client = agent_client(cfg, f"cannot {verb} {name!r}", as_json)
    if dry_run or verb != "start":
        found = touch.survey(client, cfg, [name], as_json)[name]
        if dry_run:
            touch.dry_run(
                {
                    "action": verb,
                    "component": name,
                    **found.to_dict(),
                    "plan": touch.plan(cfg, found, verb),
                },
                as_json,
            )
        touch.confirm([found], f"{verb} {name}", yes, as_json)
    try:
        result = client.action(name, verb, reason)
    except AgentUnavailable:
        fail(
            f"no agent is running on {cfg.agent.state_dir}; cannot {verb} {name!r}",
            EXIT_PROBLEM,
            "start it with `chimera-ops agent` (or your service manager), then retry",
            as_json,
        )
    except AgentError as exc:
        if exc.status == 404 and "known" in exc.body:
            unknown_component(name, exc.body["known"], as_json)
        if exc.status in (423, 503):  # the procedure lock is held, or cannot be read
            fail(f"{verb} {name} refused: {exc}", EXIT_PROBLEM, exc.body.get("hint"), as_json)
        fail(str(exc), EXIT_USAGE if exc.status == 409 else EXIT_PROBLEM, as_json=as_json)
    if as_json:
        emit_json(result)
    else:
        # Reasons and errors may quote a child's stderr or an engine's answer: escaped.
        from chimera_ops.cli.render import printable

        trading = result.get("trading")
        if trading:  # in the order it happened: the halt, the stop or restart, then trading
            click.echo(printable(f"{name}: {_halt_text(trading)}"))
        click.echo(
            printable(f"{name}: {verb} done, now {result['state']} ({result.get('reason', '')})")
        )
        if trading and trading.get("halted"):
            click.echo(printable(f"{name}: {_trading_after(trading)}"))
    ok = (
        result["state"] in ("running", "stopped")
        if verb != "stop"
        else result["state"] == "stopped"
    )
    sys.exit(EXIT_OK if ok else EXIT_PROBLEM)


def _halt_text(doc: dict[str, Any]) -> str:
    """What the agent's halt before a stop or restart did, for people."""
    if not doc.get("halted"):
        return f"could not halt trading first ({doc.get('error')}); its open orders are unknown"
    return f"trading halted first, {doc.get('cancelled') or 0} open orders cancelled"


def _trading_after(doc: dict[str, Any]) -> str:
    """Where trading stands after the stop or restart."""
    if doc.get("resumed"):
        return "trading resumed (it is running again)"
    if doc.get("resume_error"):
        return f"trading stays HALTED ({doc['resume_error']})"
    return "trading stays halted; resume it with `chimera-ops resume-trading`"


_reason = click.option("--reason", help="Why (written to the audit log).")
_dry_run = click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
_yes = click.option(
    "--yes", is_flag=True, help="Do not ask before cancelling an engine's open orders."
)


@click.command()
@click.argument("name", required=False, shell_complete=complete_component)
@click.option(
    "--all", "all_", is_flag=True, help="Staged start of every component; trading stays halted."
)
@_reason
@_dry_run
@json_option
@pass_cli
def start(
    cli_ctx: CliContext,
    name: str | None,
    all_: bool,
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Start a component (clears `fatal` and the crash counters), or `--all`: the staged start
    in dependency order, each gated on readiness, trading left halted until `resume-trading`."""
    if all_:
        if name:
            fail("give a NAME or --all, not both", EXIT_USAGE, as_json=as_json)
        if dry_run:
            cfg = cli_ctx.config()
            order = cfg.start_order()
            steps = [
                f"check {n} (external: watched, never started)"
                if cfg.components[n].runtime == "external"
                else f"start {n} and wait until it is ready"
                for n in order
            ]
            engines = ", ".join(cfg.engines()) or "none"
            steps.append(f"leave trading halted on the engines ({engines}) until `resume-trading`")
            from chimera_ops.cli import touch

            touch.dry_run({"action": "start --all", "order": order, "plan": steps}, as_json)
        from chimera_ops.cli.procedure_cmd import start_and_follow

        start_and_follow(cli_ctx, "staged-start", {"reason": reason or "start --all"}, as_json)
    if not name:
        fail("which component? give a NAME (or --all)", EXIT_USAGE, as_json=as_json)
    _act(cli_ctx, name, "start", reason, as_json, dry_run=dry_run)


@click.command()
@click.argument("name", required=False, shell_complete=complete_component)
@click.option(
    "--all",
    "all_",
    is_flag=True,
    help="Every managed component, in reverse dependency order, engines halted first.",
)
@_reason
@_dry_run
@_yes
@json_option
@pass_cli
def stop(
    cli_ctx: CliContext,
    name: str | None,
    all_: bool,
    reason: str | None,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Stop a component (stop signal, grace, then SIGKILL of its whole tree), or `--all`.

    A trading engine is halted first (its open orders cancelled, counted and recorded) and
    stays halted; with open orders the stop asks first (or needs --yes). Exit 0 stopped (or
    --dry-run planned it), 1 not stopped, 2 usage or a confirmation missing.
    """
    if all_:
        if name:
            fail("give a NAME or --all, not both", EXIT_USAGE, as_json=as_json)
        _stop_all(cli_ctx, reason, dry_run, yes, as_json)
    if not name:
        fail("which component? give a NAME (or --all)", EXIT_USAGE, as_json=as_json)
    _act(cli_ctx, name, "stop", reason, as_json, dry_run=dry_run, yes=yes)


def _stop_all(
    cli_ctx: CliContext, reason: str | None, dry_run: bool, yes: bool, as_json: bool
) -> NoReturn:
    """Halt every running engine, then stop the managed components in reverse dependency
    order: no engine trades while what it depends on goes away."""
    from chimera_ops.cli import touch
    from chimera_ops.client import AgentError, AgentUnavailable

    cfg = cli_ctx.config()
    order = [n for n in reversed(cfg.start_order()) if cfg.components[n].runtime != "external"]
    client = agent_client(cfg, "cannot stop --all", as_json)
    found = touch.survey(client, cfg, order, as_json)
    engines = [found[n] for n in order if found[n].engine and found[n].up]
    if dry_run:
        lines = [line for t in engines for line in touch.stop_lines(cfg, t)[:1]]
        for n in order:
            lines.extend(line for line in touch.stop_lines(cfg, found[n]) if "halt" not in line)
        lines.append("external components are watched, never stopped; the agent keeps running")
        touch.dry_run(
            {
                "action": "stop --all",
                "order": order,
                "components": [found[n].to_dict() for n in order],
                "plan": lines,
            },
            as_json,
        )
    touch.confirm(engines, "stop --all", yes, as_json)
    why = reason or "stop --all"
    halted: list[dict[str, Any]] = []
    stopped: list[dict[str, Any]] = []
    try:
        for t in engines:  # before anything stops
            answer = client.request(
                "POST", "/v1/trading/halt", {"component": t.component, "reason": why}
            )
            halted.extend(answer.get("engines", []))
        for n in order:
            stopped.append(client.action(n, "stop", why))
    except AgentUnavailable as exc:
        fail(f"the agent does not answer: {exc}", EXIT_PROBLEM, None, as_json)
    except AgentError as exc:
        fail(str(exc), EXIT_USAGE if exc.status == 409 else EXIT_PROBLEM, as_json=as_json)
    ok = all(r["state"] == "stopped" for r in stopped)
    if as_json:
        emit_json({"action": "stop --all", "ok": ok, "halted": halted, "stopped": stopped})
    else:
        from chimera_ops.cli.render import printable  # errors and reasons may quote a child

        for row in halted:
            if row.get("ok"):
                click.echo(
                    f"{row['component']}: trading halted first,"
                    f" {row.get('cancelled') or 0} open orders cancelled"
                )
            else:
                error = printable(row.get("error"))
                click.echo(f"{row['component']}: could not halt trading first: {error}")
        for r in stopped:
            reason = printable(r.get("reason", ""))
            click.echo(f"{r['component']}: stop done, now {r['state']} ({reason})")
    sys.exit(EXIT_OK if ok else EXIT_PROBLEM)


@click.command()
@click.argument("name", required=False, shell_complete=complete_component)
@click.option("--safe", is_flag=True, help="The safe restart of the stack (runs in the agent).")
@click.option(
    "--component", "components", multiple=True, help="With --safe: only these (repeatable)."
)
@click.option("--no-backup", is_flag=True, help="With --safe: skip the backup step.")
@click.option(
    "--dry-run", is_flag=True, help="Print what would be done (with --safe: preflight and plan)."
)
@click.option(
    "--yes", is_flag=True, help="Do not ask (before cancelling an engine's open orders, or --safe)."
)
@click.option("--timeout", default="10m", show_default=True, help="With --safe: overall limit.")
@_reason
@json_option
@pass_cli
def restart(
    cli_ctx: CliContext,
    name: str | None,
    safe: bool,
    components: tuple[str, ...],
    no_backup: bool,
    dry_run: bool,
    yes: bool,
    timeout: str,
    reason: str | None,
    as_json: bool,
) -> None:
    """Restart a component; or `--safe`: halt trading, drain, back up, stop and start in
    dependency order gated on readiness, settle, resume trading only on a healthy stack.

    Exit 0 when it succeeded (or --dry-run planned it); 1 when it failed (trading stays halted
    if anything was restarted), was refused or aborted; 2 usage error.
    """
    if not safe:
        refuse_flags(["components", "no_backup", "timeout"], "only applies with --safe", as_json)
        if not name:
            fail("which component? give a NAME (or --safe)", EXIT_USAGE, as_json=as_json)
        _act(cli_ctx, name, "restart", reason, as_json, dry_run=dry_run, yes=yes)
    if name:
        fail("--safe restarts the stack: use --component NAME", EXIT_USAGE, as_json=as_json)
    from chimera_ops.units import parse_duration

    cfg = cli_ctx.config()
    for comp in components:
        if comp not in cfg.components:
            unknown_component(comp, list(cfg.components), as_json)
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        fail(f"--timeout: {exc}", EXIT_USAGE, as_json=as_json)
    params = {
        "components": list(components),
        "no_backup": no_backup,
        "dry_run": dry_run,
        "timeout": seconds,
        "reason": reason or "restart --safe",
    }
    from chimera_ops.cli.procedure_cmd import confirm_or_exit, start_and_follow

    if not dry_run:
        confirm_or_exit("Halt trading and restart the stack?", yes, as_json)
    start_and_follow(cli_ctx, "safe-restart", params, as_json)


@click.command("emergency-stop")
@_reason
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_dry_run
@json_option
@pass_cli
def emergency_stop(
    cli_ctx: CliContext, reason: str | None, yes: bool, dry_run: bool, as_json: bool
) -> None:
    """Halt trading now (orders cancelled), capture an incident for each component, stop every
    managed component in reverse order, print the last 100 log lines of each. The agent keeps
    running; nothing restarts until `chimera-ops start --all` (or `start NAME`)."""
    cfg = cli_ctx.config()
    if dry_run:
        from chimera_ops.cli import touch

        order = [n for n in reversed(cfg.start_order()) if cfg.components[n].runtime != "external"]
        client = agent_client(cfg, "cannot plan emergency-stop", as_json)
        found = touch.survey(client, cfg, order, as_json)
        lines = [
            line for n in order if found[n].engine for line in touch.stop_lines(cfg, found[n])[:1]
        ]
        lines.append("capture an incident of each managed component")
        lines.append(f"stop in this order: {', '.join(order) or 'nothing'}")
        lines.append("print the last 100 log lines of each; the agent keeps running")
        lines.append("nothing restarts until `chimera-ops start --all` (or `start NAME`)")
        touch.dry_run(
            {
                "action": "emergency-stop",
                "components": [found[n].to_dict() for n in order],
                "plan": lines,
            },
            as_json,
        )
    from chimera_ops.cli.procedure_cmd import confirm_or_exit, start_and_follow

    confirm_or_exit("Halt trading and stop every managed component NOW?", yes, as_json)
    start_and_follow(cli_ctx, "emergency-stop", {"reason": reason or "emergency stop"}, as_json)
