import random

from chimera_ops.monitors.memory import MemoryMonitor
from chimera_ops.monitors.spec import MemoryMonitorConfig

MB = 1_000_000
GIB = 1024**3


def drive(monitor, f, seconds, period=1.0):
    """Feed f(t) every period; return the first (t, rss, finding) with a leak, if any."""
    first = None
    for i in range(int(seconds / period)):
        t = i * period
        monitor.feed(t, f(t))
        leak = next(x for x in monitor.evaluate() if x.key.endswith(":leak"))
        if first is None and leak.severity != "ok":
            first = (t, f(t), leak)
    return first


def test_config_alias_for_and_defaults():
    cfg = MemoryMonitorConfig.model_validate({"limit": "1GiB", "for": 4, "leak": {"window": "5m"}})
    assert cfg.for_ == 4 and cfg.limit == GIB and cfg.leak.window == 300.0
    assert cfg.leak.min_slope == 64 * 1024


def test_leak_of_5mb_per_s_alerted_over_60s_before_limit_at_1s_and_5s():
    for period in (1.0, 5.0):
        rnd = random.Random(1)
        monitor = MemoryMonitor("engine", MemoryMonitorConfig(limit=GIB))
        first = drive(
            monitor, lambda t, rnd=rnd: 50 * MB + 5 * MB * t + rnd.gauss(0, 2 * MB), 250, period
        )
        assert first is not None, period
        t, rss, finding = first
        assert (GIB - rss) / (5 * MB) > 60
        assert finding.action == "alert" and finding.key == "engine:memory:leak"
        assert finding.values["forecast_s"] > 60
        assert monitor.snapshot()["slope_bytes_per_s"] > 4 * MB


def test_sawtooth_around_flat_level_is_not_a_leak():
    for period_s in (3, 7, 20, 45):
        monitor = MemoryMonitor("engine", MemoryMonitorConfig(limit=GIB))
        first = drive(monitor, lambda t, p=period_s: 100 * MB + 200 * MB * ((t % p) / p), 1800)
        assert first is None, period_s


def test_noisy_flat_and_step_are_not_leaks():
    rnd = random.Random(5)
    assert (
        drive(
            MemoryMonitor("e", MemoryMonitorConfig(limit=GIB)),
            lambda t: 300 * MB + rnd.gauss(0, 30 * MB),
            1800,
        )
        is None
    )
    assert (
        drive(
            MemoryMonitor("e", MemoryMonitorConfig(limit=GIB)),
            lambda t: 300 * MB + (200 * MB if t > 300 else 0),
            1800,
        )
        is None
    )


def test_slow_growth_below_min_slope_is_not_a_leak():
    monitor = MemoryMonitor("e", MemoryMonitorConfig(limit=GIB))
    assert drive(monitor, lambda t: 300 * MB + 10_000 * t, 1800) is None


def test_over_limit_for_n_samples_restarts():
    monitor = MemoryMonitor("engine", MemoryMonitorConfig(limit=100 * MB, **{"for": 3}))
    severities = []
    for i, rss in enumerate([50, 150, 150, 50, 150, 150, 150]):
        monitor.feed(float(i), rss * MB)
        limit = next(f for f in monitor.evaluate() if f.key == "engine:memory:limit")
        severities.append((limit.severity, limit.action))
    assert severities[:4] == [
        ("ok", "none"),
        ("warning", "none"),
        ("warning", "none"),
        ("ok", "none"),
    ]
    assert severities[-1] == ("critical", "restart")


def test_window_is_bounded_and_reset_clears():
    cfg = MemoryMonitorConfig.model_validate(
        {"limit": GIB, "leak": {"window": "30s", "min_span": "10s"}}
    )
    monitor = MemoryMonitor("e", cfg)
    for i in range(100):
        monitor.feed(float(i), 1.0)
    assert len(monitor.samples) <= 31
    monitor.reset()
    assert not monitor.samples and monitor.evaluate() == []


def test_a_leak_window_shorter_than_min_span_is_a_config_error():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="never judge"):
        MemoryMonitorConfig.model_validate({"limit": GIB, "leak": {"window": "30s"}})
