"""Human durations, both ways: parsing ``"50ms"``, ``"0.05s"``, ``"500us"``, and
:func:`format_ns` for reports.

One rule everywhere: a duration is a string with a unit (``ns``, ``us``/``µs``,
``ms``, ``s``/``sec``), a :class:`datetime.timedelta`, or a bare number. A string
with a unit and a timedelta mean the same in every option. A bare number (``0.05``
or ``"0.05"``) keeps the unit each place always had: **seconds** in ``session()``
keywords and on the command line (``--stall-threshold``), **milliseconds** in the
pytest plugin's options, ini keys, markers and ``lens`` assertions.

Used by the session's option check, the CLI and the pytest plugin, and by every
part that prints a duration; it imports nothing of asynclens.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["Duration", "DurationError", "format_ns", "parse_duration", "parse_seconds"]

#: What a duration option accepts (see the module's rule for bare numbers).
Duration = float | str | timedelta

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

_BARE_UNITS = {"ms": "milliseconds", "s": "seconds"}


class DurationError(ValueError):
    """A duration could not be parsed; the message names where it came from."""


def parse_duration(value: object, where: str, *, bare: str = "ms") -> int:
    """Nanoseconds for ``value``; ``where`` names the option in the error message.

    Accepts ``"50ms"``, ``"0.05s"``, ``"500us"``, :class:`datetime.timedelta`, and
    bare numbers (``50``, ``"50"``) in the unit ``bare`` (``"ms"``, the pytest
    options' unit, or ``"s"``, the session's and the CLI's). Zero is allowed;
    negative, non-finite and unknown units raise :class:`DurationError` with a
    one-line message.
    """
    scale_of_bare = _UNITS_NS[bare]
    hint = f"use e.g. 50ms, 0.05s, 500us, or a bare number of {_BARE_UNITS[bare]}"
    if isinstance(value, timedelta):
        ns = value / timedelta(microseconds=1) * 1_000
        if ns < 0:
            raise DurationError(f"{where}: {value!r} is negative ({hint})")
        return round(ns)
    if isinstance(value, bool):
        raise DurationError(f"{where}: {value!r} is not a duration ({hint})")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise DurationError(f"{where}: {value!r} is not a non-negative duration ({hint})")
        return round(value * scale_of_bare)
    if not isinstance(value, str):
        raise DurationError(f"{where}: {value!r} is not a duration ({hint})")
    match = _PATTERN.match(value)
    if match is None:
        raise DurationError(f"{where}: {value!r} is not a duration ({hint})")
    number, unit = match.groups()
    scale = _UNITS_NS.get(unit.lower()) if unit else scale_of_bare
    if scale is None:
        raise DurationError(f"{where}: {value!r} has an unknown unit {unit!r} (known: ns, us, ms, s; {hint})")
    return round(float(number) * scale)


def parse_seconds(value: object, where: str) -> float:
    """``value`` as float seconds, a bare number meaning seconds (the session's and the
    CLI's rule); otherwise as :func:`parse_duration`."""
    return parse_duration(value, where, bare="s") / 1e9


def format_ns(ns: float) -> str:
    """A duration for humans: ``812 ns``, ``3.4 µs``, ``41.2 ms``, ``2.31 s``."""
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"
