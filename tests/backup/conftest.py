"""A private PostgreSQL and a private Redis with data in them, and a config that backs them up.

Tests that restore or break a server use these private instances, never the machine's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.harness import REPO
from tests.services import PrivatePostgres, PrivateRedis, private_postgres, private_redis

DB = "chimera"


@dataclass
class Stack:
    """The private servers, the config file, and helpers to drive the CLI on it."""

    pg: PrivatePostgres
    redis: PrivateRedis
    directory: Path
    config_path: Path

    @property
    def backup_dir(self) -> Path:
        return self.directory / "backups"

    def write_config(self, **backup: Any) -> Path:
        section: dict[str, Any] = {
            "dir": "./backups",
            "postgres": {"dsn": self.pg.dsn_for("postgres"), "databases": [DB], "jobs": 2},
            "redis": {"url": self.redis.url},
            "retention": {"keep": 5, "max_age": "30d"},
        }
        section.update(backup)
        config = {"agent": {"state_dir": "./var"}, "components": {}, "backup": section}
        self.config_path.write_text(yaml.safe_dump(config))
        return self.config_path

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chimera_ops", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": "/root"},
        )

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.cli(*args, "--json")
        assert result.stdout, result.stderr
        return result.returncode, json.loads(result.stdout)

    def counts(self) -> dict[str, int]:
        return {
            t: int(self.pg.psql(f'SELECT count(*) FROM "{t}"', DB))
            for t in ("orders", "fills", "Weird Name")
        }

    def keys(self) -> dict[bytes, bytes]:
        conn = redis.Redis.from_url(self.redis.url)
        try:
            return {k: conn.dump(k) for k in sorted(conn.keys("*"))}
        finally:
            conn.close()


def fill(pg: PrivatePostgres, rows: int = 20000) -> None:
    """Tables with keys, a foreign key, an index, a sequence, an awkward name."""
    pg.psql(
        f"""
        CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, symbol text NOT NULL,
            qty numeric NOT NULL, at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE IF NOT EXISTS fills (id bigserial PRIMARY KEY,
            order_id bigint NOT NULL REFERENCES orders(id), price numeric NOT NULL);
        CREATE INDEX IF NOT EXISTS fills_order ON fills(order_id);
        CREATE TABLE IF NOT EXISTS "Weird Name" ("a b" int);
        INSERT INTO orders(symbol, qty) SELECT 'SYM' || (g % 50), g FROM generate_series(1, {rows}) g;
        INSERT INTO fills(order_id, price) SELECT id, id * 1.5 FROM orders WHERE id % 2 = 0
            AND id NOT IN (SELECT order_id FROM fills);
        INSERT INTO "Weird Name" SELECT g FROM generate_series(1, 7) g;
        """,
        DB,
    )


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = Path(tmp_path_factory.mktemp("bk"))
    redis_dir = directory / "redis-data"
    redis_dir.mkdir()
    with private_postgres() as pg, private_redis(directory=redis_dir) as rd:
        pg.psql(f"CREATE DATABASE {DB}")
        fill(pg)
        conn = redis.Redis.from_url(rd.url)
        for i in range(300):
            conn.set(f"book:{i}", f"level-{i}")
        conn.hset("positions", mapping={"BTC": "1.5", "ETH": "-2"})
        conn.set("session", "abc", ex=3600)
        conn.close()
        stack = Stack(pg, rd, directory, directory / "chimera-ops.yaml")
        stack.write_config()
        yield stack
