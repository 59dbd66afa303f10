"""Small pure converters: durations ("30s"), sizes ("512MiB"), signals ("SIGTERM").

Used by the config model and by anything that prints a human figure. No I/O here.
"""

from __future__ import annotations

import re
import signal

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: str | int | float) -> float:
    """Return seconds for "500ms", "30s", "5m", "2h", "1d" or a bare number of seconds.

    Raises ValueError with a readable message for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '500ms', '30s', '5m', '1h', got {value!r}")
    number, unit = match.groups()
    return float(number) * _DURATION_FACTORS[unit or "s"]


def parse_size(value: str | int) -> int:
    """Return bytes for "512MiB", "1GB", "1024" (bytes)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '50MiB', got {value!r}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a size like '50MiB', '1GiB', '500MB', got {value!r}")
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS[(unit or "b").lower()])


def parse_signal(value: str | int) -> signal.Signals:
    """Return a signal from "SIGTERM", "TERM" or 15."""
    try:
        if isinstance(value, int):
            return signal.Signals(value)
        name = str(value).upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        return signal.Signals[name]
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {value!r} (try SIGTERM, SIGINT, SIGQUIT)") from None


def format_duration(seconds: float | None) -> str:
    """Render seconds for people: 45s, 3m12s, 5h02m, 2d03h."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_size(num_bytes: float | None) -> str:
    """Render bytes for people with binary prefixes: 512.0 KiB, 1.5 GiB."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns
