"""The docker runtime against a real engine: real containers, real faults (docker kill, a
HEALTHCHECK that starts failing, a container over its --memory limit, an agent killed -9)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.docker.conftest import Docker, poll
from tests.harness import AgentProcess

HEALTHY_FILE = "test -f /tmp/ok"


def config(host: str, components: dict[str, Any]) -> dict[str, Any]:
    return {"agent": {"docker": {"host": host}}, "components": components}


def events(agent: AgentProcess, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in agent.events(name) if kind is None or e["kind"] == kind]


def test_killed_container_restarted_not_oom_and_missing_one_unknown(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    docker.run("co-kill")
    agent = agent_factory(
        config(
            docker.host,
            {
                "web": {
                    "runtime": "docker",
                    "container": "co-kill",
                    "restart": {"policy": "always"},
                },
                "ghost": {"runtime": "docker", "container": "co-no-such"},
            },
        )
    ).start()
    first = agent.wait_state("web", "running")
    assert first["docker"]["last_start"] == "adopted"
    ghost = agent.wait_state("ghost", "unknown")
    assert "no such container 'co-no-such' (known: " in ghost["reason"]
    assert "co-kill" in ghost["reason"]
    assert "ghost:state" in ghost["alerts"]

    started_before = docker.state("co-kill")["StartedAt"]
    docker("kill", "-s", "KILL", "co-kill")
    comp = poll(
        lambda: (c := agent.component("web"))["restarts"] == 1 and c["state"] == "running" and c,
        what="web restarted by the agent",
    )
    assert comp["last_exit"].startswith("killed by SIGKILL"), comp["last_exit"]
    assert "OOM" not in comp["last_exit"]
    assert docker.state("co-kill")["StartedAt"] != started_before
    assert docker.state("co-kill")["Running"]
    assert agent.proc is not None and agent.proc.poll() is None  # the ghost never hurt the agent


def test_docker_restart_policy_is_recorded_not_raced(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    docker.run("co-always", "--restart", "always")
    agent = agent_factory(
        config(docker.host, {"cache": {"runtime": "docker", "container": "co-always"}})
    ).start()
    agent.wait_state("cache", "running")
    # A crash (SIGKILL from the host, not `docker kill`, which Docker counts as a manual stop).
    os.kill(docker.state("co-always")["Pid"], signal.SIGKILL)
    comp = poll(
        lambda: (c := agent.component("cache"))["restarts"] == 1 and c["state"] == "running" and c,
        what="Docker's restart recorded",
    )
    assert comp["docker"]["last_start"] == "restarted by Docker"
    backoff = [e for e in events(agent, "cache", "state") if e.get("to_state") == "backoff"]
    assert (
        "restarted by Docker (restart policy 'always'), not by the agent" in backoff[-1]["reason"]
    )
    # Exactly one container, restarted once, by Docker: the agent issued no start of its own.
    assert docker.inspect("co-always")["RestartCount"] == 1
    assert not [e for e in events(agent, "cache", "container") if "by the agent" in e["reason"]]
    names = docker("ps", "-a", "--filter", "name=co-always", "--format", "{{.Names}}").split()
    assert names == ["co-always"]


def test_unhealthy_restarted_with_incident_docker_alone_never(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    health = ["--health-cmd", HEALTHY_FILE, "--health-interval", "1s", "--health-retries", "2"]
    start = "touch /tmp/ok; echo engine-up-$(date +%s); exec sleep 1000000"
    docker.run("co-sick", *health, command=start)
    docker.run("co-alone", "--restart", "always", *health, command=start)
    agent = agent_factory(
        config(
            docker.host,
            {
                "sick": {
                    "runtime": "docker",
                    "container": "co-sick",
                    "stop": {"grace": "1s"},
                    "liveness": {"docker_health": {}},
                }
            },
        )
    ).start()
    agent.wait_state("sick", "running")
    poll(lambda: docker.state("co-alone")["Health"]["Status"] == "healthy", what="co-alone healthy")
    before = docker.state("co-sick")["StartedAt"]
    docker("exec", "co-sick", "rm", "/tmp/ok")
    docker("exec", "co-alone", "rm", "/tmp/ok")
    poll(
        lambda: (
            docker.state("co-sick")["StartedAt"] != before
            and docker.state("co-sick")["Health"]["Status"] == "healthy"
        ),
        what="co-sick replaced and healthy",
    )
    # Docker alone (restart: always) leaves the unhealthy one as it is.
    alone = docker.inspect("co-alone")
    assert alone["State"]["Health"]["Status"] == "unhealthy"
    assert alone["RestartCount"] == 0
    kills = events(agent, "sick", "kill")
    assert kills and "Docker HEALTHCHECK: unhealthy" in kills[0]["reason"]
    incident = poll(lambda: list((agent.state_dir / "incidents").glob("*-sick")), what="incident")
    folder = incident[0]
    assert "engine-up-" in (folder / "logs.txt").read_text()  # the container's log tail
    inspect = json.loads((folder / "docker_inspect.json").read_text())
    assert inspect["Name"] == "/co-sick"
    assert "Processes" in json.loads((folder / "docker_top.json").read_text())


def test_slow_starter_inside_its_start_period_is_left_alone(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    # The probe's own start_period is 1 s: only the container's own (20 s) keeps it alive
    # while its HEALTHCHECK still fails for the first 4 s.
    docker.run(
        "co-slow",
        "--health-cmd", HEALTHY_FILE,
        "--health-interval", "1s",
        "--health-retries", "1",
        "--health-timeout", "1s",
        "--health-start-period", "20s",
        command="sleep 4; touch /tmp/ok; exec sleep 1000000",
    )  # fmt: skip
    agent = agent_factory(
        config(
            docker.host,
            {
                "slow": {
                    "runtime": "docker",
                    "container": "co-slow",
                    "restart": {"policy": "always"},
                    "liveness": {"docker_health": {}, "period": "1s", "start_period": "1s"},
                    "readiness": {"docker_health": {}, "period": "1s"},
                }
            },
        )
    ).start()
    started = docker.state("co-slow")["StartedAt"]
    assert agent.component("slow")["state"] == "starting"  # adopted while Docker says starting
    comp = agent.wait_state("slow", "running", timeout=40)
    assert comp["restarts"] == 0
    assert not events(agent, "slow", "kill")
    state = docker.state("co-slow")
    assert state["Health"]["Status"] == "healthy" and state["StartedAt"] == started


def test_oom_kill_detected_and_cgroup_read(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    docker.run(
        "co-oom",
        "--memory", "32m",
        "--memory-swap", "32m",
        command="while [ ! -f /tmp/eat ]; do sleep 0.2; done; x=$(head -c 200000000 /dev/zero | tr '\\0' a)",
    )  # fmt: skip
    agent = agent_factory(
        config(
            docker.host,
            {
                "eater": {
                    "runtime": "docker",
                    "container": "co-oom",
                    "restart": {"policy": "never"},
                    "monitors": {"memory": {"limit": "1GiB", "period": "1s"}},
                }
            },
        )
    ).start()
    agent.wait_state("eater", "running")
    memory = poll(
        lambda: (
            agent.component("eater")["monitors"].get("memory", {}).get("cgroup")
            and agent.component("eater")["monitors"]["memory"]
        ),
        what="a cgroup sample",
    )
    assert memory["container_limit_bytes"] == 32 * 1024 * 1024
    assert memory["cgroup"].startswith(("v1 ", "v2 "))
    docker("exec", "co-oom", "touch", "/tmp/eat")
    comp = agent.wait_state("eater", "exited", timeout=60)
    assert comp["last_exit"].startswith("OOM-killed at limit 32.0 MiB"), comp["last_exit"]


def test_agent_kill9_then_adopts_without_restart(
    docker: Docker, agent_factory: Callable[[dict[str, Any]], AgentProcess]
) -> None:
    docker.run("co-adopt")
    cfg = config(docker.host, {"svc": {"runtime": "docker", "container": "co-adopt"}})
    agent = agent_factory(cfg).start()
    agent.wait_state("svc", "running")
    before = docker.state("co-adopt")
    agent.stop(signal.SIGKILL)
    again = AgentProcess(agent.dir, cfg).start()
    try:
        comp = again.wait_state("svc", "running")
        assert comp["docker"]["last_start"] == "adopted"
        after = docker.state("co-adopt")
        assert after["StartedAt"] == before["StartedAt"] and after["Pid"] == before["Pid"]
        assert docker.inspect("co-adopt")["RestartCount"] == 0
        # Agent shutdown leaves the container running (it is not the agent's child).
        assert again.stop() == 0
        assert docker.state("co-adopt")["Running"]
    finally:
        again.stop()


def test_config_rejects_container_and_compose_together(tmp_path: Path) -> None:
    from tests.harness import run_cli

    path = tmp_path / "c.yaml"
    path.write_text(
        "components:\n"
        "  db:\n"
        "    runtime: docker\n"
        "    container: pg\n"
        "    compose: {project: p, service: db}\n"
    )
    done = run_cli(path, "config", "check")
    assert done.returncode == 2
    assert f"{path}:2: components.db" in done.stderr
    assert "not both" in done.stderr
