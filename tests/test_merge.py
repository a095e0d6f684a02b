"""Multi-process merge: runs aligned by their clock anchors, spans linked across processes by trace id."""

from __future__ import annotations

from types import SimpleNamespace

import asynclens
from asynclens import FakeClock
from asynclens.records import Span, SpanEvent
from asynclens.report.fileformat import read_jsonl
from asynclens.report.merge import align_offsets, cross_process_links, merge_runs, shift_record
from asynclens.tracing.propagation import extract, inject

WALL = 1_700_000_000_000_000_000


def record_two_services(tmp_path: object) -> tuple[str, str]:
    """'api' calls 'worker' with a traceparent; each writes its own JSON lines file.
    Their monotonic clocks are unrelated; their wall clocks agree."""
    api_path, worker_path = f"{tmp_path}/api.jsonl", f"{tmp_path}/worker.jsonl"
    api_clock = FakeClock(start_ns=1_000, wall_start_ns=WALL)
    headers: dict[str, str] = {}
    with asynclens.session(api_path, clock=api_clock, lag=False, track_handles=False, scheduler=False, name="api"):
        api_clock.advance(10_000_000)  # api starts its request 10 ms after its session
        with asynclens.span("GET /orders"):
            api_clock.advance(1_000_000)
            with asynclens.span("call worker"):
                inject(headers)
                api_clock.advance(5_000_000)
            api_clock.advance(1_000_000)
    worker_clock = FakeClock(start_ns=9_000_000_000, wall_start_ns=WALL + 2_000_000)  # started 2 ms after api
    with asynclens.session(worker_path, clock=worker_clock, lag=False, track_handles=False, scheduler=False, name="worker"):
        worker_clock.advance(10_000_000)  # receives the call at wall +12 ms
        with asynclens.span("POST /work", parent=extract(headers)):
            worker_clock.advance(2_000_000)
            with asynclens.span("compute"):
                worker_clock.advance(1_000_000)
    return api_path, worker_path


def test_runs_land_on_one_timeline_and_spans_link_across_processes(tmp_path: object) -> None:
    api_path, worker_path = record_two_services(tmp_path)
    merged = merge_runs([read_jsonl(api_path), read_jsonl(worker_path)])
    assert merged.offsets == [-1_000, 2_000_000 - 9_000_000_000]
    names = [(run, r.name, r.start_ns) for run, r in merged.records if r.kind == "span"]
    assert names == [
        (0, "GET /orders", 10_000_000),
        (0, "call worker", 11_000_000),
        (1, "POST /work", 12_000_000),
        (1, "compute", 14_000_000),
    ]
    (link,) = merged.links
    assert (link.parent_run, link.parent.name, link.child_run, link.child.name) == (0, "call worker", 1, "POST /work")
    assert link.child.remote_parent and link.gap_ns == 1_000_000
    (trace,) = merged.distributed_traces().values()
    assert sorted(r.name for _, r in trace) == ["GET /orders", "POST /work", "call worker", "compute"]


def test_spans_of_different_traces_are_not_linked() -> None:
    a = Span("a", trace_id=1, span_id=10, parent_id=None)
    b = Span("b", trace_id=2, span_id=20, parent_id=10)  # parent id matches, trace does not
    c = Span("c", trace_id=1, span_id=30, parent_id=10)
    d = Span("d", trace_id=1, span_id=40, parent_id=30)  # in-process parent: not a cross-process link
    links = cross_process_links([[a], [b, c, d]])
    assert [(link.parent.name, link.child.name) for link in links] == [("a", "c")]


def test_shift_moves_time_points_not_durations() -> None:
    span = Span("s", trace_id=1, span_id=2, parent_id=None, start_ns=100, end_ns=300, cpu_ns=50,
                events=(SpanEvent("e", 150),))
    moved = shift_record(span, 1000)
    assert (moved.start_ns, moved.end_ns, moved.cpu_ns, moved.events[0].time_ns) == (1100, 1300, 50, 1150)
    assert shift_record(span, 0) is span
    stand_in = SimpleNamespace(kind="stall", start_ns=5)
    assert shift_record(stand_in, 10) is stand_in  # not a dataclass: left alone


def test_runs_without_anchors_start_at_zero() -> None:
    infos = [SimpleNamespace(anchor_mono_ns=500, anchor_wall_ns=WALL), SimpleNamespace(anchor_mono_ns=7), None]
    assert align_offsets(infos) == [-500, -7, 0]
