"""The trading control contract of the paper engine, against real PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chimera_ops.paper.harness import EngineProcess, ledger_problems, query, scratch_database
from tests.services import free_port

TOKEN = "tok-" + uuid.uuid4().hex


@pytest.fixture
def dsn() -> Iterator[str]:
    with scratch_database() as name:
        yield name


def _engine(
    dsn: str, tmp_path: Path, args: list[str] | None = None, token: str | None = None
) -> EngineProcess:
    return EngineProcess(
        free_port(),
        dsn,
        args=["--rate", "50", *(args or [])],
        token=token,
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
        log_dir=tmp_path,
    )


@pytest.fixture
def engine(dsn: str, tmp_path: Path) -> Iterator[EngineProcess]:
    eng = _engine(dsn, tmp_path).start()
    eng.wait_healthy()
    yield eng
    eng.stop()


def _wait(predicate, what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _order_count(dsn: str) -> int:
    return int(query(dsn, "SELECT count(*) FROM paper_orders")[0][0])


def test_state_document_has_the_contract_fields(engine: EngineProcess) -> None:
    resp = engine.get("/control/state")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["trading"] == "active"
    assert isinstance(doc["open_orders"], int)
    assert isinstance(doc["since"], float)
    assert isinstance(doc["reason"], str)


def test_halt_stops_new_orders_and_halt_resume_are_idempotent(
    engine: EngineProcess, dsn: str
) -> None:
    _wait(lambda: _order_count(dsn) > 0, "first orders in the database")

    first = engine.post("/control/halt", json={"reason": "test halt", "cancel_open_orders": True})
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["trading"] == "halted" and doc["changed"] is True and doc["persisted"] is True
    assert doc["open_orders"] == 0
    assert query(dsn, "SELECT count(*) FROM paper_orders WHERE status = 'open'")[0][0] == 0
    assert engine.metric("paper_trading_halted") == 1.0

    before = _order_count(dsn)
    time.sleep(2.0)  # 100 ticks at --rate 50: plenty of chances to place an order
    assert _order_count(dsn) == before, "orders were written while halted"

    again = engine.post("/control/halt", json={"reason": "second halt"})
    assert again.status_code == 200
    assert again.json()["changed"] is False
    state = engine.get("/control/state").json()
    # Idempotent: the second call changes neither the time nor the reason of the halt.
    assert state["since"] == doc["since"] and state["reason"] == "test halt"

    resumed = engine.post("/control/resume", json={"reason": "test resume"})
    assert resumed.status_code == 200 and resumed.json()["changed"] is True
    assert resumed.json()["trading"] == "active"
    resumed_again = engine.post("/control/resume", json={"reason": "again"})
    assert resumed_again.json()["changed"] is False
    assert engine.get("/control/state").json()["reason"] == "test resume"
    _wait(lambda: _order_count(dsn) > before, "orders after resume")
    assert engine.metric("paper_trading_halted") == 0.0


def test_halt_survives_restart_and_kill9(engine: EngineProcess, dsn: str) -> None:
    resp = engine.post("/control/halt", json={"reason": "maintenance", "cancel_open_orders": True})
    assert resp.status_code == 200
    # kill -9 right after the answer: the halt was committed before it was acknowledged.
    engine.kill9()
    engine.start()
    engine.wait_healthy()
    state = engine.get("/control/state").json()
    assert state["trading"] == "halted" and state["reason"] == "maintenance"
    assert state["open_orders"] == 0
    before = _order_count(dsn)
    time.sleep(1.0)
    assert _order_count(dsn) == before

    assert engine.stop() == 0
    engine.start()
    engine.wait_healthy()
    assert engine.get("/control/state").json()["trading"] == "halted"
    assert engine.post("/control/resume", json={"reason": "done"}).status_code == 200
    assert engine.stop() == 0
    engine.start()
    engine.wait_healthy()
    assert engine.get("/control/state").json()["trading"] == "active"
    assert ledger_problems(dsn) == []


def test_start_halted_flag(dsn: str, tmp_path: Path) -> None:
    eng = _engine(dsn, tmp_path, args=["--start-halted"]).start()
    try:
        eng.wait_healthy()
        state = eng.get("/control/state").json()
        assert state["trading"] == "halted"
        assert "start-halted" in state["reason"]
        time.sleep(1.0)
        assert _order_count(dsn) == 0
    finally:
        eng.stop()


def test_token_required_and_wrong_token_changes_nothing(dsn: str, tmp_path: Path) -> None:
    eng = _engine(dsn, tmp_path, token=TOKEN).start()
    try:
        eng.wait_healthy()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            assert eng.get("/control/state", headers=headers or {"X": "1"}).status_code == 401
            resp = eng.post(
                "/control/halt", headers=headers or {"X": "1"}, json={"reason": "intruder"}
            )
            assert resp.status_code == 401
            assert "www-authenticate" in resp.headers
            # Even a malformed body from an unauthenticated caller is a 401, not a 400.
            assert eng.post("/control/halt", headers={"X": "1"}, content=b"{").status_code == 401
        state = eng.get("/control/state")
        assert state.status_code == 200
        assert state.json()["trading"] == "active"
        assert TOKEN not in eng.stdout() + eng.stderr()
        # Health and metrics stay open for probes and scrapers.
        assert eng.get("/health", headers={"X": "1"}).status_code == 200
        assert eng.get("/metrics", headers={"X": "1"}).status_code == 200
        assert eng.post("/control/halt", json={"reason": "ok"}).status_code == 200
    finally:
        eng.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/control/halt", b"not json"),
        ("/control/halt", b"[1, 2]"),
        ("/control/halt", b'"halt"'),
        ("/control/halt", b"{}"),
        ("/control/halt", b'{"reason": 5}'),
        ("/control/halt", b'{"reason": ""}'),
        ("/control/halt", b'{"reason": "x", "cancel_open_orders": "yes"}'),
        ("/control/halt", b'{"reason": "x", "cancel_open_orders": 1}'),
        ("/control/halt", b'{"reason": "x", "force": true}'),
        ("/control/resume", b'{"reason": ["x"]}'),
        ("/control/resume", b'{"reason": "x", "cancel_open_orders": true}'),
    ],
)
def test_malformed_control_request_is_400(engine: EngineProcess, path: str, body: bytes) -> None:
    resp = engine.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    assert engine.get("/control/state").json()["trading"] == "active"


def test_unknown_symbol_is_400(engine: EngineProcess) -> None:
    for path in ("/positions", "/prices", "/orders"):
        resp = engine.get(path, params={"symbol": "NOPEUSDT"})
        assert resp.status_code == 400, path
        assert "unknown symbol" in resp.json()["error"]
        assert engine.get(path, params={"symbol": "BTCUSDT"}).status_code == 200


def test_sigterm_cancels_open_orders_flushes_and_exits_0(engine: EngineProcess, dsn: str) -> None:
    _wait(lambda: engine.get("/control/state").json()["open_orders"] > 0, "open orders")
    assert engine.stop() == 0
    assert query(dsn, "SELECT count(*) FROM paper_orders WHERE status = 'open'")[0][0] == 0
    assert ledger_problems(dsn) == []
    assert "shutdown complete" in engine.stdout()
    # SIGTERM is not an operator halt: the persisted state stays active.
    assert query(dsn, "SELECT trading FROM paper_trading_state")[0][0] == "active"


def test_sigint_exits_0(engine: EngineProcess) -> None:
    import signal

    engine.signal(signal.SIGINT)
    assert engine.wait() == 0
