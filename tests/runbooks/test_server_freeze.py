"""`runbook run server-freeze` against a SIGSTOPped engine: found frozen, restarted, healthy."""

from __future__ import annotations

import os
import signal

import psutil

from chimera_ops.store import Store
from tests.harness import wait_for
from tests.runbooks.conftest import freeze, runbook


def test_frozen_engine_is_found_restarted_and_verified(slow_liveness_stack) -> None:
    agent = slow_liveness_stack
    old_pid = agent.component("engine")["pid"]
    freeze(old_pid)
    try:
        wait_for(
            lambda: agent.component("engine")["state"] == "unhealthy",
            timeout=30,
            what="the agent sees the frozen engine unready",
        )
        code, doc = runbook(agent, "run", "server-freeze", "--yes")
    finally:
        if psutil.pid_exists(old_pid):
            os.kill(old_pid, signal.SIGCONT)
    assert code == 0, doc
    assert doc["state"] == "succeeded"
    status = {s["id"]: s["status"] for s in doc["steps"]}
    assert status["frozen"] == "ok"  # the check found it frozen
    assert status["capture"] == "skipped"  # planned: never faked
    assert status["capture-bundle"] == "ok"
    bundles = list(agent.state_dir.glob("chimera-bundle-*.tar.gz"))
    assert len(bundles) == 1 and bundles[0].stat().st_size > 0
    assert status["restart"] == "ok"
    assert status["answers"] == "ok" and status["all-running"] == "ok"
    engine = agent.component("engine")
    assert engine["state"] == "running" and engine["pid"] != old_pid
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"
    # journal and audit
    code, hist = runbook(agent, "history")
    assert code == 0 and hist["runs"][0]["id"] == doc["run_id"]
    assert hist["runs"][0]["state"] == "succeeded"
    store = Store.open_in(agent.state_dir, readonly=True)
    try:
        audit = store.audit_entries(500)
    finally:
        store.close()
    steps = [
        a for a in audit if a["command"] == "runbook step" and a["args"]["run"] == doc["run_id"]
    ]
    restart = [a for a in steps if a["args"]["step"] == "restart"]
    assert restart and restart[0]["result"] == "ok" and "restart" in restart[0]["args"]["argv"]
    assert restart[0]["args"]["exit_code"] == 0 and restart[0]["duration_s"] is not None
    runs = [a for a in audit if a["command"] == "runbook run" and a["args"]["run"] == doc["run_id"]]
    assert runs and runs[0]["result"] == "succeeded"
