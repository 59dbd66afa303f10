"""Pure parts of the docker runtime: OOM proof, Docker's restart rule, unknown, cgroup files,
HEALTHCHECK grace, compose import, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimera_ops.agent.reconcile import (
    UnitView,
    container_exit_cause,
    decide,
    docker_restarts,
)
from chimera_ops.config import BackoffConfig, ConfigError, CrashLoopConfig, parse_config
from chimera_ops.docker.cgroup import parse_flat_keyed, parse_proc_cgroup, read_memory
from chimera_ops.docker.compose_import import compose_size, config_from_compose
from chimera_ops.runtimes.base import ExitInfo
from chimera_ops.runtimes.docker import healthcheck_grace, parse_docker_time
from chimera_ops.states import State

MIB = 1024 * 1024


def view(**kw: object) -> UnitView:
    base: dict[str, object] = dict(
        name="c",
        managed=True,
        state=State.RUNNING,
        desired_up=True,
        policy="on-failure",
        backoff=BackoffConfig(),
        crash_loop=CrashLoopConfig(max_restarts=3, window=60),
        now=1000.0,
        state_since=900.0,
        started_at=900.0,
    )
    base.update(kw)
    return UnitView(**base)  # type: ignore[arg-type]


def test_oom_needs_evidence_not_just_137() -> None:
    assert container_exit_cause(137, False, False, 0, 32 * MIB) == ""  # docker kill -s KILL
    assert container_exit_cause(137, False, False, None, None) == ""
    assert container_exit_cause(137, False, False, 1, 32 * MIB) == (
        "OOM-killed at limit 32.0 MiB (exit code 137)"
    )
    assert container_exit_cause(137, False, True, None, None) == "OOM-killed (exit code 137)"
    assert container_exit_cause(137, True, False, None, 2 * 1024 * MIB).startswith(
        "OOM-killed at limit 2.0 GiB"
    )
    assert "after an OOM kill inside" in container_exit_cause(1, False, False, 2, None)


def test_docker_restart_rule() -> None:
    assert docker_restarts("always", 0, 0, 1, False, False) == "Docker (restart policy 'always')"
    assert docker_restarts("unless-stopped", 0, 5, 0, False, False)
    assert docker_restarts("always", 0, 0, 1, True, False) == ""  # the agent's own stop
    assert docker_restarts("no", 0, 0, 1, False, False) == ""
    assert docker_restarts("on-failure", 0, 0, 0, False, False) == ""  # clean exit
    assert docker_restarts("on-failure", 3, 2, 1, False, False)
    assert docker_restarts("on-failure", 3, 3, 1, False, False) == ""  # retries used up
    assert docker_restarts("no", 0, 0, 1, False, True)  # the engine says it is restarting


def test_docker_restart_is_recorded_then_crash_loop() -> None:
    exit_info = ExitInfo(1, None, 999.0, False, restarted_by="Docker (restart policy 'always')")
    action = decide(view(pending_exit=exit_info, policy="never"))
    assert action.kind == "backoff" and action.delay == 0.0
    assert "restarted by Docker (restart policy 'always'), not by the agent" in action.reason
    looping = decide(view(pending_exit=exit_info, restart_times=(950.0, 960.0, 970.0)))
    assert looping.kind == "fatal" and "crash loop" in looping.reason


def test_unreachable_engine_makes_unknown_then_start() -> None:
    why = "the Docker engine at unix:///x does not answer"
    assert decide(view(unavailable=why)) == decide(view(state=State.UNHEALTHY, unavailable=why))
    assert decide(view(unavailable=why)).kind == "mark_unknown"
    assert decide(view(state=State.UNKNOWN, unavailable=why)).kind == "none"
    assert decide(view(state=State.UNKNOWN)).kind == "start"
    # no such container: looked for again only after the retry delay
    assert decide(view(state=State.UNKNOWN, backoff_until=1005.0)).kind == "none"
    assert decide(view(state=State.UNKNOWN, backoff_until=999.0)).kind == "start"


def test_cgroup_parsing_v1_v2_and_hybrid(tmp_path: Path) -> None:
    v1 = "4:memory:/docker/abc\n0::/docker/abc\n"
    assert parse_proc_cgroup(v1) == (1, "/docker/abc")
    assert parse_proc_cgroup("0::/system.slice/docker-abc.scope\n") == (
        2,
        "/system.slice/docker-abc.scope",
    )
    assert parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2
    d1 = tmp_path / "v1"
    d1.mkdir()
    (d1 / "memory.usage_in_bytes").write_text("10485760\n")
    (d1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (d1 / "memory.stat").write_text("cache 1\ntotal_inactive_file 1048576\n")
    (d1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    sample = read_memory(1, d1)
    assert sample is not None and sample.usage == 9 * MIB and sample.limit is None
    assert sample.oom_kills == 1
    d2 = tmp_path / "v2"
    d2.mkdir()
    (d2 / "memory.current").write_text("4194304\n")
    (d2 / "memory.max").write_text("33554432\n")
    (d2 / "memory.stat").write_text("anon 1\ninactive_file 0\n")
    (d2 / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    sample = read_memory(2, d2)
    assert sample is not None and sample.limit == 32 * MIB and sample.oom_kills == 1
    assert read_memory(2, tmp_path / "gone") is None


def test_healthcheck_grace_and_docker_time() -> None:
    s = 1_000_000_000
    assert healthcheck_grace(None) is None
    assert healthcheck_grace({"Test": ["NONE"]}) is None
    hc = {"Test": ["CMD", "x"], "Interval": s, "Timeout": s, "Retries": 2, "StartPeriod": 20 * s}
    assert healthcheck_grace(hc) == 23.0
    assert healthcheck_grace({"Test": ["CMD", "x"]}) == pytest.approx(120.0)  # the defaults
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("1970-01-01T00:00:01.5Z") == pytest.approx(1.5)


def test_config_docker_fields() -> None:
    ok = parse_config(
        "agent: {docker: {host: 'unix:///tmp/d.sock'}}\n"
        "components:\n"
        "  db: {runtime: docker, compose: {project: p, service: db},"
        " liveness: {docker_health: {}}}\n",
        environ={},
    )
    probe = ok.components["db"].liveness
    assert probe is not None and probe.kind == "docker_health" and probe.failure_threshold == 1
    assert ok.agent.docker.host == "unix:///tmp/d.sock"
    for text, message in [
        ("  a: {runtime: docker}\n", "needs 'container: NAME'"),
        ("  a: {runtime: docker, container: x, compose: {project: p, service: s}}\n", "not both"),
        ("  a: {runtime: docker, container: x, command: [sh]}\n", "remove 'command'"),
        ("  a: {runtime: process, command: [sh], container: x}\n", "belong to 'runtime: docker'"),
        ("  a: {runtime: external, liveness: {docker_health: {}}}\n", "needs 'runtime: docker'"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config("components:\n" + text, "f.yaml", environ={})
        assert message in str(err.value)
        assert "f.yaml:2:" in str(err.value)


SEED_TIMESCALE = """
services:
  timescaledb:
    image: timescale/timescaledb:latest-pg15
    environment: {POSTGRES_PASSWORD: secret-pw}
    ports: ["5432:5432"]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -U postgres"], interval: 10s}
    mem_limit: 2g
  redis:
    image: redis:7-alpine
    ports: ["6379:6379"]
  app:
    build: .
    depends_on:
      timescaledb: {condition: service_healthy}
      redis: {condition: service_started}
    ports: ["8000:8000"]
    restart: unless-stopped
