"""Operator commands that touch a trading engine, through the CLI on the demo stack with the
paper engine trading (open orders > 0): dry runs change nothing, a stop or restart that cancels
orders needs --yes off a terminal and says what it cancelled, a flag that does not apply is
refused, `stop --all` halts engines before it stops anything, the agent's own shutdown halts
engines first, and the procedure journal reads without an agent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

from chimera_ops.store import Store
from tests.harness import REPO, AgentProcess, child, wait_for
from tests.procedures.conftest import run_json, stack_config
from tests.services import free_port


def _cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on a pipe: stdin is not a terminal (as in cron, CI or `| tee`)."""
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(agent.config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
        cwd=str(REPO),
    )


def _open_orders(agent: AgentProcess) -> int:
    """Wait until the paper engine has open orders; their count then."""

    def count() -> int:
        _, doc = run_json(agent, "trading-state")
        row = doc["engines"][0]
        return int(row["open_orders"]) if row["trading"] == "active" else 0

    return int(wait_for(count, timeout=30, what="open orders on the paper engine"))


def _stored_events(agent: AgentProcess) -> list[dict[str, Any]]:
    store = Store.open_in(agent.state_dir, readonly=True)
    try:
        return [e.to_dict() for e in store.events_page(1000, None, None, None, 0)[0]]
    finally:
        store.close()


def _halt_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["kind"] == "trading" and (e.get("data") or {}).get("action") == "halt"
    ]


