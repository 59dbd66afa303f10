"""Reads of the control API, off the event loop and a few at a time.

The loop supervises: a read of thousands of rows (and the JSON of its answer) on it would delay
a child's restart and `/v1/health`. So each API read of the store opens its own read-only
connection (`file:...chimera.db?mode=ro`; SQLite connections are not shared across threads,
and WAL lets it read while the agent writes) in a small thread pool of this listener, and
encodes its answer there. The status document and the /proc walk of `/metrics` run there too,
not in the loop's default pool, where the agent's own kills and monitors run: a flood of
`/v1/status` never queues ahead of a restart. A gate admits `concurrency` reads at once: a
flood of readers waits in line as cheap coroutines instead of piling up threads and memory.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from starlette.responses import Response

from chimera_ops.agent.api_guard import ApiError
from chimera_ops.store import Store

T = TypeVar("T")

READ_CONCURRENCY = 2  # per listener; the machine may have 2 cores and the loop needs one


class StoreReads:
    """The API's work off the loop: read-only queries of the store at `path`, and any other
    slow read (`run`), in this listener's worker threads."""

    def __init__(self, path: Path, concurrency: int = READ_CONCURRENCY) -> None:
        self.path = path
        self._gate = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="api-read")

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread of this listener, once the gate admits it."""
        async with self._gate:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    async def call(self, query: Callable[[Store], T]) -> T:
        """`query(store)` on a fresh read-only store in a worker thread; 503 if unreadable."""
        return await self.run(lambda: self._run(query))

    async def json(self, query: Callable[[Store], Any], status: int = 200) -> Response:
        """The answer of `query` as a JSON response, encoded in the worker thread too."""
        body = await self.call(lambda store: json.dumps(query(store)).encode())
        return Response(body, status_code=status, media_type="application/json")

    def _run(self, query: Callable[[Store], T]) -> T:
        try:
            # Per call: a store set aside or a state dir recreated is never read through a
            # connection to the old file; opening one costs well under a millisecond.
            store = Store(self.path, readonly=True)
        except sqlite3.Error as exc:
            raise ApiError(f"the store {self.path} cannot be read: {exc}", status=503) from None
        try:
            return query(store)
        except sqlite3.Error as exc:
            raise ApiError(f"the store {self.path} cannot be read: {exc}", status=503) from None
        finally:
            store.close()
