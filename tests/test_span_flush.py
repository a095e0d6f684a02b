"""The flush path: with no sink, live spans are aggregated without being frozen,
and the aggregates come out exactly as when every span is frozen for a sink."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import asynclens
from asynclens.records import Span
from asynclens.sinks import MemorySink
from asynclens.testing import FakeClock

NO_PROBES = dict(lag=False, track_handles=False, scheduler=False)
MS = 1_000_000


def _workload(clock: FakeClock) -> None:
    """Spans of 30 durations (ties included), some failing, some cancelled, two names."""
    for i in range(30):
        try:
            with asynclens.span("even" if i % 2 == 0 else "odd", i=i):
                clock.advance((i % 7) * MS)
                if i % 5 == 0:
                    raise ValueError(f"bad {i}")
                if i % 9 == 0:
                    raise asyncio.CancelledError()
        except (ValueError, asyncio.CancelledError):
            pass


def _run(sinks: list[Any], keep: int = 3, max_names: int = 1000) -> Any:
    clock = FakeClock()
    s = asynclens.session(sinks=sinks, clock=clock, **NO_PROBES)
    s.aggregates.keep_slowest = keep
    s.aggregates.max_names = max_names
    with s:
        _workload(clock)
    return s


def _view(s: Any) -> Any:
    a = s.aggregates
    slowest = [(sp.name, sp.duration_ns, sp.attrs["i"], sp.status) for sp in a.slowest()]
    errors = [(sp.name, sp.attrs["i"], sp.error_type, sp.error_message) for sp in a.first_errors]
    names = {k: vars(v) for k, v in a.by_name.items()}
    return a.spans, a.errors, a.cancelled, names, vars(a.other), slowest, errors


@pytest.mark.parametrize("keep", [1, 3, 50])
@pytest.mark.parametrize("max_names", [1, 1000])
def test_no_sink_aggregates_match_the_frozen_path(keep: int, max_names: int) -> None:
    without = _run([], keep, max_names)
    with_sink = _run([MemorySink()], keep, max_names)
    assert _view(without) == _view(with_sink)
    assert len(without.aggregates.slowest()) == min(keep, 30)
    assert (len(without.aggregates.by_name), without.aggregates.other.count) == ((1, 15) if max_names == 1 else (2, 0))


def test_no_sink_counts() -> None:
    without = _run([])
    assert without.aggregates.spans == 30 and without.aggregates.errors == 6 and without.aggregates.cancelled == 3
    assert without.statistics().spans_recorded == 30
    assert all(type(sp) is Span for sp in without.aggregates.slowest() + without.aggregates.first_errors)


def test_no_sink_freezes_only_the_spans_it_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen: list[Span] = []
    original = asynclens.Session._freeze_span

    def counting(self: Any, live: Any, count: bool = True) -> Span:
        span = original(self, live, count)
        frozen.append(span)
        return span

    monkeypatch.setattr(asynclens.Session, "_freeze_span", counting)
    s = _run([], keep=3)
    kept = {id(sp) for sp in s.aggregates.slowest()} | {id(sp) for sp in s.aggregates.first_errors}
    assert all(isinstance(sp, Span) for sp in frozen)
    assert kept <= {id(sp) for sp in frozen}
    assert len(frozen) < 30  # not every span: only candidates for the slowest and the first errors
    assert len(s.aggregates.first_errors) == 3


def test_no_sink_freeze_failure_is_counted_and_the_span_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, live: Any, count: bool = True) -> Span:
        raise RuntimeError("boom")

    monkeypatch.setattr(asynclens.Session, "_freeze_span", broken)
    s = _run([])
    assert s.aggregates.spans == 30
    assert s.aggregates.slowest() == [] and s.aggregates.first_errors == []
    assert s.statistics().internal_errors > 0


def test_no_sink_other_records_are_still_aggregated() -> None:
    from asynclens.records import GcPause

    with asynclens.session(**NO_PROBES) as s:
        with asynclens.span("a"):
            pass
        s.emit(GcPause(generation=2, start_ns=0, end_ns=5 * MS, collected=1, uncollectable=0))
    assert s.aggregates.spans == 1
    assert s.aggregates.gc.count == 1


def test_no_sink_flusher_drains_early_instead_of_waiting_for_the_interval() -> None:
    """Buffered spans count towards the GC's generation 0 until flushed: without sinks
    the flusher is woken at a few hundred buffered items (half the GC threshold), not
    after flush_interval."""
    import gc

    with asynclens.session(flush_interval=3600, **NO_PROBES) as s:
        n = s._wake_at + 1  # the append that finds _wake_at items buffered wakes the flusher
        assert 0 < n < gc.get_threshold()[0]
        drained = threading.Event()
        flush = s.flush

        def flush_and_tell() -> None:  # what the flusher thread calls once woken
            flush()
            if s.aggregates.spans == n:
                drained.set()

        s.flush = flush_and_tell  # type: ignore[method-assign]
        for _ in range(n):
            with asynclens.span("x"):
                pass
        assert drained.wait(30)
        assert s.statistics().records_buffered == 0
        assert s.statistics().flushes >= 1


def test_with_a_sink_the_flusher_keeps_its_interval() -> None:
    sink = MemorySink()
    with asynclens.session(sinks=[sink], flush_interval=3600, **NO_PROBES) as s:
        for _ in range(2000):
            with asynclens.span("x"):
                pass
        assert s.statistics().records_buffered == 2000
        assert sink.records == []
    assert len(sink.spans) == 2000


def test_no_early_flush_when_the_gc_has_no_generation_0_threshold() -> None:
    import gc

    before = gc.get_threshold()
    gc.set_threshold(0)
    try:
        with asynclens.session(flush_interval=3600, **NO_PROBES) as s:
            for _ in range(1000):
                with asynclens.span("x"):
                    pass
            assert s.statistics().records_buffered == 1000
    finally:
        gc.set_threshold(*before)
    assert s.aggregates.spans == 1000


def test_no_sink_flusher_wakes_at_most_once_a_second_on_its_own() -> None:
    """Without sinks the periodic flush only aggregates (the buffer is bounded by the
    early wake), so it comes at least NO_SINK_FLUSH_S apart: a busy loop thread is not
    made to hand the GIL over ten times a second. With a sink, flush_interval holds."""
    from asynclens.session import NO_SINK_FLUSH_S, Session

    assert Session(flush_interval=0.1, **NO_PROBES).flush_period() == NO_SINK_FLUSH_S == 1.0
    assert Session(flush_interval=5.0, **NO_PROBES).flush_period() == 5.0
    assert Session(sinks=[MemorySink()], flush_interval=0.1, **NO_PROBES).flush_period() == 0.1
