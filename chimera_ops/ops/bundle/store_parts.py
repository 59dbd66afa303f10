"""The agent's records in the window: events, audit log, incidents (read-only, from the store
and the incidents dir, so they are there with or without a running agent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chimera_ops.ops.bundle.collectors import Output, to_json

MAX_EVENTS = 100_000
MAX_INCIDENTS = 20
INCIDENT_PARTS = ("incident.json", "probes.json", "processes.json", "logs.txt", "stack.txt")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, default=str) + "\n" for row in rows)


def store_records(state_dir: Path, since_ts: float | None, components: list[str] | None) -> Output:
    """events.jsonl, audit.jsonl and counters.json; data for the report."""
    from chimera_ops.store import Store

    db = state_dir / "chimera.db"
    if not db.exists():
        return Output(error=f"no store at {db} (the agent has never run here)")
    store = Store(db, readonly=True)
    try:
        events = [e.to_dict() for e in store.events(since=since_ts, limit=MAX_EVENTS)]
        if components:
            events = [e for e in events if e["component"] in (None, *components)]
        rows = store.connection.execute(
            "SELECT * FROM audit WHERE ts >= ? ORDER BY id LIMIT ?", (since_ts or 0, MAX_EVENTS)
        ).fetchall()
        audit = [dict(r) | {"args": json.loads(r["args"] or "{}")} for r in rows]
        counters = {
            name: vars(store.counters(name))
            for name in sorted({e["component"] for e in events if e["component"]})
        }
    finally:
        store.close()
    parts = {
        "agent/events.jsonl": _jsonl(events),
        "agent/audit.jsonl": _jsonl(audit),
        "agent/counters.json": to_json(counters),
    }
    truncated = len(events) >= MAX_EVENTS
    return Output(parts, {"events": events, "audit": audit, "events_truncated": truncated})


def incidents(state_dir: Path, since_ts: float | None, components: list[str] | None) -> Output:
    """The incidents captured in the window (newest `MAX_INCIDENTS`), every part of each."""
    from datetime import datetime

    from chimera_ops.incidents import list_incidents

    base = state_dir / "incidents"
    found = []
    parts: dict[str, str] = {}
    stacks: list[tuple[str, str]] = []
    for summary in list_incidents(base):
        try:
            at = datetime.fromisoformat(summary.at).timestamp()
        except ValueError:
            at = None
        if since_ts is not None and at is not None and at < since_ts:
            continue
        if components and summary.component not in components:
            continue
        found.append(summary.to_dict())
        if len(found) > MAX_INCIDENTS:
            continue
        for name in INCIDENT_PARTS:
            path = summary.path / name
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            parts[f"incidents/{summary.id}/{name}"] = text
            if name == "stack.txt" and "Thread" in text:
                stacks.append((f"incidents/{summary.id}/stack.txt", text))
    parts["incidents/index.json"] = to_json(found)
    return Output(parts, {"incidents": found, "stacks": stacks})
