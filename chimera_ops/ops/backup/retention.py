"""Retention: which sets to delete. Pure: plain values in, decisions out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SetFacts:
    """What retention needs to know about one set."""

    id: str
    created_at: float
    verified_ok: bool = False
    being_read: bool = False


@dataclass(frozen=True)
class Deletion:
    """One set to delete, and why."""

    id: str
    why: str


def prune_plan(sets: list[SetFacts], keep: int, max_age: float, now: float) -> list[Deletion]:
    """Keep the newest `keep` sets and none older than `max_age`, except: the newest set that
    verified good is never deleted (whatever its age), nor the newest set of all (a stack whose
    backups stopped a month ago must not lose its last one to a prune), nor a set a restore is
    reading."""
    newest_first = sorted(sets, key=lambda s: (s.created_at, s.id), reverse=True)
    good = [s for s in newest_first if s.verified_ok]
    protected = {good[0].id} if good else set()
    if newest_first:
        protected.add(newest_first[0].id)
    out = []
    for rank, item in enumerate(newest_first):
        if item.id in protected or item.being_read:
            continue
        if rank >= keep:
            out.append(Deletion(item.id, f"beyond the newest {keep}"))
        elif now - item.created_at > max_age:
            out.append(Deletion(item.id, f"older than {max_age / 86400:g} days"))
    return out
