"""Lag windows adapt to the run's length, on fake time: a short run still gets a lag curve."""

from __future__ import annotations

import asyncio

from asynclens.probes.lag.monitor import LoopBook, LoopMonitor
from asynclens.records import LagSnapshot

MS = 1_000_000
T0 = 1_000 * MS


def run_for(seconds: float) -> list[LagSnapshot]:
    """Ticks every 10 ms for ``seconds``, on a book started the way the monitor starts it."""
    out: list[LagSnapshot] = []
    b = LoopBook(
        7, interval_ns=10 * MS, threshold_ns=50 * MS, window_ns=1_000 * MS, exact=True, start_ns=T0, emit=out.append
    )
    b.first_window_start = T0  # what LoopMonitor.install does
    t = T0
    while t < T0 + int(seconds * 1e9):
        b.arm(t)
        t += 10 * MS
        b.tick(t)
    return out


def test_a_one_second_run_gets_many_short_windows() -> None:
    windows = run_for(1)
    assert len(windows) >= 15
    assert all(w.end_ns - w.start_ns == 50 * MS for w in windows)  # the shortest window


def test_windows_grow_to_the_configured_length() -> None:
    windows = run_for(60)
    lengths = [w.end_ns - w.start_ns for w in windows]
    assert lengths == sorted(lengths)  # never shrink
    assert lengths[-1] == 1_000 * MS and lengths[-30:] == [1_000 * MS] * 30
    assert 100 < len(windows) < 150  # 20 of 50 ms, ~60 growing ones, then 40 of 1 s


def test_a_book_on_its_own_keeps_fixed_windows() -> None:
    out: list[LagSnapshot] = []
    b = LoopBook(
        7, interval_ns=10 * MS, threshold_ns=50 * MS, window_ns=1_000 * MS, exact=True, start_ns=T0, emit=out.append
    )
    for i in range(1, 201):
        b.arm(T0 + (i - 1) * 10 * MS)
        b.tick(T0 + i * 10 * MS)
    assert [w.end_ns - w.start_ns for w in out] == [1_000 * MS, 1_000 * MS]


def test_the_monitor_starts_adapting_when_installed() -> None:
    loop = asyncio.new_event_loop()
    try:
        now = iter(range(T0, T0 + 10**12, MS)).__next__
        m = LoopMonitor(
            loop,
            now=now,
            cpu=lambda: 0,
            interval_ns=10 * MS,
            threshold_ns=50 * MS,
            window_ns=1_000 * MS,
            emit=lambda snap: None,
            on_error=lambda where, exc: None,
        )
        assert m.first_window_start is None
        m.install()
        assert m.first_window_start == m.window_start
        m.uninstall()
    finally:
        loop.close()
