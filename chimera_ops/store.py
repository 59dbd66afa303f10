"""Embedded SQLite (WAL) store in state_dir: events, restarts, children, audit, counters.

One writer (the agent) and any number of readers (the CLI). Every call is short; WAL keeps
readers from blocking the agent.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chimera_ops.filemodes import make_private_dir, open_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    component TEXT,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT NOT NULL DEFAULT '',
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_component ON events(component, ts);
CREATE TABLE IF NOT EXISTS restarts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    component TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS restarts_component ON restarts(component, ts);
CREATE TABLE IF NOT EXISTS children (
    component TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    create_time REAL NOT NULL,
    agent_pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    component TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    total_restarts INTEGER NOT NULL DEFAULT 0,
    fatal_reason TEXT,
    last_exit TEXT,
    loop_reset_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    args TEXT,
    reason TEXT,
    result TEXT,
    duration_s REAL
);
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    size_bytes INTEGER NOT NULL,
    summary TEXT NOT NULL,
    verified_at REAL,
    verified_ok INTEGER,
    verify_detail TEXT,
    deleted_at REAL
);
CREATE TABLE IF NOT EXISTS procedures (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    params TEXT,
    result TEXT,
    agent_pid INTEGER,
    user TEXT,
    lock TEXT,
    acknowledged INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS procedure_steps (
    procedure TEXT NOT NULL,
    n INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    detail TEXT,
    PRIMARY KEY (procedure, n)
);
CREATE TABLE IF NOT EXISTS memory_samples (
    component TEXT NOT NULL,
    ts REAL NOT NULL,
    rss INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_samples_component ON memory_samples(component, ts);
CREATE TABLE IF NOT EXISTS maintenance_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    status TEXT NOT NULL,
    fixed INTEGER NOT NULL DEFAULT 0,
    user TEXT
);
CREATE TABLE IF NOT EXISTS maintenance_results (
    run INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    threshold TEXT,
    advice TEXT,
    runbook TEXT,
    data TEXT,
    PRIMARY KEY (run, check_name)
);
CREATE TABLE IF NOT EXISTS maintenance_schedules (
    schedule TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    installed_at REAL NOT NULL
);
"""

MEMORY_SAMPLES_KEEP = 8 * 86400.0  # a week of the agent's own samples, and a day of margin
MEMORY_SAMPLES_MAX = 20000  # per component, whatever the sample interval


@dataclass(frozen=True)
class Event:
    """One recorded event."""

    id: int
    ts: float
    component: str | None
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "component": self.component,
            "kind": self.kind,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "reason": self.reason,
            "data": self.data,
        }


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        ts=row["ts"],
        component=row["component"],
        kind=row["kind"],
        from_state=row["from_state"],
        to_state=row["to_state"],
        reason=row["reason"],
        data=json.loads(row["data"]) if row["data"] else None,
    )


ADDED_COUNTER_COLUMNS = (("last_exit_at", "REAL"), ("fatal_at", "REAL"))


@dataclass(frozen=True)
class ChildRecord:
    """A child the agent started: enough to recognise it after an agent restart."""

    component: str
    pid: int
    create_time: float
    agent_pid: int
    started_at: float


@dataclass(frozen=True)
class Counters:
    """Per-component restart counters that survive an agent restart."""

    component: str
    consecutive_failures: int = 0
    total_restarts: int = 0
    fatal_reason: str | None = None
    last_exit: str | None = None  # what the last exit was, never a promise ("restarting in")
    loop_reset_at: float = (
        0.0  # an operator start: earlier restarts no longer count to a crash loop
    )
    last_exit_at: float | None = None
    fatal_at: float | None = None


DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)


def is_damage(exc: sqlite3.Error) -> bool:
    """The error says the file is not a sound database (not: full, locked, read-only...)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in DAMAGE_CODES


class StoreDamaged(sqlite3.DatabaseError):
    """The store file is damaged or not a database at all."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"the store {path} is damaged ({detail})")


