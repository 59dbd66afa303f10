from chimera_ops.probes.base import ProbeResult
from chimera_ops.probes.health import ProbeTracker
from chimera_ops.probes.spec import ProbeConfig

OK = ProbeResult(ok=True, reason="ok")
BAD = ProbeResult(ok=False, reason="bad")


def tracker(**kw):
    cfg = ProbeConfig.model_validate({"tcp": "127.0.0.1:1", "period": "10s", **kw})
    return ProbeTracker.from_config("engine", "liveness", cfg, now=100.0)


def test_initial_delay_and_period():
    t = tracker(initial_delay="30s")
    assert not t.due(100.0) and not t.due(129.9) and t.due(130.0)
    t.record(OK, 130.5)
    assert not t.due(135.0) and t.due(140.0)


def test_late_run_keeps_cadence_or_skips_ahead():
    t = tracker()
    t.record(OK, 100.0)
    assert t.next_due == 110.0
    t.record(OK, 175.0)  # ran very late: next is one period from now, not a burst
    assert t.next_due == 185.0


def test_failure_threshold():
    t = tracker(failure_threshold=3)
    assert t.status == "unknown"
    assert t.record(OK, 100) and t.status == "passing"
    assert not t.record(BAD, 110) and not t.record(BAD, 120)
    assert t.status == "passing"
    assert t.record(BAD, 130) and t.status == "failing"


def test_success_threshold_and_reset_by_success():
    t = tracker(failure_threshold=2, success_threshold=2)
    t.record(BAD, 100)
    t.record(OK, 110)
    t.record(BAD, 120)
    assert t.status == "unknown"  # failures were not consecutive
    t.record(BAD, 130)
    assert t.status == "failing"
    t.record(OK, 140)
    assert t.status == "failing"
    t.record(OK, 150)
    assert t.status == "passing"


def test_history_bounded_and_start_resets_verdict():
    t = tracker()
    for i in range(80):
        t.record(BAD, 100 + i)
    assert len(t.history) == 50 and t.status == "failing"
    t.start(500.0)
    assert t.status == "unknown" and t.consecutive_failures == 0 and len(t.history) == 50
    assert t.snapshot()["status"] == "unknown"
