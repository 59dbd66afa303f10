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
