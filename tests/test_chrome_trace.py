"""The Chrome trace sink: every event conforms to the Trace Event Format, and the
trace shows tasks, nested spans, flows, steps, stalls, counters and metadata."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

import asynclens
from asynclens.records import Span
from asynclens.report.rundata import RunData
from asynclens.sinks.chrome import ChromeTraceSink, render_chrome

try:  # works whether or not tests/ is a package
    from ._render_data import MS, T0, full_run, info, request_spans, span
except ImportError:
    from _render_data import MS, T0, full_run, info, request_spans, span  # type: ignore[no-redef]

# Trace Event Format (Google, "Trace Event Format" document): fields each phase requires.
_METADATA_NAMES = {"process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"}
_PHASES = set("BEXiICbnestfPOND") | {"M", "(", ")", "R", "c"}


def check_event(event: dict[str, Any]) -> None:
    assert isinstance(event.get("name"), str), event
    ph = event.get("ph")
    assert ph in _PHASES, event
    assert isinstance(event.get("pid"), int) and isinstance(event.get("tid"), int), event
    if "cat" in event:
        assert isinstance(event["cat"], str), event
    if "args" in event:
        assert isinstance(event["args"], dict), event
    if ph == "M":
        assert event["name"] in _METADATA_NAMES, event
        args = event["args"]
        if event["name"].endswith("sort_index"):
            assert isinstance(args.get("sort_index"), int), event
        else:
            assert isinstance(args.get("name"), str), event
        return
    assert isinstance(event.get("ts"), (int, float)) and not isinstance(event["ts"], bool), event
    assert event["ts"] >= 0, event
    if ph == "X":
        assert isinstance(event.get("dur"), (int, float)) and event["dur"] >= 0, event
    elif ph in ("i", "I"):
        assert event.get("s", "t") in ("g", "p", "t"), event
    elif ph == "C":
        assert event["args"] and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in event["args"].values()
        ), event
    elif ph in ("s", "t", "f"):
        assert "id" in event and isinstance(event.get("cat"), str), event
        if ph == "f" and "bp" in event:
            assert event["bp"] == "e", event
    elif ph in ("b", "n", "e"):
        assert "id" in event and isinstance(event.get("cat"), str), event


def check_trace(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Conformance of a whole trace: per-event rules, nesting per thread, bound flows."""
    assert set(trace) >= {"traceEvents"}
    assert trace.get("displayTimeUnit", "ms") in ("ms", "ns")
    events = trace["traceEvents"]
    for event in events:
        check_event(event)
    slices: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for key, items in slices.items():
        stack: list[float] = []
        for start, end in sorted(items, key=lambda x: (x[0], -x[1])):
            while stack and stack[-1] <= start + 1e-6:
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-6, f"slices on {key} overlap without nesting"
            stack.append(end)
    flows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["ph"] in ("s", "f"):
            flows[e["id"]].append(e)
    for flow_id, pair in flows.items():
        assert sorted(p["ph"] for p in pair) == ["f", "s"], flow_id
        for p in pair:  # both ends bind to an enclosing slice on their thread
            assert any(s - 1e-3 <= p["ts"] <= e + 1e-3 for s, e in slices[(p["pid"], p["tid"])]), p
    return events


def thread_names(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}


def test_full_run_conforms_and_shows_every_kind() -> None:
    events = check_trace(json.loads(json.dumps(render_chrome(full_run()))))
    names = thread_names(events)
    assert {"Task-1", "Task-2", "Task-3", "thread 99", "event loop", "GC", "executor thread 99"} <= set(names.values())
    assert "Task-2 · steps" in names.values()  # step of task 11, named by its task record
    assert "task 3e7 · steps" in names.values()  # a step of an unknown task still shows
    by_name = defaultdict(list)
    for e in events:
        by_name[(e["ph"], e["name"])].append(e)
    handler = by_name[("X", "GET /user")][0]
    assert handler["ts"] == 5000.0 and handler["dur"] == 75000.0  # µs from the session start
    assert handler["args"]["cpu_ms"] == 15.0 and handler["args"]["steps"] == 4
    assert handler["args"]["max_sched_wait_ms"] == 3.0
    error = by_name[("X", "boom")][0]
    assert error["args"]["status"] == "error" and error["args"]["error"] == "ValueError: bad <input>"
    stall = next(e for e in events if e["ph"] == "i")
    assert stall["args"]["culprit"] == "app.py:41 in handle_search"
    assert stall["args"]["stack"][-1] == "app.py:41 in handle_search" and stall["args"]["cause"] == "cpu"
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert {
        "event loop lag (ms)",
        "event loop utilisation",
        "open handles",
        "I/O per second",
        "ready-to-run delay (ms)",
    } <= counters
    handles = [e["args"] for e in events if e["ph"] == "C" and e["name"] == "open handles"]
    assert [h["socket"] for h in handles] == [1, 2, 1]  # opened, leaked one opened, first closed
    assert any(e["ph"] == "X" and e["cat"] == "gc" for e in events)
    assert any(e["ph"] == "X" and e["name"] == "hash_password" and e["args"]["queued_ms"] == 2.0 for e in events)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in events)


