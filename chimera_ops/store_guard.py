"""The agent's store, never fatal: a write that fails waits in memory; a vanished file is remade.

The agent exists so that the trading engine keeps running; a full disk, an I/O error or a
removed state dir must not end it (issue 19). `GuardedStore` is the agent's `Store`:

- every write (events, restarts, counters, children, memory samples, audit, and the writes of
  the modules that use `connection`: the procedure journal, the backup catalog) that raises
  `sqlite3.Error` or `OSError` is counted and kept in a bounded backlog (oldest dropped beyond
  `max_backlog`, counted). While the backlog is not empty every new write queues behind it, so
  the order of writes is kept; the backlog is replayed on the agent's tick and before new writes,
  at most once a second while it keeps failing;
- the reads the agent decides with (crash-loop windows, counters) merge what the agent holds
  in memory, so a write that is still waiting is never forgotten by a decision;
- `check()` (each tick: one stat) sees the database file gone or replaced (`rm -rf` of the
  state dir: SQLite would go on writing into the unlinked file), remakes the state dir (0700),
  opens a fresh store, writes back counters, live children and recent restarts from memory,
  and replays the backlog.

What the agent says about it goes through `on_news(kind, text, failing)`: `state_write_failing`
once when writes start failing (the alert names the path and the free space),
`state_write_recovered` when they work again (with how many writes were replayed and dropped),
`state_recreated` when the file was remade. `on_error` counts each failed attempt (the metric
`chimera_state_write_errors_total`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from chimera_ops.store import ChildRecord, Counters, Store, StoreDamaged, _open_writer

log = logging.getLogger("chimera_ops.agent")

WRITE_ERRORS = (sqlite3.Error, OSError)
MAX_BACKLOG = 20_000  # writes kept while the store fails (an event is a few hundred bytes)
RETRY_EVERY = 1.0  # seconds between replay attempts while writes fail
REPLAY_BATCH = 2_000  # writes replayed at once: the loop is never held long
RESTARTS_KEPT = 256  # restarts per component held in memory (crash-loop windows)
READS = ("SELECT", "WITH", "EXPLAIN", "PRAGMA")
LOST = (
    "the counters (restart totals, fatal reasons), the crash-loop history, the record of live "
    "children, the events and audit log, the backup catalog and the procedure journal"
)

News = Callable[[str, str, bool], None]


@dataclass
class _Write:
    """One write the store could not take yet: a `Store` method and its arguments."""

    method: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class _NoRows:
    """What `execute` answers for a write that waits in the backlog."""

    rowcount = 0
    lastrowid = 0

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def __iter__(self) -> Any:
        return iter(())


class _GuardedConnection:
    """`Store.connection` of a GuardedStore: writes are guarded, reads go to the live file.

    Modules that own a table (journal, catalog) keep this object; it always uses the store's
    current connection, so a remade store is used by them too.
    """

    def __init__(self, store: GuardedStore) -> None:
        self._store = store

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.lstrip()[:7].upper().startswith(READS):
            return self._store._db.execute(sql, params)
        return self._store._write(GuardedStore._execute, sql, params)

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        return self._store._write(GuardedStore._executemany, sql, list(rows))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store._db, name)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def free_space(path: Path) -> str:
    """`N MiB free of M MiB on DIR` for the nearest existing directory of `path`."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return f"free space unknown ({exc.strerror or exc})"
    mib = 1024 * 1024
    return f"{usage.free / mib:.1f} MiB free of {usage.total / mib:.1f} MiB on {where}"


