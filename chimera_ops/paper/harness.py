"""Run the engine as a real subprocess: used by the integration tests, the bench and e2e tests.

Kept inside the package (not under tests/) so every consumer starts the engine the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql


class EngineProcess:
    """One ``python -m chimera_ops.paper`` child with its own port, env and log files."""

    def __init__(
        self,
        port: int,
        pg_dsn: str,
        redis_url: str = "redis://127.0.0.1:6379/0",
        args: list[str] | None = None,
        token: str | None = None,
        redis_prefix: str = "paper",
        log_dir: Path | None = None,
    ) -> None:
        self.port = port
        self.args = list(args or [])
        self.token = token
        self.env = dict(os.environ)
        self.env.update({"CHIMERA_PG_DSN": pg_dsn, "CHIMERA_REDIS_URL": redis_url})
        self.env.pop("CHIMERA_CONTROL_TOKEN", None)
        if token is not None:
            self.env["CHIMERA_CONTROL_TOKEN"] = token
        self.redis_prefix = redis_prefix
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="chimera-paper-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def argv(self) -> list[str]:
        """The full command line."""
        return [
            sys.executable,
            "-m",
            "chimera_ops.paper",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--redis-prefix",
            self.redis_prefix,
            *self.args,
        ]

    def start(self) -> EngineProcess:
        """Spawn the engine (does not wait for it to be ready)."""
        self.starts += 1
        out = open(self.log_dir / f"stdout.{self.starts}.log", "wb")  # noqa: SIM115
        err = open(self.log_dir / f"stderr.{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=out, stderr=err, start_new_session=True
        )
        out.close()
        err.close()
        return self

    def stdout(self, run: int | None = None) -> str:
        """Captured stdout of one run (default: the latest)."""
        return (self.log_dir / f"stdout.{run or self.starts}.log").read_text(errors="replace")

    def stderr(self, run: int | None = None) -> str:
        """Captured stderr of one run (default: the latest)."""
        return (self.log_dir / f"stderr.{run or self.starts}.log").read_text(errors="replace")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for ``/health`` == 200; raise with the engine's stderr if it dies or times out."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"engine exited with {self.returncode()} before healthy:\n{self.stderr()}"
                )
            try:
                resp = httpx.get(f"{self.base_url}/health", timeout=2.0)
                if resp.status_code == 200:
                    return dict(resp.json())
                last = resp.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"engine not healthy within {timeout}s: {last}\n{self.stderr()}")

    def returncode(self) -> int | None:
        """Exit code, or None while running."""
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for exit; return the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the engine process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL, no cleanup: what a crash or the OOM killer does."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def headers(self, token: str | None = None) -> dict[str, str]:
        """Authorization header for ``token`` (default: the engine's own token)."""
        tok = token if token is not None else self.token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    def get(self, path: str, timeout: float = 10.0, **kw: Any) -> httpx.Response:
        """GET with the engine's token."""
        headers = kw.pop("headers", None) or self.headers()
        return httpx.get(f"{self.base_url}{path}", headers=headers, timeout=timeout, **kw)

    def post(self, path: str, timeout: float = 10.0, **kw: Any) -> httpx.Response:
        """POST with the engine's token."""
        headers = kw.pop("headers", None) or self.headers()
        return httpx.post(f"{self.base_url}{path}", headers=headers, timeout=timeout, **kw)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample from /metrics, e.g. ``metric("paper_pool_in_use", 'pool="postgres"')``."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == wanted:
                return float(value)
        raise KeyError(wanted)


SHARED_SERVER_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def dsn_with_db(server_dsn: str, dbname: str) -> str:
    """``server_dsn`` (a URL) pointing at database ``dbname``."""
    return urlunsplit(urlsplit(server_dsn)._replace(path=f"/{dbname}"))


@contextmanager
def scratch_database(server_dsn: str = SHARED_SERVER_DSN) -> Iterator[str]:
    """A unique, not-yet-existing database name on ``server_dsn`` (the engine creates it).

    Dropped (with FORCE) afterwards, whatever happened.
    """
    name = f"chimera_test_{uuid.uuid4().hex[:12]}"
    try:
        yield dsn_with_db(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def query(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on ``dsn`` and return all rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []


def ledger_problems(dsn: str) -> list[str]:
    """Everything wrong with the persisted ledger; empty when it is consistent.

    Checks: one fill per order and only for filled orders, every filled order has its fill,
    positions equal the sum of fills, and each boot's fill sequence is gap-free from 1.
    """
    problems: list[str] = []
    dup = query(dsn, "SELECT order_id, count(*) FROM paper_fills GROUP BY 1 HAVING count(*) > 1")
    if dup:
        problems.append(f"orders with several fills: {dup[:5]}")
    orphan = query(
        dsn,
        "SELECT f.fill_id, o.status FROM paper_fills f JOIN paper_orders o USING (order_id)"
        " WHERE o.status <> 'filled'",
    )
    if orphan:
        problems.append(f"fills of orders not marked filled: {orphan[:5]}")
    unfilled = query(
        dsn,
        "SELECT o.order_id FROM paper_orders o LEFT JOIN paper_fills f USING (order_id)"
        " WHERE o.status = 'filled' AND f.fill_id IS NULL",
    )
    if unfilled:
        problems.append(f"filled orders without a fill: {unfilled[:5]}")
    mismatch = query(
        dsn,
        "SELECT coalesce(p.symbol, s.symbol), p.qty, s.qty FROM paper_positions p"
        " FULL JOIN (SELECT symbol, sum(CASE WHEN side = 'buy' THEN qty ELSE -qty END) AS qty"
        "            FROM paper_fills GROUP BY symbol) s USING (symbol)"
        " WHERE p.qty IS DISTINCT FROM s.qty",
    )
    if mismatch:
        problems.append(f"positions != sum of fills: {mismatch}")
    gaps = query(
        dsn,
        "SELECT boot_id, count(*), min(seq), max(seq) FROM paper_fills GROUP BY boot_id"
        " HAVING min(seq) <> 1 OR max(seq) <> count(*)",
    )
    if gaps:
        problems.append(f"fill sequence gaps (boot, count, min, max): {gaps}")
    return problems
