"""The agent's own Prometheus text exposition (format 0.0.4): labelled gauges and counters.

Importing prometheus_client brings its HTTP servers, urllib.request and the email package
(about 1.3 MB of RSS) into an agent that only needs to render text: the idle agent is held to
1.5x supervisord's RSS (bench/results/supervision.md). This module is the part the agent uses.
The tests parse its output with prometheus_client's own parser and scrape it with a real
Prometheus.
"""

from __future__ import annotations

import math
import threading


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (+Inf, -Inf, NaN, else the float's repr)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Child:
    """One labelled series of a family (a counter's is never set and never goes down)."""

    __slots__ = ("monotonic", "value")

    def __init__(self, monotonic: bool = False) -> None:
        self.value = 0.0
        self.monotonic = monotonic

    def set(self, value: float) -> None:
        if self.monotonic:
            raise ValueError("a counter is never set, only increased")
        self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        if self.monotonic and amount < 0:
            raise ValueError("a counter only goes up")
        self.value += float(amount)


class Family:
    """A metric with label names and one Child per label-value tuple."""

    kind = "untyped"
    suffix = ""
    monotonic = False

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        self._lock = threading.Lock()
        if not self.labelnames:
            self._children[()] = Child(self.monotonic)

    def labels(self, *values: object, **named: object) -> Child:
        """The series of these label values (created at 0 on first use)."""
        if named:
            if values or set(named) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels are {', '.join(self.labelnames)}")
            values = tuple(named[name] for name in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels are {', '.join(self.labelnames)}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = Child(self.monotonic)
        return child

    def remove(self, *values: object) -> None:
        """Drop one series (KeyError when it does not exist)."""
        with self._lock:
            del self._children[tuple(str(v) for v in values)]

    def clear(self) -> None:
        """Drop every series."""
        with self._lock:
            self._children.clear()

    def set(self, value: float) -> None:
        """Set the value of an unlabelled metric."""
        self.labels().set(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add to an unlabelled metric."""
        self.labels().inc(amount)

    def render(self, out: list[str]) -> None:
        """Append this family's HELP, TYPE and sample lines."""
        name = self.name + self.suffix
        out.append(f"# HELP {name} {_escape_help(self.documentation)}")
        out.append(f"# TYPE {name} {self.kind}")
        with self._lock:
            series = sorted(self._children.items())
        for values, child in series:
            if values:
                labels = ",".join(
                    f'{label}="{_escape_label(value)}"'
                    for label, value in zip(self.labelnames, values, strict=True)
                )
                out.append(f"{name}{{{labels}}} {format_value(child.value)}")
            else:
                out.append(f"{name} {format_value(child.value)}")


class Gauge(Family):
    """A value that goes up and down."""

    kind = "gauge"


class Counter(Family):
    """A value that only goes up; exposed as `<name>_total`."""

    kind = "counter"
    suffix = "_total"
    monotonic = True


def render(families: list[Family]) -> bytes:
    """The text exposition of every family, as served on /metrics."""
    out: list[str] = []
    for family in families:
        family.render(out)
    return ("\n".join(out) + "\n").encode()
