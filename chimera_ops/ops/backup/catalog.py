"""The backup catalog in the store: which sets exist, how big, and whether a real restore of
each was verified (and when). The manifest in the set stays the truth about its files; the
catalog is what `backup list` and the agent's metrics read fast."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from chimera_ops.store import Store


@dataclass(frozen=True)
class CatalogEntry:
    """One set as the catalog knows it."""

    id: str
    path: str
    created_at: float
    finished_at: float
    size_bytes: int
    summary: dict[str, Any]
    verified_at: float | None
    verified_ok: bool | None
    verify_detail: str | None
    deleted_at: float | None


def record_set(store: Store, set_id: str, path: str, manifest: dict[str, Any]) -> None:
    """A finished set enters the catalog."""
    size = sum(int(f["size"]) for f in manifest["files"].values())
    summary = {
        "databases": [d["name"] for d in manifest.get("postgres", {}).get("databases", [])],
        "redis_keys": manifest.get("redis", {}).get("keys"),
        "reason": manifest.get("reason"),
    }
    store.connection.execute(
        "INSERT OR REPLACE INTO backups(id, path, created_at, finished_at, size_bytes, summary)"
        " VALUES (?,?,?,?,?,?)",
        (set_id, path, manifest["started_at"], manifest["finished_at"], size, json.dumps(summary)),
    )


def record_verify(
    store: Store, set_id: str, ok: bool, detail: str, at: float | None = None
) -> None:
    """The verdict of `backup verify` (a real restore into a scratch database)."""
    store.connection.execute(
        "UPDATE backups SET verified_at = ?, verified_ok = ?, verify_detail = ? WHERE id = ?",
        (at or time.time(), 1 if ok else 0, detail, set_id),
    )


def record_deleted(store: Store, set_id: str, at: float | None = None) -> None:
    store.connection.execute(
        "UPDATE backups SET deleted_at = ? WHERE id = ?", (at or time.time(), set_id)
    )


def entries(store: Store, include_deleted: bool = False) -> list[CatalogEntry]:
    """Catalog rows, newest first."""
    query = "SELECT * FROM backups"
    if not include_deleted:
        query += " WHERE deleted_at IS NULL"
    rows = store.connection.execute(query + " ORDER BY created_at DESC").fetchall()
    return [
        CatalogEntry(
            id=r["id"],
            path=r["path"],
            created_at=r["created_at"],
            finished_at=r["finished_at"],
            size_bytes=r["size_bytes"],
            summary=json.loads(r["summary"] or "{}"),
            verified_at=r["verified_at"],
            verified_ok=None if r["verified_ok"] is None else bool(r["verified_ok"]),
            verify_detail=r["verify_detail"],
            deleted_at=r["deleted_at"],
        )
        for r in rows
    ]


def by_id(store: Store) -> dict[str, CatalogEntry]:
    return {e.id: e for e in entries(store)}


@dataclass(frozen=True)
class BackupFigures:
    """What the agent exports about backups (None: no such set yet)."""

    last_success_at: float | None
    last_size_bytes: int | None
    last_duration_s: float | None
    last_verified_at: float | None
    first_at: float | None  # the first set ever taken (deleted ones included)
    sets: int


def figures(store: Store) -> BackupFigures:
    """The newest set and the newest good verification, for the metrics."""
    rows = entries(store)
    everything = entries(store, include_deleted=True)
    newest = rows[0] if rows else None
    verified = [e.verified_at for e in everything if e.verified_ok and e.verified_at]
    return BackupFigures(
        last_success_at=newest.finished_at if newest else None,
        last_size_bytes=newest.size_bytes if newest else None,
        last_duration_s=(newest.finished_at - newest.created_at) if newest else None,
        last_verified_at=max(verified) if verified else None,
        first_at=min(e.created_at for e in everything) if everything else None,
        sets=len(rows),
    )
