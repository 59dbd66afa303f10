"""Store reads of the control API, off the event loop and a few at a time.

The loop supervises: a read of thousands of rows (and the JSON of its answer) on it would delay
a child's restart and `/v1/health`. So each API read opens its own read-only connection
(`file:...chimera.db?mode=ro`; SQLite connections are not shared across threads, and WAL lets
it read while the agent writes) in a small thread pool of this listener, and encodes its answer
there. A gate admits `concurrency` reads at once: a flood of readers waits in line as cheap
coroutines instead of piling up threads and memory.
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
    """Read-only queries of the store at `path`, run in worker threads."""

    def __init__(self, path: Path, concurrency: int = READ_CONCURRENCY) -> None:
        self.path = path
        self._gate = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="api-read")

    async def call(self, query: Callable[[Store], T]) -> T:
        """`query(store)` on a fresh read-only store in a worker thread; 503 if unreadable."""
        async with self._gate:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._run, query)

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