def test_flows_join_parent_to_children_in_other_tasks() -> None:
    events = check_trace(render_chrome(full_run()))
    names = thread_names(events)
    ends = [(e["ph"], e["name"], names[e["tid"]], e["ts"]) for e in events if e["ph"] in ("s", "f")]
    starts = sorted((n, t) for ph, n, t, _ in ends if ph == "s")
    finishes = sorted(t for ph, _, t, _ in ends if ph == "f")
    # parent in Task-1 -> two queries (Task-2, Task-3), the thread-99 span, and the executor job
    assert finishes == ["Task-2", "Task-3", "executor thread 99", "thread 99"]
    assert all(t == "Task-1" for _, t in starts)


def test_badly_nested_spans_of_one_task_are_split_into_an_overlap_track() -> None:
    data = RunData()
    data.begin(info())
    data.add([span("a", 1, None, 0, 10), span("b", 2, None, 5, 15), span("c", 3, None, 6, 8)])
    events = check_trace(render_chrome(data))
    assert sorted(set(thread_names(events).values())) == ["Task-1", "Task-1 (overlap 2)"]


def test_runs_of_two_processes_share_one_timeline() -> None:
    data = RunData()
    data.begin(info(pid=1, mono=T0, wall=10**18))
    data.add([span("first", 1, None, 0, 10)])
    # the second process started 50 ms later (wall clock) with an unrelated monotonic clock
    second = data.begin(info(pid=2, mono=9 * T0, wall=10**18 + 50 * MS))
    data.add([Span("second", 1, 2, None, 9 * T0 + 5 * MS, 9 * T0 + 6 * MS, task="Task-9")], second)
    events = check_trace(render_chrome(data))
    ts = {e["name"]: (e["pid"], e["ts"]) for e in events if e["ph"] == "X"}
    assert ts == {"first": (1, 0.0), "second": (2, 55_000.0)}


def test_sink_writes_a_loadable_file(tmp_path: Any) -> None:
    path = tmp_path / "run.json"
    with asynclens.session(str(path), lag=False, track_handles=False, scheduler=False), asynclens.span("outer"):
        with asynclens.span("inner", note="x"):
            pass
    trace = json.loads(path.read_text())
    events = check_trace(trace)
    assert [e["name"] for e in events if e["ph"] == "X"] == ["inner", "outer"] or {
        e["name"] for e in events if e["ph"] == "X"
    } == {"inner", "outer"}
    assert trace["otherData"]["problems"] == []


def test_suffixes_pick_the_rendering_sinks(tmp_path: Any) -> None:
    from asynclens.sinks import sink_for

    kinds = {
        s: type(sink_for(str(tmp_path / f"x{s}"))).__name__
        for s in (".json", ".trace.json", ".speedscope.json", ".folded", ".html")
    }
    assert kinds == {
        ".json": "ChromeTraceSink",
        ".trace.json": "ChromeTraceSink",
        ".speedscope.json": "SpeedscopeSink",
        ".folded": "FoldedSink",
        ".html": "HtmlSink",
    }
    assert isinstance(sink_for(str(tmp_path / "y.json")), ChromeTraceSink)


def test_unserialisable_attributes_do_not_break_the_file(tmp_path: Any) -> None:
    data = RunData()
    data.begin(info())
    data.add([span("odd", 1, None, 0, 1, attrs={"obj": object(), 3: "int key"})])
    text = ChromeTraceSink(str(tmp_path / "t.json")).render(data)
    check_trace(json.loads(text))


@pytest.mark.parametrize("count", [0, 1])
def test_empty_or_tiny_runs_are_valid(count: int) -> None:
    data = RunData()
    data.begin(info())
    data.add(request_spans()[:count])
    check_trace(render_chrome(data))


def test_the_conformance_check_rejects_bad_events() -> None:
    good = {"name": "x", "ph": "X", "ts": 0, "dur": 1, "pid": 1, "tid": 1}
    check_event(good)
    for bad in (
        {k: v for k, v in good.items() if k != "dur"},
        {**good, "ts": "0"},
        {**good, "ph": "Z"},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {}},
        {"name": "c", "ph": "C", "ts": 0, "pid": 1, "tid": 0, "args": {"v": "high"}},
        {"name": "s", "ph": "s", "ts": 0, "pid": 1, "tid": 0},
        {"name": "i", "ph": "i", "ts": 0, "pid": 1, "tid": 0, "s": "x"},
    ):
        with pytest.raises(AssertionError):
            check_event(bad)
    with pytest.raises(AssertionError, match="overlap without nesting"):
        check_trace({"traceEvents": [good, {**good, "ts": 0.5, "dur": 1}]})
