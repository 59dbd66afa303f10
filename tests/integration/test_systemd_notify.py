"""The sd_notify protocol against a real NOTIFY_SOCKET: a datagram socket this test binds, the
agent started as systemd would start it (NOTIFY_SOCKET, WATCHDOG_USEC in its environment)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chimera_ops.agent.sdnotify import SystemdNotify, settled, socket_address, summary
from chimera_ops.states import State
from tests.harness import child, wait_for
from tests.services import free_port

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; each message with its sender's pid
    (SO_PASSCRED), because NotifyAccess=main ignores messages from any other process."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.messages: list[tuple[int, dict[str, str]]] = []

    def drain(self) -> list[tuple[int, dict[str, str]]]:
        """Every datagram received so far, as (sender pid, fields)."""
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CRED.size))
            except BlockingIOError:
                return self.messages
            pid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CRED.unpack(payload[: _CRED.size])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, fields))

    def find(self, key: str) -> list[tuple[int, dict[str, str]]]:
        return [m for m in self.drain() if key in m[1]]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_path(short_tmp: Path) -> Iterator[tuple[str, NotifySocket]]:
    path = str(short_tmp / "notify.sock")
    sock = NotifySocket(path)
    yield path, sock
    sock.close()


def _env(notify: str, watchdog_usec: int | None = None) -> dict[str, str]:
    env = {**os.environ, "NOTIFY_SOCKET": notify}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


def test_ready_after_components_are_up_status_stopping_and_no_leak_to_children(
    agent_factory, short_tmp: Path, notify_path
) -> None:
    path, notify = notify_path
    port = free_port()
    env_dump = short_tmp / "child.env"
    agent = agent_factory(
        {
            "components": {
                # Listens only after 1.5 s: READY=1 must wait for it.
                "engine": {
                    "runtime": "process",
                    "command": child("slow-http", 1.5, port),
                    "readiness": {"http": f"http://127.0.0.1:{port}/health", "period": "1s"},
                },
                "side": {
                    "runtime": "process",
                    "command": ["sh", "-c", f"env > {env_dump}; exec sleep 1000"],
                },
            }
        }
    ).start(env=_env(path))
    assert agent.proc is not None
    ready = wait_for(lambda: notify.find("READY"), timeout=30, what="READY=1")
    # At the moment READY=1 arrived the engine was already answering.
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert agent.component("engine")["state"] == "running"
    pid, fields = ready[0]
    assert pid == agent.proc.pid, "sent by the agent's main process (NotifyAccess=main)"
    assert fields["READY"] == "1"
    statuses = [m[1]["STATUS"] for m in notify.find("STATUS")]
    assert any("2 components" in s for s in statuses), statuses
    assert len(notify.find("READY")) == 1, "READY=1 is said once"
    assert not notify.find("WATCHDOG"), "no WATCHDOG_USEC: no pings"

    wait_for(env_dump.exists, what="the child's environment")
    child_env = env_dump.read_text()
    assert "NOTIFY_SOCKET" not in child_env, "children must not talk to systemd as the agent"

    assert agent.stop() == 0
    stopping = notify.find("STOPPING")
    assert stopping and stopping[0][1]["STOPPING"] == "1"
    # STOPPING=1 came before the ordered shutdown recorded its stops.
    stops = [e for e in agent.events() if e["kind"] == "agent_stopped"]
    assert stops


def test_watchdog_pings_come_from_the_loop_and_stop_while_it_is_stopped(
    agent_factory, short_tmp: Path
) -> None:
    # The abstract namespace ('@name'), as systemd's own socket is.
    name = f"chimera-test-{os.getpid()}-{time.monotonic_ns()}"
    notify = NotifySocket(b"\0" + name.encode())
    try:
        agent = agent_factory(
            {
                # A minute-long tick: the pings prove the loop wakes for the watchdog itself.
                "agent": {"tick": "60s"},
                "components": {"worker": {"runtime": "process", "command": child("sleep")}},
            }
        ).start(env=_env(f"@{name}", watchdog_usec=600_000))  # ping every 0.3 s
        assert agent.proc is not None
        wait_for(lambda: len(notify.find("WATCHDOG")) >= 5, timeout=30, what="5 WATCHDOG=1")
        assert {pid for pid, _ in notify.find("WATCHDOG")} == {agent.proc.pid}

        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)  # let a datagram already in flight land
            before = len(notify.find("WATCHDOG"))
            time.sleep(2.0)  # about 7 ping periods of a stopped agent
            assert len(notify.find("WATCHDOG")) == before, "a stopped loop must not ping"
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: len(notify.find("WATCHDOG")) >= before + 3,
            timeout=30,
            what="pings again after SIGCONT",
        )
    finally:
        notify.close()


def test_protocol_pieces() -> None:
    assert socket_address("@sd/notify") == b"\0sd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert not settled([State.RUNNING, State.STARTING])
    assert settled([State.RUNNING, State.UNHEALTHY, State.FATAL, State.BACKOFF])
    text = summary({"db": State.RUNNING, "engine": State.UNHEALTHY})
    assert text == "2 components: 1 running, 1 unhealthy (not running: engine)"
    # Without NOTIFY_SOCKET everything is a no-op and nothing is due.
    quiet = SystemdNotify(None)
    quiet.after_tick({"db": State.RUNNING})
    assert quiet.next_due() is None and not quiet.ready
