"""`chimera-ops backup verify`: can this set actually be restored?

Every sha256 first; then each PostgreSQL dump is restored into a scratch database on the
configured server (named `chimera_verify_<random>`, created and dropped by the command, so it
can never clash with a real one) and its exact row counts are compared with the manifest; the
Redis snapshot is loaded into a throwaway private redis-server and its key counts compared.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chimera_ops.config import ChimeraConfig
from chimera_ops.ops.backup import pg, redis_data
from chimera_ops.ops.backup.create import backup_section
from chimera_ops.ops.backup.sets import BackupError, BackupSet, check_files

SCRATCH_PREFIX = "chimera_verify_"


@dataclass(frozen=True)
class Check:
    """One verified property of a set."""

    what: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    """The verdict on one set."""

    set_id: str
    checks: list[Check] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def detail(self) -> str:
        bad = self.failures()
        return "; ".join(f"{c.what}: {c.detail}" for c in bad) if bad else "all checks passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.set_id,
            "ok": self.ok,
            "checks": [c.__dict__ for c in self.checks],
            "duration_s": round((self.finished_at or time.time()) - self.started_at, 3),
        }


def check_server_version(backup_set: BackupSet, server: pg.ServerInfo) -> None:
    """A dump of a newer major PostgreSQL cannot be restored into an older one: refuse, named."""
    num = backup_set.manifest.get("postgres", {}).get("server_version_num")
    if num and int(num) // 10000 > server.major:
        raise BackupError(
            f"set {backup_set.id} was made by PostgreSQL {int(num) // 10000} "
            f"({backup_set.manifest['postgres']['server_version']}); this server is "
            f"PostgreSQL {server.major}: restore it into PostgreSQL {int(num) // 10000} or newer"
        )


def verify_set(
    cfg: ChimeraConfig, backup_set: BackupSet, progress: Callable[[str], None] = lambda _: None
) -> VerifyReport:
    """Verify `backup_set` (see the module docstring); never raises for a bad set."""
    report = VerifyReport(backup_set.id)
    progress("checksums")
    problems = check_files(backup_set)
    report.checks.append(
        Check("checksums", not problems, "; ".join(problems) or "every file matches")
    )
    if problems:  # a damaged set is not restored anywhere, not even into scratch
        report.finished_at = time.time()
        return report
    manifest = backup_set.manifest
    if "postgres" in manifest:
        report.checks += _verify_postgres(cfg, backup_set, progress)
    if "redis" in manifest:
        report.checks.append(_verify_redis(backup_set, progress))
    report.finished_at = time.time()
    return report


def _verify_postgres(
    cfg: ChimeraConfig, backup_set: BackupSet, progress: Callable[[str], None]
) -> list[Check]:
    section = backup_section(cfg)
    if section.postgres is None:
        return [Check("postgres", False, "the config has no backup.postgres server to verify on")]
    try:
        dsn = section.postgres.resolve_dsn()
        admin = pg.connect(dsn)
        try:
            check_server_version(backup_set, pg.server_info(admin))
        finally:
            admin.close()
    except (BackupError, ValueError) as exc:
        return [Check("postgres", False, str(exc))]
    checks = []
    for entry in backup_set.manifest["postgres"]["databases"]:
        name = entry["name"]
        scratch = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
        progress(f"postgres {name} -> scratch {scratch}")
        try:
            counts = pg.restore_database(
                dsn, entry, backup_set.path, scratch, section.postgres.jobs
            )
            diff = pg.compare_counts(entry["tables"], counts)
            rows = sum(counts.values())
            checks.append(
                Check(
                    f"postgres {name}",
                    not diff,
                    "; ".join(diff) or f"restored: {len(counts)} tables, {rows} rows as recorded",
                )
            )
        except BackupError as exc:
            checks.append(Check(f"postgres {name}", False, str(exc)))
        finally:
            try:
                admin = pg.connect(dsn)
                try:
                    pg.drop_database(admin, scratch)
                finally:
                    admin.close()
            except BackupError:
                pass
    return checks


def _verify_redis(backup_set: BackupSet, progress: Callable[[str], None]) -> Check:
    entry = backup_set.manifest["redis"]
    progress("redis snapshot -> scratch redis-server")
    try:
        with redis_data.scratch_redis(backup_set.file(redis_data.RDB_FILE)) as scratch:
            keyspace = redis_data.keyspace_counts(scratch)
    except BackupError as exc:
        return Check("redis", False, str(exc))
    if keyspace != entry["keyspace"]:
        return Check("redis", False, f"keys {keyspace}, manifest says {entry['keyspace']}")
    with open(backup_set.file(redis_data.KEYS_FILE), "rb") as keys:
        exported = sum(1 for _ in keys)
    if exported != entry["keys"]:
        return Check("redis", False, f"{exported} exported keys, manifest says {entry['keys']}")
    return Check("redis", True, f"snapshot loads: {keyspace or 'no keys'}; {exported} keys export")
