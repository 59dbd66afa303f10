"""The agent's care of its own state dir, on each tick.

- The store's failures and recoveries (store_guard.py) become alerts and events: one alert
  while writes fail (naming the path and the free space), resolved when they work again.
- A removed state dir is made again: the store remakes itself on its next write or tick; here
  the pid-file lock and the control socket come back too (the socket's server is restarted).
- A damaged store set aside at start is said once the alert sink exists.
- Retention (store_retention.py) runs every `agent.retention.interval` in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from chimera_ops.filemodes import make_private_dir
from chimera_ops.store_retention import prune

if TYPE_CHECKING:
    from chimera_ops.agent.lock import AgentLock
    from chimera_ops.agent.metrics import AgentMetrics
    from chimera_ops.agent.watch import Watcher
    from chimera_ops.alerts import AlertSink
    from chimera_ops.config_agent import RetentionConfig
    from chimera_ops.store_guard import GuardedStore

log = logging.getLogger("chimera_ops.agent")

AGENT = "agent"
WRITE_KEY = "agent:state_write"  # open while the store's writes fail
FIRST_PRUNE = 60.0  # seconds after start: an agent restarted often still prunes


class StateUpkeep:
    """Wires a GuardedStore to the agent's alerts and metrics; keeps the state dir whole."""

    def __init__(
        self,
        store: GuardedStore,
        metrics: AgentMetrics,
        lock: AgentLock,
        socket: Path,
        retention: RetentionConfig,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.lock = lock
        self.socket = socket
        self.retention = retention
        self.alerts: AlertSink | None = None
        self.watcher: Watcher | None = None
        self.rebind: Callable[[], None] | None = None  # a new control socket and its server
        self._said: list[tuple[str, str, bool]] = []  # (key, text, open) before alerts exist
        self._socket_error: str | None = None
        self._prune_due = time.time() + min(FIRST_PRUNE, retention.interval)
        self._prune_task: asyncio.Task[None] | None = None
        store.on_error = metrics.count_state_write_error
        store.on_news = self._news

    def attach(self, alerts: AlertSink, watcher: Watcher) -> None:
        """The alert sink exists: say what happened before it did."""
        self.alerts, self.watcher = alerts, watcher
        said, self._said = self._said, []
        for key, text, still_open in said:
            if still_open and key == WRITE_KEY and self.store.failing is None:
                continue  # it failed and recovered before the sink existed
            self._alert(key, text)

    def store_damaged(self, text: str) -> None:
        """The store was set aside at start (open_agent_store): an event and an alert."""
        self.store.add_event("store_damaged", text, data={"path": str(self.store.path)})
        self._alert("agent:store_damaged", text)

    # ----------------------------------------------------------------- alerts
    def _alert(self, key: str, text: str) -> None:
        if self.alerts is None or self.watcher is None:
            self._said.append((key, text, True))
            return
        self.watcher.active[key] = "critical"
        self.alerts.fire_background(key, AGENT, "critical", text, {})
        self.store.add_event("alert", f"critical: {text}", component=AGENT, data={"key": key})

    def _news(self, kind: str, text: str, failing: bool) -> None:
        if kind == "state_write_failing":
            self._alert(WRITE_KEY, text)
        elif kind == "state_write_recovered":
            if self.watcher is not None and self.watcher.active.pop(WRITE_KEY, None) is not None:
                self.watcher._resolve(WRITE_KEY, text)
        elif kind == "state_recreated":
            self._alert("agent:state_dir", text)
            self._restore_socket()

    # ----------------------------------------------------------------- each tick
    def tick(self, now: float) -> None:
        """Remake what vanished, replay what waits, start a due prune. Cheap: two stats."""
        self.store.check()
        self.metrics.set_gauge("state_write_backlog", float(self.store.backlog))
        if not self.socket.exists():
            self._restore_socket()
        if now >= self._prune_due and (self._prune_task is None or self._prune_task.done()):
            self._prune_due = now + self.retention.interval
            self._prune_task = asyncio.create_task(self._prune())

    def _restore_socket(self) -> None:
        if self.rebind is None or self.socket.exists():
            return
        try:
            make_private_dir(self.socket.parent)
            self.lock.renew()
            self.rebind()
        except (OSError, RuntimeError) as exc:  # RuntimeError: another agent took the dir
            if self._socket_error is None:
                log.error("cannot make the control socket %s again: %s", self.socket, exc)
            self._socket_error = str(exc)
            return
        self._socket_error = None
        text = f"the control socket {self.socket} was gone: listening on a new one"
        log.warning("%s", text)
        self.store.add_event("socket_recreated", text, component=AGENT)

    async def _prune(self) -> None:
        try:
            removed = await asyncio.to_thread(prune, self.store.path, self.retention)
        except (sqlite3.Error, OSError) as exc:
            log.warning("retention: the store was not pruned: %s", exc)
            return
        if removed:
            said = ", ".join(f"{count} {table}" for table, count in removed.items())
            self.store.add_event("retention", f"pruned {said}", component=AGENT, data=removed)

    def cancel(self) -> None:
        if self._prune_task is not None:
            self._prune_task.cancel()
