"""The CLI as a user runs it: config errors exit 2 with file:line:path, status --json shape,
status without an agent, unknown components."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import child, run_cli
from tests.services import free_port

STATUS_KEYS = {"schema", "source", "agent", "components"}
COMPONENT_KEYS = {
    "name",
    "runtime",
    "state",
    "reason",
    "since",
    "pid",
    "uptime_s",
    "restarts",
    "consecutive_failures",
    "last_exit",
    "ready",
    "depends_on",
    "health",
    "memory",
}


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "chimera-ops.yaml"
    path.write_text(text)
    return path


def test_config_check_ok_and_errors(short_tmp: Path):
    good = _write(
        short_tmp, "components:\n  web:\n    runtime: process\n    command: [sleep, '1']\n"
    )
    result = run_cli(good, "config", "check")
    assert result.returncode == 0 and result.stdout.startswith("OK")
    bad = _write(
        short_tmp,
        "components:\n  web:\n    runtime: process\n    command: [sleep]\n"
        "    stop: {grace: 0s}\n    depends_on: [db]\n    colour: blue\n",
    )
    result = run_cli(bad, "config", "check")
    assert result.returncode == 2
    assert f"{bad}:5: components.web.stop.grace: must be greater than zero" in result.stderr
    assert f"{bad}:6: components.web.depends_on[0]: unknown dependency 'db'" in result.stderr
    assert f"{bad}:7: components.web.colour: unknown field" in result.stderr
    as_json = json.loads(run_cli(bad, "config", "check", "--json").stdout)
    assert not as_json["ok"] and {e["line"] for e in as_json["errors"]} == {5, 6, 7}


def test_every_command_refuses_a_broken_config_with_exit_2(short_tmp: Path):
    bad = _write(short_tmp, "components: [not, a, mapping]\n")
    for args in (["status"], ["events"], ["probe", "x"], ["stop", "x"]):
        result = run_cli(bad, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "config error" in result.stderr


def test_status_without_agent_says_so_first_and_exits_1(short_tmp: Path):
    port = free_port()
    cfg = _write(
        short_tmp,
        f"agent: {{state_dir: {short_tmp}/var}}\ncomponents:\n  web:\n"
        f"    runtime: process\n    command: [sleep, '1']\n"
        f"    readiness: {{tcp: '127.0.0.1:{port}'}}\n",
    )
    result = run_cli(cfg, "status")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith("agent NOT running")
    doc = json.loads(run_cli(cfg, "status", "--json").stdout)
    assert doc["source"] == "direct" and doc["agent"]["running"] is False
    assert doc["components"][0]["reachable"] is False


def test_status_json_shape_is_stable(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "web": {
                    "runtime": "process",
                    "command": child("http", port),
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "0.2s"},
                }
            }
        }
    ).start()
    agent.wait_state("web", "running")
    doc = agent.status()
    assert set(doc) >= STATUS_KEYS and doc["schema"] == 1 and doc["source"] == "agent"
    assert {"running", "pid", "version", "uptime_s", "state_dir"} <= set(doc["agent"])
    comp = doc["components"][0]
    assert set(comp) >= COMPONENT_KEYS
    assert comp["health"]["readiness"]["status"] == "passing"
    assert comp["memory"]["rss_bytes"] > 0
    assert agent.cli("status").returncode == 0


def test_unknown_component_lists_known_ones(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "alpha": {"runtime": "process", "command": child("sleep")},
                "beta": {"runtime": "process", "command": child("sleep")},
            }
        }
    ).start()
    for args in (
        ["stop", "gamma"],
        ["restart", "gamma"],
        ["probe", "gamma"],
        ["events", "-c", "gamma"],
    ):
        result = agent.cli(*args)
        assert result.returncode == 2, args
        assert "known components: alpha, beta" in result.stderr


def test_external_components_refuse_start_stop_restart(agent_factory):
    agent = agent_factory({"components": {"db": {"runtime": "external"}}}).start()
    agent.wait_state("db", "running")
    result = agent.cli("restart", "db")
    assert result.returncode == 2
    assert (
        "external component" in result.stderr and "never starts, stops or restarts" in result.stderr
    )


def test_start_stop_restart_round_trip_is_audited(agent_factory):
    agent = agent_factory(
        {"components": {"svc": {"runtime": "process", "command": child("sleep")}}}
    ).start()
    first = agent.wait_state("svc", "running")
    restarted = agent.cli("restart", "svc", "--reason", "deploy")
    assert restarted.returncode == 0 and "now running" in restarted.stdout
    second = agent.component("svc")
    assert second["pid"] != first["pid"] and second["restarts"] == 1
    assert agent.cli("stop", "svc").returncode == 0
    assert agent.component("svc")["state"] == "stopped"
    assert agent.cli("start", "svc").returncode == 0
    agent.wait_state("svc", "running")
    from chimera_ops.store import Store

    store = Store.open_in(agent.state_dir, readonly=True)
    audit = store.audit_entries()
    store.close()
    assert [a["command"] for a in audit][-3:] == ["restart", "stop", "start"]
    assert "deploy" in audit[-3]["reason"]
