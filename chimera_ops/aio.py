"""Small asyncio helpers shared by the agent and the paper engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float) -> T:
    """Await ``aw`` for at most ``timeout`` seconds; raise :class:`TimeoutError` after that.

    Use this instead of :func:`asyncio.wait_for`. On Python 3.11 ``wait_for`` can swallow a
    cancellation that arrives just as the inner awaitable completes (CPython gh-86296): the
    cancelled task carries on as if nothing happened. A loop written as ``while True: await
    wait_for(...)`` then survives ``task.cancel()``, which is how the paper engine sometimes
    hung on shutdown. ``asyncio.timeout`` counts cancellations and never loses one.
    """
    async with asyncio.timeout(timeout):
        return await aw
