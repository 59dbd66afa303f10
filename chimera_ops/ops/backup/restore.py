"""`chimera-ops restore ID`: put a set's data back, never under a live engine, never half-way.

1. refuse while an engine runs (guard.py), or when a checksum fails (nothing touched), or when
   the set comes from a newer major PostgreSQL;
2. a safety backup of the current data (unless the operator opts out);
3. each database is restored into a new database `<name>__restore_<random>` and its row counts
   checked; only then is it swapped in (connections to the old one refused and ended, old renamed
   away, new renamed into place, old dropped). The live database is untouched until its
   replacement is complete and checked, so a failed restore leaves it as it was;
4. Redis: FLUSHDB of the configured logical database and RESTORE of every exported key into the
   running server (redis_data.py), then the key count is checked.
Every step goes to the audit log with its timing (the `audit` callback).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from chimera_ops.config import ChimeraConfig
from chimera_ops.ops.backup import pg, redis_data
from chimera_ops.ops.backup.create import BackupResult, backup_section, create_backup
from chimera_ops.ops.backup.sets import BackupError, BackupSet, check_files, reading
from chimera_ops.ops.backup.verify import check_server_version

Only = Literal["postgres", "redis"] | None
Audit = Callable[[str, str, float], None]
"""`audit(step, result, seconds)`."""


class RestoreRefused(BackupError):
    """The restore did not start; nothing was changed."""


@dataclass
class RestoreReport:
    """What a restore did."""

    set_id: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    safety_backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.set_id, "safety_backup": self.safety_backup, "steps": self.steps}


def plan(cfg: ChimeraConfig, backup_set: BackupSet, only: Only, safety: bool) -> list[str]:
    """The steps a restore would take, in words (`--dry-run` and the confirmation prompt)."""
    manifest = backup_set.manifest
    steps = [f"check the sha256 of the {len(manifest['files'])} files of set {backup_set.id}"]
    if safety:
        steps.append("take a safety backup of the current data")
    if only in (None, "postgres"):
        for db in manifest.get("postgres", {}).get("databases", []):
            rows = sum(db["tables"].values())
            steps.append(
                f"restore database {db['name']} ({len(db['tables'])} tables, {rows} rows) into a "
                f"new database, check its row counts, then swap it in for {db['name']}"
            )
    if only in (None, "redis") and "redis" in manifest:
        r = manifest["redis"]
        steps.append(
            f"Redis db {r['db']}: FLUSHDB, then RESTORE {r['keys']} keys, check the key count"
        )
    return steps


def restore_set(
    cfg: ChimeraConfig,
    backup_set: BackupSet,
    only: Only,
    blockers: list[str],
    safety: bool = True,
    audit: Audit = lambda step, result, seconds: None,
    progress: Callable[[str], None] = lambda _: None,
) -> RestoreReport:
    """Restore (see the module docstring); RestoreRefused before anything changed."""
    section = backup_section(cfg)
    if blockers:
        raise RestoreRefused("a restore never runs under a live engine: " + "; ".join(blockers))
    manifest = backup_set.manifest
    want_pg = only in (None, "postgres") and "postgres" in manifest
    want_redis = only in (None, "redis") and "redis" in manifest
    if not want_pg and not want_redis:
        raise RestoreRefused(f"set {backup_set.id} holds no {only} data")
    if want_pg and section.postgres is None:
        raise RestoreRefused("the config has no backup.postgres server to restore into")
    if want_redis and section.redis is None:
        raise RestoreRefused("the config has no backup.redis server to restore into")
    report = RestoreReport(backup_set.id)

    def step(name: str, func: Callable[[], str]) -> None:
        progress(name)
        t0 = time.monotonic()
        try:
            result = func()
        except BaseException as exc:
            audit(name, f"failed: {exc}", time.monotonic() - t0)
            raise
        seconds = time.monotonic() - t0
        audit(name, result, seconds)
        report.steps.append({"step": name, "result": result, "seconds": round(seconds, 3)})

    with reading(backup_set):
        t0 = time.monotonic()
        problems = check_files(backup_set)
        took = time.monotonic() - t0
        if problems:
            audit("checksums", "failed: " + "; ".join(problems), took)
            raise RestoreRefused(
                f"set {backup_set.id} is damaged, nothing was changed: " + "; ".join(problems)
            )
        audit("checksums", "every file matches", took)
        report.steps.append(
            {"step": "checksums", "result": "every file matches", "seconds": round(took, 3)}
        )
        if want_pg:
            assert section.postgres is not None
            dsn = section.postgres.resolve_dsn()
            admin = pg.connect(dsn)
            try:
                check_server_version(backup_set, pg.server_info(admin))
            except BackupError as exc:
                raise RestoreRefused(str(exc)) from None
            finally:
                admin.close()
        if safety:

            def safety_backup() -> str:
                result: BackupResult = create_backup(
                    cfg, reason=f"safety backup before restore of {backup_set.id}"
                )
                report.safety_backup = result.backup_set.id
                return f"set {result.backup_set.id}"

            step("safety backup", safety_backup)
        if want_pg:
            assert section.postgres is not None
            jobs = section.postgres.jobs
            for entry in manifest["postgres"]["databases"]:
                step(
                    f"postgres {entry['name']}",
                    lambda e=entry: _restore_one(dsn, e, backup_set, jobs),  # type: ignore[misc]
                )
        if want_redis:
            assert section.redis is not None
            url = section.redis.resolve_url()
            step("redis", lambda: _restore_redis(url, backup_set))
    return report


def _restore_one(dsn: str, entry: dict[str, Any], backup_set: BackupSet, jobs: int) -> str:
    name = entry["name"]
    tag = secrets.token_hex(4)
    fresh = f"{name[:40]}__restore_{tag}"
    counts = {}
    try:
        counts = pg.restore_database(dsn, entry, backup_set.path, fresh, jobs)
        diff = pg.compare_counts(entry["tables"], counts)
        if diff:
            raise BackupError(f"{name}: restored row counts differ: {'; '.join(diff)}")
    except BaseException:
        _drop_quietly(dsn, fresh)
        raise
    _swap_in(dsn, name, fresh, f"{name[:40]}__pre_restore_{tag}")
    return f"{len(counts)} tables, {sum(counts.values())} rows, as recorded"


def _swap_in(dsn: str, name: str, fresh: str, old: str) -> None:
    """`fresh` becomes `name`; the previous `name` is dropped."""
    ident = sql.Identifier
    admin = pg.connect(dsn)
    try:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            # No new sessions, end the ones there are (the engine is stopped: these are
            # monitors and strays), then rename it out of the way.
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(name)))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(name), ident(old)))
        try:
            admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(fresh), ident(name))
            )
        except Exception:
            if exists:  # put the old one back: the live data must not disappear
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(old), ident(name))
                )
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident(name))
                )
            raise
        if exists:
            pg.drop_database(admin, old)
    finally:
        admin.close()


def _drop_quietly(dsn: str, name: str) -> None:
    try:
        admin = pg.connect(dsn)
        try:
            pg.drop_database(admin, name)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def _restore_redis(url: str, backup_set: BackupSet) -> str:
    expected = backup_set.manifest["redis"]["keys"]
    found = redis_data.restore_keys(url, backup_set.file(redis_data.KEYS_FILE))
    if found != expected:
        raise BackupError(f"Redis has {found} keys after the restore, the set has {expected}")
    return f"{found} keys, as recorded"
