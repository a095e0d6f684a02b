"""Clocks: the one seam through which asynclens reads time.

Every timestamp asynclens records is an ``int`` of nanoseconds from a monotonic
clock. Tests replace the clock with :class:`FakeClock` so timing assertions are
exact instead of tolerance bands around ``time.sleep``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What a session needs from a clock."""

    def now_ns(self) -> int:
        """Monotonic time in nanoseconds (the timebase of every record)."""

    def cpu_ns(self) -> int:
        """CPU time of the calling thread in nanoseconds."""

    def wall_ns(self) -> int:
        """Wall-clock time since the epoch, used only to anchor the timebase."""


class SystemClock:
    """The real clocks: ``perf_counter_ns``, ``thread_time_ns``, ``time_ns``."""

    __slots__ = ()
    now_ns = staticmethod(time.perf_counter_ns)
    cpu_ns = staticmethod(time.thread_time_ns)
    wall_ns = staticmethod(time.time_ns)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that moves only when told to; thread-safe.

    ``advance`` moves monotonic and wall time together; ``cpu`` time moves only
    with ``spend_cpu`` (so tests can tell on-CPU from waiting).
    """

    def __init__(self, start_ns: int = 1_000_000_000, wall_start_ns: int = 1_700_000_000_000_000_000) -> None:
        self._now = start_ns
        self._wall_offset = wall_start_ns - start_ns
        self._cpu = 0
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def cpu_ns(self) -> int:
        return self._cpu

    def wall_ns(self) -> int:
        return self._now + self._wall_offset

    def advance(self, ns: int) -> int:
        """Move time forward by ``ns`` nanoseconds; return the new time."""
        if ns < 0:
            raise ValueError(f"FakeClock cannot go backwards (advance({ns}))")
        with self._lock:
            self._now += ns
            return self._now

    def spend_cpu(self, ns: int) -> int:
        """Advance both monotonic time and CPU time by ``ns`` (code running)."""
        with self._lock:
            self._cpu += ns
            self._now += ns
            return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now_ns={self._now})"
