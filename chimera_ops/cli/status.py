"""`chimera-ops status`: the truth, fast. Through the agent; without one, what can be seen directly."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
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
    unknown_component,
)
from chimera_ops.cli.complete import complete_component

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


def _log_file(state_dir: str | os.PathLike[str], name: str) -> str | None:
    """The component's current log file where the agent writes it, if it exists."""
    from chimera_ops.agent.paths import log_dir

    path = log_dir(Path(state_dir)) / f"{name}.log"
    return str(path) if path.exists() else None


NOT_SUPERVISED = "not supervised now (no agent)"


def _probe_externals(cfg: Any) -> dict[str, dict[str, Any]]:
    """Run each external component's readiness (else liveness) probe once, concurrently.

    The agent never starts or stops an external service, so the store's last word about one
    ("stopped": no longer watched when the agent ended) says nothing about the service. What
    its own probe says now does. A component without a probe is absent from the answer.
    """
    import asyncio

    from chimera_ops.probes.factory import build_probe

    probes = {}
    for name, comp in cfg.components.items():
        role = "readiness" if comp.readiness is not None else "liveness"
        spec = getattr(comp, role)
        if comp.runtime == "external" and spec is not None:
            probes[name] = (role, build_probe(spec, env={**os.environ, **comp.env}))
    if not probes:
        return {}

    async def run_all() -> list[Any]:
        return list(await asyncio.gather(*(probe.run() for _, probe in probes.values())))

    out = {}
    for (name, (role, probe)), result in zip(probes.items(), asyncio.run(run_all()), strict=True):
        out[name] = {
            "role": role,
            "kind": probe.kind,
            "target": probe.describe(),
            "ok": result.ok,
            "reason": result.reason,
            "at": result.at,
        }
    return out


def _direct_reason(last_state: str, reason: str | None) -> str:
    """The no-agent reason: the store's last word, minus any restart the dead agent promised."""
    from chimera_ops.cli.render import strip_restart_promise

    last = strip_restart_promise(reason)
    return f"{NOT_SUPERVISED}; last known {last_state}" + (f": {last}" if last else "")


def _external_view(runtime: str, probe: dict[str, Any] | None) -> dict[str, Any]:
    """For an external component: its probe's answer now (`probe`, `observed` up|down|null)
    and a reason from it, replacing the store's "stopped" (the agent never stopped it)."""
    if runtime != "external":
        return {}
    if probe is None:
        return {
            "probe": None,
            "observed": None,
            "reason": f"{NOT_SUPERVISED}; external, no probe configured: state not known",
        }
    verdict = "up" if probe["ok"] else "down"
    return {
        "probe": probe,
        "observed": verdict,
        "reason": f"{NOT_SUPERVISED}; external, {probe['role']} probe now: {verdict} "
        f"({probe['reason']})",
    }


def direct_status(cli_ctx: CliContext) -> dict[str, Any]:
    """Status without an agent: the store's last word, live pids, TCP reachability.

    Nothing here may promise what only an agent does: a stored "restarting in 1s" is dropped.
    """
    import psutil

    from chimera_ops.cli.render import strip_restart_promise
    from chimera_ops.store import Store

    cfg = cli_ctx.config()
    db = cfg.agent.state_dir / "chimera.db"
    store = Store(db, readonly=True) if db.exists() else None
    children = {c.component: c for c in store.children()} if store else {}
    probed = _probe_externals(cfg)
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
                "reason": _direct_reason(str(last_state.to_state), last_state.reason)
                if last_state
                else f"{NOT_SUPERVISED}; never run here",
                "since": last_state.ts if last_state else None,
                "pid": pid,
                "uptime_s": None,
                "restarts": counters.total_restarts if counters else 0,
                "consecutive_failures": counters.consecutive_failures if counters else 0,
                "last_exit": strip_restart_promise(counters.last_exit) or None
                if counters
                else None,
                # Read with getattr: the store's counters gain this field in the same issue.
                "last_exit_at": getattr(counters, "last_exit_at", None) if counters else None,
                "log_file": _log_file(cfg.agent.state_dir, name),
                "ready": None,
                "reachable": reachable,
                "reachable_target": f"{target[0]}:{target[1]}" if target else None,
                "depends_on": list(comp.depends_on),
                "health": {},
                "memory": {"rss_bytes": None},
                **_external_view(comp.runtime, probed.get(name)),
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


