"""Probes against real unreachable targets, a hanging command, a SIGSTOPped child, RabbitMQ."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import psutil

from chimera_ops.probes import build_probe
from chimera_ops.probes.spec import ProbeConfig
from tests.services import free_port


def run(config: dict, **kw):
    return asyncio.run(build_probe(ProbeConfig.model_validate(config), **kw).run())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_http_unreachable_is_a_failure_with_reason():
    port = free_port()
    result = run({"http": f"http://user:pw123@127.0.0.1:{port}/health", "timeout": "2s"})
    assert not result.ok
    assert f"127.0.0.1:{port}" in result.reason and "pw123" not in result.reason


def test_tcp_unreachable_is_a_failure_with_reason():
    port = free_port()
    result = run({"tcp": f"127.0.0.1:{port}", "timeout": "2s"})
    assert not result.ok and "cannot connect" in result.reason


def test_tcp_and_redis_reachable():
    assert run({"tcp": "127.0.0.1:6379"}).ok
    result = run({"redis": "redis://127.0.0.1:6379/0", "timeout": "3s"})
    assert result.ok and "connected_clients" in result.details


def test_hanging_exec_times_out_and_its_tree_is_killed(tmp_path):
    pidfile = tmp_path / "pids"
    # sh forks sleep as a child (no exec), so both the leader and a group member must die.
    script = f"echo $$ > {pidfile}; sleep 30 & echo $! >> {pidfile}; wait"
    result = run({"exec": ["sh", "-c", script], "timeout": "500ms"})
    assert not result.ok and "timed out" in result.reason
    pids = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert wait_gone(pid), f"pid {pid} survived the probe timeout"


def test_exec_sleep_30_with_timeout():
    result = run({"exec": ["sleep", "30.4711"], "timeout": "500ms"})
    assert not result.ok and "timed out" in result.reason
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] == ["sleep", "30.4711"] and not gone(p.pid)
    ]
    for p in leftovers:
        assert wait_gone(p.pid)


def test_exec_exit_code():
    assert run({"exec": ["true"]}).ok
    result = run({"exec": ["sh", "-c", "echo broken >&2; exit 4"]})
    assert not result.ok and "exited 4" in result.reason and "broken" in result.reason


def test_sigstopped_child_fails_process_probe():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert run({"process": {}}, pid_provider=lambda: child.pid).ok
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        result = run({"process": {}}, pid_provider=lambda: child.pid)
        assert not result.ok and "stopped" in result.reason
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()
        result = run({"process": {}}, pid_provider=lambda: child.pid)
        assert not result.ok and "does not exist" in result.reason
        assert not run({"process": {}}, pid_provider=lambda: None).ok
    finally:
        child.kill()
        child.wait()


def test_process_probe_pid_file(tmp_path):
    pidfile = tmp_path / "engine.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    assert run({"process": str(pidfile)}).ok
    assert not run({"process": str(tmp_path / "missing.pid")}).ok


def test_rabbitmq_via_rabbitmqctl():
    result = run({"rabbitmq": {"max_depth": 10000}, "timeout": "20s"})
    assert result.ok, result.reason
    assert isinstance(result.details["queues"], dict)
    result = run({"rabbitmq": {"queues": ["chimera-no-such-queue"]}, "timeout": "20s"})
    assert not result.ok and "chimera-no-such-queue" in result.reason
