"""The procedures survive what a 3 a.m. terminal does: a killed CLI, a killed agent, a second
operator, a lock left by a dead holder; and emergency-stop then start --all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import redis

from chimera_ops.client import AgentClient
from chimera_ops.ops.proclock import LockHolder
from tests.harness import REPO, AgentProcess, wait_for
from tests.procedures.conftest import run_json


def _start_cli(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chimera_ops", "--config", str(agent.config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(REPO),
        text=True,
    )


def _running_job(client: AgentClient) -> dict | None:
    jobs = client.procedures()["procedures"]
    return next((j for j in jobs if j["state"] == "running"), None)


def test_killed_cli_the_job_completes(demo) -> None:
    agent = demo()
    client = AgentClient(agent.state_dir)
    cli = _start_cli(agent, "restart", "--safe", "--yes")
    job = wait_for(lambda: _running_job(client), what="the job to start")
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    done = wait_for(
        lambda: (d := client.procedure(job["id"]))["state"] != "running" and d,
        timeout=120,
        what="the job to finish without its CLI",
    )
    assert done["state"] == "succeeded", done
    assert run_json(agent, "trading-state")[1]["engines"][0]["trading"] == "active"


def test_killed_agent_the_job_is_interrupted_and_trading_stays_halted(demo) -> None:
    agent = demo()
    client = AgentClient(agent.state_dir)
    cli = _start_cli(agent, "restart", "--safe", "--yes", "--no-backup")

    def in_step_4() -> dict | None:
        job = _running_job(client)
        if job is None:
            return None
        steps = client.procedure(job["id"])["steps"]
        return job if steps and steps[-1]["name"].startswith("stop and start") else None

    job = wait_for(in_step_4, timeout=60, what="the restart step")
    agent.stop(signal.SIGKILL)
    cli.wait(timeout=30)
    assert cli.returncode != 0

    again = AgentProcess(agent.dir, json.loads(json.dumps(_config(agent))))
    again.start()
    try:
        again.wait_state("engine", "running", timeout=60)
        doc = AgentClient(again.state_dir).procedure(job["id"])
        assert doc["state"] == "interrupted", doc
        assert "interrupted at step" in doc["result"]["summary"]
        assert run_json(again, "trading-state")[1]["engines"][0]["trading"] == "halted"
        status = again.cli("status")
        assert "INTERRUPTED" in status.stdout.splitlines()[1], status.stdout
        assert "chimera-ops resume-trading" in " ".join(status.stdout.split())
        # The lock died with the agent: a new safe restart runs (and resumes trading).
        code, result = run_json(again, "restart", "--safe", "--yes", "--no-backup")
        assert code == 0, result
        assert run_json(again, "trading-state")[1]["engines"][0]["trading"] == "active"
        assert "INTERRUPTED" not in again.cli("status").stdout
    finally:
        again.stop()


def _config(agent: AgentProcess) -> dict:
    import yaml

    return yaml.safe_load(agent.config_path.read_text())


def test_a_redis_lock_of_a_dead_holder_expires_by_ttl(demo, redis_service) -> None:
    key = f"chimera-test-lock-{uuid.uuid4().hex[:8]}"
    agent = demo(
        procedures={
            "settle": "1s",
            "lock": {"redis_url": redis_service, "key": key, "ttl": "3s"},
        }
    )
    dead = LockHolder("safe-restart", 1, "elsewhere", 999999, "nobody", time.time(), "old-job")
    conn = redis.Redis.from_url(redis_service)
    conn.set(key, dead.to_json(), px=3000)
    try:
        code, doc = run_json(agent, "restart", "--safe", "--yes", "--no-backup")
        assert code == 1 and doc["state"] == "failed"
        failed = [s for s in doc["steps"] if s["state"] == "failed"][0]
        assert "pid 999999 on elsewhere" in failed["detail"]
        wait_for(lambda: conn.get(key) is None, timeout=10, what="the TTL")
        code, doc = run_json(agent, "restart", "--safe", "--yes", "--no-backup")
        assert code == 0, doc
        assert conn.get(key) is None  # released at the end
    finally:
        conn.delete(key, f"{key}:fence")
        conn.close()


def test_emergency_stop_then_staged_start(demo) -> None:
    agent = demo()
    code, doc = run_json(agent, "emergency-stop", "--yes", "--reason", "drill")
    assert code == 0, doc
    assert doc["result"]["log_tails"]["engine"], "the engine's last log lines"
    assert agent.component("engine")["state"] == "stopped"
    incidents = json.loads(agent.cli("incidents", "--json").stdout)["incidents"]
    assert [i["component"] for i in incidents] == ["engine"]
    time.sleep(3)  # nothing restarts by itself
    assert agent.component("engine")["state"] == "stopped"
    stopped_at = time.time()
    code, doc = run_json(agent, "start", "--all")
    assert code == 0, doc
    names = [s["name"] for s in doc["steps"]]
    assert names == ["lock", "check postgres", "check redis", "start engine"]
    assert "staged-start" in doc["steps"][0]["detail"]  # it held the procedure lock
    assert agent.component("engine")["state"] == "running"
    assert run_json(agent, "trading-state")[1]["engines"][0]["trading"] == "halted"
    starts = [e for e in agent.events("engine") if e["to_state"] == "starting"]
    assert [e for e in starts if e["ts"] > stopped_at], "started only by start --all"
    assert os.path.exists(agent.state_dir / "chimera.db")
