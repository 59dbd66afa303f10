"""Issue 20 items 3 and 5 on the demo stack: one lock for everything that changes the stack,
trading changes as events, the audit command, `procedure abort` and the safe restart's summary.

Real parts only: a real agent, the paper engine trading, the machine's PostgreSQL and Redis, a
lock holder process killed with a real `kill -9`.
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.request import Request, urlopen

import pytest
import redis

from chimera_ops.ops.proclock import LockUnreadable, RedisLock
from tests.harness import REPO, AgentProcess, pid_alive, wait_for
from tests.procedures.conftest import run_json
from tests.services import free_port

ME = getpass.getuser()


def _cli_popen(agent: AgentProcess, *args: str) -> subprocess.Popen[str]:
    """A CLI command left running (a safe restart we act on while it runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chimera_ops", "--config", str(agent.config_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
        env={**os.environ, "COLUMNS": "200"},
    )


def _fault(agent: AgentProcess, stuck: bool) -> None:
    body = json.dumps({"stuck": stuck}).encode()
    url = f"http://127.0.0.1:{agent.engine_port}/faults/stuck-orders"  # type: ignore[attr-defined]
    urlopen(Request(url, data=body, method="POST"), timeout=5).read()


def _open_orders(agent: AgentProcess) -> int:
    return int(run_json(agent, "trading-state")[1]["engines"][0]["open_orders"] or 0)


def _running_step(agent: AgentProcess) -> str | None:
    running = agent.status().get("procedures", {}).get("running")
    return running.get("step") if running else None


def _safe_restart_stuck_in_drain(agent: AgentProcess) -> tuple[subprocess.Popen[str], str]:
    """A `restart --safe` held in its drain step by orders the exchange will not cancel; the
    running job's id. The caller ends the hold by un-sticking and halting (the halt is never
    locked out: it cancels the orders, the drain sees 0)."""
    wait_for(lambda: _open_orders(agent) > 0, 30, "open orders")
    _fault(agent, stuck=True)
    proc = _cli_popen(agent, "restart", "--safe", "--yes", "--json")
    wait_for(lambda: "halt trading and drain" in (_running_step(agent) or ""), 30, "the drain")
    job = agent.status()["procedures"]["running"]["id"]
    return proc, job


def _release_drain(agent: AgentProcess) -> None:
    _fault(agent, stuck=False)
    code, doc = run_json(agent, "halt-trading", "--reason", "cancel the stuck orders")
    assert code == 0, doc


def test_plain_restart_during_safe_restart_is_refused_and_safe_restart_ends_ok(demo) -> None:
    agent = demo(drain_timeout="60s")
    pid = agent.component("engine")["pid"]
    proc, job = _safe_restart_stuck_in_drain(agent)
    try:
        refused = agent.cli("restart", "engine", "--yes", "--reason", "impatient", "--json")
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        error = json.loads(refused.stdout)
        # The holder is named (procedure, job, pid, host, since) with how to end it.
        assert "safe-restart" in error["error"] and job in error["error"]
        assert f"pid {agent.proc.pid}" in error["error"] and "since" in error["error"]
        assert f"chimera-ops procedure abort {job}" in error["hint"]
        assert agent.component("engine")["pid"] == pid  # nothing was restarted by it
        # Text output says the same to a person.
        text = agent.cli("start", "engine")
        assert text.returncode == 1 and "safe-restart" in text.stderr, text.stderr
        assert "procedure abort" in text.stderr
        _release_drain(agent)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    doc = json.loads(out)
    assert doc["state"] == "succeeded", doc["result"]
    assert agent.component("engine")["pid"] != pid
    assert run_json(agent, "trading-state")[1]["engines"][0]["trading"] == "active"


