"""`chimera-ops halt-trading|resume-trading|trading-state` as an operator runs them.

Direct mode (no agent) against a real paper engine, and through a real agent that supervises
the paper engine; both against real PostgreSQL and Redis. Every halt/resume lands in the audit log.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chimera_ops.paper.harness import EngineProcess, scratch_database
from chimera_ops.store import Store
from tests.harness import AgentProcess, run_cli, wait_for
from tests.integration.test_trading_client import ENGINE_SCRIPT
from tests.services import free_port

TOKEN_ENV = "CHIMERA_CONTROL_TOKEN"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    # The CLI, the agent and the agent's engine child all inherit it from the test's env.
    value = "tok-" + uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_ENV, value)
    return value


@pytest.fixture
def dsn(postgres_service: str, redis_service: str) -> Iterator[str]:
    with scratch_database(postgres_service) as name:
        yield name


def _trading(port: int) -> dict[str, Any]:
    return {
        "control": {"http": f"http://127.0.0.1:{port}", "token_env": TOKEN_ENV, "timeout": "5s"},
        "drain_timeout": "20s",
    }


def _write_config(directory: Path, components: dict[str, Any]) -> Path:
    path = directory / "chimera-ops.yaml"
    config = {"agent": {"state_dir": str(directory / "var")}, "components": components}
    path.write_text(yaml.safe_dump(config))
    return path


def _audit(state_dir: Path) -> list[dict[str, Any]]:
    store = Store.open_in(state_dir, readonly=True)
    try:
        return store.audit_entries()
    finally:
        store.close()


def _json(result: Any) -> dict[str, Any]:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- direct


@pytest.fixture
def engine(dsn: str, token: str, redis_service: str, short_tmp: Path) -> Iterator[EngineProcess]:
    eng = EngineProcess(
        free_port(),
        dsn,
        redis_url=redis_service,
        args=["--rate", "50"],
        token=token,
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
        log_dir=short_tmp,
    ).start()
    try:
        eng.wait_healthy()
        yield eng
    finally:
        eng.stop()


def test_direct_mode_halt_wait_resume_audited(engine: EngineProcess, short_tmp: Path) -> None:
    config = _write_config(
        short_tmp, {"paper": {"runtime": "external", "trading": _trading(engine.port)}}
    )
    state = run_cli(config, "trading-state")
    assert state.returncode == 0, state.stderr
    assert state.stdout.splitlines()[0].startswith("via direct")
    assert "paper" in state.stdout and "active" in state.stdout

    _wait_open_orders(config)
    halt = run_cli(config, "halt-trading", "--reason", "e2e direct halt", "--wait", "--json")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    doc = _json(halt)
    assert doc["via"] == "direct" and doc["ok"] is True
    [row] = doc["engines"]
    assert row["component"] == "paper" and row["trading"] == "halted"
    assert row["open_orders"] == 0 and row["reason"] == "e2e direct halt"
    # The drain's figures: the paper engine cancels every open order as the halt lands.
    drain = row["drain"]
    assert drain["from"] >= 1 and drain["from"] == drain["cancelled"]
    assert drain["to"] == 0 and drain["drained"] is True and drain["seconds"] >= 0

    resume = run_cli(config, "resume-trading", "--reason", "e2e direct resume")
    assert resume.returncode == 0, resume.stderr
    assert resume.stdout.splitlines()[0].startswith("via direct")
    assert _json(run_cli(config, "trading-state", "--json"))["engines"][0]["trading"] == "active"

    entries = [e for e in _audit(short_tmp / "var") if e["command"].endswith("-trading")]
    assert [(e["command"], e["reason"]) for e in entries] == [
        ("halt-trading", "e2e direct halt"),
        ("resume-trading", "e2e direct resume"),
    ]
    assert entries[0]["args"]["via"] == "direct" and entries[0]["result"].startswith("ok")
    assert entries[0]["user"] and entries[0]["duration_s"] is not None


def _wait_open_orders(config: Path) -> int:
    """Wait until the engine has open orders, so the drain a halt reports has something in it."""

    def count() -> int:
        return int(_json(run_cli(config, "trading-state", "--json"))["engines"][0]["open_orders"])

    return int(wait_for(count, timeout=30, what="open orders on the paper engine"))


DRAIN_LINE = re.compile(r"^paper: (\d+) open orders? -> 0 in \d+(\.\d s| ms)$", re.MULTILINE)


def test_halt_wait_prints_the_drain(engine: EngineProcess, short_tmp: Path) -> None:
    """As the operator reads it: `paper: 18 open orders -> 0 in 0.4 s` under the table."""
    config = _write_config(
        short_tmp, {"paper": {"runtime": "external", "trading": _trading(engine.port)}}
    )
    _wait_open_orders(config)
    halt = run_cli(config, "halt-trading", "--reason", "drain shown", "--wait")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    match = DRAIN_LINE.search(halt.stdout)
    assert match, halt.stdout
    assert int(match.group(1)) >= 1
    # Without --wait nothing was waited for, so no drain is claimed.
    again = run_cli(config, "halt-trading", "--reason", "no wait")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not re.search(r"^paper: .* -> ", again.stdout, re.MULTILINE), again.stdout
    assert "drain" not in _json(run_cli(config, "halt-trading", "--json"))["engines"][0]


def test_direct_mode_wrong_token_fails_and_says_what_to_do(
    engine: EngineProcess, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write_config(
        short_tmp, {"paper": {"runtime": "external", "trading": _trading(engine.port)}}
    )
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    halt = run_cli(config, "halt-trading", "--reason", "bad token")
    assert halt.returncode == 1
    assert "401" in halt.stderr and "STILL BE TRADING" in halt.stderr
    assert "not-the-token" not in halt.stdout + halt.stderr
    assert engine.get("/control/state").json()["trading"] == "active"
    [entry] = [e for e in _audit(short_tmp / "var") if e["command"] == "halt-trading"]
    assert entry["result"].startswith("FAILED") and entry["reason"] == "bad token"


def test_engine_down_exit_1_with_next_step(short_tmp: Path, token: str) -> None:
    port = free_port()
    config = _write_config(short_tmp, {"paper": {"runtime": "external", "trading": _trading(port)}})
    result = run_cli(config, "trading-state")
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "unreachable" in result.stderr
    assert "chimera-ops status" in result.stderr
    doc = _json(run_cli(config, "halt-trading", "--json"))
    assert doc["ok"] is False and doc["via"] == "direct"
    assert "unreachable" in doc["engines"][0]["error"]


def test_unknown_component_and_no_engine_are_usage_errors(short_tmp: Path) -> None:
    config = _write_config(
        short_tmp,
        {
            "db": {"runtime": "external"},
            "paper": {"runtime": "external", "trading": _trading(free_port())},
        },
    )
    unknown = run_cli(config, "halt-trading", "--component", "nope")
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr and "db, paper" in unknown.stderr
    not_engine = run_cli(config, "resume-trading", "--component", "db")
    assert not_engine.returncode == 2 and "not a trading engine" in not_engine.stderr

    bare = _write_config(short_tmp, {"db": {"runtime": "external"}})
    none = run_cli(bare, "trading-state", "--json")
    assert none.returncode == 2
    assert "no trading engine" in _json(none)["error"]


# --------------------------------------------------------------------------- through the agent


def test_through_the_agent_halt_resume_audited_with_user(
    agent_factory: Callable[[dict[str, Any]], AgentProcess],
    dsn: str,
    token: str,
    redis_service: str,
) -> None:
    port = free_port()
    paper = {
        "runtime": "process",
        "command": [
            sys.executable,
            "-m",
            "chimera_ops.paper",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rate",
            "50",
            "--redis-prefix",
            f"test-{uuid.uuid4().hex[:8]}",
        ],
        "env": {"CHIMERA_PG_DSN": dsn, "CHIMERA_REDIS_URL": redis_service},
        "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.2s"},
        "trading": _trading(port),
    }
    metrics_port = free_port()
    agent = agent_factory(
        {
            "agent": {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
            "components": {"paper": paper},
        }
    ).start()
    agent.wait_state("paper", "running", timeout=60)

    # The loopback TCP listener serves reads, but halting there needs the agent's API token.
    tcp = f"http://127.0.0.1:{metrics_port}/v1/trading"
    assert wait_for(lambda: httpx.get(tcp, timeout=5).status_code == 200, what="TCP listener")
    refused = httpx.post(f"{tcp}/halt", json={"reason": "no token"}, timeout=5)
    assert refused.status_code == 401
    assert httpx.get(tcp, timeout=5).json()["engines"][0]["trading"] == "active"

    state = agent.cli("trading-state")
    assert state.returncode == 0, state.stdout + state.stderr
    assert state.stdout.splitlines()[0] == "via agent"

    halt = agent.cli("halt-trading", "--reason", "e2e agent halt", "--wait", "--json")
    assert halt.returncode == 0, halt.stdout + halt.stderr
    doc = _json(halt)
    assert doc["via"] == "agent" and doc["ok"] is True
    assert doc["engines"][0]["trading"] == "halted" and doc["engines"][0]["open_orders"] == 0
    # The agent runs the same drain: its answer carries the figures too.
    assert doc["engines"][0]["drain"]["to"] == 0 and doc["engines"][0]["drain"]["drained"]

    resume = agent.cli("resume-trading", "--component", "paper", "--reason", "e2e agent resume")
    assert resume.returncode == 0, resume.stdout + resume.stderr
    assert resume.stdout.splitlines()[0] == "via agent"
    after = _json(agent.cli("trading-state", "--json"))
    assert after["via"] == "agent" and after["engines"][0]["trading"] == "active"

    unknown = agent.cli("halt-trading", "--component", "nope")
    assert unknown.returncode == 2 and "paper" in unknown.stderr

    entries = [e for e in _audit(agent.state_dir) if e["command"].endswith("-trading")]
    assert [(e["command"], e["reason"], e["args"]["via"]) for e in entries] == [
        ("halt-trading", "e2e agent halt", "agent"),
        ("resume-trading", "e2e agent resume", "agent"),
    ]
    # Who: the CLI's user, sent in the body, not the agent's.
    assert {e["user"] for e in entries} == {getpass.getuser()}
    assert entries[0]["args"]["wait"] is True and entries[0]["result"].startswith("ok")


def test_wait_drain_timeout_exit_1_with_state_shown(short_tmp: Path) -> None:
    # A command-transport engine whose open orders never clear (stuck at the exchange).
    script = short_tmp / "engine_ctl.py"
    script.write_text(ENGINE_SCRIPT)
    state = short_tmp / "state.json"
    state.write_text(json.dumps({"trading": "active", "open_orders": 3, "sticky": True}))
    argv = {op: [sys.executable, str(script), op, str(state)] for op in ("state", "halt", "resume")}
    config = _write_config(
        short_tmp,
        {
            "stuck": {
                "runtime": "external",
                "trading": {"control": {"command": argv}, "drain_timeout": "0.5s"},
            }
        },
    )
    result = run_cli(config, "halt-trading", "--wait", "--reason", "drain test")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("via direct")
    assert "halted" in result.stdout and "3" in result.stdout
    assert "3 open order" in result.stderr and "STILL BE TRADING" not in result.stderr
    # The drain that did not happen is said as plainly as one that did.
    assert re.search(r"^stuck: 3 open orders -> 3 after \d", result.stdout, re.MULTILINE)
    assert "(drain timeout)" in result.stdout
