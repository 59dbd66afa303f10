"""Backups: age of the newest verified set (weekly) and a real restore of the latest (monthly:
`backup verify latest`, reusing `verify_set`; the verdict goes to the catalog)."""

from __future__ import annotations

from chimera_ops.ops.maintenance.base import Check, Context, Result
from chimera_ops.units import format_duration


class BackupAgeCheck(Check):
    """Weekly: the newest set that a real restore verified is not older than backup_max_age."""

    name = "backup_age"
    runbook = "backup-failure.md"

    def decide(self, verified_at: float | None, now: float, max_age: float) -> Result:
        """Pure verdict over when the newest verified set was made."""
        threshold = f"newest verified set < {format_duration(max_age)} old"
        if verified_at is None:
            return self.result(
                "warning",
                "no verified backup set",
                threshold,
                "`chimera-ops backup` then `chimera-ops backup verify latest`",
            )
        age = now - verified_at
        value = f"{format_duration(max(0.0, age))} old"
        if age > max_age:
            return self.result(
                "warning", value, threshold, "take and verify a backup", {"age_s": age}
            )
        return self.result("ok", value, threshold, "nothing to do", {"age_s": age})

    def run(self, ctx: Context) -> Result:
        if ctx.config.backup is None:
            return self.unknown("no backup section in the config")
        from chimera_ops.ops.backup import catalog

        good = [
            e.finished_at for e in catalog.entries(ctx.store) if e.verified_ok and e.verified_at
        ]
        return self.decide(max(good, default=None), ctx.now, ctx.config.maintenance.backup_max_age)


class BackupIntegrityCheck(Check):
    """Monthly: the latest set restores into a scratch database as its manifest says."""

    name = "backup_integrity"
    runbook = "data-restore.md"

    def run(self, ctx: Context) -> Result:
        if ctx.config.backup is None:
            return self.unknown("no backup section in the config")
        from chimera_ops.ops.backup import catalog
        from chimera_ops.ops.backup.sets import BackupError, find_set
        from chimera_ops.ops.backup.verify import verify_set

        try:
            latest = find_set(ctx.config.backup.dir, "latest")
        except BackupError as exc:
            return self.result(
                "critical", "no backup set", "latest set restores", str(exc).split(";")[0]
            )
        report = verify_set(ctx.config, latest)
        catalog.record_verify(ctx.store, latest.id, report.ok, report.detail())
        data = report.to_dict()
        if report.ok:
            return self.result(
                "ok", f"{latest.id} restores as recorded", "latest set restores", "-", data
            )
        return self.result(
            "critical",
            f"{latest.id}: {report.detail()}"[:200],
            "latest set restores",
            "take a new backup and verify it; do not rely on this set",
            data,
        )
