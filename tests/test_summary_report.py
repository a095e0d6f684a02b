"""The text summary: sections per record kind, 100 columns, colour only on request."""

from __future__ import annotations

import re
from typing import Any

import asynclens
from asynclens._state.clock import FakeClock
from asynclens.report.summary import SpanAggregates, render_summary

try:  # works whether or not tests/ is a package
    from ._render_data import MS, request_spans, stand_ins
except ImportError:
    from _render_data import MS, request_spans, stand_ins  # type: ignore[no-redef]

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def full_summary(color: bool = False, **kw: Any) -> str:
    aggregates = SpanAggregates(**kw)
    aggregates.add_batch(request_spans())
    aggregates.add_batch(stand_ins())
    return render_summary(aggregates, None, 100 * MS, {"probe": ["Probe section line"]}, color=color)


def test_sections_in_order() -> None:
    text = full_summary()
    heads = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert heads == [
        "asynclens: 7 spans in 100.0 ms (1 failed, 0 cancelled)",
        "Slowest spans  (cpu: on-CPU, blocked: in a call, sched: ready but waiting for the loop)",
        "Spans by name",
        "Failed spans: 1",
        "Event loop stalls: 2 (1 cpu, 1 unknown), blocked 23.0 ms in total, longest 20.0 ms",
        "Event loop lag (8 samples in 2 windows)",
        "Scheduling, GC, executor",
        "Left open: 1 (1 socket)",
        "I/O: sent 1.0 kB (10.0 kB/s), received 5.0 kB (50.0 kB/s), 0 ops (0/s), 50 readiness events (500/s)",
        "Probe section line",
    ]


def test_breakdown_and_details() -> None:
    lines = full_summary().splitlines()
    handler = next(line for line in lines if "GET /user [Task-1]" in line)
    # wall, cpu, blocked (a record from before blocked_ns: not measured), sched, io wait, executor
    assert handler.split()[:11] == ["75.0", "ms", "15.0", "ms", "-", "5.0", "ms", "40.0", "ms", "10.0", "ms"]
    assert any("20.0 ms  cpu" in line and "app.py:41 in handle_search ← parse" in line for line in lines)
    # lag: count-weighted mean of the windows ((5*0.5 + 3*7) / 8 ms), worst p99, duration-weighted ELU
    assert "  min 100.0 µs  mean 2.9 ms  max 20.0 ms  worst window p99 20.0 ms  p99.9 20.0 ms" in lines
    assert "  event loop utilisation: mean 65%, busiest window 90%" in lines
    assert any(line.startswith("  GC pauses: 1 (gen2: 1), 2.0 ms in total") for line in lines)
    assert any("executor jobs: 1; queued 2.0 ms" in line for line in lines)
    leak = lines.index("  socket     tcp <upstream>:8080")
    assert lines[leak + 1] == "             opened at app.py:30 in proxy [span GET /user]"


def test_fits_100_columns_even_with_long_names() -> None:
    aggregates = SpanAggregates()
    aggregates.add_batch([*request_spans()])
    from asynclens.records import Span

    aggregates.add(Span("x" * 300, 1, 99, None, 0, 10 * MS, task="T" * 80))
    text = render_summary(aggregates, None, 10 * MS, {})
    assert max(len(line) for line in text.splitlines()) <= 100


def test_colour_only_when_asked() -> None:
    plain = full_summary()
    coloured = full_summary(color=True)
    assert not ANSI.search(plain)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


def test_longest_stalls_are_kept_in_bounded_memory() -> None:
    from types import SimpleNamespace

    aggregates = SpanAggregates(keep_slowest=3)
    for i in range(100):
        aggregates.add_other(SimpleNamespace(kind="stall", start_ns=0, end_ns=i * MS, cause="cpu"))
    assert [s.end_ns // MS for s in aggregates.longest_stalls()] == [99, 98, 97]
    assert aggregates.stalls.count == 100 and aggregates.stalls.max_ns == 99 * MS


def test_session_summary_takes_color() -> None:
    clock = FakeClock()
    with asynclens.session(clock=clock, lag=False, track_handles=False, scheduler=False) as s:
        with asynclens.span("work"):
            clock.advance(3 * MS)
    assert s.summary().startswith("asynclens: 1 spans in 3.0 ms")
    assert "\x1b[1m" in s.summary(color=True)


def test_live_probe_lines_stand_in_for_record_figures_without_repeating_them() -> None:
    aggregates = SpanAggregates()
    aggregates.add_batch(request_spans())
    aggregates.add_batch(stand_ins())
    live = {
        "lag": ["Event loop: 2 stalls, worst 20.0 ms at app.py:41", "  lag p50 1.0 ms (session)"],
        "scheduler": ["  ready→run delay: n=3 (session)"],
        "handles": ["Handles: 3 opened"],
    }
    lines = render_summary(aggregates, None, 100 * MS, live).splitlines()
    heads = [line for line in lines if line and not line.startswith(" ")]
    assert heads == [
        "asynclens: 7 spans in 100.0 ms (1 failed, 0 cancelled)",
        "Slowest spans  (cpu: on-CPU, blocked: in a call, sched: ready but waiting for the loop)",
        "Spans by name",
        "Failed spans: 1",
        "Event loop: 2 stalls, worst 20.0 ms at app.py:41",
        "Scheduling, GC, executor",
        "Left open: 1 (1 socket)",
        "Handles: 3 opened",
    ]
    at = lines.index("Event loop: 2 stalls, worst 20.0 ms at app.py:41")
    assert lines[at + 1] == "  lag p50 1.0 ms (session)"
    assert lines[at + 2].startswith("  stalls (1 cpu, 1 unknown), blocked 23.0 ms in total")
    assert not any("worst window" in line for line in lines)  # the session-wide figures replace them
    sched = lines.index("Scheduling, GC, executor")
    assert "  ready→run delay: n=3 (session)" in lines[sched:]
