"""Fault injection routes: present only with --faults, and the faults are real."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chimera_ops.paper.harness import EngineProcess, scratch_database
from tests.services import free_port

ROUTES = [
    "/faults/crash",
    "/faults/freeze",
    "/faults/leak",
    "/faults/hold-connections",
    "/faults/slow-health",
]


@pytest.fixture
def dsn() -> Iterator[str]:
    with scratch_database() as name:
        yield name


def _start(dsn: str, tmp_path: Path, faults: bool) -> EngineProcess:
    args = ["--rate", "20", "--pg-pool-max", "4", "--redis-pool-max", "4"]
    eng = EngineProcess(
        free_port(),
        dsn,
        args=args + (["--faults"] if faults else []),
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
        log_dir=tmp_path,
    ).start()
    eng.wait_healthy()
    return eng


@pytest.fixture
def faulty(dsn: str, tmp_path: Path) -> Iterator[EngineProcess]:
    eng = _start(dsn, tmp_path, faults=True)
    yield eng
    eng.kill9()


def _wait(predicate, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_fault_routes_do_not_exist_without_flag(dsn: str, tmp_path: Path) -> None:
    eng = _start(dsn, tmp_path, faults=False)
    try:
        for route in ROUTES:
            assert eng.post(route, json={}).status_code == 404, route
        assert eng.get("/faults").status_code == 404
        assert eng.alive()
        assert eng.get("/health").status_code == 200
    finally:
        assert eng.stop() == 0


def test_leak_validation_and_growth(faulty: EngineProcess) -> None:
    assert faulty.post("/faults/leak", json={"mb_per_s": -1}).status_code == 400
    assert faulty.post("/faults/leak", json={"mb_per_s": "fast"}).status_code == 400
    assert faulty.post("/faults/leak", json={"mb_per_s": True}).status_code == 400
    assert faulty.post("/faults/leak", json={}).status_code == 400
    assert faulty.post("/faults/leak", json={"mb_per_s": 1, "x": 1}).status_code == 400
    assert faulty.metric("paper_fault_leaked_bytes") == 0.0

    rss_before = _rss(faulty)
    resp = faulty.post("/faults/leak", json={"mb_per_s": 40})
    assert resp.status_code == 200
    _wait(lambda: faulty.metric("paper_fault_leaked_bytes") > 60 * 2**20, "60 MiB leaked")
    # The memory is really resident, not just reserved.
    assert _rss(faulty) - rss_before > 50 * 2**20
    assert faulty.post("/faults/leak", json={"mb_per_s": 0}).status_code == 200
    assert faulty.get("/health").status_code == 200


def _rss(eng: EngineProcess) -> int:
    assert eng.proc is not None
    for line in Path(f"/proc/{eng.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_hold_connections_shows_in_pool_gauges(faulty: EngineProcess) -> None:
    assert faulty.post("/faults/hold-connections", json={"count": 0}).status_code == 400
    assert faulty.post("/faults/hold-connections", json={"count": "2"}).status_code == 400
    assert (
        faulty.post("/faults/hold-connections", json={"count": 2, "pool": "x"}).status_code == 400
    )
    assert faulty.metric("paper_pool_max", 'pool="postgres"') == 4.0
    assert faulty.metric("paper_pool_max", 'pool="redis"') == 4.0

    # More than the pool holds: 4 checked out, the rest queue as waiting callers.
    resp = faulty.post("/faults/hold-connections", json={"count": 6})
    assert resp.status_code == 200, resp.text
    _wait(lambda: faulty.metric("paper_pool_in_use", 'pool="postgres"') == 4.0, "pg in use")
    _wait(lambda: faulty.metric("paper_pool_waiting", 'pool="postgres"') >= 2.0, "pg waiting")
    # An exhausted pool is an unhealthy engine, and /health says why.
    _wait(lambda: faulty.get("/health").status_code == 503, "health 503")
    assert "postgres" in faulty.get("/health").json()["reason"]

    resp = faulty.post("/faults/hold-connections", json={"count": 3, "pool": "redis"})
    assert resp.status_code == 200
    _wait(lambda: faulty.metric("paper_pool_in_use", 'pool="redis"') >= 3.0, "redis in use")

    assert faulty.post("/faults/release-connections", json={}).status_code == 200
    _wait(lambda: faulty.metric("paper_pool_waiting", 'pool="postgres"') == 0.0, "no waiters")
    _wait(lambda: faulty.get("/health").status_code == 200, "health back to 200")


def test_slow_health(faulty: EngineProcess) -> None:
    assert faulty.post("/faults/slow-health", json={"delay_s": -1}).status_code == 400
    assert faulty.post("/faults/slow-health", json={"delay_s": 5}).status_code == 200
    with pytest.raises(httpx.TimeoutException):
        faulty.get("/health", timeout=1.0)
    assert faulty.post("/faults/slow-health", json={"delay_s": 0}).status_code == 200
    assert faulty.get("/health").status_code == 200


def test_crash_exits_nonzero(faulty: EngineProcess) -> None:
    resp = faulty.post("/faults/crash", json={})
    assert resp.status_code == 200
    assert faulty.wait() == 70


def test_freeze_stops_serving_without_exiting(faulty: EngineProcess) -> None:
    assert faulty.post("/faults/freeze").status_code == 200
    with pytest.raises(httpx.TimeoutException):
        for _ in range(3):
            faulty.get("/health", timeout=1.0)
            time.sleep(0.2)
    assert faulty.alive()
    assert faulty.proc is not None
    # A real freeze: the process is running (R/S), not stopped by a signal (T).
    state = Path(f"/proc/{faulty.proc.pid}/stat").read_text().split(")")[1].split()[0]
    assert state in {"R", "S", "D"}
    # SIGTERM cannot be handled by a frozen loop; only SIGKILL ends it.
    faulty.kill9()
    assert not faulty.alive()


def test_fault_routes_need_the_token(dsn: str, tmp_path: Path) -> None:
    eng = EngineProcess(
        free_port(), dsn, args=["--faults"], token="t-" + uuid.uuid4().hex, log_dir=tmp_path
    ).start()
    try:
        eng.wait_healthy()
        assert eng.post("/faults/crash", headers={"X": "1"}).status_code == 401
        assert eng.alive()
        assert eng.post("/faults/leak", json={"mb_per_s": -5}).status_code == 400
    finally:
        assert eng.stop() == 0
