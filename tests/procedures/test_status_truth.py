"""Status never states stale facts as current (issue 20, item 4): right after `emergency-stop`
the stopped engine is not `active` and its probes have no verdict; right after `start --all`
(which halts the engine as soon as it is ready) status does not say `active` while the engine
says halted. Every trading figure and probe verdict carries its age. Without an agent, external
services are shown by what their probe says now, not the store's "stopped"."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.harness import AgentProcess, child, wait_for
from tests.procedures.conftest import run_json
from tests.services import free_port


def _engine(doc: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in doc["components"] if c["name"] == "engine")


def _open_orders(agent: AgentProcess) -> int:
    rows = run_json(agent, "trading-state")[1]["engines"]
    return int(rows[0]["open_orders"] or 0)


def test_status_after_emergency_stop_and_start_all_never_says_active(demo) -> None:
    agent = demo()
    # The paper engine trading with open orders, and status showing it, with the read's age.
    wait_for(lambda: _open_orders(agent) > 0, timeout=30, what="open orders")
    trading = wait_for(
        lambda: (t := _engine(agent.status())["trading"]) and t["trading"] == "active" and t,
        timeout=30,
        what="status showing the engine active",
    )
    assert trading["current"] is True and trading["age_s"] >= 0 and trading["at"], trading
    for snap in _engine(agent.status())["health"].values():
        assert snap["current"] is True and snap["age_s"] is not None, snap
    assert re.search(
        r"engine: trading ACTIVE, \d+ open orders.*, read [\d.]+m?s ago", agent.cli("status").stdout
    )
    assert re.search(r"L ok \d+ms [\d.]+m?s ago", agent.cli("status").stdout)

    code, _ = run_json(agent, "emergency-stop", "--yes", "--reason", "drill")
    assert code == 0
    # At once, not after the next poll: the engine is stopped, so nothing says active.
    doc = agent.status()
    engine = _engine(doc)
    assert engine["state"] == "stopped", engine
    assert engine["trading"]["trading"] is None and engine["trading"]["open_orders"] is None
    assert engine["trading"]["current"] is False and "stopped" in engine["trading"]["note"]
    assert "active" not in str(engine["trading"])
    for role, snap in engine["health"].items():
        assert snap["status"] == "unknown" and snap["current"] is False, (role, snap)
        assert snap["age_s"] is not None  # the last result stays, with its age
    listing, detail = agent.cli("status").stdout, agent.cli("status", "engine").stdout
    assert "ACTIVE" not in listing + detail, listing + detail
    (row,) = [line for line in listing.splitlines() if " engine " in line]
    assert "L ?" in row and " ok " not in row, listing
    assert "liveness passing" not in detail and "readiness passing" not in detail, detail
    assert "an earlier run: no verdict" in detail, detail
    assert "trading state unknown (engine stopped" in listing + detail, listing + detail

    code, _ = run_json(agent, "start", "--all")
    assert code == 0
    (row,) = run_json(agent, "trading-state")[1]["engines"]
    assert row["trading"] == "halted" and row["at"] > 0  # the answer says when it was read
    assert "read from the engines at" in agent.cli("trading-state").stdout
    # Right after: the halt of start --all is what status shows (or nothing yet), never the
    # `active` read before the emergency stop.
    trading = _engine(agent.status())["trading"]
    assert trading["trading"] in ("halted", None), trading
    if trading["trading"] == "halted":
        assert trading["current"] is True and trading["age_s"] is not None
    assert "ACTIVE" not in agent.cli("status").stdout


def test_no_agent_view_shows_external_services_by_their_probe(agent_factory, redis_service):
    closed = free_port()
    agent = agent_factory(
        {
            "components": {
                "redis": {"runtime": "external", "readiness": {"redis": redis_service}},
                "queue": {"runtime": "external", "readiness": {"tcp": f"127.0.0.1:{closed}"}},
                "svc": {"runtime": "process", "command": child("sleep")},
            }
        }
    ).start()
    agent.wait_state("redis", "running")
    agent.stop()  # a clean stop: the store's last word on both externals is "stopped"
    doc = json.loads(agent.cli("status", "--json").stdout)
    assert doc["source"] == "direct"
    by_name = {c["name"]: c for c in doc["components"]}
    assert by_name["redis"]["observed"] == "up" and by_name["redis"]["probe"]["ok"] is True
    assert by_name["queue"]["observed"] == "down" and by_name["queue"]["probe"]["ok"] is False
    assert "observed" not in by_name["svc"]  # a process of the agent's: its store state stays
    text = agent.cli("status").stdout
    rows = {n: next(line for line in text.splitlines() if f" {n} " in line) for n in by_name}
    assert "up (probed)" in rows["redis"] and "stopped" not in rows["redis"], text
    assert "down (probed)" in rows["queue"] and "stopped" not in rows["queue"], text
    assert "stopped" in rows["svc"], text