class GuardedStore(Store):
    """A `Store` whose writes never raise (see the module docstring)."""

    def __init__(self, path: Path, max_backlog: int = MAX_BACKLOG) -> None:
        super().__init__(path)
        self.max_backlog = max_backlog
        self.on_news: News | None = None
        self.on_error: Callable[[], None] | None = None
        self.errors = 0  # failed write attempts since start
        self.failing: str | None = None  # the error that started the current failure
        self._dropped = 0  # writes dropped during the current failure
        self._replayed = 0  # writes replayed during the current failure
        self._backlog: deque[_Write] = deque()
        self._next_retry = 0.0
        self._identity = _identity(path)
        self._proxy = _GuardedConnection(self)
        self._counters: dict[str, Counters] = {}
        self._children: dict[str, ChildRecord] = {}
        self._restarts: dict[str, deque[float]] = {}

    @property
    def connection(self) -> sqlite3.Connection:
        return cast(sqlite3.Connection, self._proxy)

    def close(self) -> None:
        """A last replay of what waits, then close (what still cannot be written is said)."""
        self._next_retry = 0.0
        self.check()
        if self._backlog:
            log.error("%d writes to the store %s are lost", len(self._backlog), self.path)
        super().close()

    @property
    def backlog(self) -> int:
        """Writes waiting for the store."""
        return len(self._backlog)

    # ----------------------------------------------------------------- the guard
    def _write(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        op = _Write(method, args, kwargs)
        self.check()
        if self._backlog:  # keep the order: nothing overtakes a waiting write
            self._queue(op)
            return _NoRows()
        try:
            return method(self, *args, **kwargs)
        except WRITE_ERRORS as exc:
            self._queue(op)
            self._failed(exc)
            return _NoRows()

    def _execute(self, sql: str, params: Any) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def _executemany(self, sql: str, rows: list[Any]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    def _queue(self, op: _Write) -> None:
        if len(self._backlog) >= self.max_backlog:
            self._backlog.popleft()
            self._dropped += 1
        self._backlog.append(op)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self._next_retry = time.monotonic() + RETRY_EVERY
        if self.on_error is not None:
            self.on_error()
        with contextlib.suppress(*WRITE_ERRORS):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        if self.failing is not None:
            return
        self.failing = str(exc) or type(exc).__name__
        text = (
            f"cannot write the store {self.path}: {self.failing}; {free_space(self.path.parent)}; "
            f"supervision goes on from memory, up to {self.max_backlog} writes wait to be "
            "replayed (older ones are dropped)"
        )
        log.error("%s", text)
        self._tell("state_write_failing", text, True)

    def _tell(self, kind: str, text: str, failing: bool) -> None:
        if self.on_news is not None:
            self.on_news(kind, text, failing)

    def check(self) -> None:
        """On each tick and before each write: remake a vanished store (one stat when all is
        well), then replay what waits. At most once a second while writes keep failing."""
        if time.monotonic() < self._next_retry:
            return
        if _identity(self.path) != self._identity and not self._reopen():
            return
        if self._backlog or self.failing is not None:
            self._replay()

    def _replay(self) -> None:
        for _ in range(min(REPLAY_BATCH, len(self._backlog))):
            op = self._backlog[0]
            try:
                op.method(self, *op.args, **op.kwargs)
            except WRITE_ERRORS as exc:
                self._failed(exc)
                return
            self._backlog.popleft()
            self._replayed += 1
        if self._backlog:
            return  # the next tick or write goes on with the next batch
        if self.failing is not None:
            text = (
                f"the store {self.path} takes writes again (it failed with: {self.failing}); "
                f"{self._replayed} waiting writes replayed, {self._dropped} dropped"
            )
            data = {"replayed": self._replayed, "dropped": self._dropped}
            self.failing = None
            self._replayed = self._dropped = 0
            log.warning("%s", text)
            self._tell("state_write_recovered", text, False)
            self.add_event("state_write_recovered", text, data=data)

    def _reopen(self) -> bool:
        try:
            db = _open_writer(self.path)  # makes the state dir again (0700)
        except WRITE_ERRORS as exc:
            self._failed(exc)
            return False
        old, self._db = self._db, db
        with contextlib.suppress(sqlite3.Error):
            old.close()
        self._identity = _identity(self.path)
        # What the agent holds in memory goes first: restarts, counters, live children.
        seed = [
            _Write(Store.add_restart, (name, "written back after the store was remade", ts))
            for name, times in self._restarts.items()
            for ts in times
        ]
        seed += [_Write(Store.save_counters, (c,)) for c in self._counters.values()]
        seed += [_Write(Store.set_child, (r,)) for r in self._children.values()]
        self._backlog.extendleft(reversed(seed))
        text = (
            f"the store {self.path} was gone (was the state dir removed?): made a fresh one; "
            "the old events, audit log, backup catalog and procedure journal are lost; "
            f"counters of {len(self._counters)} components, {len(self._children)} live "
            "children and the recent restarts are written back from memory"
        )
        log.error("%s", text)
        self._tell("state_recreated", text, False)
        self.add_event("state_recreated", text, data={"path": str(self.path)})
        return True

    # ----------------------------------------------------------------- writes
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
        ts = time.time() if ts is None else ts
        cur = self._write(Store.add_event, kind, reason, component, from_state, to_state, data, ts)
        return cur if isinstance(cur, int) else 0

    def add_restart(self, component: str, reason: str, ts: float | None = None) -> None:
        ts = time.time() if ts is None else ts
        self._restarts.setdefault(component, deque(maxlen=RESTARTS_KEPT)).append(ts)
        held = self._counters.get(component)
        if held is not None:  # the stored total goes up with it
            self._counters[component] = replace(held, total_restarts=held.total_restarts + 1)
        self._write(Store.add_restart, component, reason, ts)

    def save_counters(self, counters: Counters) -> None:
        self._counters[counters.component] = counters
        self._write(Store.save_counters, counters)

    def set_child(self, record: ChildRecord) -> None:
        self._children[record.component] = record
        self._write(Store.set_child, record)

    def clear_child(self, component: str) -> None:
        self._children.pop(component, None)
        self._write(Store.clear_child, component)

    def add_memory_sample(self, component: str, ts: float, rss: int) -> None:
        self._write(Store.add_memory_sample, component, ts, rss)

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
        ts = time.time() if ts is None else ts
        cur = self._write(Store.audit, command, args, reason, result, duration_s, user, ts)
        return cur if isinstance(cur, int) else 0

    # ----------------------------------------------------------------- reads decisions use
    def restart_times(self, component: str, since: float) -> list[float]:
        """The store's restarts merged with those this agent made (some may still wait)."""
        try:
            stored = super().restart_times(component, since)
        except WRITE_ERRORS as exc:
            log.warning("restart history not readable, using memory: %s", exc)
            stored = []
        held = [ts for ts in self._restarts.get(component, ()) if ts >= since]
        return sorted(set(stored) | set(held))

    def counters(self, component: str) -> Counters:
        """The counters this agent holds while a write waits or the store cannot be read."""
        held = self._counters.get(component)
        if held is not None and self._backlog:
            return held
        try:
            found = super().counters(component)
        except WRITE_ERRORS as exc:
            log.warning("counters not readable, using memory: %s", exc)
            return held or Counters(component=component)
        self._counters[component] = found
        return found


# --------------------------------------------------------------------------- start-up
def set_aside(path: Path, now: float | None = None) -> Path:
    """Rename a damaged store (with its -wal and -shm) to `chimera.db.damaged-<UTC>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{aside}{suffix}")
    return aside


def open_agent_store(path: Path) -> tuple[GuardedStore, str | None]:
    """The agent's store after `PRAGMA quick_check`; a damaged or unreadable one is set aside
    and a fresh one made. Returns the store and, when one was set aside, what to say."""
    try:
        store = GuardedStore(path)
    except StoreDamaged as exc:
        problem = exc.detail
    else:
        found = store.quick_check()
        if found is None:
            return store, None
        problem = found
        Store.close(store)  # nothing to replay: it was just opened
    aside = set_aside(path)
    text = (
        f"the store {path} was damaged ({problem}): set aside as {aside} and started a fresh "
        f"one; lost, not obeyed: {LOST}. The components start as usual; the old file is kept "
        "for inspection (`sqlite3 FILE .recover`)"
    )
    log.error("%s", text)
    return GuardedStore(path), text
