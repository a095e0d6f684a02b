"""Human durations, both ways: parsing ``"50ms"``, ``"0.05s"``, ``"50"``
(milliseconds), and :func:`format_ns` for reports.

Used by the pytest plugin for its options, ini keys and marker arguments, and by
every part that prints a duration; it imports nothing of asynclens.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["DurationError", "format_ns", "parse_duration"]

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
}

_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zµμ]*)\s*$", re.IGNORECASE)

_HINT = "use e.g. 50ms, 0.05s, 500us, or a bare number of milliseconds"


class DurationError(ValueError):
    """A duration could not be parsed; the message names where it came from."""


def parse_duration(value: object, where: str) -> int:
    """Nanoseconds for ``value``; ``where`` names the option in the error message.

    Accepts ``"50ms"``, ``"0.05s"``, ``"500us"``, ``"50"`` and plain numbers
    (both milliseconds), and :class:`datetime.timedelta`. Zero is allowed;
    negative, non-finite and unknown units are errors.
    """
    if isinstance(value, timedelta):
        ns = value / timedelta(microseconds=1) * 1_000
        if ns < 0:
            raise DurationError(f"{where}: {value!r} is negative ({_HINT})")
        return round(ns)
    if isinstance(value, bool):
        raise DurationError(f"{where}: {value!r} is not a duration ({_HINT})")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise DurationError(f"{where}: {value!r} is not a non-negative duration ({_HINT})")
        return round(value * 1_000_000)
    if not isinstance(value, str):
        raise DurationError(f"{where}: {value!r} is not a duration ({_HINT})")
    match = _PATTERN.match(value)
    if match is None:
        raise DurationError(f"{where}: {value!r} is not a duration ({_HINT})")
    number, unit = match.groups()
    scale = _UNITS_NS.get(unit.lower() if unit else "ms")
    if scale is None:
        raise DurationError(f"{where}: {value!r} has an unknown unit {unit!r} (known: ns, us, ms, s; {_HINT})")
    return round(float(number) * scale)


def format_ns(ns: float) -> str:
    """A duration for humans: ``812 ns``, ``3.4 µs``, ``41.2 ms``, ``2.31 s``."""
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"
