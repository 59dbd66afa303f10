"""Fills are persisted exactly once across kill -9, a PostgreSQL restart and a Redis restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chimera_ops.paper.harness import (
    EngineProcess,
    dsn_with_db,
    ledger_problems,
    query,
    scratch_database,
)
from tests.services import free_port, private_postgres, private_redis


@pytest.fixture
def dsn() -> Iterator[str]:
    with scratch_database() as name:
        yield name


def _wait(predicate, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _fills(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM paper_fills")[0][0])


def _db_positions(dsn: str) -> dict[str, int]:
    return {str(s): int(q) for s, q in query(dsn, "SELECT symbol, qty FROM paper_positions")}


def _redis_positions(url: str, prefix: str) -> dict[str, int]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {k: int(v) for k, v in client.hgetall(f"{prefix}:positions").items()}
    finally:
        client.close()


def _health(eng: EngineProcess) -> tuple[int, dict[str, object]]:
    try:
        resp = eng.get("/health", timeout=3.0)
    except Exception:  # noqa: BLE001 - a busy engine may time out; treat as "not yet"
        return 0, {}
    return resp.status_code, resp.json()


@pytest.mark.slow
def test_fills_exactly_once_across_kill9(dsn: str, tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    eng = EngineProcess(
        free_port(),
        dsn,
        args=["--rate", "200", "--seed", "7"],
        redis_prefix=prefix,
        log_dir=tmp_path,
    )
    seen = 0
    for _ in range(3):
        eng.start()
        eng.wait_healthy()
        # Kill while fills are flowing: some are committed, some only buffered in memory.
        _wait(lambda s=seen: _fills(dsn) > s + 30, "new fills")
        eng.kill9()
        assert ledger_problems(dsn) == []
        seen = _fills(dsn)

    eng.start()
    eng.wait_healthy()
    # Orders a killed run left open are adopted and keep filling under their original ids.
    _wait(lambda: _fills(dsn) > seen + 30, "fills after the last restart")
    assert eng.stop() == 0
    assert ledger_problems(dsn) == []
    boots = query(dsn, "SELECT count(DISTINCT boot_id) FROM paper_fills")[0][0]
    assert boots >= 3
    assert query(dsn, "SELECT count(*) FROM paper_orders WHERE status = 'open'")[0][0] == 0
    assert _redis_positions("redis://127.0.0.1:6379/0", prefix) == _db_positions(dsn)


@pytest.mark.slow
def test_postgres_restart_while_running(tmp_path: Path) -> None:
    with private_postgres() as pg:
        dsn = dsn_with_db(pg.dsn, "paper")
        eng = EngineProcess(
            free_port(),
            dsn,
            args=["--rate", "100"],
            redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
            log_dir=tmp_path,
        ).start()
        try:
            eng.wait_healthy()
            _wait(lambda: _fills(dsn) > 20, "fills before the outage")
            pg.stop("fast")

            status, doc = _wait(
                lambda: (r := _health(eng))[0] == 503 and r, "health 503 while PG is down"
            )
            assert "postgres" in str(doc["reason"])
            assert doc["postgres"] == "down"
            # The engine keeps trading into its buffer meanwhile.
            _wait(lambda: _health(eng)[1].get("pending_writes", 0) > 0, "buffered writes")
            assert eng.alive()

            pg.start()
            _wait(lambda: _health(eng)[0] == 200, "recovery", timeout=60)
            # The writes buffered during the outage drain once the database is back: a halt
            # (no new orders, none left open) flushes synchronously and leaves nothing behind.
            halted = eng.post("/control/halt", json={"reason": "drain"})
            assert halted.status_code == 200 and halted.json()["persisted"] is True
            assert _health(eng)[1]["pending_writes"] == 0
            assert eng.metric("paper_fills_total") == _fills(dsn)
            assert eng.post("/control/resume", json={"reason": "go"}).status_code == 200
            after = _fills(dsn)
            _wait(lambda: _fills(dsn) > after + 20, "fills after recovery")
            assert eng.stop() == 0
            assert ledger_problems(dsn) == []
            assert query(dsn, "SELECT count(*) FROM paper_orders WHERE status = 'open'")[0][0] == 0
            assert "postgres lost" in eng.stderr() and "postgres recovered" in eng.stderr()
        finally:
            eng.kill9()


@pytest.mark.slow
def test_fills_metric_equals_table_after_outage(tmp_path: Path) -> None:
    """paper_fills_total counts committed fills only: after an outage it matches the table."""
    with private_postgres() as pg:
        dsn = dsn_with_db(pg.dsn, "paper")
        eng = EngineProcess(
            free_port(), dsn, args=["--rate", "100", "--start-halted"], log_dir=tmp_path
        ).start()
        try:
            eng.wait_healthy()
            assert eng.post("/control/resume", json={"reason": "go"}).status_code == 200
            _wait(lambda: _fills(dsn) > 10, "fills")
            pg.stop("immediate")
            _wait(lambda: _health(eng)[0] == 503, "503")
            time.sleep(1.0)
            pg.start()
            _wait(lambda: _health(eng)[0] == 200, "200", timeout=60)
            halted = eng.post("/control/halt", json={"reason": "count"})
            assert halted.status_code == 200 and halted.json()["persisted"] is True
            time.sleep(0.5)  # let open-order fills stop (halt cancelled them all)
            assert eng.metric("paper_fills_total") == _fills(dsn)
            assert ledger_problems(dsn) == []
        finally:
            eng.stop()


@pytest.mark.slow
def test_redis_restart_while_running(dsn: str, tmp_path: Path) -> None:
    with private_redis() as rd:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        eng = EngineProcess(
            free_port(),
            dsn,
            redis_url=rd.url,
            args=["--rate", "100"],
            redis_prefix=prefix,
            log_dir=tmp_path,
        ).start()
        try:
            eng.wait_healthy()
            _wait(lambda: _fills(dsn) > 10, "fills")
            rd.stop()
            status, doc = _wait(lambda: (r := _health(eng))[0] == 503 and r, "503 on redis loss")
            assert "redis" in str(doc["reason"])
            rd.start()  # empty: no persistence, so the engine must re-send everything
            _wait(lambda: _health(eng)[0] == 200, "recovery", timeout=60)
            assert eng.post("/control/halt", json={"reason": "check"}).status_code == 200
            time.sleep(1.0)  # one cache cycle after the last fill
            assert _redis_positions(rd.url, prefix) == _db_positions(dsn)
            prices = redis.Redis.from_url(rd.url).hgetall(f"{prefix}:prices")
            assert {k.decode() for k in prices} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        finally:
            eng.stop()
        assert ledger_problems(dsn) == []
