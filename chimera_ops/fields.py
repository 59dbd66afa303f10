"""Pydantic field types shared by every config model: durations, sizes, signals.

Kept apart from config.py so that plug-in packages (probes, monitors) can declare their own
config sections without importing the whole config module.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from chimera_ops.units import parse_duration, parse_signal, parse_size


class StrictModel(BaseModel):
    """Base of every config model: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _duration(value: Any) -> float:
    return parse_duration(value)


def _size(value: Any) -> int:
    return parse_size(value)


def _signal(value: Any) -> signal.Signals:
    if isinstance(value, signal.Signals):
        return value
    return parse_signal(value)


Duration = Annotated[float, BeforeValidator(_duration), AfterValidator(_positive)]
"""Seconds, written as "500ms", "30s", "5m"; zero or negative is an error."""

NonNegDuration = Annotated[float, BeforeValidator(_duration), AfterValidator(_non_negative)]
"""Seconds that may be zero (an initial delay)."""

Size = Annotated[int, BeforeValidator(_size), AfterValidator(_positive)]
"""Bytes, written as "50MiB", "1GiB"."""

Signal = Annotated[signal.Signals, BeforeValidator(_signal)]
"""A signal, written as "SIGTERM" or "TERM"."""
