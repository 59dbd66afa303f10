"""`chimera-ops status`: the truth, fast. Through the agent; without one, what can be seen directly."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    CliContext,
    emit_json,
    json_option,
    pass_cli,
)

PROBLEM_STATES = {"fatal", "unhealthy", "backoff", "exited", "unknown"}


def _tcp_target(probe: Any) -> tuple[str, int] | None:
    if probe is None:
        return None
    if probe.tcp is not None:
        return probe.tcp.host, probe.tcp.port
    if probe.http is not None:
        parts = urlsplit(probe.http.url)
        if parts.hostname:
            return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    return None


def _reachable(target: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(target, timeout=0.5):
            return True
    except OSError:
        return False


def direct_status(cli_ctx: CliContext) -> dict[str, Any]:
    """Status without an agent: the store's last word, live pids, TCP reachability."""
    import psutil

    from chimera_ops.store import Store

    cfg = cli_ctx.config()
    db = cfg.agent.state_dir / "chimera.db"
    store = Store(db, readonly=True) if db.exists() else None
    children = {c.component: c for c in store.children()} if store else {}
    components = []
    for name in cfg.start_order():
        comp = cfg.components[name]
        last = store.events(component=name, limit=50) if store else []
        last_state = next((e for e in reversed(last) if e.to_state), None)
        counters = store.counters(name) if store else None
        pid = None
        record = children.get(name)
        if record:
            try:
                proc = psutil.Process(record.pid)
                if abs(proc.create_time() - record.create_time) < 1.0:
                    pid = record.pid
            except psutil.Error:
                pid = None
        target = _tcp_target(comp.readiness or comp.liveness)
        reachable = _reachable(target) if target else None
        components.append(
            {
                "name": name,
                "runtime": comp.runtime,
                "state": "unknown",
                "last_known_state": last_state.to_state if last_state else None,
                "reason": (
                    f"last known: {last_state.to_state} ({last_state.reason})"
                    if last_state
                    else "never run here"
                ),
                "since": last_state.ts if last_state else None,
                "pid": pid,
                "uptime_s": None,
                "restarts": counters.total_restarts if counters else 0,
                "consecutive_failures": counters.consecutive_failures if counters else 0,
                "last_exit": counters.last_exit if counters else None,
                "ready": None,
                "reachable": reachable,
                "reachable_target": f"{target[0]}:{target[1]}" if target else None,
                "depends_on": list(comp.depends_on),
                "health": {},
                "memory": {"rss_bytes": None},
            }
        )
    if store:
        store.close()
    return {
        "schema": 1,
        "source": "direct",
        "agent": {"running": False, "pid": None, "state_dir": str(cfg.agent.state_dir)},
        "components": components,
    }


def fetch_status(cli_ctx: CliContext) -> dict[str, Any]:
    """From the agent if one answers, else direct.

    The agent is found from `agent.state_dir` alone (config_locate), without validating the
    whole file: the running agent validated its config when it started, and validation costs
    more than the rest of the command. With no agent, the config is validated in full (a broken
    file is exit 2, as for every command).
    """
    from chimera_ops.client import AgentClient, AgentUnavailable
    from chimera_ops.config_locate import state_dir_hint

    hint = state_dir_hint(cli_ctx.config_path)
    if hint is not None:
        try:
            return AgentClient(hint, timeout=10).status()
        except AgentUnavailable:
            pass
    cfg = cli_ctx.config()
    try:
        return AgentClient(cfg.agent.state_dir, timeout=10).status()
    except AgentUnavailable:
        return direct_status(cli_ctx)


def exit_code_for(doc: dict[str, Any]) -> int:
    """1 when the agent is down or any component is in a problem state."""
    if not doc["agent"]["running"]:
        return EXIT_PROBLEM
    if any(c["state"] in PROBLEM_STATES for c in doc["components"]):
        return EXIT_PROBLEM
    return EXIT_OK


def _render(doc: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    from chimera_ops.cli.render import notes, status_table

    agent = doc["agent"]
    if agent["running"]:
        from chimera_ops.units import format_duration

        head = Text(
            f"agent pid {agent['pid']} up {format_duration(agent['uptime_s'])} "
            f"state_dir {agent['state_dir']}",
            style="bold green",
        )
        parts: list[Any] = [head, status_table(doc)]
        parts += [Text(line) for line in notes(doc)]
    else:
        head = Text(
            f"agent NOT running on {agent['state_dir']}: showing what can be seen directly "
            "(store, pids, TCP reachability)",
            style="bold red",
        )
        parts = [head, _direct_table(doc)]
    return Group(*parts)


def _direct_table(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(header_style="bold")
    for column in (
        "component",
        "last known state",
        "pid alive",
        "reachable",
        "restarts",
        "last exit / reason",
    ):
        table.add_column(column, overflow="fold")
    for comp in doc["components"]:
        reach = comp.get("reachable")
        table.add_row(
            comp["name"],
            comp.get("last_known_state") or "-",
            str(comp["pid"]) if comp["pid"] else "no",
            "-"
            if reach is None
            else (f"yes {comp['reachable_target']}" if reach else f"NO {comp['reachable_target']}"),
            str(comp["restarts"]),
            comp.get("last_exit") or comp.get("reason") or "",
        )
    return table


@click.command()
@json_option
@click.option("--watch", "-w", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option(
    "--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch."
)
@pass_cli
def status(cli_ctx: CliContext, as_json: bool, watch: bool, interval: float) -> None:
    """Component, state, pid, uptime, restarts, health, memory, last exit reason.

    Exit 0 when the agent runs and no component is fatal/unhealthy/backoff/exited; 1 otherwise.
    The JSON shape is documented in docs/status-json.md.
    """
    if watch and not as_json:
        from rich.live import Live

        with Live(_render(fetch_status(cli_ctx)), refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_render(fetch_status(cli_ctx)))
            except KeyboardInterrupt:
                pass
        sys.exit(EXIT_OK)
    while True:
        doc = fetch_status(cli_ctx)
        if as_json:
            emit_json(doc)
        else:
            from chimera_ops.cli.common import stdout_console

            stdout_console().print(_render(doc))
        if not watch:
            break
        time.sleep(interval)
    sys.exit(exit_code_for(doc))
