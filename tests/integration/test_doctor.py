"""doctor against real listeners, the real PostgreSQL and Redis, and real unreachable ports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chimera_ops.ops.doctor import (
    CheckResult,
    DoctorPlan,
    PortCheck,
    check_clock,
    check_disk,
    check_env_var,
    check_ports,
    check_postgres,
    check_redis,
    default_port_checks,
    mask_value,
    run_doctor,
)
from tests.harness import AgentProcess, child, run_cli
from tests.services import free_port, wait_tcp

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
time.sleep(120)
"""


@pytest.fixture
def listener() -> Iterator[tuple[int, int]]:
    """(port, pid) of a throwaway Python process listening on a free port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port), "stale-engine"])
    try:
        wait_tcp("127.0.0.1", port)
        yield port, proc.pid
    finally:
        proc.kill()
        proc.wait()


def as_json(results: CheckResult | list[CheckResult]) -> str:
    items = results if isinstance(results, list) else [results]
    return json.dumps([r.to_dict() for r in items])


def test_port_held_by_stale_process_names_owner(listener: tuple[int, int]) -> None:
    port, pid = listener
    [result] = check_ports([PortCheck(port, component="engine", must_be_free=True)])
    assert result.status == "fail"
    assert result.details["owners"][0]["pid"] == pid
    assert "stale-engine" in result.details["owners"][0]["cmdline"]
    assert f"pid {pid}" in result.summary
    assert str(pid) in result.hint


def test_port_owner_matching_rule(listener: tuple[int, int]) -> None:
    port, pid = listener
    expected, wrong, unhinted = check_ports(
        [
            PortCheck(port, ("stale-engine",), "engine"),
            PortCheck(port, ("postgres",), "postgres"),
            PortCheck(port),
        ]
    )
    assert expected.status == "ok"
    assert wrong.status == "fail" and "expected postgres" in wrong.summary
    assert unhinted.status == "ok" and unhinted.details["owners"][0]["pid"] == pid


def test_free_ports() -> None:
    port = free_port()
    needed, service = check_ports(
        [PortCheck(port, must_be_free=True), PortCheck(port, ("postgres",), "postgres")]
    )
    assert needed.status == "ok" and "free" in needed.summary
    assert service.status == "warn" and "nothing listens" in service.summary


def test_default_ports_on_this_host_are_their_services() -> None:
    results = {r.name: r for r in check_ports(default_port_checks())}
    # The machine runs PostgreSQL and Redis on their standard ports.
    assert results["port:5432"].status == "ok", results["port:5432"]
    assert results["port:6379"].status == "ok", results["port:6379"]
    assert results["port:5432"].details["owners"][0]["pid"] is not None


def test_plan_accepts_port_hint_tuples(listener: tuple[int, int]) -> None:
    port, _ = listener
    results = run_doctor(
        DoctorPlan(ports=[(port, "stale-engine"), (5432, "postgres")], check_clock=False)
    )
    assert [r.status for r in results] == ["ok", "ok"]


def test_env_vars_are_masked() -> None:
    secret = "bg_live_9f8e7d6c5b4a3928"
    env = {
        "EXCHANGE_API_KEY": secret,
        "PADDED": secret + "\n",
        "QUOTED": f'"{secret}"',
        "SHORT": "abc",
        "EMPTY": "",
    }
    results = [check_env_var(n, env) for n in [*env, "MISSING"]]
    by_name = {r.name.removeprefix("env:"): r for r in results}
    assert by_name["EXCHANGE_API_KEY"].status == "ok"
    assert by_name["EXCHANGE_API_KEY"].details == {
        "set": True,
        "length": len(secret),
        "masked": f"bg*** ({len(secret)} chars)",
    }
    assert by_name["PADDED"].status == "warn" and "whitespace" in by_name["PADDED"].summary
    assert by_name["QUOTED"].status == "warn" and "quotes" in by_name["QUOTED"].summary
    assert by_name["SHORT"].details["masked"] == "*** (3 chars)"  # too short to show any
    assert by_name["EMPTY"].status == "fail"
    assert by_name["MISSING"].status == "fail"
    text = as_json(results)
    assert secret not in text
    assert secret[:3] not in text  # never more than 2 characters
    assert "abc" not in text
    assert mask_value("0123456789") == "01*** (10 chars)"


def test_unreachable_database_is_fail_with_redacted_dsn() -> None:
    dsn = f"postgresql://trader:Sup3rS3cretPw@127.0.0.1:{free_port()}/trading"
    result = check_postgres(dsn, timeout=3)
    assert result.status == "fail"
    assert "Sup3rS3cretPw" not in as_json(result)
    assert "trader:***@127.0.0.1" in result.details["dsn"]
    assert "refused" in result.summary.lower()
    assert "db-connection-failure" in result.hint


def test_wrong_database_user_password_never_shown() -> None:
    dsn = "host=127.0.0.1 port=5432 dbname=postgres user=no_such_role password='p w-Secret9'"
    result = check_postgres(dsn, timeout=3)
    assert result.status == "fail"
    assert "p w-Secret9" not in as_json(result)
    assert "no_such_role" in result.summary


def test_real_postgres_is_ok() -> None:
    result = check_postgres(LOCAL_PG, timeout=3)
    assert result.status == "ok", result
    assert result.details["server_version"] >= 100000


def test_redis_reachable_and_unreachable() -> None:
    ok = check_redis(LOCAL_REDIS, timeout=3)
    assert ok.status == "ok", ok
    bad = check_redis(f"redis://:R3disPw@127.0.0.1:{free_port()}/0", timeout=3)
    assert bad.status == "fail"
    assert "R3disPw" not in as_json(bad)


def test_disk_thresholds(tmp_path: Path) -> None:
    assert check_disk(tmp_path, 0.0, 0.0).status == "ok"
    assert check_disk(tmp_path, 1.01, 0.0).status == "warn"
    failing = check_disk(tmp_path / "not" / "yet", 1.01, 1.01)
    assert failing.status == "fail"
    assert failing.details["measured_at"] == str(tmp_path)
    assert failing.details["total_bytes"] > 0


def test_clock_check_reports_a_source() -> None:
    result = check_clock(LOCAL_PG, timeout=3, warn_s=1.0, fail_s=5.0)
    assert result.name == "clock"
    assert result.details["source"] in ("timedatectl", "postgres")
    if result.details["source"] == "postgres":
        # Same host, same clock: the measured skew is within one round trip.
        assert result.status == "ok"
        assert abs(result.details["skew_s"]) <= result.details["round_trip_s"] + 0.01


def test_run_doctor_full_plan(tmp_path: Path) -> None:
    secret = "topsecretvalue123"
    plan = DoctorPlan(
        env_vars=["CHIMERA_DOCTOR_KEY"],
        postgres_dsns=[LOCAL_PG],
        redis_urls=[LOCAL_REDIS],
        dirs=[tmp_path],
        env={"CHIMERA_DOCTOR_KEY": secret},
    )
    results = run_doctor(plan)
    names = [r.name for r in results]
    # With no ports given, a plan checks the well-known ones (the CLI passes its config's).
    assert names[:3] == ["port:5432", "port:6379", "port:5672"]
    assert names[3] == "env:CHIMERA_DOCTOR_KEY"
    assert names[4].startswith("postgres:") and names[5].startswith("redis:")
    assert names[6] == f"disk:{tmp_path}" and names[7] == "clock"
    assert all(r.status in ("ok", "warn", "fail") for r in results)
    assert secret not in as_json(results)
    statuses = {r.name: r.status for r in results}
    assert statuses["port:5432"] == statuses[names[4]] == statuses[names[5]] == "ok"


# --------------------------------------------------------------------------- through the CLI


def _stack(http_port: int, metrics_port: int, feed_port: int) -> dict[str, Any]:
    """Components as a user writes them: watched servers, a managed child, an external feed."""
    return {
        "agent": {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
        "components": {
            "postgres": {"runtime": "external", "readiness": {"postgres": LOCAL_PG}},
            "cache": {"runtime": "external", "liveness": {"redis": LOCAL_REDIS}},
            "feed": {"runtime": "external", "readiness": {"tcp": f"127.0.0.1:{feed_port}"}},
            "engine": {
                "runtime": "process",
                "command": child("http", http_port),
                "depends_on": ["postgres"],
                "readiness": {"http": f"http://127.0.0.1:{http_port}/health", "period": "0.2s"},
                "trading": {"control": {"http": f"http://127.0.0.1:{http_port}"}},
            },
        },
    }


def _doctor(config: Path) -> dict[str, Any]:
    done = run_cli(config, "doctor", "--json")
    assert done.stdout, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_doctor_checks_the_ports_the_config_names(tmp_path: Path) -> None:
    http_port, metrics_port, feed_port = free_port(), free_port(), free_port()
    config = tmp_path / "stack.yaml"
    stack = _stack(http_port, metrics_port, feed_port)
    stack["agent"]["state_dir"] = str(tmp_path / "var")
    config.write_text(yaml.safe_dump(stack))
    checks = _doctor(config)
    ports = {name for name in checks if name.startswith("port:")}
    # The servers from their probes, the engine (probe and control URL: one port), the feed,
    # the agent's listener; no RabbitMQ port in a stack that has no RabbitMQ.
    assert ports == {f"port:{p}" for p in (5432, 6379, http_port, feed_port, metrics_port)}
    assert checks["port:5432"]["status"] == "ok" and "postgres" in checks["port:5432"]["summary"]
    assert checks["port:6379"]["status"] == "ok" and "redis" in checks["port:6379"]["summary"]
    # No agent runs: the engine and the agent are about to bind theirs, so they must be free.
    assert checks[f"port:{http_port}"]["summary"] == f"{http_port} (engine) is free"
    assert checks[f"port:{metrics_port}"]["summary"] == f"{metrics_port} (agent) is free"
    # The feed is watched, not started: nobody on its port means it is down.
    feed = checks[f"port:{feed_port}"]
    assert feed["status"] == "warn" and feed["summary"] == f"nothing listens on {feed_port} (feed)"


def test_doctor_with_another_config_names_the_live_agent_not_a_stale_process(
    agent_factory: Callable[[dict[str, Any]], AgentProcess], tmp_path: Path
) -> None:
    http_port, metrics_port, feed_port = free_port(), free_port(), free_port()
    agent = agent_factory(_stack(http_port, metrics_port, feed_port)).start()
    engine = agent.wait_state("engine", "running", timeout=60)
    agent_pid = agent.status()["agent"]["pid"]
    state_dir = agent.state_dir.resolve()

    # The same stack under another state dir: this config's agent does not run.
    other = tmp_path / "other.yaml"
    stack = _stack(http_port, metrics_port, feed_port)
    stack["agent"]["state_dir"] = str(tmp_path / "other-var")
    other.write_text(yaml.safe_dump(stack))
    checks = _doctor(other)

    theirs = f"another chimera-ops agent (pid {agent_pid}, state_dir {state_dir})"
    port = checks[f"port:{http_port}"]
    # Still a conflict for the stack this config would start, but not a leftover to kill.
    assert port["status"] == "fail"
    assert port["summary"] == (
        f"{http_port} (engine) is held by engine (pid {engine['pid']}) of {theirs}: "
        "a live stack, not a stale process"
    )
    assert "stale process (kill" not in port["hint"] and f"kill {engine['pid']}" not in port["hint"]
    assert f"kill -TERM {agent_pid}" in port["hint"]
    assert port["details"]["owners"][0]["chimera_ops"] == {
        "agent_pid": agent_pid,
        "state_dir": str(state_dir),
        "component": "engine",
    }
    metrics = checks[f"port:{metrics_port}"]
    assert metrics["status"] == "fail"
    assert metrics["summary"].startswith(f"{metrics_port} (agent) is held by {theirs}: ")

    # With its own config, the same processes are this stack's own.
    mine = _doctor(agent.config_path)
    assert mine[f"port:{http_port}"]["status"] == "ok", mine[f"port:{http_port}"]
    assert mine[f"port:{metrics_port}"]["status"] == "ok", mine[f"port:{metrics_port}"]


def test_a_marked_leftover_whose_agent_is_gone_is_still_stale(tmp_path: Path) -> None:
    """A process with an agent's marker but no live agent (the guard died too) is a leftover."""
    port = free_port()
    env = {"CHIMERA_OPS_UNIT": f"0123456789ab/{_dead_pid()}/engine", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port), "left-over"], env=env)
    try:
        wait_tcp("127.0.0.1", port)
        [result] = check_ports([PortCheck(port, component="engine", must_be_free=True)], tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert result.status == "fail"
    assert "chimera-ops agent" not in result.summary
    assert f"stop the stale process (kill {proc.pid})" in result.hint


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid
