"""The agent's text exposition says what prometheus_client would: the same families, types,
label values (escaped) and sample values, read back with prometheus_client's own parser."""

from __future__ import annotations

import math

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chimera_ops.agent.exposition import Counter, Gauge, format_value, render


def parsed(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    """{family: (type, help, [(sample name, labels, value)])}, `_created` samples dropped."""
    return {
        family.name: (
            family.type,
            family.documentation,
            sorted(
                (
                    (s.name, s.labels, s.value)
                    for s in family.samples
                    if not s.name.endswith("_created")
                ),
                key=lambda sample: (sample[0], sorted(sample[1].items())),
            ),  # fmt: skip
        )
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }


def exercise(gauge_cls, counter_cls, **registry):  # type: ignore[no-untyped-def]
    up = gauge_cls("chimera_up", "1 when up\nsecond line \\ backslash", ("component",), **registry)
    lag = gauge_cls("chimera_lag_seconds", "How late", (), **registry)
    restarts = counter_cls("chimera_restarts", "Restarts", ("component", "reason"), **registry)
    up.labels(component="engine").set(1)
    up.labels(component='we"ird\\name\nx').set(0.5)
    up.labels("gone").set(3)
    up.remove("gone")
    lag.set(0.25)
    restarts.labels(component="engine", reason="kill").inc()
    restarts.labels(component="engine", reason="kill").inc(2)
    restarts.labels("db", "exit").inc(0)
    return [up, lag, restarts]


def test_same_samples_as_prometheus_client() -> None:
    ours = render(exercise(Gauge, Counter)).decode()
    registry = prometheus_client.CollectorRegistry()
    exercise(prometheus_client.Gauge, prometheus_client.Counter, registry=registry)
    theirs = prometheus_client.generate_latest(registry).decode()
    assert parsed(ours) == parsed(theirs)
    assert 'chimera_restarts_total{component="engine",reason="kill"} 3.0' in ours
    assert "# TYPE chimera_restarts_total counter" in ours


def test_clear_labels_and_counters_only_go_up() -> None:
    gauge = Gauge("g", "help", ("a",))
    gauge.labels(a="x").set(1)
    gauge.clear()
    assert render([gauge]).decode() == "# HELP g help\n# TYPE g gauge\n"
    with pytest.raises(KeyError):
        gauge.remove("absent")
    with pytest.raises(ValueError, match="labels are a"):
        gauge.labels(b="x")
    counter = Counter("c", "help", ("a",))
    with pytest.raises(ValueError):
        counter.labels(a="x").inc(-1)
    with pytest.raises(ValueError, match="never set"):
        counter.labels(a="x").set(5)


def test_special_values() -> None:
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(3) == "3.0" and format_value(1e21) == "1e+21"
