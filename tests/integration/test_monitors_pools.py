"""Pool monitors against real, private servers: exhausted Redis, idle-in-transaction sessions."""

import asyncio
import contextlib
import socket
import subprocess
import threading
import time

import psycopg

from chimera_ops.monitors.pools import PoolMonitor
from chimera_ops.monitors.spec import PoolsConfig
from tests.harness import child, wait_for
from tests.services import free_port, private_postgres, private_redis


def by_key(findings):
    return {f.key: f for f in findings}


def hold_redis_connections(port: int, n: int) -> list[socket.socket]:
    conns = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"PING\r\n")
        sock.recv(64)
        conns.append(sock)
    return conns


def test_redis_exhausted_is_critical():
    with private_redis(maxclients=10) as rd:
        monitor = PoolMonitor("engine", PoolsConfig.model_validate({"redis": rd.url}))
        first = by_key(asyncio.run(monitor.observe([], time.time())))
        assert first["engine:pool:redis"].severity == "ok"
        held = hold_redis_connections(rd.port, 9)
        try:
            # 9 held + the monitor's own = 10 of 10.
            nearly = by_key(asyncio.run(monitor.observe([], time.time())))
            assert nearly["engine:pool:redis"].severity == "critical"
            assert nearly["engine:pool:redis"].values["ratio"] >= 0.95
            extra = socket.create_connection(("127.0.0.1", rd.port))
            held.append(extra)
            # The 11th client is refused by the server: that itself is the finding.
            full = by_key(asyncio.run(monitor.observe([], time.time())))
            assert full["engine:pool:redis"].severity == "critical"
            assert "max number of clients" in full["engine:pool:redis"].message
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        while True:
            after = by_key(asyncio.run(monitor.observe([], time.time())))
            if after["engine:pool:redis"].severity == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert after["engine:pool:redis:rejected"].severity == "critical"  # growth was seen


def test_postgres_idle_in_transaction_seen():
    with private_postgres(max_connections=20) as pg:
        cfg = PoolsConfig.model_validate(
            {"postgres": {"dsn": pg.dsn, "idle_in_transaction": "200ms", "long_query": "1s"}}
        )
        monitor = PoolMonitor("engine", cfg)
        sessions = []
        try:
            for _ in range(3):
                conn = psycopg.connect(pg.dsn)
                conn.execute("SELECT 1")  # opens a transaction and leaves it idle
                sessions.append(conn)
            time.sleep(0.5)
            found = by_key(asyncio.run(monitor.observe([], time.time())))
        finally:
            for conn in sessions:
                conn.close()
        idle = found["engine:pool:postgres:idle_in_transaction"]
        assert idle.severity == "warning" and idle.values["stale"] == 3
        usage = found["engine:pool:postgres"]
        assert usage.values["connections_idle_in_transaction"] == 3
        assert usage.values["max_connections"] == 20


def test_postgres_long_query_seen():
    with private_postgres() as pg:
        cfg = PoolsConfig.model_validate({"postgres": {"dsn": pg.dsn, "long_query": "1s"}})
        monitor = PoolMonitor("engine", cfg)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            backend = conn.info.backend_pid
            blocker = psycopg.connect(pg.dsn, autocommit=True)
            try:
                blocker.execute("SELECT 1")

                def sleep_query() -> None:
                    with contextlib.suppress(psycopg.errors.QueryCanceled):
                        blocker.execute("SELECT pg_sleep(6)")

                runner = threading.Thread(target=sleep_query, daemon=True)
                runner.start()
                time.sleep(2.0)
                found = by_key(asyncio.run(monitor.observe([], time.time())))
                conn.execute("SELECT pg_cancel_backend(%s)", (blocker.info.backend_pid,))
                runner.join(10)
            finally:
                blocker.close()
            assert backend
        long = found["engine:pool:postgres:long_query"]
        assert long.severity == "warning" and "pg_sleep" in long.message


def test_app_scrape_failure_resolves_when_the_app_answers_again():
    port = free_port()
    cfg = PoolsConfig.model_validate({"app": {"metrics_url": f"http://127.0.0.1:{port}/metrics"}})
    monitor = PoolMonitor("engine", cfg)
    down = by_key(asyncio.run(monitor.observe([], time.time())))
    assert down["engine:pool:app"].severity == "warning"
    assert "cannot scrape" in down["engine:pool:app"].message
    app = subprocess.Popen(child("http", port))
    try:
        wait_for(lambda: _answers(port), timeout=15, what="child listening")
        up = by_key(asyncio.run(monitor.observe([], time.time())))
    finally:
        app.kill()
        app.wait()
    # Same key as the failure: the agent resolves the open alert.
    assert up["engine:pool:app"].severity == "ok"
    assert up["engine:pool:app:db"].values["in_use"] == 1


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False
