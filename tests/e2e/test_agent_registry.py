"""Issue 8 item 5: the CLI finds the running agent. Real agents register in a runtime dir
(CHIMERA_OPS_RUNTIME_DIR, a temp dir here); a real CLI run from a dir with no config and no
CHIMERA_OPS_CONFIG uses the one agent, lists several, and ignores (and removes) stale entries."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import AgentProcess

SLEEPER = {"components": {"sleeper": {"runtime": "process", "command": ["sleep", "1000"]}}}
ENTRY_KEYS = {"pid", "socket", "config", "state_dir", "started_at"}


@pytest.fixture
def runtime_dir(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The registry of this test; agents started from here inherit it."""
    path = short_tmp / "run"
    monkeypatch.setenv("CHIMERA_OPS_RUNTIME_DIR", str(path))
    return path


@pytest.fixture
def agents(short_tmp: Path, runtime_dir: Path) -> Iterator[Callable[[str], AgentProcess]]:
    """Start agents, each with its own config and state dir; all stopped afterwards."""
    started: list[AgentProcess] = []

    def start(name: str) -> AgentProcess:
        directory = short_tmp / name
        directory.mkdir()
        agent = AgentProcess(directory, json.loads(json.dumps(SLEEPER)))
        started.append(agent)
        agent.start()
        agent.wait_state("sleeper", "running")
        return agent

    yield start
    for agent in started:
        agent.stop()


def bare_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`chimera-ops ARGS` as a user in a dir without a config, with no CHIMERA_OPS_CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    env["CHIMERA_OPS_RUNTIME_DIR"] = os.environ["CHIMERA_OPS_RUNTIME_DIR"]
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(cwd),
    )


@pytest.fixture
def elsewhere(short_tmp: Path) -> Path:
    path = short_tmp / "elsewhere"
    path.mkdir()
    return path


def write_entry(runtime_dir: Path, name: str, **entry: Any) -> Path:
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    path = runtime_dir / f"{name}.json"
    path.write_text(json.dumps(entry))
    path.chmod(0o600)
    return path


def test_status_with_no_config_uses_the_one_running_agent(agents, runtime_dir, elsewhere):
    agent = agents("one")
    assert agent.proc is not None
    pid = agent.proc.pid
    (entry_file,) = runtime_dir.glob("*.json")
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_file.stat().st_mode) == 0o600
    entry = json.loads(entry_file.read_text())
    assert set(entry) == ENTRY_KEYS
    assert entry["pid"] == pid and entry["config"] == str(agent.config_path)

    result = bare_cli(elsewhere, "status")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"using the running agent's config {agent.config_path} (pid {pid})"
    )
    assert f"agent pid {pid}" in result.stdout and "sleeper" in result.stdout
    as_json = bare_cli(elsewhere, "status", "--json")
    doc = json.loads(as_json.stdout)
    assert doc["source"] == "agent" and doc["agent"]["pid"] == pid

    assert agent.stop() == 0
    assert not entry_file.exists(), "a clean stop removes the entry"
    gone = bare_cli(elsewhere, "status")
    assert gone.returncode == 2
    assert "no config file here" in gone.stderr
    assert f"no running agent was found (looked in {runtime_dir})" in gone.stderr


def test_several_agents_are_listed_and_the_cli_asks_for_config(agents, elsewhere):
    first, second = agents("a"), agents("b")
    result = bare_cli(elsewhere, "status")
    assert result.returncode == 2
    assert "2 chimera-ops agents are running" in result.stderr
    for agent in (first, second):
        assert agent.proc is not None
        assert (
            f"pid {agent.proc.pid}  config {agent.config_path}  state_dir {agent.state_dir}"
        ) in result.stderr
    assert "--config" in result.stderr
    assert result.stdout == ""


def test_stale_entries_are_ignored_and_removed(agents, runtime_dir, elsewhere, short_tmp):
    other_config = short_tmp / "other.yaml"
    other_config.write_text(json.dumps(SLEEPER))
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = psutil.Process()
    fields = {"socket": "/nonexistent.sock", "config": str(other_config), "state_dir": "/x"}
    died = write_entry(
        runtime_dir, "died", pid=dead.pid, started_at=me.create_time(), **fields
    )  # pid gone (kill -9 of the agent)
    reused = write_entry(
        runtime_dir, "reused", pid=me.pid, started_at=me.create_time() - 3600, **fields
    )  # pid alive, but another process than the agent that registered

    agent = agents("live")
    assert agent.proc is not None
    result = bare_cli(elsewhere, "status")
    assert result.returncode == 0, result.stderr
    assert f"(pid {agent.proc.pid})" in result.stderr and str(other_config) not in result.stderr
    assert not died.exists() and not reused.exists()


def test_a_registry_others_can_write_to_is_not_trusted(agents, runtime_dir, elsewhere):
    agents("one")
    runtime_dir.chmod(0o777)  # anyone could plant an entry pointing at their own config
    result = bare_cli(elsewhere, "status")
    assert result.returncode == 2
    assert "using the running agent" not in result.stderr
    assert "no running agent was found" in result.stderr
    runtime_dir.chmod(0o700)