def _render(doc: dict[str, Any], width: int, probe_targets: ProbeTargets | None = None) -> Any:
    """The whole human view; `probe_targets` set means the detailed view of each component."""
    from rich.console import Group
    from rich.text import Text

    from chimera_ops.cli.render import (
        component_detail,
        direct_listing,
        notes,
        plain,
        render_listing,
        status_listing,
    )

    agent = doc["agent"]
    if agent["running"]:
        from chimera_ops.units import format_duration

        head = Text(
            f"agent pid {agent['pid']} up {format_duration(agent['uptime_s'])} "
            f"state_dir {agent['state_dir']}",
            style="bold green",
        )
    else:
        head = Text(
            f"agent NOT running on {agent['state_dir']}: showing what can be seen directly "
            "(store, pids, TCP reachability); nothing is supervised or restarted",
            style="bold red",
        )
    parts: list[Any] = [head]
    # A procedure the agent died in (trading may be left halted) or one running now: first.
    procedures = doc.get("procedures") or {}
    for job in procedures.get("interrupted") or []:
        parts.append(plain(f"INTERRUPTED {job['summary']}", style="bold red"))
    running = procedures.get("running")
    if running:
        parts.append(
            Text(
                f"procedure {running['id']} running (step {running.get('step') or 'starting'}): "
                f"chimera-ops procedure show {running['id']}",
                style="bold yellow",
            )
        )
    # Fatal first: nothing restarts it until an operator acts (also after an agent restart).
    for comp in doc["components"]:
        if comp.get("state") == "fatal":
            parts.append(plain(fatal_banner(comp), style="bold red"))
    if probe_targets is not None:
        for comp in doc["components"]:
            if "log_file" not in comp and comp.get("runtime") == "process":
                comp = {**comp, "log_file": _log_file(agent["state_dir"], comp["name"])}
            parts += [Text(""), component_detail(comp, probe_targets.get(comp["name"]))]
        return Group(*parts)
    listing = status_listing(doc) if agent["running"] else direct_listing(doc)
    parts.append(render_listing(listing, width))
    parts += [plain(line, multiline=True) for line in notes(doc, width)]
    return Group(*parts)


def fatal_banner(comp: dict[str, Any], now: float | None = None) -> str:
    """`FATAL engine since 5m ago: <reason>; `chimera-ops start engine` clears it`."""
    from chimera_ops.units import format_duration

    since = comp.get("fatal_since") or comp.get("since")
    age = f" since {format_duration((now or time.time()) - since)} ago" if since else ""
    name = comp["name"]
    return f"FATAL {name}{age}: {comp.get('reason', '')}; `chimera-ops start {name}` clears it"


ProbeTargets = dict[str, dict[str, str]]


def probe_targets(cli_ctx: CliContext, names: list[str]) -> ProbeTargets:
    """{component: {role: 'kind target'}} from the config, for the detailed view.

    The status document says how each probe did, not what it probes. A config that no longer
    validates only costs the targets: the running agent's answer is still shown.
    """
    from chimera_ops.config import ConfigError, load_config
    from chimera_ops.probes.factory import build_probe

    try:
        cfg = cli_ctx._config or load_config(cli_ctx.config_path)
    except ConfigError:
        return {}
    out: ProbeTargets = {}
    for name in names:
        comp = cfg.components.get(name)
        if comp is None:
            continue
        roles = {role: getattr(comp, role) for role in ("startup", "readiness", "liveness")}
        out[name] = {
            role: f"{probe.kind} {build_probe(probe, env={**os.environ, **comp.env}).describe()}"
            for role, probe in roles.items()
            if probe is not None
        }
    return out


def select(doc: dict[str, Any], names: tuple[str, ...], as_json: bool) -> dict[str, Any]:
    """The document with only the named components (in the order asked); unknown -> exit 2."""
    if not names:
        return doc
    by_name = {c["name"]: c for c in doc["components"]}
    for name in names:
        if name not in by_name:
            unknown_component(name, list(by_name), as_json)
    return {**doc, "components": [by_name[n] for n in dict.fromkeys(names)]}


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...", shell_complete=complete_component)
@json_option
@click.option("--watch", "-w", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option(
    "--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch."
)
@pass_cli
def status(
    cli_ctx: CliContext, names: tuple[str, ...], as_json: bool, watch: bool, interval: float
) -> None:
    """Component, state, pid, uptime, restarts, health, memory, reason and last exit.

    With NAMEs, each named component in detail (probes, monitors, alerts, trading, log file);
    `--json` then holds only those components. Exit 0 when the agent runs and no shown component
    is fatal/unhealthy/backoff/exited; 1 otherwise. The JSON shape is in docs/status-json.md.
    """
    from chimera_ops.cli.common import refuse_flags, stdout_console

    if not watch:
        refuse_flags(["interval"], "only applies with --watch", as_json)
    console = stdout_console()
    targets: ProbeTargets | None = None

    def fetch() -> dict[str, Any]:
        nonlocal targets
        doc = select(fetch_status(cli_ctx), names, as_json)
        if names and targets is None and not as_json:
            targets = probe_targets(cli_ctx, list(names))
        return doc

    if watch and not as_json:
        from rich.live import Live

        with Live(
            _render(fetch(), console.width, targets), console=console, refresh_per_second=4
        ) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_render(fetch(), console.width, targets))
            except KeyboardInterrupt:
                pass
        sys.exit(EXIT_OK)
    while True:
        doc = fetch()
        if as_json:
            emit_json(doc)
        else:
            # crop=False: a line that is wider than the console (a very long name) runs on
            # instead of being cut; a cut name is one grep cannot find.
            console.print(_render(doc, console.width, targets), crop=False)
        if not watch:
            break
        time.sleep(interval)
    sys.exit(exit_code_for(doc))
