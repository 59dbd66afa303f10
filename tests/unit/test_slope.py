import random

from hypothesis import given, settings
from hypothesis import strategies as st

from chimera_ops.monitors.slope import (
    analyse,
    forecast_seconds_to_limit,
    mann_kendall,
    theil_sen,
    thin,
)

MB = 1_000_000


def series(f, n, period=1.0):
    return [(i * period, f(i * period)) for i in range(n)]


def test_theil_sen_linear_exact():
    assert theil_sen(series(lambda t: 3.0 * t + 7, 50)) == 3.0


def test_theil_sen_robust_to_outliers():
    samples = series(lambda t: 2.0 * t, 60)
    samples[10] = (10.0, 1e12)
    samples[40] = (40.0, -1e12)
    assert abs(theil_sen(samples) - 2.0) < 0.1


def test_too_few_points():
    assert theil_sen([(0.0, 1.0)]) is None
    assert analyse([(0.0, 1.0), (1.0, 2.0)]) is None


def test_thin_bounds_points_and_keeps_trend():
    samples = series(lambda t: 5.0 * t, 10_000)
    points = thin(samples, 100)
    assert len(points) == 100
    assert abs(theil_sen(samples) - 5.0) < 1e-6


def test_linear_leak_significant():
    rnd = random.Random(3)
    trend = analyse(series(lambda t: 50 * MB + 5 * MB * t + rnd.gauss(0, 2 * MB), 120), 2**30)
    assert trend is not None
    assert trend.test.p_increasing < 0.001
    assert trend.test.positive_fraction > 0.9
    assert abs(trend.slope - 5 * MB) < 0.2 * MB
    assert trend.forecast_s is not None and trend.forecast_s > 0


def test_sawtooth_not_significant():
    # 20 s period sawtooth around a flat level, 10 minutes of 1 s samples.
    test = mann_kendall(series(lambda t: 100 * MB + 200 * MB * ((t % 20) / 20), 600))
    assert test.positive_fraction < 0.6
    assert test.p_increasing > 0.01


def test_fast_sawtooth_does_not_alias_into_a_trend():
    samples = series(lambda t: 100 * MB + 200 * MB * ((t % 3) / 3), 1357)
    slope = theil_sen(samples)
    assert slope is not None and abs(slope) < 10_000


def test_noisy_flat_not_significant():
    rnd = random.Random(7)
    test = mann_kendall(series(lambda t: 300 * MB + rnd.gauss(0, 30 * MB), 600))
    assert test.p_increasing > 0.01


def test_forecast():
    samples = series(lambda t: 100.0 + 10.0 * t, 11)  # level 200 at t=10
    assert forecast_seconds_to_limit(samples, 300.0) == 10.0
    assert forecast_seconds_to_limit(samples, 150.0) == 0.0
    assert forecast_seconds_to_limit(series(lambda t: 5.0, 10), 100.0) is None


@settings(max_examples=40, deadline=None)
@given(
    slope=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    intercept=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    n=st.integers(min_value=3, max_value=300),
)
def test_theil_sen_recovers_any_line(slope, intercept, n):
    estimate = theil_sen(series(lambda t: intercept + slope * t, n))
    assert estimate is not None
    assert abs(estimate - slope) <= 1e-6 * max(1.0, abs(slope)) + 1e-3


@settings(max_examples=25, deadline=None)
@given(
    period=st.integers(min_value=2, max_value=40),
    amplitude=st.floats(min_value=1e3, max_value=1e9),
    seed=st.integers(0, 1000),
)
def test_periodic_series_never_significant_over_many_periods(period, amplitude, seed):
    rnd = random.Random(seed)
    n = period * 15
    samples = series(lambda t: amplitude * ((t % period) / period) + rnd.random(), n)
    assert mann_kendall(samples).positive_fraction < 0.8
