"""Retention carried out: delete what `prune_plan` says, and the garbage of failed backups."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from chimera_ops.config import BackupConfig
from chimera_ops.ops.backup import catalog
from chimera_ops.ops.backup.retention import Deletion, SetFacts, prune_plan
from chimera_ops.ops.backup.sets import being_read, discard, garbage, list_sets
from chimera_ops.store import Store


@dataclass
class PruneResult:
    """Sets deleted (or that would be, with dry_run) and garbage removed."""

    deleted: list[Deletion] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": [{"id": d.id, "why": d.why} for d in self.deleted],
            "garbage": self.garbage,
        }


def prune(section: BackupConfig, store: Store | None, dry_run: bool = False) -> PruneResult:
    """Apply retention to `section.dir`; the catalog (when given) says which sets verified."""
    verified = (
        {e.id for e in catalog.entries(store) if e.verified_ok} if store is not None else set()
    )
    sets = list_sets(section.dir)
    facts = [
        SetFacts(s.id, s.created_at, verified_ok=s.id in verified, being_read=being_read(s))
        for s in sets
    ]
    keep = section.retention
    result = PruneResult(dry_run=dry_run)
    result.deleted = prune_plan(facts, keep.keep, keep.max_age, time.time())
    result.garbage = [str(p) for p in garbage(section.dir)]
    if dry_run:
        return result
    by_id = {s.id: s for s in sets}
    for deletion in result.deleted:
        discard(by_id[deletion.id].path)
        if store is not None:
            catalog.record_deleted(store, deletion.id)
    for path in result.garbage:
        discard(section.dir / path.rsplit("/", 1)[-1])
    return result
