"""``within`` never loses a cancellation (the Python 3.11 ``wait_for`` race, gh-86296)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chimera_ops.aio import within


async def _cancel_as_inner_completes(
    bounded: Callable[[Awaitable[Any], float], Awaitable[Any]],
) -> str:
    """Cancel a task in the same loop iteration in which the awaitable it waits on completes."""
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def waiter() -> str:
        await bounded(inner, 10.0)
        return "cancellation lost"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is now parked on `inner`
    inner.set_result(1)
    task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return "cancelled"


def test_within_propagates_a_cancel_that_races_completion() -> None:
    assert asyncio.run(_cancel_as_inner_completes(within)) == "cancelled"


def test_the_race_is_real_for_wait_for_on_this_python() -> None:
    # Guards the reason `within` exists: if a Python upgrade fixes wait_for, this shows it.
    import sys

    outcome = asyncio.run(_cancel_as_inner_completes(asyncio.wait_for))
    if sys.version_info < (3, 12):
        assert outcome == "cancellation lost"
    else:
        assert outcome == "cancelled"


def test_within_times_out() -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        asyncio.run(within(slow(), 0.01))


def test_within_returns_the_result() -> None:
    async def value() -> int:
        return 7

    assert asyncio.run(within(value(), 1.0)) == 7
