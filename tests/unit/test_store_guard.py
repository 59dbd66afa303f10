"""The agent's store over real SQLite files: failed writes wait and replay, a removed file is
remade, a damaged one is set aside, history is pruned by age and count.

A full database is real: `PRAGMA max_page_count` makes SQLite answer SQLITE_FULL ("database or
disk is full") exactly as a full disk does; nothing here is mocked.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from chimera_ops.config_agent import RetentionConfig
from chimera_ops.store import ChildRecord, Counters, Event, Store, StoreDamaged
from chimera_ops.store_guard import GuardedStore, open_agent_store
from chimera_ops.store_retention import prune


def _fill(store: GuardedStore) -> None:
    """The database may not grow any more: the next insert fails with SQLITE_FULL."""
    pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
    store.connection.execute(f"PRAGMA max_page_count={pages}")


def _free(store: GuardedStore) -> None:
    store.connection.execute("PRAGMA max_page_count=1000000")
    store._next_retry = 0.0  # the next check replays at once (no waiting a second)


def test_failed_writes_wait_in_order_and_replay(tmp_path: Path) -> None:
    store = GuardedStore(tmp_path / "chimera.db")
    news: list[tuple[str, str]] = []
    errors: list[int] = []
    store.on_news = lambda kind, text, failing: news.append((kind, text))
    store.on_error = lambda: errors.append(1)
    _fill(store)
    for n in range(200):
        store.add_event("test", "x" * 500 + f" {n}")
    store.add_restart("web", "crashed", ts=1000.0)
    store.save_counters(Counters("web", consecutive_failures=3, total_restarts=7))
    store.set_child(ChildRecord("web", 123, 1.0, os.getpid(), 2.0))
    assert store.failing is not None and "full" in store.failing
    assert [kind for kind, _ in news] == ["state_write_failing"]  # once, not per write
    assert "free of" in news[0][1] and str(tmp_path) in news[0][1]
    assert errors and store.backlog > 0
    # Decisions read what the agent holds, not the stale file.
    assert store.restart_times("web", 0.0) == [1000.0]
    assert store.counters("web").total_restarts == 7

    _free(store)
    store.check()
    assert store.backlog == 0 and store.failing is None
    assert news[-1][0] == "state_write_recovered"
    events = store.events(limit=1000)
    assert [e.reason.split()[-1] for e in events if e.kind == "test"] == [
        str(n) for n in range(200)
    ]
    assert events[-1].kind == "state_write_recovered"
    assert events[-1].data == {"replayed": store_replayed(events), "dropped": 0}
    reader = Store(tmp_path / "chimera.db", readonly=True)
    assert reader.counters("web").consecutive_failures == 3
    assert reader.restart_times("web", 0.0) == [1000.0]
    assert [c.pid for c in reader.children()] == [123]
    reader.close()
    store.close()


def store_replayed(events: list[Event]) -> int:
    assert events[-1].data is not None
    return int(events[-1].data["replayed"])


def test_backlog_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    store = GuardedStore(tmp_path / "chimera.db", max_backlog=10)
    store.add_event("before")
    _fill(store)
    for n in range(50):
        store.add_event("test", "y" * 500 + f" {n}")
    assert store.backlog == 10
    _free(store)
    store.check()
    recovered = store.events(limit=1)[-1]
    assert recovered.kind == "state_write_recovered"
    kept = [int(e.reason.split()[-1]) for e in store.events(limit=100) if e.kind == "test"]
    direct = kept[:-10]  # written before the file was full
    assert direct == list(range(len(direct)))
    assert kept[-10:] == list(range(40, 50))  # of those that waited, the oldest went
    assert recovered.data == {"replayed": 10, "dropped": 40 - len(direct)}
    store.close()


def test_journal_writes_through_connection_are_guarded(tmp_path: Path) -> None:
    from chimera_ops.ops.procedures.journal import Journal

    store = GuardedStore(tmp_path / "chimera.db")
    journal = Journal(store)
    _fill(store)
    for n in range(100):  # fill the last pages first
        store.add_event("pad", "z" * 500 + str(n))
    job = journal.create("restart", {"x": 1}, "me", os.getpid())
    journal.finish(job, "succeeded", {"ok": True})
    _free(store)
    store.check()
    got = journal.get(job)
    assert got is not None and got["state"] == "succeeded"
    store.close()


def test_removed_store_is_remade_with_what_memory_holds(tmp_path: Path) -> None:
    state = tmp_path / "var"
    store = GuardedStore(state / "chimera.db")
    news: list[str] = []
    store.on_news = lambda kind, text, failing: news.append(kind)
    store.counters("web")
    store.add_restart("web", "crashed", ts=500.0)
    store.save_counters(Counters("web", consecutive_failures=1, total_restarts=1))
    store.set_child(ChildRecord("web", 4242, 1.0, os.getpid(), 2.0))
    shutil.rmtree(state)
    store.add_event("after", "the dir was removed")  # the next write sees it first
    assert news == ["state_recreated"]
    assert (state / "chimera.db").exists()
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    reader = Store(state / "chimera.db", readonly=True)
    assert [e.kind for e in reader.events()] == ["state_recreated", "after"]
    assert reader.counters("web").total_restarts == 1
    assert reader.restart_times("web", 0.0) == [500.0]
    assert [c.pid for c in reader.children()] == [4242]
    reader.close()
    store.close()


def test_damaged_store_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "chimera.db"
    path.write_bytes(os.urandom(16384))
    with pytest.raises(StoreDamaged):
        Store(path, readonly=True)
    store, said = open_agent_store(path)
    assert said is not None and "set aside" in said and "backup catalog" in said
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("chimera.db.damaged-")]
    assert len(aside) == 1 and aside[0] in said
    assert store.quick_check() is None
    store.close()
    sound, said = open_agent_store(path)  # a sound store is kept as it is
    assert said is None
    sound.close()


def _old_rows(db: sqlite3.Connection, now: float) -> None:
    db.executemany(
        "INSERT INTO events(ts, kind, reason) VALUES (?, 'old', '')",
        [(now - 40 * 86400 + n,) for n in range(3000)],
    )
    db.executemany(
        "INSERT INTO events(ts, kind, reason) VALUES (?, 'new', '')",
        [(now - 100 + n * 0.01,) for n in range(5000)],
    )
    db.execute("INSERT INTO restarts(ts, component, reason) VALUES (?, 'web', 'x')", (now - 1e7,))
    db.execute("INSERT INTO restarts(ts, component, reason) VALUES (?, 'web', 'x')", (now - 10,))
    db.execute(
        "INSERT INTO procedures(id, kind, state, started_at, finished_at) VALUES"
        " ('old', 'restart', 'succeeded', ?, ?), ('running', 'restart', 'running', ?, NULL)",
        (now - 2e7, now - 2e7, now - 2e7),
    )
    db.execute(
        "INSERT INTO procedure_steps(procedure, n, name, state, started_at)"
        " VALUES ('old', 1, 'drain', 'succeeded', ?)",
        (now - 2e7,),
    )


def test_retention_prunes_by_age_and_count(tmp_path: Path) -> None:
    path = tmp_path / "chimera.db"
    store = Store(path)
    now = 2_000_000_000.0
    _old_rows(store.connection, now)
    removed = prune(path, RetentionConfig(events_max_rows=4000), now=now)
    assert removed == {"events": 3000 + 1000, "restarts": 1, "procedure_steps": 1, "procedures": 1}
    kinds = store.connection.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()
    assert [tuple(r) for r in kinds] == [("new", 4000)]
    newest = store.connection.execute("SELECT max(id) FROM events").fetchone()[0]
    oldest = store.connection.execute("SELECT min(id) FROM events").fetchone()[0]
    assert newest - oldest == 3999  # the newest rows stay
    left = store.connection.execute("SELECT id FROM procedures").fetchall()
    assert [r[0] for r in left] == ["running"]  # never a running one
    assert prune(path, RetentionConfig(events_max_rows=4000), now=now) == {}
    store.close()
