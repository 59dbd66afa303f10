"""Robust trend of a time series: Theil–Sen slope, Mann–Kendall test, time to a limit.

Pure functions over `(t, y)` samples. Every pairwise computation is bounded: above
`MAX_POINTS` samples the series is reduced to bin means (deterministic), so a long window at a
short period stays cheap (at most ~MAX_POINTS²/2 pairs).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Sample = tuple[float, float]
MAX_POINTS = 120


def thin(samples: Sequence[Sample], max_points: int = MAX_POINTS) -> list[Sample]:
    """At most `max_points` points: the means of consecutive, equal-count bins.

    Averaging (rather than picking every k-th sample) is a low-pass filter: picking would
    alias a fast sawtooth into a slow one that looks like a trend.
    """
    n = len(samples)
    if n <= max_points:
        return list(samples)
    points: list[Sample] = []
    for b in range(max_points):
        lo, hi = b * n // max_points, (b + 1) * n // max_points
        chunk = samples[lo:hi]
        points.append(
            (sum(t for t, _ in chunk) / len(chunk), sum(y for _, y in chunk) / len(chunk))
        )
    return points


def theil_sen(samples: Sequence[Sample], max_points: int = MAX_POINTS) -> float | None:
    """Median of the pairwise slopes (y units per t unit); None with fewer than 2 distinct t."""
    points = thin(samples, max_points)
    slopes = [
        (yj - yi) / (tj - ti)
        for i, (ti, yi) in enumerate(points)
        for tj, yj in points[i + 1 :]
        if tj != ti
    ]
    return statistics.median(slopes) if slopes else None


@dataclass(frozen=True)
class TrendTest:
    """Mann–Kendall statistic over the (thinned) series."""

    n: int
    s: int
    z: float
    p_increasing: float
    """One-sided p-value of 'no trend' against 'increasing'."""
    positive_fraction: float
    """Share of all pairs that go up (ties count as not rising, so a flat-step-flat series
    stays low); ~0.5 for a noisy flat or periodic series, ~1 for a steady leak."""


def mann_kendall(samples: Sequence[Sample], max_points: int = MAX_POINTS) -> TrendTest:
    """Mann–Kendall trend test with the tie-corrected variance and continuity correction."""
    points = sorted(thin(samples, max_points))
    ys = [y for _, y in points]
    n = len(ys)
    s = up = down = 0
    for i in range(n):
        yi = ys[i]
        for yj in ys[i + 1 :]:
            if yj > yi:
                up += 1
            elif yj < yi:
                down += 1
    s = up - down
    counts: dict[float, int] = {}
    for y in ys:
        counts[y] = counts.get(y, 0) + 1
    ties = sum(c * (c - 1) * (2 * c + 5) for c in counts.values() if c > 1)
    var = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    if var <= 0:
        z = 0.0
    elif s > 0:
        z = (s - 1) / math.sqrt(var)
    elif s < 0:
        z = (s + 1) / math.sqrt(var)
    else:
        z = 0.0
    p = 0.5 * math.erfc(z / math.sqrt(2))
    pairs = n * (n - 1) // 2
    return TrendTest(n=n, s=s, z=z, p_increasing=p, positive_fraction=up / pairs if pairs else 0.0)


def level_at(samples: Sequence[Sample], slope: float, t: float) -> float:
    """Robust level of the series at time `t` along `slope` (median intercept)."""
    intercept = statistics.median(y - slope * ti for ti, y in samples)
    return intercept + slope * t


def forecast_seconds_to_limit(
    samples: Sequence[Sample], limit: float, slope: float | None = None
) -> float | None:
    """Seconds from the last sample until the fitted trend reaches `limit`.

    0.0 when the fitted level is already at or over the limit; None when the series does not
    grow (or there are too few samples to tell).
    """
    if len(samples) < 2:
        return None
    if slope is None:
        slope = theil_sen(samples)
    if slope is None:
        return None
    t_last = max(t for t, _ in samples)
    level = level_at(samples, slope, t_last)
    if level >= limit:
        return 0.0
    if slope <= 0:
        return None
    return (limit - level) / slope


@dataclass(frozen=True)
class Trend:
    """Slope, significance and forecast of one window."""

    n: int
    span_s: float
    slope: float
    level: float
    test: TrendTest
    forecast_s: float | None


def analyse(samples: Sequence[Sample], limit: float | None = None) -> Trend | None:
    """Trend of a window (None under 3 samples or zero time span)."""
    if len(samples) < 3:
        return None
    ts = [t for t, _ in samples]
    span = max(ts) - min(ts)
    slope = theil_sen(samples)
    if slope is None or span <= 0:
        return None
    forecast = forecast_seconds_to_limit(samples, limit, slope) if limit is not None else None
    return Trend(
        n=len(samples),
        span_s=span,
        slope=slope,
        level=level_at(samples, slope, max(ts)),
        test=mann_kendall(samples),
        forecast_s=forecast,
    )
