"""Fixtures of the support-bundle tests: a demo-like stack whose engine prints planted secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.bundle.corpus import ENGINE, Corpus
from tests.harness import REPO


def stack_config(tmp: Path, corpus: Corpus, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An agent config: PostgreSQL and Redis watched, an engine printing the corpus, a flaky
    component that exits at once (policy never: left `exited`)."""
    script = tmp / "engine.py"
    script.write_text(ENGINE)
    lines = tmp / "lines.json"
    lines.write_text(json.dumps({"out": corpus.lines_out, "err": corpus.lines_err}))
    config: dict[str, Any] = {
        "components": {
            "postgres": {
                "runtime": "external",
                "readiness": {"tcp": "127.0.0.1:5432", "period": "5s"},
            },
            "redis": {
                "runtime": "external",
                "liveness": {"redis": "redis://127.0.0.1:6379/0", "period": "10s"},
            },
            "engine": {
                "runtime": "process",
                "command": [sys.executable, str(script), str(lines)],
                "env": corpus.engine_env,
                "depends_on": ["postgres"],
                "monitors": {"pools": {"postgres": {"dsn_env": "CHIMERA_PG_DSN"}, "period": "30s"}},
            },
            "flaky": {
                "runtime": "process",
                "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
                "restart": {"policy": "never"},
            },
        },
        "backup": {
            "dir": str(tmp / "backups"),
            "postgres": {
                "dsn": f"postgresql://postgres:{corpus.backup_password}@127.0.0.1:5432/postgres",
                "databases": ["postgres"],
            },
        },
    }
    config.update(extra or {})
    return config


def chimera(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`chimera-ops --config CONFIG ARGS...` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "chimera_ops", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        env={**(env if env is not None else os.environ), "COLUMNS": "200"},
    )


def extract(bundle: Path, into: Path) -> Path:
    """Extract a bundle; returns its root folder."""
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(into, filter="data")
        root = tar.getnames()[0].split("/")[0]
    return into / root


def leaks(root: Path, values: list[str]) -> list[tuple[str, str]]:
    """(file, value) for every value found in the raw bytes of any file under root."""
    import gzip

    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        blobs = [raw] + ([gzip.decompress(raw)] if raw[:2] == b"\x1f\x8b" else [])
        for value in values:
            if any(value.encode() in blob for blob in blobs):
                found.append((str(path.relative_to(root)), value))
    return found


@pytest.fixture
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture
def cli_env(corpus: Corpus) -> dict[str, str]:
    """The environment collect-logs runs in (one more secret only the CLI has)."""
    return {**os.environ, "BINANCE_API_SECRET": corpus.cli_secret}
