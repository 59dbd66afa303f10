"""The agent supervising real children with real faults: kill -9, crash loops, setsid, agent death."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil

from chimera_ops.agent.paths import instance_id
from tests.harness import child, pid_alive, wait_for
from tests.harness import http_component as _http_component
from tests.services import free_port


def _port_free(port: int) -> bool:
    """Can a server bind the port again (as servers do, with SO_REUSEADDR: TIME_WAIT is fine)?"""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_kill_9_child_is_restarted_with_events(agent_factory):
    port = free_port()
    agent = agent_factory({"components": {"web": _http_component(port)}}).start()
    first = agent.wait_state("web", "running")
    os.kill(first["pid"], signal.SIGKILL)

    def restarted():
        comp = agent.component("web")
        return comp if comp["state"] == "running" and comp["pid"] != first["pid"] else None

    second = wait_for(restarted, what="web restarted")
    assert second["restarts"] == 1
    assert "killed by SIGKILL" in second["last_exit"]
    changes = [
        (e["from_state"], e["to_state"]) for e in agent.events("web") if e["kind"] == "state"
    ]
    assert ("running", "backoff") in changes
    assert ("backoff", "starting") in changes
    assert changes[-1] == ("starting", "running")
    backoff = next(e for e in agent.events("web") if e["to_state"] == "backoff")
    assert "killed by SIGKILL" in backoff["reason"]


def test_crash_loop_goes_fatal_and_stays_down(agent_factory):
    agent = agent_factory(
        {
            "components": {
                "crasher": {
                    "runtime": "process",
                    "command": child("crash", 0.05, 3),
                    "restart": {
                        "policy": "on-failure",
                        "backoff": {"initial": "0.05s", "max": "0.1s"},
                        "crash_loop": {"max_restarts": 3, "window": "1m"},
                    },
                }
            }
        }
    ).start()
    fatal = agent.wait_state("crasher", "fatal")
    assert "crash loop" in fatal["reason"]
    assert fatal["restarts"] == 3
    time.sleep(0.5)
    assert agent.component("crasher")["restarts"] == 3  # no more restarts once fatal
    assert agent.cli("status").returncode == 1
    # An operator start clears fatal.
    result = agent.cli("start", "crasher", "--reason", "fixed the config")
    assert "crasher: start done, now" in result.stdout, result.stderr
    wait_for(
        lambda: agent.component("crasher")["restarts"] > 3, what="restart after operator start"
    )


def test_stop_kills_setsid_grandchild_and_frees_its_port(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "spawner": {
                    "runtime": "process",
                    "command": child("setsid-spawn", port),
                    "readiness": {"tcp": f"127.0.0.1:{port}", "period": "0.2s"},
                    "stop": {"grace": "1s"},
                }
            }
        }
    ).start()
    comp = agent.wait_state("spawner", "running")
    grandchildren = [
        p
        for p in psutil.process_iter(["environ"])
        if p.pid != comp["pid"]
        and (p.info["environ"] or {})
        .get("CHIMERA_OPS_UNIT", "")
        .startswith(f"{instance_id(agent.state_dir)}/{agent.proc.pid}/spawner")
    ]
    assert grandchildren, "the setsid grandchild should carry the marker"
    assert all(p.pid != p.ppid() for p in grandchildren)
    assert not _port_free(port)
    result = agent.cli("stop", "spawner")
    assert result.returncode == 0, result.stderr
    assert agent.component("spawner")["state"] == "stopped"
    wait_for(lambda: all(not pid_alive(p.pid) for p in grandchildren), what="grandchild gone")
    wait_for(lambda: _port_free(port), what="port freed")


def test_agent_sigkill_leaves_no_child(agent_factory):
    port, port2 = free_port(), free_port()
    agent = agent_factory(
        {
            "components": {
                "web": _http_component(port),
                "spawner": {
                    "runtime": "process",
                    "command": child("setsid-spawn", port2),
                    "readiness": {"tcp": f"127.0.0.1:{port2}", "period": "0.2s"},
                },
            }
        }
    ).start()
    web = agent.wait_state("web", "running")
    agent.wait_state("spawner", "running")
    mine = f"{instance_id(agent.state_dir)}/{agent.proc.pid}/"
    marker_pids = [
        p.pid
        for p in psutil.process_iter(["environ"])
        if (p.info["environ"] or {}).get("CHIMERA_OPS_UNIT", "").startswith(mine)
    ]
    assert len(marker_pids) >= 3  # web, spawner and its setsid'd grandchild
    agent.stop(signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(pid) for pid in marker_pids), what="every child gone")
    assert not pid_alive(web["pid"])
    wait_for(lambda: _port_free(port) and _port_free(port2), what="ports freed")


def test_restarted_agent_runs_no_duplicate_and_keeps_counters(agent_factory):
    port = free_port()
    agent = agent_factory({"components": {"web": _http_component(port)}}).start()
    first = agent.wait_state("web", "running")
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: agent.component("web")["restarts"] == 1, what="one restart")
    agent.wait_state("web", "running")
    agent.stop(signal.SIGKILL)
    agent.start()
    comp = agent.wait_state("web", "running")
    assert comp["restarts"] == 1  # counters live in the store
    servers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and "http" in p.info["cmdline"] and str(port) in p.info["cmdline"]
    ]
    assert len(servers) == 1, [p.info["cmdline"] for p in servers]


def test_restarted_agent_ends_leftovers_when_the_guard_died_too(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "spawner": {
                    "runtime": "process",
                    "command": child("setsid-spawn", port),
                    "readiness": {"tcp": f"127.0.0.1:{port}", "period": "0.2s"},
                }
            }
        }
    ).start()
    agent.wait_state("spawner", "running")
    me = psutil.Process(agent.proc.pid)
    guard = [
        c
        for c in psutil.process_iter(["cmdline"])
        if "chimera-ops-guard" in (c.info["cmdline"] or []) and c.ppid() == me.pid
    ]
    assert guard, "the death guard runs"
    for proc in guard:
        proc.kill()  # the guard dies first, then the agent: the setsid grandchild survives both
    agent.stop(signal.SIGKILL)
    time.sleep(0.3)
    assert not _port_free(port), "the grandchild outlived agent and guard"
    agent.start()
    agent.wait_state("spawner", "running")
    kinds = [e for e in agent.events() if e["kind"] == "orphan_ended"]
    assert kinds, "the new agent recorded ending what the old one left"


def test_second_agent_refuses_with_first_pid(agent_factory):
    first = agent_factory({"components": {}}).start()
    second = agent_factory({"components": {}})
    second.start(wait=False)
    assert second.proc is not None
    code = second.proc.wait(20)
    assert code == 1
    assert f"pid {first.proc.pid}" in second.output()


def test_second_agent_refuses_even_when_the_lock_file_was_deleted(agent_factory):
    first = agent_factory(
        {"components": {"svc": {"runtime": "process", "command": child("sleep")}}}
    )
    first.start()
    child_pid = first.wait_state("svc", "running")["pid"]
    (first.state_dir / "agent.pid").unlink()  # as `rm -rf var` under a running agent would
    second = agent_factory(
        {"components": {"svc": {"runtime": "process", "command": child("sleep")}}}
    )
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert f"pid {first.proc.pid}" in second.output() and "lock file was removed" in second.output()
    assert pid_alive(child_pid), "the refusing agent must not touch the running agent's children"


def test_missing_executable_goes_fatal_and_agent_stays_up(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "ghost": {"runtime": "process", "command": ["/nonexistent/bin/engine", "--x"]},
                "web": _http_component(port),
            }
        }
    ).start()
    ghost = agent.wait_state("ghost", "fatal")
    assert "not found" in ghost["reason"] and "/nonexistent/bin/engine" in ghost["reason"]
    agent.wait_state("web", "running")
    assert agent.proc.poll() is None


def test_dependency_gates_start_until_ready(agent_factory):
    dep_port, app_port = free_port(), free_port()
    agent = agent_factory(
        {
            "components": {
                "db": {
                    "runtime": "external",
                    "readiness": {"tcp": f"127.0.0.1:{dep_port}", "period": "0.2s"},
                },
                "app": _http_component(app_port, depends_on=["db"]),
            }
        }
    ).start()
    time.sleep(1.0)
    assert agent.component("app")["state"] == "stopped"
    assert agent.component("db")["state"] in ("starting", "unhealthy")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", dep_port))
    listener.listen(5)
    try:
        agent.wait_state("db", "running")
        agent.wait_state("app", "running")
    finally:
        listener.close()


def test_sigterm_stops_children_in_reverse_order_and_exits_0(agent_factory):
    p1, p2 = free_port(), free_port()
    agent = agent_factory(
        {
            "components": {
                "base": _http_component(p1),
                "top": _http_component(p2, depends_on=["base"]),
            }
        }
    ).start()
    top = agent.wait_state("top", "running")
    base = agent.component("base")
    assert agent.stop(signal.SIGTERM) == 0
    assert not pid_alive(top["pid"]) and not pid_alive(base["pid"])
    from chimera_ops.store import Store

    store = Store.open_in(agent.state_dir, readonly=True)
    stops = [e.component for e in store.events() if e.to_state == "stopped"]
    store.close()
    assert stops.index("top") < stops.index("base")


def test_probes_keep_their_period_under_the_default_tick(agent_factory, tmp_path):
    # The default tick (5 s) is only a safety net: a probe's next run is scheduled when it
    # finishes, and that must wake a sleeping loop. Each exec probe run appends one line.
    runs = tmp_path / "runs"
    agent = agent_factory(
        {
            "agent": {"tick": "5s"},
            "components": {
                "worker": {
                    "runtime": "process",
                    "command": child("sleep"),
                    "liveness": {
                        "exec": ["sh", "-c", f"echo run >> {runs}"],
                        "period": "0.2s",
                    },
                }
            },
        }
    ).start()
    agent.wait_state("worker", "running")
    start = runs.read_text().count("run") if runs.exists() else 0
    time.sleep(3.0)
    done = runs.read_text().count("run") - start
    # ~15 runs at the period; a loop that missed the wake-ups runs it about once per tick.
    assert done >= 6, f"{done} probe runs in 3 s at a 0.2 s period"
