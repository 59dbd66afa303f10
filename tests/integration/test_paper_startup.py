"""Start-up failures of the paper engine: one clear line, exit 3, no password ever printed."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chimera_ops.paper.harness import EngineProcess, query, scratch_database
from tests.services import free_port, private_postgres

PASSWORD = "Pw-" + uuid.uuid4().hex  # unique, so finding it in output cannot be a coincidence


@pytest.fixture
def dsn() -> Iterator[str]:
    with scratch_database() as name:
        yield name


def _run_to_exit(eng: EngineProcess) -> int:
    eng.start()
    return eng.wait(60)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_unreachable_postgres_exits_3_with_one_line(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/chimera_x"
    eng = EngineProcess(free_port(), dead, args=["--connect-timeout", "2"], log_dir=tmp_path)
    assert _run_to_exit(eng) == 3
    err = _lines(eng.stderr())
    assert len(err) == 1, err
    assert "PostgreSQL" in err[0] and "127.0.0.1" in err[0]
    assert eng.stdout() == ""


def test_unreachable_redis_exits_3_with_one_line(dsn: str, tmp_path: Path) -> None:
    eng = EngineProcess(
        free_port(),
        dsn,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        args=["--connect-timeout", "2"],
        log_dir=tmp_path,
    )
    assert _run_to_exit(eng) == 3
    err = _lines(eng.stderr())
    assert len(err) == 1, err
    assert "Redis" in err[0]


def test_missing_database_is_created(dsn: str, tmp_path: Path) -> None:
    name = dsn.rsplit("/", 1)[1]
    server = dsn.rsplit("/", 1)[0] + "/postgres"
    assert query(server, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []
    eng = EngineProcess(free_port(), dsn, log_dir=tmp_path).start()
    try:
        eng.wait_healthy()
        assert query(server, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == [(1,)]
        tables = {r[0] for r in query(dsn, "SELECT tablename FROM pg_tables")}
        assert {"paper_orders", "paper_fills", "paper_positions", "paper_trading_state"} <= tables
    finally:
        assert eng.stop() == 0


def test_port_in_use_exits_4(dsn: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        eng = EngineProcess(port, dsn, log_dir=tmp_path)
        assert _run_to_exit(eng) == 4
        assert len(_lines(eng.stderr())) == 1


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    eng = EngineProcess(
        free_port(), "postgresql://x@127.0.0.1/x", args=["--rate", "-1"], log_dir=tmp_path
    )
    assert _run_to_exit(eng) == 2


@pytest.mark.slow
def test_wrong_password_is_never_printed(tmp_path: Path) -> None:
    with private_postgres() as pg:
        pg.psql(f"ALTER USER postgres PASSWORD '{PASSWORD}'")
        hba = pg.datadir / "pg_hba.conf"
        # TCP connections need a password from now on; the unix socket stays trust.
        lines = []
        for line in hba.read_text().splitlines():
            if line.startswith("host") and line.rstrip().endswith("trust"):
                line = line.rstrip()[: -len("trust")] + "scram-sha-256"
            lines.append(line)
        hba.write_text("\n".join(lines) + "\n")
        pg.psql("SELECT pg_reload_conf()")

        wrong = "Wrong-" + uuid.uuid4().hex
        bad = EngineProcess(
            free_port(),
            f"postgresql://postgres:{wrong}@127.0.0.1:{pg.port}/paper",
            log_dir=tmp_path / "bad",
        )
        (tmp_path / "bad").mkdir()
        assert _run_to_exit(bad) == 3
        output = bad.stdout() + bad.stderr()
        assert wrong not in output
        assert PASSWORD not in output
        assert "password authentication failed" in output
        assert "postgres:***@" in output
        assert len(_lines(bad.stderr())) == 1

        # The right password works, and is not printed either.
        (tmp_path / "good").mkdir()
        good = EngineProcess(
            free_port(),
            f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/paper",
            log_dir=tmp_path / "good",
        ).start()
        try:
            good.wait_healthy()
        finally:
            code = good.stop()
            assert code == 0, f"engine exit {code}; its log ends:\n{good.stderr()[-2000:]}"
        assert PASSWORD not in good.stdout() + good.stderr()
