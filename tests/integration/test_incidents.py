"""Incident capture against real Python children (running and SIGSTOPped) with real py-spy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chimera_ops.incidents import (
    IncidentNotFound,
    async_capture_incident,
    capture_incident,
    find_py_spy,
    list_incidents,
    load_incident,
    tail_file,
)

# A parent that sleeps in a named function and forks one grandchild (also Python), so the
# tree and the stack have something recognisable. The secret on the cmdline must be redacted.
CHILD = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"])
def frozen_here():
    while True:
        time.sleep(1)
frozen_here()
"""


def wait_for_children(pid: int, count: int, timeout: float = 15.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children(recursive=True)
        if len(kids) >= count:
            return kids
        time.sleep(0.05)
    raise TimeoutError(f"pid {pid} did not start {count} children")


def wait_for_interpreter(pid: int, timeout: float = 15.0) -> None:
    """py-spy needs libpython mapped; a process a few ms old may not have it yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        maps = Path(f"/proc/{pid}/maps").read_text()
        if "python" in maps and psutil.Process(pid).status() == psutil.STATUS_SLEEPING:
            return
        time.sleep(0.05)
    raise TimeoutError(f"pid {pid} did not start its interpreter")


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "--password=hunter2-secret"], start_new_session=True
    )
    try:
        wait_for_children(proc.pid, 1)
        wait_for_interpreter(proc.pid)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    log = tmp_path / "engine.log"
    with log.open("w") as fh:
        for i in range(5000):
            fh.write(f"2024-01-01 tick {i} db=postgresql://app:s3cretpw@127.0.0.1/app\n")
    return [log, tmp_path / "missing.log"]


def test_capture_running_child(tmp_path: Path, child: subprocess.Popen[bytes], logs) -> None:
    base = tmp_path / "incidents"
    history = [
        {"ok": False, "reason": f"timeout {i}", "details": {"token": "abc"}} for i in range(3)
    ]
    path = capture_incident(
        base,
        "engine",
        "liveness failed 3 times",
        pids=[child.pid],
        probe_history=history,
        log_files=logs,
        tail_lines=50,
    )
    assert path.parent == base
    assert path.name.endswith("-engine")
    names = {p.name for p in path.iterdir()}
    assert names == {"incident.json", "probes.json", "logs.txt", "processes.json", "stack.txt"}

    incident = json.loads((path / "incident.json").read_text())
    assert incident["component"] == "engine"
    assert incident["reason"] == "liveness failed 3 times"
    assert incident["pids"] == [child.pid]
    assert incident["summary"]["processes"] == 2

    processes = json.loads((path / "processes.json").read_text())
    by_pid = {p["pid"]: p for p in processes}
    kid = psutil.Process(child.pid).children()[0]
    assert by_pid[child.pid]["root"] is True
    assert by_pid[kid.pid]["ppid"] == child.pid
    for record in by_pid.values():
        assert {"cmdline", "status", "rss", "threads", "create_time", "open_fds"} <= set(record)
        assert record["rss"] > 0 and record["open_fds"] >= 3
    assert "hunter2-secret" not in (path / "processes.json").read_text()

    log_text = (path / "logs.txt").read_text()
    assert "tick 4999" in log_text and "tick 4950" in log_text and "tick 4949" not in log_text
    assert "s3cretpw" not in log_text
    assert "missing.log" in log_text and "unreadable" in log_text

    probes = json.loads((path / "probes.json").read_text())
    assert [p["reason"] for p in probes] == ["timeout 0", "timeout 1", "timeout 2"]
    assert probes[0]["details"]["token"] == "***"

    stack = (path / "stack.txt").read_text()
    assert find_py_spy() is not None
    assert f"pid {child.pid}" in stack and f"pid {kid.pid}" in stack
    assert f"Thread {child.pid}" in stack  # py-spy could ptrace in this container
    assert "frozen_here" in stack


def test_capture_sigstopped_child(tmp_path: Path, child: subprocess.Popen[bytes]) -> None:
    os.kill(child.pid, signal.SIGSTOP)
    try:
        path = asyncio.run(
            async_capture_incident(
                tmp_path, "engine", "frozen", pids=[child.pid], probe_history=[], log_files=[]
            )
        )
    finally:
        os.kill(child.pid, signal.SIGCONT)
    processes = json.loads((path / "processes.json").read_text())
    root = next(p for p in processes if p["pid"] == child.pid)
    assert root["status"] == "stopped"
    stack = (path / "stack.txt").read_text()
    # A blocking dump cannot suspend a stopped process; the nonblocking fallback can.
    assert "nonblocking" in stack
    assert "frozen_here" in stack


def test_gone_pid_and_no_stack(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = capture_incident(
        tmp_path,
        "collector/1",
        "memory limit",
        pids=[dead.pid],
        probe_history=[],
        log_files=[],
        stack_dump=False,
    )
    assert path.name.endswith("-collector_1")
    processes = json.loads((path / "processes.json").read_text())
    assert processes[0]["status"] == "gone"
    assert "disabled" in (path / "stack.txt").read_text()


def test_py_spy_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    # A non-Python process named python*: py-spy cannot read it; the reason is recorded.
    sleeper = tmp_path / "python-fake"
    sleeper.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(sleeper), "60"])
    try:
        wait_for_name(proc.pid, "python-fake")
        path = capture_incident(
            tmp_path / "inc", "fake", "cpu", pids=[proc.pid], probe_history=[], log_files=[]
        )
    finally:
        proc.kill()
        proc.wait()
    stack = (path / "stack.txt").read_text()
    assert "py-spy dump failed" in stack
    assert "exit" in stack


def wait_for_name(pid: int, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if psutil.Process(pid).name() == name:
            return
        time.sleep(0.02)
    raise TimeoutError(f"pid {pid} never became {name}")


def test_list_and_load(tmp_path: Path) -> None:
    me = os.getpid()
    first = capture_incident(
        tmp_path, "engine", "first", pids=[me], probe_history=[], log_files=[], stack_dump=False
    )
    second = capture_incident(
        tmp_path, "engine", "second", pids=[me], probe_history=[], log_files=[], stack_dump=False
    )
    (tmp_path / ".junk.partial").mkdir()  # an interrupted capture is never listed
    listed = list_incidents(tmp_path)
    assert [s.id for s in listed] == sorted([first.name, second.name], reverse=True)
    assert {s.reason for s in listed} == {"first", "second"}

    loaded = load_incident(tmp_path, first.name)
    assert loaded["incident"]["reason"] == "first"
    assert isinstance(loaded["processes"], list) and isinstance(loaded["logs"], str)

    with pytest.raises(IncidentNotFound) as err:
        load_incident(tmp_path, "20000101T000000Z-nope")
    assert first.name in str(err.value) and second.name in str(err.value)
    with pytest.raises(IncidentNotFound, match="none captured yet"):
        load_incident(tmp_path / "empty", "../etc")
    assert list_incidents(tmp_path / "empty") == []


def test_tail_file_bounds(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 300_000 + b"\nlast line\n")
    text = tail_file(big, 10, 1000)
    assert len(text) < 1100
    assert text.endswith("last line\n")
    assert tail_file(big, 1, 10_000) == "last line\n"
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert tail_file(empty, 10, 1000) == ""
    no_newline = tmp_path / "nn.log"
    no_newline.write_bytes(b"a\nb")
    assert tail_file(no_newline, 5, 1000) == "a\nb\n"
