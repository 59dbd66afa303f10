"""A restore never runs under a live engine: refused while the paper engine trades under the
agent, through once trading is halted and the engine stopped."""

from __future__ import annotations

import sys

import yaml

from tests.backup.conftest import DB, Stack
from tests.harness import AgentProcess, wait_for
from tests.services import free_port


def test_restore_is_refused_while_the_engine_trades(stack: Stack) -> None:
    port = free_port()
    config = yaml.safe_load(stack.config_path.read_text())
    config["agent"]["state_dir"] = str(stack.directory / "var")
    config["components"] = {
        "engine": {
            "runtime": "process",
            "command": [sys.executable, "-m", "chimera_ops.paper", "--port", str(port)],
            "env": {"CHIMERA_PG_DSN": stack.pg.dsn_for(DB), "CHIMERA_REDIS_URL": stack.redis.url},
            "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.5s"},
            "restart": {"policy": "on-failure"},
            "stop": {"grace": "10s"},
            "trading": {"control": {"http": f"http://127.0.0.1:{port}"}, "drain_timeout": "20s"},
        }
    }
    stack.config_path.write_text(yaml.safe_dump(config))
    agent = AgentProcess(stack.directory, config)
    assert agent.config_path == stack.config_path
    try:
        agent.start()  # inside the try: a failed start must not leave the agent running
        agent.wait_state("engine", "running", timeout=60)
        code, summary = stack.json("backup")
        assert code == 0, summary
        wait_for(
            lambda: int(stack.pg.psql("SELECT count(*) FROM paper_orders", DB)) > 0,
            timeout=30,
            what="the engine to place orders",
        )
        stack.pg.psql("DELETE FROM fills", DB)
        damaged = stack.counts()

        result = stack.cli("restore", summary["id"], "--yes")
        assert result.returncode == 1
        assert "refused" in result.stderr and "engine" in result.stderr, result.stderr
        assert stack.counts() == damaged
        code, listing = stack.json("backup", "list")
        assert len(listing["sets"]) == 1  # not even a safety backup

        halted = stack.cli("halt-trading", "--reason", "restore", "--wait")
        assert halted.returncode == 0, halted.stderr
        result = stack.cli("restore", summary["id"], "--yes")
        assert result.returncode == 1 and "stop engine" in result.stderr  # halted, still running

        stopped = stack.cli("stop", "engine", "--reason", "restore")
        assert stopped.returncode == 0, stopped.stderr
        agent.wait_state("engine", "stopped")
        result = stack.cli("restore", summary["id"], "--yes")
        assert result.returncode == 0, result.stderr + result.stdout
        assert stack.counts()["fills"] > 0
    finally:
        agent.stop()
