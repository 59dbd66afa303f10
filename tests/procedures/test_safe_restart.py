"""`restart --safe` against the demo stack, with real faults."""

from __future__ import annotations

from urllib.request import Request, urlopen

from chimera_ops.paper.harness import ledger_problems, query
from tests.harness import wait_for
from tests.procedures.conftest import run_json


def _trading(agent) -> dict:
    code, doc = run_json(agent, "trading-state")
    return doc["engines"][0]


def _steps(doc: dict) -> dict[str, dict]:
    return {s["name"]: s for s in doc["steps"]}


def test_happy_path_halts_backs_up_restarts_and_resumes(demo, engine_dsn) -> None:
    agent = demo()
    wait_for(
        lambda: query(engine_dsn, "SELECT count(*) FROM paper_fills")[0][0] > 0,
        timeout=30,
        what="fills before the restart",
    )
    old_pid = agent.component("engine")["pid"]
    code, doc = run_json(agent, "restart", "--safe", "--yes")
    assert code == 0, doc
    assert doc["state"] == "succeeded"
    steps = _steps(doc)
    assert [s["state"] for s in doc["steps"]] == ["ok"] * 6, doc["steps"]
    halted_at = steps["halt trading and drain"]["finished_at"]
    resumed_at = steps["resume trading"]["started_at"]
    # Halted before anything stopped.
    events = agent.events("engine")
    stopping = [e for e in events if e["to_state"] == "stopping"]
    assert stopping and stopping[-1]["ts"] > halted_at
    # A new engine, trading again, a backup set that matches its manifest.
    new = agent.component("engine")
    assert new["pid"] != old_pid and new["state"] == "running"
    assert _trading(agent)["trading"] == "active"
    code, listing = run_json(agent, "backup", "list")
    assert len(listing["sets"]) == 1
    assert run_json(agent, "backup", "verify", listing["sets"][0]["id"])[0] == 0
    # No order placed while halted; every fill recorded exactly once across the restart.
    placed = query(
        engine_dsn,
        "SELECT count(*) FROM paper_orders WHERE created_at > to_timestamp(%s)"
        " AND created_at < to_timestamp(%s)",
        (halted_at, resumed_at),
    )[0][0]
    assert placed == 0
    assert ledger_problems(engine_dsn) == []
    # Every step is audited with its timing.
    from chimera_ops.store import Store

    store = Store.open_in(agent.state_dir, readonly=True)
    try:
        audit = [e for e in store.audit_entries() if e["command"] == "procedure safe-restart"]
    finally:
        store.close()
    assert len(audit) >= 7 and all(e["duration_s"] is not None for e in audit)


def test_dry_run_plans_and_changes_nothing(demo) -> None:
    agent = demo()
    pid = agent.component("engine")["pid"]
    code, doc = run_json(agent, "restart", "--safe", "--dry-run")
    assert code == 0 and doc["state"] == "planned"
    plan = " ".join(doc["result"]["plan"])
    assert "halt trading on: engine" in plan and "stop in this order: engine" in plan
    assert agent.component("engine")["pid"] == pid
    assert _trading(agent)["trading"] == "active"


def test_drain_timeout_resumes_and_restarts_nothing(demo) -> None:
    agent = demo()
    port = agent.engine_port
    urlopen(
        Request(
            f"http://127.0.0.1:{port}/faults/stuck-orders", data=b'{"stuck": true}', method="POST"
        ),
        timeout=5,
    ).read()
    wait_for(lambda: _trading(agent)["open_orders"] > 0, what="open orders that will not clear")
    pid = agent.component("engine")["pid"]
    code, doc = run_json(agent, "restart", "--safe", "--yes", "--no-backup")
    assert code == 1 and doc["state"] == "aborted"
    assert "drain timeout" in doc["result"]["summary"]
    assert agent.component("engine")["pid"] == pid
    assert _trading(agent)["trading"] == "active"


def test_unknown_component_and_no_agent(demo, short_tmp) -> None:
    agent = demo()
    result = agent.cli("restart", "--safe", "--component", "nope", "--yes")
    assert result.returncode == 2 and "engine" in result.stderr
    agent.stop()
    result = agent.cli("restart", "--safe", "--yes")
    assert result.returncode == 1 and "no agent is running" in result.stderr


def test_engine_that_cannot_come_back_leaves_trading_halted(demo, engine_dsn) -> None:
    # Its database refuses new connections (a real fault, set under the running engine, whose
    # open sessions keep working): the restarted engine cannot connect, so it never gets ready.
    agent = demo(procedures={"settle": "2s", "ready_timeout": "8s"})
    dbname = engine_dsn.rsplit("/", 1)[1]
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    query(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        code, doc = run_json(agent, "restart", "--safe", "--yes", "--no-backup")
    finally:
        query(admin, f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert code == 1 and doc["state"] == "failed", doc
    result = doc["result"]
    assert result["component"] == "engine" and "HALTED" in result["summary"]
    assert result["runbook"] == "runbooks/full-restart.md"
    assert "resume trading" not in [s["name"] for s in doc["steps"]]
    alerts = [e for e in agent.events("engine") if e["kind"] == "alert"]
    assert any((e["data"] or {}).get("key", "").startswith("procedure:") for e in alerts)
    # Once its database is back the engine comes up by itself, still halted.
    agent.wait_state("engine", "running", timeout=60)
    assert _trading(agent)["trading"] == "halted"


def test_two_safe_restarts_at_once_one_runs(demo) -> None:
    import subprocess
    import sys

    from tests.harness import REPO

    agent = demo()
    argv = [
        sys.executable,
        "-m",
        "chimera_ops",
        "--config",
        str(agent.config_path),
        "restart",
        "--safe",
        "--yes",
        "--no-backup",
        "--json",
    ]
    procs = [
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO), text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = next(out + err for (out, err), p in zip(outs, procs, strict=True) if p.returncode)
    assert "refused" in refused and "safe-restart-" in refused, refused
