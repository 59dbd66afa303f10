"""Start grace, fast first verdict and incarnations of ProbeTracker (issue 7), with a fake clock."""

import pytest

from chimera_ops.config import ConfigError, load_config
from chimera_ops.probes.base import ProbeResult
from chimera_ops.probes.health import START_INTERVAL_GROWTH, STEADY_FAST_RUNS, ProbeTracker
from chimera_ops.probes.spec import DEFAULT_START_PERIOD, ProbeConfig

OK = ProbeResult(ok=True, reason="ok")
BAD = ProbeResult(ok=False, reason="connection refused")


def tracker(role="liveness", now=100.0, **kw):
    cfg = ProbeConfig.model_validate({"tcp": "127.0.0.1:1", "period": "10s", **kw})
    return ProbeTracker.from_config("engine", role, cfg, now=now)


def test_failures_before_first_success_do_not_count():
    t = tracker(failure_threshold=1, period="1s", timeout="1s")
    assert t.record(BAD, 100.0) is False  # refused at spawn + 0: not held against it
    assert t.status == "unknown" and t.consecutive_failures == 0 and t.uncounted_failures == 1
    assert t.record(OK, 100.1) and t.status == "passing"
    assert t.record(BAD, 105.0) and t.status == "failing"  # after the first success: counts


def test_never_answering_process_fails_once_start_period_is_over():
    t = tracker(failure_threshold=2, start_period="5s")
    now = 100.0
    while now < 105.0:
        t.record(BAD, now)
        now += 0.5
    assert t.status == "unknown"
    t.record(BAD, 105.0)
    assert t.status == "unknown" and t.consecutive_failures == 1  # counted, below threshold
    assert t.record(BAD, 106.0) and t.status == "failing"


def test_default_start_period_and_zero_disables_grace():
    assert tracker().start_period == DEFAULT_START_PERIOD
    t = tracker(start_period="0s", failure_threshold=1)
    assert t.record(BAD, 100.0) and t.status == "failing"


def test_fast_cadence_grows_toward_period_until_the_first_verdict():
    t = tracker()
    assert t.due(100.0)
    gaps = []
    now = 100.0
    for _ in range(25):
        t.record(BAD, now)
        gaps.append(round(t.next_due - now, 6))
        now = t.next_due
    steady = gaps[: STEADY_FAST_RUNS - 1]
    assert steady == pytest.approx([0.1] * len(steady))
    assert gaps[STEADY_FAST_RUNS] == pytest.approx(0.1 * START_INTERVAL_GROWTH)
    assert all(b >= a for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] == pytest.approx(10.0)  # capped at the period
    t.record(OK, now)
    assert t.next_due == pytest.approx(now + 10.0)  # verdict in: the period from here on
    t.record(BAD, now + 10.0)
    assert t.next_due == pytest.approx(now + 20.0)


def test_a_restart_brings_the_fast_cadence_and_the_grace_back():
    t = tracker(failure_threshold=1)
    t.record(OK, 100.0)
    t.record(BAD, 110.0)
    assert t.status == "failing"
    t.start(120.0)
    assert t.status == "unknown" and t.next_due == 120.0
    t.record(BAD, 120.0)
    assert t.status == "unknown" and t.next_due == pytest.approx(120.1)


def test_result_of_an_earlier_incarnation_is_dropped():
    t = tracker(failure_threshold=1)
    t.record(OK, 100.0)
    in_flight = t.incarnation  # a probe starts, then hangs...
    t.start(101.0)  # ...the component restarts meanwhile
    assert t.record(BAD, 102.0, in_flight) is False
    assert t.status == "unknown" and t.consecutive_failures == 0 and t.stale_results == 1
    assert t.last_result is OK
    assert t.record(OK, 102.1, t.incarnation) and t.status == "passing"


def test_external_components_get_no_grace():
    t = tracker(failure_threshold=1)
    t.start(200.0, grace=False)
    assert t.record(BAD, 200.0) and t.status == "failing"


def test_startup_probe_keeps_its_kubernetes_budget():
    # Kubernetes: initial_delay + failure_threshold x period to pass; probed fast meanwhile.
    t = tracker(role="startup", failure_threshold=3, period="2s", initial_delay="1s")
    assert t.start_period == pytest.approx(7.0)
    now = 101.0
    while now < 107.0:
        t.record(BAD, now)
        assert t.status == "unknown"
        now = t.next_due
    assert t.record(BAD, 107.0) and t.status == "failing"  # budget spent: the first fails it


def test_startup_probe_passes_as_soon_as_the_process_answers():
    t = tracker(role="startup", failure_threshold=30, period="10s")
    t.record(BAD, 100.0)
    assert t.record(OK, 100.1) and t.status == "passing"


def _write(tmp_path, probe: str):
    path = tmp_path / "c.yaml"
    path.write_text(
        "components:\n"
        "  engine:\n"
        "    runtime: process\n"
        "    command: [sleep, '60']\n"
        f"    liveness: {probe}\n"
    )
    return path


def test_config_rejects_start_interval_longer_than_period(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, '{tcp: "127.0.0.1:1", period: 1s, start_interval: 2s}'))
    text = "\n".join(str(i) for i in info.value.issues)
    assert "start_interval" in text and "period" in text and ":5" in text


def test_config_accepts_start_fields_and_short_periods(tmp_path):
    cfg = load_config(
        _write(tmp_path, '{tcp: "127.0.0.1:1", period: 1s, start_period: 5s, start_interval: 0.5s}')
    )
    probe = cfg.components["engine"].liveness
    assert probe.start_period == 5.0 and probe.start_interval == 0.5
    # A period below the default start_interval is not an error: there is just no fast phase.
    cfg = load_config(_write(tmp_path, '{tcp: "127.0.0.1:1", period: 50ms}'))
    assert cfg.components["engine"].liveness.period == 0.05
