"""Issue 19, the control API: every read is bounded and runs off the loop, bodies are capped,
bad input is a 400 naming the field. Real agents, real HTTP over the real socket and TCP.

No test asserts a timing beyond a generous bound; the latencies are bench/bench_resilience.py's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from chimera_ops.store import Store
from tests.harness import AgentProcess, child, wait_for
from tests.services import free_port

MAX_PAGE = 1000  # GET /v1/events answers at most this many
MIB = 1024 * 1024


def _seed_events(state_dir: Path, count: int, component: str | None = "worker") -> None:
    """`count` events written straight into the store before the agent starts."""
    Store.open_in(state_dir).close()  # the schema, as the agent makes it
    now = time.time()
    rows = [
        (
            now - 3600 + i * 1e-3,
            component if i % 2 else None,
            "state",
            "running",
            "backoff",
            f"seeded event {i}: exited with code 1 after a long and detailed explanation",
            json.dumps({"i": i, "pid": 1000 + i}),
        )
        for i in range(count)
    ]
    db = sqlite3.connect(str(state_dir / "chimera.db"))
    with db:
        db.executemany(
            "INSERT INTO events(ts, component, kind, from_state, to_state, reason, data)"
            " VALUES (?,?,?,?,?,?,?)",
            rows,
        )
    db.close()


def _agent(agent_factory: Any, short_tmp: Path, events: int = 0) -> tuple[AgentProcess, int]:
    port = free_port()
    if events:
        _seed_events(short_tmp / "var", events)
    agent = agent_factory(
        {
            "agent": {"metrics": {"listen": f"127.0.0.1:{port}"}},
            "components": {
                "worker": {
                    "runtime": "process",
                    "command": child("sleep"),
                    "restart": {"policy": "on-failure", "backoff": {"initial": "0.2s"}},
                    "stop": {"grace": "1s"},
                }
            },
        }
    ).start()
    return agent, port


def _unix(agent: AgentProcess, timeout: float = 30.0) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(agent.state_dir / "agent.sock"))
    return httpx.Client(transport=transport, base_url="http://agent", timeout=timeout)


def _tcp(port: int, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout)


def _worker(client: httpx.Client) -> dict[str, Any]:
    status = client.get("/v1/status").json()
    return next(c for c in status["components"] if c["name"] == "worker")


def _rss(agent: AgentProcess) -> int:
    assert agent.proc is not None
    return int(psutil.Process(agent.proc.pid).memory_info().rss)


# ----------------------------------------------------------------- a flood of unbounded reads
@pytest.mark.slow
def test_a_flood_of_unbounded_reads_delays_no_restart(agent_factory, short_tmp):
    agent, port = _agent(agent_factory, short_tmp, events=300_000)
    control = _unix(agent)
    first = wait_for(lambda: (w := _worker(control))["state"] == "running" and w, what="worker")

    stop = threading.Event()
    answers: Counter[tuple[str, int]] = Counter()
    oversized: list[int] = []
    failures: list[str] = []
    rss: list[int] = []
    queries = (
        "/v1/events?limit=100000000",
        "/v1/events?limit=-1",
        "/v1/events?limit=100000000&since=0",
        "/v1/events?limit=100000000&component=worker",
    )

    def flood(make: Any, query: str, via: str) -> None:
        with make() as client:
            while not stop.is_set():
                try:
                    reply = client.get(query)
                except httpx.HTTPError as exc:
                    failures.append(f"{via} {query}: {exc!r}")
                    continue
                answers[(via, reply.status_code)] += 1
                if reply.status_code == 200 and query.startswith("/v1/events"):
                    found = len(reply.json()["events"])
                    if found > MAX_PAGE:
                        oversized.append(found)

    readers = [
        threading.Thread(target=flood, args=(lambda: _tcp(port), q, "tcp"), daemon=True)
        for q in queries
    ] + [
        threading.Thread(target=flood, args=(lambda: _unix(agent), q, "unix"), daemon=True)
        for q in queries
    ]
    # And the other read-only routes, whose work (a /proc walk) runs off the loop too.
    readers += [
        threading.Thread(target=flood, args=(lambda: _tcp(port), q, "tcp"), daemon=True)
        for q in ("/v1/status", "/metrics")
    ]
    for reader in readers:
        reader.start()
    try:
        wait_for(lambda: sum(answers.values()) >= 16, what="the flood to be answered")
        os.kill(first["pid"], signal.SIGKILL)
        killed = time.monotonic()
        with _unix(agent, timeout=10) as health_unix, _tcp(port, timeout=10) as health_tcp:
            healths = []
            while True:
                healths.append(health_unix.get("/v1/health").status_code)
                healths.append(health_tcp.get("/v1/health").status_code)
                rss.append(_rss(agent))
                worker = _worker(control)
                if worker["state"] == "running" and worker["pid"] != first["pid"]:
                    break
                assert time.monotonic() - killed < 10, f"not restarted in 10 s: {worker}"
                time.sleep(0.1)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
    assert healths and set(healths) == {200}, healths
    assert not oversized, f"answers over the cap: {oversized[:5]}"
    assert not failures, failures[:5]
    # Every kind of answer came on both listeners; nothing but 200 (capped) and 400 (limit=-1).
    assert {code for _, code in answers} == {200, 400}, answers
    assert {via for via, _ in answers} == {"tcp", "unix"}, answers
    assert max(rss) < 300 * MIB, f"agent RSS {max(rss) / MIB:.0f} MiB during the flood"
    kill_restart = [e for e in control.get("/v1/events?component=worker&limit=20").json()["events"]]
    assert any(e["to_state"] == "running" for e in kill_restart)
    control.close()


# ----------------------------------------------------------------- bodies
def _raw(path_or_port: str | int) -> socket.socket:
    if isinstance(path_or_port, int):
        sock = socket.create_connection(("127.0.0.1", path_or_port), timeout=30)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(path_or_port)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


def _post_declared(target: str | int, path: str, size: int) -> tuple[int, dict[str, Any]]:
    """Headers that announce `size` bytes; the body is never sent: the 413 comes first."""
    with _raw(target) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        return _read_response(sock)


def _post_streamed(target: str | int, path: str, size: int) -> tuple[int, dict[str, Any], int]:
    """A chunked body of `size` bytes, sent until the agent stops reading; (status, body,
    bytes the agent took before it refused)."""
    chunk = b"[" * 65536
    sent = 0
    with _raw(target) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent < size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered 413 and closed: the rest is never read
        status, body = _read_response(sock)
    return status, body, sent


def test_oversized_bodies_get_413_and_the_agent_stays_small(agent_factory, short_tmp):
    agent, port = _agent(agent_factory, short_tmp)
    sock_path = str(agent.state_dir / "agent.sock")
    control = _unix(agent)
    first = wait_for(lambda: (w := _worker(control))["state"] == "running" and w, what="worker")
    peak = [_rss(agent)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(_rss(agent))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for path in ("/v1/components/worker/restart", "/v1/procedures", "/v1/trading/halt"):
            status, body = _post_declared(sock_path, path, 50 * MIB)
            assert status == 413 and body["limit_bytes"] == MIB, (path, body)
            status, body, sent = _post_streamed(sock_path, path, 50 * MIB)
            assert status == 413 and body["limit_bytes"] == MIB, (path, body)
            assert sent < 50 * MIB, "the agent read the whole body"
        # Over TCP too, and before the token check: the body is refused unread.
        status, body = _post_declared(port, "/v1/trading/halt", 300 * MIB)
        assert status == 413, body
        # 1 MiB is the cap itself, not over it: such a body is read (and found to be no JSON).
        reply = control.post("/v1/components/worker/restart", content=b" " * (MIB - 10) + b"x")
        assert reply.status_code == 400 and reply.json()["field"] == "body"
    finally:
        done.set()
        sampler.join()
    assert max(peak) < 300 * MIB, f"agent RSS {max(peak) / MIB:.0f} MiB"
    assert control.get("/v1/health").status_code == 200
    worker = _worker(control)
    assert worker["state"] == "running" and worker["pid"] == first["pid"]  # nothing was acted on
    control.close()


# ----------------------------------------------------------------- malformed input
BAD = [
    # (method, path, body, field)
    ("GET", "/v1/events?limit=abc", None, "limit"),
    ("GET", "/v1/events?limit=-1", None, "limit"),
    ("GET", "/v1/events?limit=0", None, "limit"),
    ("GET", "/v1/events?limit=1.5", None, "limit"),
    ("GET", "/v1/events?since=x", None, "since"),
    ("GET", "/v1/events?since=nan", None, "since"),
    ("GET", "/v1/events?before=x", None, "before"),
    ("GET", "/v1/events?after=-3", None, "after"),
    ("GET", "/v1/events?before=5&after=1", None, "after"),
    ("GET", "/v1/procedures?limit=abc", None, "limit"),
    ("GET", "/v1/procedures?before=no-such-job", None, "before"),
    ("POST", "/v1/components/worker/restart?wait=x", b"{}", "wait"),
    ("POST", "/v1/components/worker/restart", b"[1]", "body"),
    ("POST", "/v1/components/worker/restart", b"{", "body"),
    ("POST", "/v1/components/worker/restart", b"[" * 200_000, "body"),
    ("POST", "/v1/components/worker/restart", b'{"reason": 5}', "reason"),
    ("POST", "/v1/components/worker/stop", b'{"reason": "x", "force": true}', "force"),
    ("POST", "/v1/procedures", b'{"kind": "safe-restart", "params": [1, 2]}', "params"),
    ("POST", "/v1/procedures", b"[1]", "body"),
    ("POST", "/v1/procedures", b"{", "body"),
    ("POST", "/v1/procedures", b'{"params": {}}', "kind"),
    ("POST", "/v1/procedures", b'{"kind": 5}', "kind"),
    ("POST", "/v1/procedures", b'{"kind": "nope"}', "kind"),
    ("POST", "/v1/procedures", b'{"kind": "safe-restart", "user": 1}', "user"),
    (
        "POST",
        "/v1/procedures",
        b'{"kind": "safe-restart", "params": {"timeout": "soon"}}',
        "params.timeout",
    ),
    (
        "POST",
        "/v1/procedures",
        b'{"kind": "safe-restart", "params": {"components": "worker"}}',
        "params.components",
    ),
    (
        "POST",
        "/v1/procedures",
        b'{"kind": "safe-restart", "params": {"components": [1]}}',
        "params.components[]",
    ),
    ("POST", "/v1/procedures", b'{"kind": "safe-restart", "params": {"x": 1}}', "params.x"),
    ("POST", "/v1/trading/halt", b"[1]", "body"),
    ("POST", "/v1/trading/halt", b'{"wait": "yes"}', "wait"),
    ("POST", "/v1/trading/resume", b'{"reason": ["a"]}', "reason"),
]


def test_malformed_input_gets_400_naming_the_field(agent_factory, short_tmp):
    agent, port = _agent(agent_factory, short_tmp)
    control = _unix(agent)
    first = wait_for(lambda: (w := _worker(control))["state"] == "running" and w, what="worker")
    wrong = []
    for method, path, body, field in BAD:
        reply = control.request(method, path, content=body)
        answer = reply.json()
        if reply.status_code != 400 or answer.get("field") != field or field not in answer["error"]:
            wrong.append((method, path, body[:40] if body else None, reply.status_code, answer))
    assert not wrong, "\n".join(map(repr, wrong))
    # The read-only TCP listener parses its query parameters alike.
    with _tcp(port) as tcp:
        for query, field in (("limit=abc", "limit"), ("since=x", "since"), ("limit=-1", "limit")):
            reply = tcp.get(f"/v1/events?{query}")
            assert reply.status_code == 400 and reply.json()["field"] == field
    # Nothing was acted on, and the agent is fine.
    assert control.get("/v1/health").status_code == 200
    assert _worker(control)["pid"] == first["pid"]
    control.close()


# ----------------------------------------------------------------- cursors
def _page_all(client: httpx.Client, query: str, cursor: dict[str, Any]) -> list[int]:
    ids: list[int] = []
    while True:
        extra = "&".join(f"{k}={v}" for k, v in cursor.items())
        reply = client.get(f"/v1/events?{query}&{extra}")
        assert reply.status_code == 200, reply.text
        page = reply.json()
        ids_in_page = [e["id"] for e in page["events"]]
        assert ids_in_page == sorted(ids_in_page), "a page is oldest first"
        if "after" in cursor:
            ids += ids_in_page
        else:
            ids = ids_in_page + ids
        if page["next"] is None:
            return ids
        cursor = page["next"]


def _store_ids(agent: AgentProcess, where: str = "1=1", args: tuple[Any, ...] = ()) -> list[int]:
    db = sqlite3.connect(f"file:{agent.state_dir / 'chimera.db'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute(f"SELECT id FROM events WHERE {where} ORDER BY id", args)]
    finally:
        db.close()


def test_cursor_paging_returns_every_event_exactly_once(agent_factory, short_tmp):
    agent, port = _agent(agent_factory, short_tmp, events=4321)
    control = _unix(agent)
    wait_for(lambda: _worker(control)["state"] == "running", what="worker")
    wait_for(lambda: len(_store_ids(agent)) > 4321, what="the agent's own events")
    before_paging = _store_ids(agent)
    # Back from the newest (the default), pages of 1000: every event once, in id order.
    backward = _page_all(control, "limit=1000", {})
    # Forward from the start over TCP, an odd page size.
    with _tcp(port) as tcp:
        forward = _page_all(tcp, "limit=777", {"after": 0})
    after_paging = _store_ids(agent)
    for ids in (backward, forward):
        assert len(ids) == len(set(ids)), "an event came twice"
        assert ids == sorted(ids)
        assert set(before_paging) <= set(ids) <= set(after_paging)
    # A filter pages the same way: one component, and a time window.
    worker_ids = _page_all(control, "limit=500&component=worker", {})
    assert worker_ids == _store_ids(agent, "component = ?", ("worker",))
    since = time.time() - 1800
    recent = _page_all(control, f"limit=300&since={since}", {"after": 0})
    assert recent == _store_ids(agent, "ts >= ?", (since,))
    # A limit over the cap is capped, and says so.
    page = control.get("/v1/events?limit=100000000").json()
    assert len(page["events"]) == page["limit"] == MAX_PAGE and page["next"] is not None
    # The CLI pages too: the newest 2500, oldest first, each once.
    result = agent.cli("events", "--json", "--limit", "2500")
    assert result.returncode == 0, result.stderr
    cli_ids = [e["id"] for e in json.loads(result.stdout)["events"]]
    assert len(cli_ids) == 2500 and cli_ids == sorted(set(cli_ids))
    assert cli_ids[-1] >= before_paging[-1]
    assert agent.cli("events", "--limit", "0").returncode == 2
    control.close()


def test_procedures_are_paged_by_cursor(agent_factory, short_tmp):
    state_dir = short_tmp / "var"
    Store.open_in(state_dir).close()
    db = sqlite3.connect(str(state_dir / "chimera.db"))
    now = time.time()
    with db:
        db.executemany(
            "INSERT INTO procedures(id, kind, state, started_at, finished_at, params, result)"
            " VALUES (?,?,?,?,?,?,?)",
            [
                (
                    f"safe-restart-{i:04d}",
                    "safe-restart",
                    "succeeded",
                    now - 1000 + i // 3,  # three share each start time: the id breaks the tie
                    now - 999 + i // 3,
                    "{}",
                    json.dumps({"summary": f"run {i}"}),
                )
                for i in range(450)
            ],
        )
    db.close()
    agent, _ = _agent(agent_factory, short_tmp)
    control = _unix(agent)
    ids: list[str] = []
    cursor: dict[str, Any] = {}
    while True:
        page = control.get("/v1/procedures", params={"limit": 1000, **cursor}).json()
        assert page["limit"] == 200  # capped
        ids += [p["id"] for p in page["procedures"]]
        if page["next"] is None:
            break
        cursor = page["next"]
    assert ids == [f"safe-restart-{i:04d}" for i in reversed(range(450))]
    result = agent.cli("procedure", "list", "--json", "--limit", "420")
    assert result.returncode == 0, result.stderr
    listed = [p["id"] for p in json.loads(result.stdout)["procedures"]]
    assert listed == ids[:420]
    shown = control.get("/v1/procedures/safe-restart-0007").json()
    assert shown["id"] == "safe-restart-0007" and shown["steps"] == []
    missing = control.get("/v1/procedures/nothing-like-it")
    assert missing.status_code == 404 and missing.json()["known"][0] == ids[0]
    control.close()
