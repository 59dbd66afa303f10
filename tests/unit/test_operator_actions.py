"""Pure rules of issue 20 items 3 and 5: a dead lock holder, the settle evidence, the trading
events and the safe restart's summary."""

from __future__ import annotations

from chimera_ops.cli.procedure_cmd import summary_lines
from chimera_ops.ops.procedures.plan import SettleEvidence, cancelled_by, halt_summary
from chimera_ops.ops.proclock import LockHolder, holder_is_dead
from chimera_ops.trading import trading_events

HOLDER = LockHolder("restore", 7, "db-1", 4242, "ops", since=1000.0, job="set-1")


def test_a_holder_is_dead_only_on_this_host_when_its_pid_is_gone_or_reused() -> None:
    assert holder_is_dead(HOLDER, "db-1", create_time=None)  # no such process
    assert holder_is_dead(HOLDER, "db-1", create_time=1500.0)  # a younger process: pid reused
    assert not holder_is_dead(HOLDER, "db-1", create_time=990.0)  # the holder itself
    assert not holder_is_dead(HOLDER, "db-1", create_time=1001.0)  # within the margin
    assert not holder_is_dead(HOLDER, "other-host", create_time=None)  # its TTL frees it


def test_how_to_end_a_holder() -> None:
    assert "kill 4242" in HOLDER.how_to_end()
    job = LockHolder("safe-restart", 1, "h", 1, "ops", 0.0, job="safe-restart-x")
    assert "chimera-ops procedure abort safe-restart-x" in job.how_to_end()
    assert "seconds" in LockHolder("restart engine", 1, "h", 1, "ops", 0.0).how_to_end()


def test_settle_evidence_needs_passes_in_a_row_from_every_component() -> None:
    evidence = SettleEvidence(needed=3)
    names = ["db", "engine"]
    for _ in range(3):
        evidence.record("db", True)
    evidence.record("engine", True)
    evidence.record("engine", True)
    evidence.record("engine", False, "readiness: refused")
    evidence.record("engine", True)
    assert not evidence.done(names)
    assert evidence.lacking(names) == ("engine", "readiness: refused")
    evidence.record("engine", True)
    evidence.record("engine", True)
    assert evidence.done(names) and evidence.lacking(names) is None
    fresh = SettleEvidence(needed=2)
    assert fresh.lacking(["db"]) == ("db", "0 of 2 passes in a row")


def test_orders_cancelled_by_a_halt() -> None:
    assert cancelled_by([{"cancelled": 12}, {"cancelled": 3}]) == 15
    assert cancelled_by([{"drain": {"cancelled": 4}}]) == 4  # a waited halt's row
    assert cancelled_by([{"component": "e"}]) is None  # no engine said
    assert cancelled_by([{"cancelled": True}]) is None  # not a count


def test_summary_figures_and_lines() -> None:
    figures = halt_summary(3.21, 12, [("preflight", 0.11), ("settle", 0.34)])
    assert figures == {
        "halted_s": 3.21,
        "orders_cancelled": 12,
        "steps": [{"name": "preflight", "seconds": 0.11}, {"name": "settle", "seconds": 0.34}],
    }
    assert summary_lines(figures) == [
        "trading halted for 3.2 s; 12 open orders cancelled by the halt",
        "steps: preflight 0.1 s, settle 0.3 s",
    ]
    none = summary_lines(halt_summary(None, None, []))
    assert none == [
        "trading halted for 0 s (nothing was halted); the engines did not say how many orders "
        "the halt cancelled"
    ]
    assert summary_lines(None) == []


def test_trading_events_say_who_why_and_what_was_cancelled() -> None:
    rows = [
        {
            "component": "engine",
            "ok": True,
            "trading": "halted",
            "open_orders": 0,
            "error": None,
            "drain": {"from": 5, "to": 0, "cancelled": 5, "seconds": 0.2, "drained": True},
        },
        {"component": "other", "ok": False, "trading": None, "error": "unreachable"},
    ]
    events = trading_events("halt", rows, "alice", "news", "agent")
    kinds = [(e["kind"], e["component"]) for e in events]
    assert kinds == [
        ("trading", "engine"),
        ("orders_cancelled", "engine"),
        ("drained", "engine"),
        ("trading", "other"),
    ]
    halt = events[0]
    assert halt["to_state"] == "halted" and halt["data"]["user"] == "alice"
    assert halt["reason"] == "trading halted by alice via agent: news; 5 open orders cancelled"
    assert events[1]["data"]["count"] == 5
    assert events[3]["reason"].startswith("halt FAILED (asked by alice via agent: news)")
    assert trading_events("state", rows, "alice", "", "agent") == []
    resumed = trading_events("resume", rows[:1], "bob", "ok", "direct")[0]
    assert resumed["reason"].startswith("trading resumed by bob via direct: ok")
