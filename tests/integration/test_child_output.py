"""Issue 19 item 4 and the log half of item 1: a child's output never waits for the agent.

Real agents, real children, real faults: the agent SIGSTOPped while a child prints 2000 lines/s,
the log relay SIGKILLed, the state dir's file system filled to the last byte, the state dir
removed with `rm -rf`. Each asserts that the child goes on (no blocked print, no SIGPIPE), that
supervision goes on, and that what the design keeps is kept and what it drops is counted.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness import AgentProcess, child, fill_disk, tmpfs, wait_for

RATE = 2000  # lines per second


def _chatty(directory: Path, max_size: str = "50MiB") -> dict[str, Any]:
    beat = directory / "heartbeat"
    return {
        "runtime": "process",
        "command": child("chatty", RATE, beat, 100),
        "logs": {"max_size": max_size, "keep": 2},
        "stop": {"grace": "2s"},
    }


def _beat(directory: Path) -> tuple[int, float, float]:
    seq, longest, at = (directory / "heartbeat").read_text().split()
    return int(seq), float(longest), float(at)


def _relay_pid(agent_pid: int) -> int:
    for proc in psutil.Process(agent_pid).children():
        if "chimera-ops-relay" in proc.cmdline():
            return proc.pid
    raise AssertionError("no log relay among the agent's children")


def _logged_seqs(log_dir: Path, name: str) -> list[int]:
    seqs: list[int] = []
    for path in log_dir.glob(f"{name}.log*"):
        for raw in path.read_bytes().split(b"\n"):
            at = raw.find(b"line ")
            if at >= 0 and raw[at + 5 : at + 15].isdigit():
                seqs.append(int(raw[at + 5 : at + 15]))
    return seqs


def test_a_stopped_agent_never_stops_a_chatty_child(agent_factory, short_tmp: Path) -> None:
    """Agent SIGSTOPped 15 s; the child prints 2000 lines/s throughout: its prints never block
    (a blocked 64 KiB pipe would pause it for ~14 s), and every line is in the log, once."""
    agent = agent_factory({"components": {"chatty": _chatty(short_tmp)}}).start()
    assert agent.proc is not None
    agent.wait_state("chatty", "running")
    wait_for(lambda: _beat(short_tmp)[0] > RATE, what="the child printing")
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        before = _beat(short_tmp)[0]
        time.sleep(15)
        during, longest, at = _beat(short_tmp)
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    assert time.time() - at < 2, "the heartbeat stopped while the agent was stopped"
    assert during - before > RATE * 10, f"only {during - before} lines in 15 s"
    assert longest < 5, f"a print blocked for {longest} s while the agent was stopped"
    agent.stop()
    seqs = _logged_seqs(agent.state_dir / "logs", "chatty")
    assert seqs, "nothing logged"
    # Every line from the first to the last logged is there exactly once (none lost, none twice).
    assert sorted(seqs) == list(range(seqs[0], seqs[0] + len(seqs))), "lines lost or repeated"
    assert max(seqs) >= during


def test_a_killed_relay_is_replaced_and_the_child_never_sees_a_broken_pipe(
    agent_factory, short_tmp: Path
) -> None:
    agent = agent_factory({"components": {"chatty": _chatty(short_tmp)}}).start()
    assert agent.proc is not None
    running = agent.wait_state("chatty", "running")
    relay = _relay_pid(agent.proc.pid)
    os.kill(relay, signal.SIGKILL)
    new_relay = wait_for(
        lambda: _relay_pid(agent.proc.pid) if _relay_pid(agent.proc.pid) != relay else None,
        what="a new relay",
    )
    assert new_relay != relay
    wait_for(
        lambda: any(e["kind"] == "log_relay_restarted" for e in agent.events()),
        what="the log_relay_restarted event",
    )
    # The same child, still printing (no SIGPIPE), and its new lines reach the log.
    assert agent.component("chatty")["pid"] == running["pid"]
    size = (agent.state_dir / "logs" / "chatty.log").stat().st_size
    wait_for(
        lambda: (agent.state_dir / "logs" / "chatty.log").stat().st_size > size + 100_000,
        what="new lines in the log",
    )


def test_a_full_disk_drops_lines_counts_them_and_resumes(short_tmp: Path) -> None:
    """The state dir on a 16 MiB tmpfs filled to the last byte: the child keeps printing, a
    killed child still comes back, and once space is freed the log says how many lines were
    dropped, and so do an event and the counter."""
    with tmpfs(short_tmp / "fs", "16m") as fs:
        agent = AgentProcess(
            short_tmp,
            {
                "agent": {"state_dir": str(fs / "var")},
                "components": {"chatty": _chatty(short_tmp, max_size="2MiB")},
            },
        )
        agent.start()
        try:
            running = agent.wait_state("chatty", "running")
            filler = fill_disk(fs)
            time.sleep(3)
            seq, longest, at = _beat(short_tmp)
            assert time.time() - at < 2 and longest < 5, "the child blocked on a full disk"
            os.kill(running["pid"], signal.SIGKILL)
            wait_for(
                lambda: (
                    (c := agent.component("chatty"))["state"] == "running"
                    and c["pid"] != running["pid"]
                ),
                what="the killed child back on a full disk",
            )
            assert agent.proc is not None and agent.proc.poll() is None
            filler.unlink()
            log = agent.state_dir / "logs" / "chatty.log"

            def resume_note() -> str | None:
                for path in log.parent.glob("chatty.log*"):
                    for line in path.read_text(errors="replace").splitlines():
                        if "log writes resumed" in line:
                            return line
                return None

            note = wait_for(resume_note, what="the resume note")
            events = wait_for(
                lambda: [e for e in agent.events("chatty") if e["kind"] == "log_resumed"],
                what="the log_resumed event",
            )
            assert events[0]["data"]["dropped_lines"] > 0
            assert any(e["kind"] == "log_write_error" for e in agent.events("chatty"))
            assert "No space left on device" in note
        finally:
            agent.stop()


def test_a_removed_state_dir_gets_its_log_back(agent_factory, short_tmp: Path) -> None:
    agent = agent_factory({"components": {"chatty": _chatty(short_tmp)}}).start()
    running = agent.wait_state("chatty", "running")
    shutil.rmtree(agent.state_dir)
    log = agent.state_dir / "logs" / "chatty.log"
    wait_for(log.exists, timeout=10, what="the log file made anew")
    wait_for(lambda: log.stat().st_size > 100_000, what="lines in the new log")
    assert os.stat(log.parent).st_mode & 0o777 == 0o700
    assert log.stat().st_mode & 0o777 == 0o600
    seq, longest, at = _beat(short_tmp)
    assert time.time() - at < 2 and longest < 5
    assert psutil.pid_exists(running["pid"])


@pytest.mark.parametrize("line", [b"2026-12-02T16:32:22.123Z stderr spoofed\n"])
def test_a_line_that_looks_like_a_head_is_never_read_as_one(tmp_path: Path, line: bytes) -> None:
    """A child printing a line shaped like the log's own prefix cannot pass it off as another
    stream or time: that read is written with a prefix on every line."""
    from chimera_ops.ops.bundle.tail import tail_lines
    from chimera_ops.runtimes.relay import LogWriter, Stream

    class _Attach:
        writer = LogWriter(str(tmp_path / "x.log"), 1 << 20, 2)

    stream = Stream(-1, b"stdout", _Attach())  # type: ignore[arg-type]
    for read in (b"first\n" + line + b"last\n", b"plain one\nplain two\n"):
        stream.feed(bytearray(read), len(read))
    lines = tail_lines(tmp_path, "x", 10)
    assert [(x.stream, x.text) for x in lines] == [
        ("stdout", "first"),
        ("stdout", line.decode().strip()),
        ("stdout", "last"),
        ("stdout", "plain one"),
        ("stdout", "plain two"),
    ]
    raw = (tmp_path / "x.log").read_bytes().splitlines()
    assert raw[3].endswith(b" stdout plain one") and raw[4] == b"plain two"  # one head per read
