"""Real, private service instances for tests that must break a server.

The machine's shared PostgreSQL (5432) and Redis (6379) are never stopped by a test; a test
that needs to stop, restart or exhaust a server starts its own instance here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp(host: str, port: int, timeout: float = 20.0) -> None:
    """Block until host:port accepts a connection, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s")


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster on its own port and data dir."""

    datadir: Path
    port: int
    logfile: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.logfile),
                    "-w",
                    "-o",
                    f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        wait_tcp("127.0.0.1", self.port)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-At",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@contextmanager
def private_postgres(max_connections: int = 100) -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL 15 cluster (trust auth) and remove it afterwards."""
    base = Path(tempfile.mkdtemp(prefix="chimera-pg-"))
    shutil.chown(base, "postgres", "postgres") if os.geteuid() == 0 else None
    datadir = base / "data"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(f"\nmax_connections = {max_connections}\nshared_buffers = 16MB\n")
    instance = PrivatePostgres(datadir=datadir, port=free_port(), logfile=base / "pg.log")
    if os.geteuid() == 0:
        shutil.chown(datadir / "postgresql.conf", "postgres", "postgres")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class PrivateRedis:
    """A throwaway redis-server on its own port."""

    port: int
    process: subprocess.Popen[bytes] | None
    args: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_tcp("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def private_redis(maxclients: int = 10000, directory: Path | None = None) -> Iterator[PrivateRedis]:
    """Start a private redis-server (no automatic saves; BGSAVE writes into `directory`, when
    given) and stop it afterwards."""
    port = free_port()
    args = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        str(maxclients),
    ]
    if directory is not None:
        args += ["--dir", str(directory)]
    instance = PrivateRedis(port=port, process=None, args=args)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
