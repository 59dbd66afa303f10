"""The agent's own store under real faults (issue 19): a full disk, the state dir removed while
the agent runs, a store overwritten with random bytes. Supervision goes on through each of
them (a SIGKILLed child comes back) and the operator hears of it (alert, event, metric).

The full disk is a real 4 MiB tmpfs filled to the last byte (the tests run as root). Child
output under a full disk is the log relay's business (tests of its own); here only the store
and supervision are asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AgentProcess, fill_disk, http_component, tmpfs, wait_for
from tests.services import free_port


def _kill_and_wait_back(agent: AgentProcess, port: int, what: str) -> int:
    """SIGKILL the component's child; wait until a new child serves again; its pid."""
    first = agent.wait_state("web", "running")
    os.kill(first["pid"], signal.SIGKILL)

    def back() -> int | None:
        comp = agent.component("web")
        if comp["state"] != "running" or comp["pid"] == first["pid"]:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return int(comp["pid"]) if answer.status == 200 else None

    return int(wait_for(back, 30, what))


def _metric(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


@pytest.fixture
def small_disk(short_tmp: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test needs root (mount -t tmpfs)")
    with tmpfs(short_tmp / "disk", "4m") as mount:
        yield mount


def test_full_disk_never_stops_supervision(agent_factory, small_disk: Path) -> None:
    port, metrics_port = free_port(), free_port()
    agent = agent_factory(
        {
            "agent": {
                "state_dir": str(small_disk / "var"),
                "tick": "0.5s",
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            },
            "components": {"web": http_component(port)},
        }
    ).start()
    agent.wait_state("web", "running")
    fill = fill_disk(small_disk)
    try:
        for n in range(3):  # each exit and restart writes events, a restart, counters, child
            _kill_and_wait_back(agent, port, f"web back on a full disk ({n + 1})")
        assert agent.proc is not None and agent.proc.poll() is None, agent.output()
        assert _metric(metrics_port, "chimera_state_write_errors_total") > 0
        assert _metric(metrics_port, "chimera_state_write_backlog") > 0
        assert agent.component("web")["restarts"] == 3  # counted in memory meanwhile
    finally:
        fill.unlink()

    def recovered() -> dict[str, Any] | None:
        return next((e for e in agent.events() if e["kind"] == "state_write_recovered"), None)

    event = wait_for(recovered, 30, "the recovery event")
    assert event["data"]["replayed"] > 0 and "dropped" in event["data"]
    kinds = [e["kind"] for e in agent.events()]
    alert = next(
        e for e in agent.events() if e["data"] and e["data"].get("key") == "agent:state_write"
    )
    assert "free of" in alert["reason"] and str(small_disk) in alert["reason"]
    assert kinds.count("alert") >= 1
    # What waited was written once space came back: every restart is in the store.
    backoffs = [e for e in agent.events("web") if e["to_state"] == "backoff"]
    assert len(backoffs) == 3
    assert _metric(metrics_port, "chimera_state_write_backlog") == 0
    assert agent.proc is not None and agent.proc.poll() is None


def test_state_dir_removed_while_running(agent_factory) -> None:
    port = free_port()
    agent = agent_factory(
        {"agent": {"tick": "0.5s"}, "components": {"web": http_component(port)}}
    ).start()
    agent.wait_state("web", "running")
    shutil.rmtree(agent.state_dir)
    socket = agent.state_dir / "agent.sock"
    wait_for(socket.exists, 15, "the control socket back")
    assert oct(agent.state_dir.stat().st_mode & 0o777) == "0o700"
    _kill_and_wait_back(agent, port, "web back after rm -rf of the state dir")
    kinds = [e["kind"] for e in agent.events()]
    assert "state_recreated" in kinds and "socket_recreated" in kinds
    assert (agent.state_dir / "chimera.db").exists()
    assert (agent.state_dir / "agent.pid").read_text().strip() == str(agent.proc.pid)
    # The restart after the removal is in the new store, and the count goes on from memory.
    assert agent.component("web")["restarts"] == 1
    assert any(e["to_state"] == "backoff" for e in agent.events("web"))


def test_damaged_store_is_set_aside_at_start(agent_factory) -> None:
    port = free_port()
    agent = agent_factory({"components": {"web": http_component(port)}})
    agent.state_dir.mkdir(parents=True)
    (agent.state_dir / "chimera.db").write_bytes(os.urandom(64 * 1024))
    for command in (("status",), ("events",), ("status", "--json")):
        result = agent.cli(*command)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr + result.stdout
        assert "damaged" in result.stderr + result.stdout
        assert "chimera-ops agent" in result.stderr + result.stdout  # the next step
        if "--json" in command:
            assert "damaged" in json.loads(result.stdout)["error"]
    agent.start()
    agent.wait_state("web", "running")
    aside = [p.name for p in agent.state_dir.iterdir() if p.name.startswith("chimera.db.damaged-")]
    assert len(aside) == 1
    said = next(e for e in agent.events() if e["kind"] == "store_damaged")
    assert aside[0] in said["reason"] and "counters" in said["reason"]
    assert "backup catalog" in said["reason"] and "procedure journal" in said["reason"]
    assert any(
        e["kind"] == "alert" and (e["data"] or {}).get("key") == "agent:store_damaged"
        for e in agent.events()
    )
    _kill_and_wait_back(agent, port, "web back on the fresh store")
    time.sleep(0.1)