def _holder_process(url: str, key: str) -> subprocess.Popen[str]:
    """Another process (a restore, as the CLI runs one) holding the Redis lock."""
    code = (
        "import sys, time\n"
        "from chimera_ops.ops.proclock import RedisLock\n"
        f"RedisLock({url!r}, {key!r}, 900).acquire('restore', 'set-under-test')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(REPO)
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_lock_of_a_killed_holder_is_released_at_once_with_an_event(demo, redis_service) -> None:
    key = f"test-lock-{uuid.uuid4().hex[:8]}"
    agent = demo(lock={"redis_url": redis_service, "key": key})
    holder = _holder_process(redis_service, key)
    try:
        # Alive: a plain restart respects it, and names it.
        refused = agent.cli("restart", "engine", "--yes", "--json")
        assert refused.returncode == 1, refused.stdout
        error = json.loads(refused.stdout)
        assert "restore set-under-test" in error["error"]
        assert f"pid {holder.pid}" in error["error"]
        assert f"kill {holder.pid}" in error["hint"]
        os.kill(holder.pid, signal.SIGKILL)  # a restore killed mid-way: its lock stays in Redis
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert not pid_alive(holder.pid)
    assert redis.Redis.from_url(redis_service).get(key) is not None  # the TTL is 15 minutes
    code, doc = run_json(agent, "restart", "--safe", "--yes")
    assert code == 0 and doc["state"] == "succeeded", doc.get("result")
    released = [e for e in agent.events() if e["kind"] == "lock_released"]
    assert len(released) == 1, released
    assert released[0]["data"]["holder"]["pid"] == holder.pid
    assert f"pid {holder.pid} is gone" in released[0]["reason"]
    assert redis.Redis.from_url(redis_service).get(key) is None  # and released at its end


def test_unreadable_lock_refuses(demo, redis_service) -> None:
    # A Redis nobody listens on: the lock cannot be read, so nothing that changes the stack runs.
    down = f"redis://127.0.0.1:{free_port()}/0"
    agent = demo(lock={"redis_url": down})
    pid = agent.component("engine")["pid"]
    refused = agent.cli("restart", "engine", "--yes", "--json")
    assert refused.returncode == 1, refused.stdout
    error = json.loads(refused.stdout)
    assert "cannot be read" in error["error"] and "refusing" in error["error"]
    assert error["hint"]
    code, doc = run_json(agent, "restart", "--safe", "--yes")
    assert code == 1 and doc["state"] == "failed"
    assert "cannot be read" in doc["result"]["summary"]
    assert agent.component("engine")["pid"] == pid
    code, report = run_json(agent, "maintenance", "monthly", "--fix", "--yes")
    assert any("--fix skipped" in n and "cannot be read" in n for n in report["notes"]), report
    # A held lock whose value is not a holder record is unreadable too (never "free").
    key = f"test-lock-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_service)
    client.set(key, b"not a holder", px=60_000)
    try:
        with pytest.raises(LockUnreadable):
            RedisLock(redis_service, key, 60).check_free()
    finally:
        client.delete(key)


def test_procedure_abort_before_anything_stopped_resumes(demo) -> None:
    agent = demo(drain_timeout="60s")
    pid = agent.component("engine")["pid"]
    proc, job = _safe_restart_stuck_in_drain(agent)
    try:
        aborter = _cli_popen(agent, "procedure", "abort", job, "--reason", "wrong window", "--json")
        # The abort lands at the next step boundary: the drain step is not cut in half.
        wait_for(
            lambda: any(
                "abort asked" in e["reason"] for e in agent.events() if e["kind"] == "procedure"
            ),
            20,
            "the abort request",
        )
        assert "halt trading and drain" in (_running_step(agent) or "")
        _release_drain(agent)
        out, err = aborter.communicate(timeout=120)
        safe_out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert aborter.returncode == 0, (out, err)
    doc = json.loads(out)
    assert doc["state"] == "aborted"
    assert f"aborted by {ME} (wrong window)" in doc["result"]["summary"]
    names = [s["name"] for s in doc["steps"]]
    assert "backup" not in names and names[-1] == "resume trading (abort)"
    assert proc.returncode == 1 and json.loads(safe_out)["state"] == "aborted"
    # Nothing was stopped: the same engine, trading again.
    assert agent.component("engine")["pid"] == pid
    assert run_json(agent, "trading-state")[1]["engines"][0]["trading"] == "active"
    nothing = agent.cli("procedure", "abort", job, "--json")
    assert nothing.returncode == 1 and "not running" in json.loads(nothing.stdout)["error"]


def test_procedure_abort_after_a_stop_leaves_trading_halted(demo) -> None:
    # An engine that ignores its stop signal (SIGURG) holds the stop/start step for its grace:
    # the abort is asked while components are being restarted, and lands before settle.
    agent = demo(engine={"stop": {"signal": "SIGURG", "grace": "6s"}})
    pid = agent.component("engine")["pid"]
    proc = _cli_popen(agent, "restart", "--safe", "--yes", "--no-backup", "--json")
    try:
        wait_for(lambda: "stop and start" in (_running_step(agent) or ""), 30, "the restart step")
        job = agent.status()["procedures"]["running"]["id"]
        code, doc = run_json(agent, "procedure", "abort", job, "--reason", "changed my mind")
        safe_out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and doc["state"] == "aborted", doc
    assert "trading stays HALTED" in doc["result"]["summary"]
    assert f"aborted by {ME} (changed my mind)" in doc["result"]["summary"]
    steps = {s["name"]: s["state"] for s in doc["steps"]}
    assert steps["stop and start in dependency order"] == "ok"  # the step ran to its end
    assert "settle" not in steps and "resume trading" not in steps
    assert doc["result"]["summary_figures"]["halted_s"] > 0
    assert proc.returncode == 1 and json.loads(safe_out)["state"] == "aborted"
    # Restarted, and left halted: nothing resumed trading on a stack nobody checked.
    assert agent.component("engine")["pid"] != pid
    assert run_json(agent, "trading-state")[1]["engines"][0]["trading"] == "halted"


@pytest.fixture
def follower(demo) -> Iterator[tuple[AgentProcess, queue.Queue[dict[str, Any]]]]:
    agent = demo()
    proc = _cli_popen(agent, "events", "-f", "--json", "--limit", "1")
    lines: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    yield agent, lines
    proc.send_signal(signal.SIGINT)
    proc.wait(10)


def _followed(lines: queue.Queue[dict[str, Any]], kind: str, text: str) -> dict[str, Any]:
    while True:
        event = lines.get(timeout=30)
        if event["kind"] == kind and text in event["reason"]:
            return event


def test_halt_and_resume_are_events_with_who_and_why_and_in_audit(follower) -> None:
    agent, lines = follower
    wait_for(lambda: _open_orders(agent) > 0, 30, "open orders")
    code, _ = run_json(agent, "halt-trading", "--reason", "news at 14:00", "--wait")
    assert code == 0
    code, _ = run_json(agent, "resume-trading", "--reason", "news passed")
    assert code == 0
    events = [e for e in agent.events("engine") if e["kind"] in ("trading", "orders_cancelled")]
    halt = next(e for e in events if e["kind"] == "trading" and e["to_state"] == "halted")
    assert halt["data"]["user"] == ME and halt["data"]["reason"] == "news at 14:00"
    assert halt["data"]["via"] == "agent" and f"by {ME}" in halt["reason"]
    resume = next(e for e in events if e["kind"] == "trading" and e["to_state"] == "active")
    assert resume["data"]["user"] == ME and resume["data"]["reason"] == "news passed"
    if halt["data"]["cancelled"]:
        cancelled = next(e for e in events if e["kind"] == "orders_cancelled")
        assert cancelled["data"]["count"] == halt["data"]["cancelled"]
    drained = [e for e in agent.events("engine") if e["kind"] == "drained"]
    assert drained and drained[-1]["data"]["to"] == 0
    # `events -f` saw them as they happened.
    assert _followed(lines, "trading", "news at 14:00")["to_state"] == "halted"
    assert _followed(lines, "trading", "news passed")["to_state"] == "active"
    # The text form says who and why too.
    text = agent.cli("events", "--component", "engine")
    assert text.returncode == 0 and "news at 14:00" in text.stdout
    # `audit` lists the operator's actions, oldest first.
    code, audit = run_json(agent, "audit")
    assert code == 0
    commands = [(a["command"], a["reason"], a["user"]) for a in audit["audit"]]
    assert ("halt-trading", "news at 14:00", ME) in commands
    assert ("resume-trading", "news passed", ME) in commands
    code, only = run_json(agent, "audit", "--command", "resume-trading")
    assert [a["command"] for a in only["audit"]] == ["resume-trading"]
    text = agent.cli("audit", "--since", "1h")
    assert text.returncode == 0 and "halt-trading" in text.stdout and ME in text.stdout


def test_safe_restart_ends_with_its_summary(demo) -> None:
    agent = demo()
    wait_for(lambda: _open_orders(agent) > 0, 30, "open orders")
    result = agent.cli("restart", "--safe", "--yes")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "trading halted for " in result.stdout
    assert "cancelled by the halt" in result.stdout
    assert "steps: preflight" in result.stdout and "settle" in result.stdout
    code, doc = run_json(agent, "procedure", "show", result.stdout.split()[1])
    figures = doc["result"]["summary_figures"]
    assert figures["halted_s"] > 0 and isinstance(figures["orders_cancelled"], int)
    assert [s["name"] for s in figures["steps"]] == [s["name"] for s in doc["steps"]]
    settle = next(s for s in doc["steps"] if s["name"] == "settle")
    assert "passing probe rounds in a row" in settle["detail"]
    # The halt the procedure made is an event naming the job and who started it.
    halts = [
        e for e in agent.events("engine") if e["kind"] == "trading" and e["to_state"] == "halted"
    ]
    assert halts and doc["id"] in halts[0]["data"]["user"] and ME in halts[0]["data"]["user"]