"""

SEED_RABBIT = """
name: Bot_Stack
services:
  redis: {image: "redis:7", ports: ["127.0.0.1:6379:6379"]}
  rabbitmq: {image: "rabbitmq:3-management", ports: ["5672:5672", "15672:15672"]}
  postgres: {image: "postgres:16", ports: ["5432:5432"]}
  app: {image: "bot:latest", depends_on: [redis, rabbitmq, postgres]}
"""


@pytest.mark.parametrize("text", [SEED_TIMESCALE, SEED_RABBIT])
def test_compose_import_is_a_valid_config(text: str, tmp_path: Path) -> None:
    out = config_from_compose(text, "docker-compose.yml", tmp_path / "docker-compose.yml")
    cfg = parse_config(out, "out.yaml", environ={}, base_dir=tmp_path)
    assert all(c.runtime == "docker" for c in cfg.components.values())
    assert "secret-pw" not in out  # credentials are referenced through env, never copied
    assert "DECIDE: is this the trading engine?" in out
    app = cfg.components["app"]
    assert app.compose is not None and set(app.depends_on) >= {"redis"}


def test_compose_import_probes_and_project() -> None:
    out = config_from_compose(SEED_TIMESCALE, "f", Path("/srv/My Stack/docker-compose.yml"))
    cfg = parse_config(out, "out.yaml", environ={})
    db = cfg.components["timescaledb"]
    assert db.compose is not None and db.compose.project == "mystack"
    assert db.readiness is not None and db.readiness.kind == "postgres"
    assert db.liveness is not None and db.liveness.kind == "docker_health"
    assert db.monitors is not None and db.monitors.memory is not None
    assert db.monitors.memory.limit == 2 * 1024 * MIB
    assert cfg.components["app"].readiness.kind == "tcp"  # type: ignore[union-attr]
    rabbit = config_from_compose(SEED_RABBIT, "f", Path("/x/docker-compose.yml"))
    rcfg = parse_config(rabbit, "out.yaml", environ={})
    assert rcfg.components["rabbitmq"].readiness.kind == "rabbitmq"  # type: ignore[union-attr]
    assert rcfg.components["redis"].compose.project == "bot_stack"  # type: ignore[union-attr]
    assert compose_size("64m") == "64MiB" and compose_size("1gb") == "1GiB"
    assert compose_size("lots") is None


def test_compose_import_bad_file_names_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_compose("services:\n  a: [unclosed\n", "dc.yml", Path("/x/dc.yml"))
    assert "dc.yml:" in str(err.value) and "malformed YAML" in str(err.value)


def test_process_only_agent_never_imports_the_docker_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import chimera_ops.config as c\n"
        "from chimera_ops.agent.loop import Agent\n"
        "cfg = c.parse_config('components: {a: {runtime: process, command: [sleep, \"1\"]}}',"
        " environ={})\n"
        "agent = Agent(cfg)\n"
        "agent._runtime_for('a')\n"
        "print(sorted(m for m in sys.modules if m == 'docker' or m.startswith('docker.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_health_kill_that_exits_zero_is_still_restarted() -> None:
    clean = ExitInfo(0, None, 999.0, False)
    action = decide(view(pending_exit=clean, kill_reason="liveness probe failed: unhealthy"))
    assert action.kind == "backoff"
    assert decide(view(pending_exit=clean)).kind == "exited"  # on its own, exit 0: left stopped
