"""Retention of the store's history: events by age and count; restarts, audit, memory samples
and finished procedures by age (config `agent.retention`).

The agent runs `prune` in a thread (`asyncio.to_thread`) with its own SQLite connection, in
batches of `BATCH` rows, each its own short transaction, so its write lock is never held long
and the agent's own writes go on between them. Never on every tick: every `interval`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from chimera_ops.config_agent import RetentionConfig
from chimera_ops.store import MEMORY_SAMPLES_KEEP

BATCH = 1000  # rows per DELETE: a few milliseconds of write lock
PAUSE = 0.005  # between batches: the agent's writes get the lock


def _delete(db: sqlite3.Connection, table: str, where: str, args: tuple[object, ...]) -> int:
    """Delete the rows of `table` matching `where`, BATCH at a time; how many went."""
    total = 0
    while True:
        cur = db.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
            (*args, BATCH),
        )
        total += cur.rowcount
        if cur.rowcount < BATCH:
            return total
        time.sleep(PAUSE)


def prune(path: Path, retention: RetentionConfig, now: float | None = None) -> dict[str, int]:
    """Prune the store at `path`; rows removed per table (only tables that lost some)."""
    now = time.time() if now is None else now
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    try:
        removed = {
            "events": _delete(db, "events", "ts < ?", (now - retention.events_max_age,)),
            "restarts": _delete(db, "restarts", "ts < ?", (now - retention.restarts_max_age,)),
            "audit": _delete(db, "audit", "ts < ?", (now - retention.audit_max_age,)),
            "memory_samples": _delete(db, "memory_samples", "ts < ?", (now - MEMORY_SAMPLES_KEEP,)),
        }
        # By count: the newest `events_max_rows` stay (ids only grow).
        row = db.execute(
            "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
            (retention.events_max_rows,),
        ).fetchone()
        if row is not None:
            removed["events"] += _delete(db, "events", "id <= ?", (row[0],))
        # Finished procedures (never a running one) and their steps.
        old = "state != 'running' AND finished_at IS NOT NULL AND finished_at < ?"
        cutoff = (now - retention.procedures_max_age,)
        removed["procedure_steps"] = _delete(
            db, "procedure_steps", f"procedure IN (SELECT id FROM procedures WHERE {old})", cutoff
        )
        removed["procedures"] = _delete(db, "procedures", old, cutoff)
    finally:
        db.close()
    return {table: count for table, count in removed.items() if count}