def _open_reader(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a damaged file fails here
    except BaseException:
        db.close()
        raise
    return db


def _open_writer(path: Path) -> sqlite3.Connection:
    make_private_dir(path.parent)
    # Born 0600: SQLite gives the -wal and -shm files the database file's mode.
    os.close(open_private(path, os.O_WRONLY | os.O_CREAT))
    db = sqlite3.connect(str(path), timeout=5.0, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        _migrate(db)
    except BaseException:
        db.close()
        raise
    db.row_factory = sqlite3.Row
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added after a store was first created (stores are kept across upgrades)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(counters)")}
    for column, kind in ADDED_COUNTER_COLUMNS:
        if column not in have:
            db.execute(f"ALTER TABLE counters ADD COLUMN {column} {kind}")


class Store:
    """SQLite store at `state_dir/chimera.db`."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        try:
            self._db = _open_reader(path) if readonly else _open_writer(path)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise StoreDamaged(path, str(exc)) from None
            raise

    def quick_check(self) -> str | None:
        """`PRAGMA quick_check`: None when the file is sound, else what SQLite found."""
        try:
            rows = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                return str(exc)
            raise
        return None if rows == ["ok"] else "; ".join(rows)

    @classmethod
    def open_in(cls, state_dir: Path, readonly: bool = False) -> Store:
        """Open the store of a state dir."""
        return cls(state_dir / "chimera.db", readonly=readonly)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection, for modules that own a table of their own (backup catalog)."""
        return self._db

    # ----------------------------------------------------------------- events
    def add_event(
        self,
        kind: str,
        reason: str = "",
        component: str | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        data: dict[str, Any] | None = None,
        ts: float | None = None,
    ) -> int:
        """Record one event; returns its id."""
        cur = self._db.execute(
            "INSERT INTO events(ts, component, kind, from_state, to_state, reason, data)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                ts if ts is not None else time.time(),
                component,
                kind,
                from_state,
                to_state,
                reason,
                json.dumps(data) if data is not None else None,
            ),
        )
        return int(cur.lastrowid or 0)

    def events(
        self, component: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[Event]:
        """Events, oldest first, optionally for one component and after a time."""
        sql = "SELECT * FROM events WHERE 1=1"
        args: list[Any] = []
        if component:
            sql += " AND component = ?"
            args.append(component)
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = self._db.execute(sql, args).fetchall()
        return [_event(r) for r in reversed(rows)]

    def events_page(
        self,
        limit: int,
        component: str | None = None,
        since: float | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> tuple[list[Event], bool]:
        """One page of events by id cursor, oldest first, and whether there are more.

        With `after`: the oldest `limit` events whose id is above it (paging forward); else
        the newest `limit` events, below `before` when given (paging back). Always a walk of
        the primary key in page order that stops at the page's end (the unary `+` keeps SQLite
        off the component and time indexes, whose rows it would have to sort first: 0.7 s for
        one component of 300k events, against at most one pass over the table this way)."""
        sql = "SELECT * FROM events WHERE 1=1"
        args: list[Any] = []
        for clause, value in (
            (" AND +component = ?", component or None),
            (" AND +ts >= ?", since),
            (" AND id < ?", before),
            (" AND id > ?", after),
        ):
            if value is not None:
                sql += clause
                args.append(value)
        sql += f" ORDER BY id {'ASC' if after is not None else 'DESC'} LIMIT ?"
        rows = self._db.execute(sql, [*args, limit + 1]).fetchall()
        page = [_event(r) for r in rows[:limit]]
        return (page if after is not None else page[::-1]), len(rows) > limit

    # ----------------------------------------------------------------- restarts / counters
    def add_restart(self, component: str, reason: str, ts: float | None = None) -> None:
        """Record a restart and bump the total counter."""
        now = ts if ts is not None else time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO restarts(ts, component, reason) VALUES (?,?,?)",
                (now, component, reason),
            )
            db.execute(
                "INSERT INTO counters(component, total_restarts) VALUES (?, 1)"
                " ON CONFLICT(component) DO UPDATE SET total_restarts = total_restarts + 1",
                (component,),
            )

    def restart_times(self, component: str, since: float) -> list[float]:
        """Timestamps of restarts of a component since a time (for crash-loop windows)."""
        rows = self._db.execute(
            "SELECT ts FROM restarts WHERE component = ? AND ts >= ? ORDER BY ts",
            (component, since),
        ).fetchall()
        return [float(r[0]) for r in rows]

    def counters(self, component: str) -> Counters:
        """Counters of a component (zeros if never recorded)."""
        row = self._db.execute(
            "SELECT * FROM counters WHERE component = ?", (component,)
        ).fetchone()
        if row is None:
            return Counters(component=component)
        columns = set(row.keys())  # `in row` would test the values of a sqlite3.Row
        return Counters(
            component=component,
            consecutive_failures=row["consecutive_failures"],
            total_restarts=row["total_restarts"],
            fatal_reason=row["fatal_reason"],
            last_exit=row["last_exit"],
            loop_reset_at=row["loop_reset_at"],
            # A read-only CLI may open a store an older agent wrote, before these columns.
            last_exit_at=row["last_exit_at"] if "last_exit_at" in columns else None,
            fatal_at=row["fatal_at"] if "fatal_at" in columns else None,
        )

    def save_counters(self, counters: Counters) -> None:
        """Upsert the counters of a component."""
        self._db.execute(
            "INSERT INTO counters(component, consecutive_failures, total_restarts, fatal_reason,"
            " last_exit, loop_reset_at, last_exit_at, fatal_at) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT(component) DO UPDATE SET"
            " consecutive_failures=excluded.consecutive_failures,"
            " total_restarts=excluded.total_restarts, fatal_reason=excluded.fatal_reason,"
            " last_exit=excluded.last_exit, loop_reset_at=excluded.loop_reset_at,"
            " last_exit_at=excluded.last_exit_at, fatal_at=excluded.fatal_at",
            (
                counters.component,
                counters.consecutive_failures,
                counters.total_restarts,
                counters.fatal_reason,
                counters.last_exit,
                counters.loop_reset_at,
                counters.last_exit_at,
                counters.fatal_at,
            ),
        )

    # ----------------------------------------------------------------- children
    def set_child(self, record: ChildRecord) -> None:
        """Remember the live child of a component."""
        self._db.execute(
            "INSERT OR REPLACE INTO children(component, pid, create_time, agent_pid, started_at)"
            " VALUES (?,?,?,?,?)",
            (record.component, record.pid, record.create_time, record.agent_pid, record.started_at),
        )

    def clear_child(self, component: str) -> None:
        """Forget the child of a component (it exited or was stopped)."""
        self._db.execute("DELETE FROM children WHERE component = ?", (component,))

    def children(self) -> list[ChildRecord]:
        """Every child recorded as live."""
        rows = self._db.execute("SELECT * FROM children").fetchall()
        return [
            ChildRecord(r["component"], r["pid"], r["create_time"], r["agent_pid"], r["started_at"])
            for r in rows
        ]

    # ----------------------------------------------------------------- memory samples
    def add_memory_sample(self, component: str, ts: float, rss: int) -> None:
        """Keep one RSS sample (the weekly leak check reads them); bounded by age and count."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO memory_samples(component, ts, rss) VALUES (?,?,?)",
                (component, ts, int(rss)),
            )
            db.execute(
                "DELETE FROM memory_samples WHERE component = ? AND (ts < ? OR ts <= (SELECT ts"
                " FROM memory_samples WHERE component = ? ORDER BY ts DESC LIMIT 1 OFFSET ?))",
                (component, ts - MEMORY_SAMPLES_KEEP, component, MEMORY_SAMPLES_MAX),
            )

    def memory_samples(self, component: str, since: float) -> list[tuple[float, float]]:
        """(ts, rss) of a component since a time, oldest first."""
        rows = self._db.execute(
            "SELECT ts, rss FROM memory_samples WHERE component = ? AND ts >= ? ORDER BY ts",
            (component, since),
        ).fetchall()
        return [(float(r[0]), float(r[1])) for r in rows]

    # ----------------------------------------------------------------- audit
    def audit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        reason: str | None = None,
        result: str | None = None,
        duration_s: float | None = None,
        user: str | None = None,
        ts: float | None = None,
    ) -> int:
        """Record an operator command: who, when, where, why, and how it ended."""
        cur = self._db.execute(
            "INSERT INTO audit(ts, user, host, command, args, reason, result, duration_s)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                ts if ts is not None else time.time(),
                user or _current_user(),
                socket.gethostname(),
                command,
                json.dumps(args or {}),
                reason,
                result,
                duration_s,
            ),
        )
        return int(cur.lastrowid or 0)

    def audit_entries(
        self,
        limit: int = 200,
        since: float | None = None,
        command: str | None = None,
        user: str | None = None,
    ) -> list[dict[str, Any]]:
        """Most recent audit entries, oldest first; `command` matches a command's start
        (`restart` finds `restart`, `procedure safe-restart` needs `procedure`)."""
        sql, args = "SELECT * FROM audit WHERE 1=1", []
        for clause, value in (
            (" AND ts >= ?", since),
            (" AND (command = ? OR command LIKE ? || ' %')", command),
            (" AND user = ?", user),
        ):
            if value is not None:
                sql += clause
                args += [value] * clause.count("?")
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(r) | {"args": json.loads(r["args"] or "{}")} for r in reversed(rows)]


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"