def test_dry_runs_leave_the_engine_and_its_orders_alone(demo) -> None:
    agent = demo()
    pid = agent.component("engine")["pid"]
    _open_orders(agent)
    for args in (
        ("restart", "engine", "--dry-run"),
        ("stop", "engine", "--dry-run"),
        ("start", "engine", "--dry-run"),
        ("stop", "--all", "--dry-run"),
        ("start", "--all", "--dry-run"),
        ("emergency-stop", "--dry-run"),
        ("halt-trading", "--dry-run"),
        ("resume-trading", "--dry-run"),
    ):
        code, doc = run_json(agent, *args)
        assert code == 0, (args, doc)
        assert doc["dry_run"] is True and doc["plan"], (args, doc)
    # The plan says what a restart would do to trading, with the count it read.
    result = _cli(agent, "restart", "engine", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "nothing is changed" in result.stdout
    assert "halt trading on engine (now active): cancels" in result.stdout
    assert "SIGTERM to its process tree, 10 s grace, then SIGKILL" in result.stdout
    # Nothing happened: same process, still trading with open orders, no halt, no stop.
    assert agent.component("engine")["pid"] == pid
    assert _open_orders(agent) > 0
    events = agent.events("engine")
    assert not _halt_events(events)
    assert not [e for e in events if e["to_state"] == "stopping"]


def test_plain_restart_on_a_pipe_needs_yes(demo) -> None:
    agent = demo()
    pid = agent.component("engine")["pid"]
    _open_orders(agent)
    result = _cli(agent, "restart", "engine")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "restart engine: halts trading on engine, cancels" in result.stderr
    assert "open orders" in result.stderr and "restart --safe" in result.stderr
    assert "add --yes to restart engine anyway" in result.stderr
    assert agent.component("engine")["pid"] == pid
    assert _open_orders(agent) > 0
    # Same for a stop, in JSON too.
    code, doc = run_json(agent, "stop", "engine")
    assert code == 2 and "cancels" in doc["error"], doc
    assert agent.component("engine")["pid"] == pid


def test_restart_with_yes_halts_first_says_what_it_cancelled_and_resumes(demo) -> None:
    agent = demo()
    old_pid = agent.component("engine")["pid"]
    _open_orders(agent)
    code, doc = run_json(agent, "restart", "engine", "--yes")
    assert code == 0, doc
    assert doc["state"] == "running"
    trading = doc["trading"]
    assert trading["halted"] is True and trading["was"] == "active"
    assert trading["cancelled"] >= 1
    assert trading["resumed"] is True
    assert agent.component("engine")["pid"] != old_pid
    [halt] = _halt_events(agent.events("engine"))
    assert halt["data"]["cancelled"] == trading["cancelled"] and halt["data"]["user"] == "operator"
    resumes = [
        e for e in agent.events("engine") if e["kind"] == "trading" and e["to_state"] == "active"
    ]
    assert len(resumes) == 1 and halt["ts"] <= resumes[0]["ts"]
    stopping = [e for e in agent.events("engine") if e["to_state"] == "stopping"]
    assert stopping and halt["ts"] <= stopping[-1]["ts"]
    # Text output says it in words; trading is active again on the new process.
    _open_orders(agent)
    text = _cli(agent, "restart", "engine", "--yes")
    assert text.returncode == 0, text.stderr
    # In the order it happened: the halt and what it cancelled, the restart, the resume.
    lines = text.stdout.splitlines()
    assert re.fullmatch(r"engine: trading halted first, \d+ open orders cancelled", lines[0])
    assert lines[1].startswith("engine: restart done, now running")
    assert lines[2] == "engine: trading resumed (it is running again)"


def test_a_flag_that_does_not_apply_is_refused(demo) -> None:
    agent = demo()
    pid = agent.component("engine")["pid"]
    for args, flag in (
        (("restart", "engine", "--no-backup"), "--no-backup"),
        (("restart", "engine", "--timeout", "5m"), "--timeout"),
        (("restart", "engine", "--component", "engine"), "--component"),
    ):
        result = _cli(agent, *args, "--yes")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert flag in result.stderr and "only applies with --safe" in result.stderr
    assert agent.component("engine")["pid"] == pid


def test_stop_all_halts_engines_first_then_stops_in_reverse_order(
    agent_factory, engine_dsn: str, redis_service: str, short_tmp
) -> None:
    config = stack_config(short_tmp, engine_dsn, redis_service, free_port())
    port = free_port()
    # A collector that depends on the engine: reverse order stops it first, the engine after.
    config["components"]["collector"] = {
        "runtime": "process",
        "command": child("http", port),
        "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
        "depends_on": ["engine"],
        "stop": {"grace": "2s"},
    }
    agent = agent_factory(config).start()
    agent.wait_state("engine", "running", timeout=60)
    agent.wait_state("collector", "running", timeout=30)
    _open_orders(agent)
    refused = _cli(agent, "stop", "--all")
    assert refused.returncode == 2 and "cancels" in refused.stderr, refused.stderr
    assert agent.component("collector")["state"] == "running"
    result = _cli(agent, "stop", "--all", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("engine: trading halted first, "), lines
    assert lines[1].startswith("collector: stop done, now stopped"), lines
    assert lines[2].startswith("engine: stop done, now stopped"), lines
    stops = {
        e["component"]: e["ts"]
        for e in _stored_events(agent)
        if e["to_state"] == "stopping" and e["component"] in ("engine", "collector")
    }
    store = Store.open_in(agent.state_dir, readonly=True)
    try:
        [halt] = [
            e
            for e in store.audit_entries()
            if e["command"] == "halt-trading" and e["reason"] == "stop --all"
        ]
    finally:
        store.close()
    assert halt["result"].startswith("ok") and halt["args"]["components"] == ["engine"]
    assert halt["ts"] <= stops["collector"] <= stops["engine"]
    # External components are watched, never stopped; the agent keeps running.
    assert agent.component("postgres")["state"] == "running"


def test_agent_shutdown_halts_engines_first_and_records_the_count(demo) -> None:
    agent = demo()
    _open_orders(agent)
    assert agent.stop(signal.SIGTERM) == 0
    events = _stored_events(agent)
    halts = _halt_events(events)
    assert len(halts) == 1, halts
    [halt] = halts
    assert halt["component"] == "engine" and halt["to_state"] == "halted"
    assert halt["data"]["ok"] is True and halt["data"]["user"] == "the agent"
    assert halt["data"]["cancelled"] >= 1
    [orders] = [e for e in events if e["kind"] == "orders_cancelled"]
    assert orders["data"]["count"] == halt["data"]["cancelled"]
    stopping = [e for e in events if e["component"] == "engine" and e["to_state"] == "stopping"]
    assert stopping and halt["ts"] <= stopping[-1]["ts"]
    cancelled = halt["data"]["cancelled"]
    assert f"engine: trading halted first, {cancelled} open orders cancelled" in agent.output()


def test_procedure_list_and_show_without_an_agent(demo) -> None:
    agent = demo()
    code, planned = run_json(agent, "restart", "--safe", "--dry-run")
    assert code == 0 and planned["state"] == "planned"
    agent.stop()
    assert not (agent.state_dir / "agent.sock").exists()
    listing = _cli(agent, "procedure", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [p["id"] for p in json.loads(listing.stdout)["procedures"]] == [planned["id"]]
    assert "reading its store (read-only)" in listing.stderr
    shown = _cli(agent, "procedure", "show", planned["id"])
    assert shown.returncode == 0, shown.stderr
    assert planned["id"] in shown.stdout and "safe-restart planned" in shown.stdout
    missing = _cli(agent, "procedure", "show", "nope")
    assert missing.returncode == 2 and planned["id"] in missing.stderr


def test_flags_that_do_not_apply_are_refused_on_other_commands(short_tmp) -> None:
    import yaml

    from tests.harness import run_cli

    config = short_tmp / "chimera-ops.yaml"
    web = {"runtime": "process", "command": child("http", free_port())}
    config.write_text(
        yaml.safe_dump({"agent": {"state_dir": str(short_tmp / "var")}, "components": {"web": web}})
    )
    for args, flag, needs in (
        (("status", "--interval", "1"), "--interval", "--watch"),
        (("maintenance", "weekly", "--yes"), "--yes", "--fix"),
    ):
        result = run_cli(config, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert f"{flag} only applies with {needs}" in result.stderr


def test_on_a_terminal_the_restart_asks_and_no_changes_nothing(demo) -> None:
    import pty

    agent = demo()
    pid = agent.component("engine")["pid"]
    _open_orders(agent)
    master, slave = pty.openpty()  # stdin is a terminal: the command asks instead of refusing
    try:
        os.write(master, b"n\n")
        result = subprocess.run(
            [sys.executable, "-m", "chimera_ops", "--config", str(agent.config_path)]
            + ["restart", "engine"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=slave,
            env={**os.environ, "COLUMNS": "200"},
            cwd=str(REPO),
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "halts trading on engine, cancels" in result.stderr
    assert (
        "restart engine now? [y/N]" in result.stderr
        and "cancelled; nothing was changed" in result.stderr
    )
    assert agent.component("engine")["pid"] == pid
    assert not _halt_events(agent.events("engine"))
