"""The loop's wake event: late due times wake a sleeping loop, nothing else does."""

from __future__ import annotations

import asyncio

from chimera_ops.agent.wake import Wake


def _wake() -> Wake:
    async def make() -> Wake:
        return Wake()

    return asyncio.run(make())


def test_due_before_the_loops_own_wake_up_sets_it() -> None:
    wake = _wake()
    wake.sleeping_until = 100.0
    wake.due_at(150.0)
    assert not wake.is_set()
    wake.due_at(99.0)
    assert wake.is_set()


def test_due_now_always_sets_it() -> None:
    wake = _wake()
    wake.sleeping_until = 100.0
    wake.due_at(None)
    assert wake.is_set()


def test_during_a_round_nothing_is_woken() -> None:
    # sleeping_until is 0 while a round runs: that round plans with the new due time itself.
    wake = _wake()
    wake.due_at(5.0)
    assert not wake.is_set()


def test_a_finished_run_reports_its_next_due_time() -> None:
    class Entry:
        next_due: float | None = 50.0

    async def scenario() -> bool:
        wake = Wake()
        wake.sleeping_until = 100.0
        task = asyncio.create_task(asyncio.sleep(0))
        wake.when_done(task, Entry())
        await task
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
        return wake.is_set()

    assert asyncio.run(scenario())
