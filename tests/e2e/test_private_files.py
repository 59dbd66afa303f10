"""Issue 8 item 4: what may hold secrets is private. A real agent, a real frozen child killed by
liveness (an incident), real file modes: the state dir and every folder in it 0700, every file
0600; modes an older version left open are tightened at start-up with one note; the managed
children still create their own files with the operator's umask."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AgentProcess, child, wait_for
from tests.services import free_port


@pytest.fixture
def operator_umask() -> Iterator[int]:
    """The umask the agent is started with (inherited), as in an operator's shell."""
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def open_entries(root: Path) -> dict[str, str]:
    """Everything under root (root included) that group or others can use: path -> mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if mode(path) & 0o077:
            found[str(path)] = oct(mode(path))
    return found


def test_state_dir_logs_store_and_incidents_are_private(agent_factory, operator_umask):
    port = free_port()
    health = f"http://127.0.0.1:{port}/health"
    liveness = {"http": health, "period": "0.3s", "timeout": "0.5s", "failure_threshold": 2}
    engine = {"runtime": "process", "command": child("http", port), "liveness": liveness}
    agent = agent_factory({"components": {"engine": {**engine, "stop": {"grace": "1s"}}}})
    agent.start()
    agent.wait_state("engine", "running")
    # Frozen once its liveness probe has passed: inside the start grace a freeze waits for
    # start_period (30 s) before it counts.
    frozen = wait_for(
        lambda: (c := agent.component("engine"))["health"]["liveness"]["status"] == "passing" and c,
        what="liveness passing",
    )
    os.kill(frozen["pid"], signal.SIGSTOP)  # liveness kills it, capturing an incident first
    wait_for(
        lambda: any(e["kind"] == "incident" for e in agent.events("engine")),
        timeout=30,
        what="an incident for the frozen engine",
    )

    state = agent.state_dir
    assert mode(state) == 0o700
    assert mode(state / "chimera.db") == 0o600
    for sidecar in ("chimera.db-wal", "chimera.db-shm"):
        if (state / sidecar).exists():  # they exist while the agent has the store open
            assert mode(state / sidecar) == 0o600, sidecar
    log = state / "logs" / "engine.log"
    assert log.stat().st_size > 0, "the agent wrote to the component log"
    assert mode(state / "logs") == 0o700 and mode(log) == 0o600
    assert mode(state / "incidents") == 0o700
    incidents = [p for p in (state / "incidents").iterdir() if not p.name.startswith(".")]
    assert len(incidents) == 1
    assert mode(incidents[0]) == 0o700
    files = sorted(p.name for p in incidents[0].iterdir())
    assert {"incident.json", "logs.txt", "probes.json", "processes.json"} <= set(files)
    assert {name: mode(incidents[0] / name) for name in files} == dict.fromkeys(files, 0o600)
    assert open_entries(state) == {}


def test_open_modes_left_by_an_older_version_are_tightened_with_one_note(
    agent_factory, operator_umask
):
    config = {"components": {"sleeper": {"runtime": "process", "command": ["sleep", "1000"]}}}
    agent = agent_factory(config).start()
    agent.wait_state("sleeper", "running")
    assert not [e for e in agent.events() if e["kind"] == "permissions"], "nothing to tighten"
    assert agent.stop() == 0
    # What an older version left: a 0755 state dir and logs dir, 0644 files.
    loosened = 0
    for path in [agent.state_dir, *agent.state_dir.rglob("*")]:
        if path.is_symlink() or path.is_socket():
            continue
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        loosened += 1
    assert loosened >= 4  # state dir, agent.pid, chimera.db, logs/, logs/sleeper.log

    agent.start()
    agent.wait_state("sleeper", "running")
    assert open_entries(agent.state_dir) == {}
    notes = [e for e in agent.events() if e["kind"] == "permissions"]
    assert len(notes) == 1, notes
    assert notes[0]["data"] == {"tightened": loosened}
    assert f"made {loosened} files and folders in {agent.state_dir} private" in notes[0]["reason"]
    assert f"made {loosened} files and folders" in agent.output()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_children_create_files_with_the_operators_umask(short_tmp: Path, umask: int):
    made = short_tmp / "made-by-child"
    agent = AgentProcess(
        short_tmp,
        {
            "components": {
                "toucher": {
                    "runtime": "process",
                    "command": ["sh", "-c", f"touch {made} && exec sleep 1000"],
                }
            }
        },
    )
    old = os.umask(umask)
    try:
        agent.start()
    finally:
        os.umask(old)
    try:
        wait_for(made.exists, what="the child's file")
        assert mode(made) == 0o666 & ~umask  # the operator's umask, not the agent's 077
        assert mode(agent.state_dir / "logs" / "toucher.log") == 0o600  # while the agent's own
    finally:
        agent.stop()


def test_writers_are_private_without_the_agents_umask(tmp_path: Path, operator_umask):
    """A CLI command that creates the store, a log or an incident (no agent, umask 022)."""
    from chimera_ops.incidents import capture_incident
    from chimera_ops.runtimes.relay import LogWriter
    from chimera_ops.store import Store

    state = tmp_path / "var"
    store = Store.open_in(state)
    store.add_event("test", "written under umask 022")
    log = LogWriter(str(state / "logs" / "engine.log"), max_size=200, keep=2)
    for i in range(10):  # past max_size: rotated files are private too
        log.note(f"line {i} postgresql://app:secret@db/app")
    log.close()
    files = sorted((state / "logs").iterdir())
    incident = capture_incident(
        state / "incidents", "engine", "test", pids=[], probe_history=[], log_files=files
    )
    store.close()
    assert (state / "logs" / "engine.log.1").exists() and incident.is_dir()
    assert mode(state) == 0o700 and mode(state / "chimera.db") == 0o600
    assert open_entries(state) == {}
