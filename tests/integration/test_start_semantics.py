"""Issue 7 through the real agent: a restarted component is ready as soon as it answers, the
backoff resets after a short stable run, liveness never kills a process before it could answer,
a process that never answers is still killed, and a probe in flight across a restart does not
count for the new process."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import urlopen

from chimera_ops.client import AgentClient
from tests.harness import child, listener_pid, wait_for
from tests.services import free_port


def _answers(port: int) -> bool:
    try:
        with urlopen(f"http://127.0.0.1:{port}/health", timeout=0.25) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _component(client: AgentClient, name: str) -> dict:
    return next(c for c in client.status()["components"] if c["name"] == name)


def _http_component(port: int, **extra: object) -> dict:
    return {
        "runtime": "process",
        "command": child("http", port),
        "restart": {"policy": "always"},
        "stop": {"grace": "2s"},
        **extra,
    }


def test_restarted_component_is_running_as_soon_as_it_answers(agent_factory):
    port = free_port()
    # Default readiness period (10 s): before issue 7 the agent said `starting` for ~10 s.
    agent = agent_factory(
        {
            "components": {
                "victim": _http_component(
                    port, readiness={"http": f"http://127.0.0.1:{port}/health"}
                )
            }
        }
    ).start()
    client = AgentClient(agent.state_dir, timeout=5)
    first = agent.wait_state("victim", "running")
    os.kill(first["pid"], signal.SIGKILL)
    new_pid = wait_for(
        lambda: _answers(port) and (pid := listener_pid(port)) != first["pid"] and pid,
        timeout=20,
        what="a new pid answering /health",
    )
    # Within 1 s of the new child answering, the agent says so.
    comp = wait_for(
        lambda: (c := _component(client, "victim"))["state"] == "running" and c,
        timeout=1.0,
        what="victim running within 1 s of answering",
    )
    assert comp["pid"] == new_pid


def test_backoff_resets_between_kills_a_few_seconds_apart(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "victim": _http_component(
                    port,
                    readiness={"http": f"http://127.0.0.1:{port}/health"},
                    restart={
                        "policy": "always",
                        "backoff": {"reset_after": "1s"},
                        "crash_loop": {"max_restarts": 50, "window": "5m"},
                    },
                )
            }
        }
    ).start()
    client = AgentClient(agent.state_dir, timeout=5)
    for _ in range(10):
        comp = wait_for(
            lambda: (
                (c := _component(client, "victim"))["state"] == "running"
                and c["consecutive_failures"] == 0
                and c
            ),
            timeout=20,
            what="victim running with its backoff reset",
        )
        os.kill(comp["pid"], signal.SIGKILL)
        time.sleep(3)
    agent.wait_state("victim", "running")
    delays = [
        e["data"]["delay_s"]
        for e in agent.events("victim")
        if e["to_state"] == "backoff" and e["data"]
    ]
    assert len(delays) == 10, delays
    assert set(delays) == {0.1}, f"backoff grew although every run was stable: {delays}"


def test_monit_like_liveness_kills_once_per_freeze_and_never_crash_loops(agent_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    agent = agent_factory(
        {
            "components": {
                "victim": _http_component(
                    port,
                    liveness={"http": url, "period": "1s", "timeout": "1s", "failure_threshold": 1},
                    # Default crash-loop rule (5 restarts in 5 min): five freezes must not trip it.
                )
            }
        }
    ).start()
    client = AgentClient(agent.state_dir, timeout=5)
    for n in range(1, 6):
        # Frozen only once the agent's own liveness probe has seen this process answer:
        # before that its failures are inside the start grace by design (start_period).
        frozen = wait_for(
            lambda: (
                (c := _component(client, "victim"))["state"] == "running"
                and c["health"]["liveness"]["status"] == "passing"
                and _answers(port)
                and c
            ),
            timeout=20,
            what="victim running, answering and its liveness passing",
        )
        os.kill(frozen["pid"], signal.SIGSTOP)
        replaced = wait_for(
            lambda old=frozen["pid"]: (
                (c := _component(client, "victim"))["state"] == "running"
                and c["pid"] not in (None, old)
                and _answers(port)
                and c
            ),
            timeout=30,
            what=f"freeze {n}: a replacement running and answering",
        )
        time.sleep(2.5)  # longer than period + timeout: a second kill would have happened
        kills = [e for e in agent.events("victim") if e["kind"] == "kill"]
        assert len(kills) == n, [k["reason"] for k in kills]
        assert all("liveness probe failed" in k["reason"] for k in kills)
        now = _component(client, "victim")
        assert now["state"] == "running" and now["pid"] == replaced["pid"], now
    assert not [e for e in agent.events("victim") if e["to_state"] == "fatal"]


def test_process_that_never_answers_is_killed_after_start_period_and_ends_fatal(agent_factory):
    port = free_port()
    agent = agent_factory(
        {
            "components": {
                "mute": {
                    "runtime": "process",
                    "command": child("sleep"),  # never listens on the probed port
                    "liveness": {
                        "http": f"http://127.0.0.1:{port}/health",
                        "period": "0.5s",
                        "failure_threshold": 1,
                        "start_period": "2s",
                    },
                    "restart": {
                        "policy": "always",
                        "backoff": {"first": "0.1s", "initial": "0.1s", "max": "0.2s"},
                        "crash_loop": {"max_restarts": 2, "window": "5m"},
                    },
                    "stop": {"grace": "1s"},
                }
            }
        }
    ).start()
    agent.wait_state("mute", "fatal", timeout=60)
    events = agent.events("mute")
    kills = [e for e in events if e["kind"] == "kill"]
    assert len(kills) == 3 and all("liveness probe failed" in k["reason"] for k in kills)
    starts = [e["ts"] for e in events if e["to_state"] == "starting"]
    # Each kill came no earlier than start_period after the start it ended.
    for start, kill in zip(starts, kills, strict=True):
        assert kill["ts"] - start >= 2.0, (start, kill)


class _Hangable(BaseHTTPRequestHandler):
    """GET /health: 200; once `hang` is set, the next request is held (a probe that hangs)."""

    hang = threading.Event()
    release = threading.Event()
    hung = threading.Event()
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        with self.lock:
            hold = self.hang.is_set() and not self.hung.is_set()
            if hold:
                self.hung.set()
        if hold:
            self.release.wait(15)
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the prober gave up on a held request
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_probe_in_flight_across_a_restart_does_not_count_for_the_new_process(agent_factory):
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hangable)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe_url = f"http://127.0.0.1:{server.server_address[1]}/health"
    try:
        agent = agent_factory(
            {
                "components": {
                    "victim": _http_component(
                        port,
                        # No start grace: only the incarnation rule protects the new process.
                        liveness={
                            "http": probe_url,
                            "period": "0.5s",
                            "timeout": "4s",
                            "failure_threshold": 1,
                            "start_period": "0s",
                        },
                    )
                }
            }
        ).start()
        client = AgentClient(agent.state_dir, timeout=5)
        first = wait_for(
            lambda: (
                (c := _component(client, "victim"))["health"]["liveness"]["status"] == "passing"
                and c
            ),
            timeout=20,
            what="liveness passing",
        )
        _Hangable.hang.set()
        assert _Hangable.hung.wait(10), "a liveness run is in flight"
        os.kill(first["pid"], signal.SIGKILL)
        wait_for(
            lambda: _component(client, "victim")["pid"] not in (None, first["pid"]),
            timeout=20,
            what="a new process",
        )
        time.sleep(5.5)  # the hung run's timeout (4 s) has passed
        comp = _component(client, "victim")
        kills = [e for e in agent.events("victim") if e["kind"] == "kill"]
        assert not kills, [k["reason"] for k in kills]
        assert comp["state"] == "running" and comp["health"]["liveness"]["status"] == "passing"
    finally:
        _Hangable.release.set()
        server.shutdown()
