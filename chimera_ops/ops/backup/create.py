"""`chimera-ops backup`: write one backup set, record it, apply retention.

Order: everything that can be checked without writing is checked first (the backup dir is
writable, PostgreSQL and Redis answer, every configured database exists), so a bad config never
leaves a partial set. Then the set is written under `.tmp-<id>/`; any failure (a dump error, a
full disk, Ctrl-C) removes it, and older sets are never touched.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chimera_ops import __version__
from chimera_ops.config import BackupConfig, ChimeraConfig
from chimera_ops.ops.backup import pg, redis_data
from chimera_ops.ops.backup.sets import (
    FORMAT,
    BackupError,
    BackupSet,
    copy_hashed,
    discard,
    finish_set,
    load_set,
    new_set_id,
    start_set,
)
from chimera_ops.redact import redact_dsn

CONFIG_FILE = "config.yaml"
Progress = Callable[[str, int], None]
"""`progress(step, bytes)`: a step name (new step: bytes 0) and bytes written in it."""


def _no_progress(step: str, nbytes: int) -> None:
    pass


@dataclass
class BackupResult:
    """A finished set and what retention did after it."""

    backup_set: BackupSet
    pruned: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        m = self.backup_set.manifest
        return {
            "id": self.backup_set.id,
            "path": str(self.backup_set.path),
            "size_bytes": self.backup_set.size,
            "started_at": m["started_at"],
            "finished_at": m["finished_at"],
            "duration_s": round(m["finished_at"] - m["started_at"], 3),
            "databases": {
                d["name"]: {"tables": len(d["tables"]), "rows": sum(d["tables"].values())}
                for d in m.get("postgres", {}).get("databases", [])
            },
            "redis_keys": m.get("redis", {}).get("keys"),
            "files": len(m["files"]),
            "pruned": self.pruned,
        }


def backup_section(cfg: ChimeraConfig) -> BackupConfig:
    """The `backup:` section, or BackupError saying how to add one."""
    if cfg.backup is None:
        raise BackupError(
            f"no 'backup:' section in {cfg.source or 'the config'}: add one "
            "(dir, postgres.databases, redis), see docs/backups.md"
        )
    return cfg.backup


def check_dir_writable(directory: Path) -> None:
    """Create the backup dir if needed and prove a file can be written there."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise BackupError(
            f"backup.dir {directory} is not writable ({exc.strerror or exc}); "
            "nothing was dumped: fix its permissions or point backup.dir elsewhere"
        ) from None


def preflight(section: BackupConfig) -> dict[str, Any]:
    """Everything checked before a byte is written; the facts the manifest records."""
    check_dir_writable(section.dir)
    facts: dict[str, Any] = {}
    if section.postgres is not None:
        try:
            dsn = section.postgres.resolve_dsn()
        except ValueError as exc:
            raise BackupError(str(exc)) from None
        conn = pg.connect(dsn)
        try:
            info = pg.server_info(conn)
            missing = pg.missing_databases(conn, section.postgres.databases)
        finally:
            conn.close()
        if missing:
            raise BackupError(
                f"backup.postgres.databases: {', '.join(missing)} does not exist on "
                f"{redact_dsn(dsn)}; nothing was written"
            )
        facts["postgres"] = {"dsn": dsn, "info": info}
    if section.redis is not None:
        try:
            url = section.redis.resolve_url()
        except ValueError as exc:
            raise BackupError(str(exc)) from None
        redis_data.client(url).close()
        facts["redis"] = {"url": url}
    return facts


def create_backup(
    cfg: ChimeraConfig, reason: str | None = None, progress: Progress = _no_progress
) -> BackupResult:
    """Write one set (see the module docstring); BackupError says what failed and what next."""
    section = backup_section(cfg)
    progress("preflight", 0)
    facts = preflight(section)
    started = time.time()
    set_id = new_set_id(started)
    tmp = start_set(section.dir, set_id)
    try:
        manifest = _write_set(cfg, section, facts, tmp, set_id, started, reason, progress)
        final = finish_set(tmp, manifest)
    except OSError as exc:
        discard(tmp)
        if exc.errno == errno.ENOSPC:
            raise BackupError(
                f"no space left in {section.dir} while writing the set; the partial set was "
                "removed and older sets are intact: free space or point backup.dir elsewhere"
            ) from None
        raise BackupError(f"writing the set failed: {exc}; the partial set was removed") from None
    except BaseException:
        discard(tmp)
        raise
    loaded = load_set(final)
    assert loaded is not None
    return BackupResult(loaded)


def _write_set(
    cfg: ChimeraConfig,
    section: BackupConfig,
    facts: dict[str, Any],
    tmp: Path,
    set_id: str,
    started: float,
    reason: str | None,
    progress: Progress,
) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": set_id,
        "tool": {"name": "chimera-ops", "version": __version__},
        "host": socket.gethostname(),
        "reason": reason,
        "started_at": started,
    }
    if section.postgres is not None:
        dsn = facts["postgres"]["dsn"]
        info: pg.ServerInfo = facts["postgres"]["info"]
        databases = []
        for index, name in enumerate(section.postgres.databases):
            progress(f"postgres {name}", 0)
            entry, written = pg.dump_database(
                dsn, name, index, tmp, section.postgres.jobs, progress
            )
            databases.append(entry)
            files.update(written)
        manifest["postgres"] = {
            "server_version": info.version,
            "server_version_num": info.version_num,
            "databases": databases,
        }
    if section.redis is not None:
        progress("redis", 0)
        entry, written = redis_data.backup_redis(facts["redis"]["url"], tmp)
        manifest["redis"] = entry
        files.update(written)
    if cfg.source is not None and cfg.source.exists():
        with open(cfg.source, "rb") as src:
            files[CONFIG_FILE] = copy_hashed(src, tmp / CONFIG_FILE)
    manifest["files"] = files
    manifest["finished_at"] = time.time()
    return manifest


def disk_estimate(section: BackupConfig, last_size: int | None) -> tuple[int, int]:
    """(free bytes in backup.dir, the size of the last set or 0): room for the next set."""
    usage = shutil.disk_usage(section.dir if section.dir.exists() else section.dir.parent)
    return usage.free, last_size or 0
