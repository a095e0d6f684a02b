"""Issue 17, items 5-9 in the report layer: which frames are shown, a connection left open
counted once, the summary the HTML carries, the lag chart's data, wrapping, file modes."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace
from typing import Any

import pytest

import asynclens

from asynclens.records import SessionEnd
from asynclens.report.frames import classify_frame, clean_frame, shown_frames
from asynclens.report.leaks import group_leaks
from asynclens.report.rundata import RunData
from asynclens.report.summary import SpanAggregates, render_summary, summary_from_run
from asynclens.sinks.chrome import render_chrome
from asynclens.sinks.folded import render_folded
from asynclens.sinks.html import HtmlSink, build_payload, render_html

try:  # works whether or not tests/ is a package
    from ._render_data import MS, T0, info, request_spans, span, stand_ins
except ImportError:
    from _render_data import MS, T0, info, request_spans, span, stand_ins  # type: ignore[no-redef]

OURS = "/elsewhere/site/asynclens/tracing/spans.py:401 in traced"
STACK = (
    "<frozen runpy>:198 in _run_module_as_main",
    "<frozen runpy>:88 in _run_code",
    "/opt/app/sess/../service.py:148 in <module>",
    "/usr/lib/python3.11/asyncio/base_events.py:640 in run_until_complete",
    "/usr/lib/python3.11/asyncio/events.py:80 in _run",
    OURS,
    "/opt/app/service.py:99 in serve_connection",
    "/opt/app/service.py:67 in score_documents",
)


def stall(**kw: Any) -> Any:
    fields = {
        "kind": "stall",
        "loop_id": 1,
        "start_ns": T0 + 10 * MS,
        "end_ns": T0 + 30 * MS,
        "file": "/opt/app/sess/../service.py",
        "line": 67,
        "function": "score_documents",
        "stack": STACK,
        "samples": (SimpleNamespace(kind="stack_sample", frames=STACK, count=2),),
        "async_stack": ("/opt/app/service.py:99 in serve_connection", OURS, "/opt/app/service.py:59 in handle"),
        "cause": "cpu",
        "task": "Task-1",
        "span_name": "handler",
        "cpu_ns": 20 * MS,
    }
    fields.update(kw)
    return SimpleNamespace(**fields)


def leak(kind: str, description: str, handle_id: int) -> Any:
    return SimpleNamespace(
        kind="leak",
        handle_id=handle_id,
        handle_kind=kind,
        description=description,
        open_ns=T0 + 5 * MS,
        close_ns=None,
        closed_by=None,
        site="/opt/app/service.py:80 in handle_proxy",
        stack=STACK,
        span_name="handler.proxy",
        bytes_sent=0,
        bytes_received=0,
        ops=0,
    )


def connection_leaks() -> list[Any]:
    return [
        leak("socket", "fd=21 AF_INET SOCK_STREAM 127.0.0.1:60590 -> 127.0.0.1:38419", 1),
        leak("transport", "_SelectorSocketTransport 127.0.0.1:60590 -> 127.0.0.1:38419", 2),
        leak("socket", "fd=22 AF_INET SOCK_STREAM 127.0.0.1:60600 -> 127.0.0.1:38419", 3),  # its transport was closed
        leak("file", "/tmp/x.log mode 'w'", 4),
    ]


def run(*records: Any) -> RunData:
    data = RunData()
    data.begin(info())
    data.add([span("handler", 1, None, 0, 50)])
    data.add(list(records))
    data.add([SessionEnd(end_ns=T0 + 100 * MS)])
    return data


# ------------------------------------------------------------------ frames


def test_frames_are_classified_wherever_they_were_recorded() -> None:
    assert classify_frame(OURS) == "asynclens"
    assert classify_frame(os.path.join(os.path.dirname(asynclens.__file__ or ""), "cli.py") + ":3 in f") == "asynclens"
    assert classify_frame("<frozen runpy>:88 in _run_code") == "library"
    assert classify_frame("/usr/lib/python3.11/asyncio/events.py:80 in _run") == "library"
    assert classify_frame("/venv/lib/python3.12/site-packages/aiohttp/web.py:1 in f") == "library"
    assert classify_frame("/opt/app/service.py:67 in score") == "program"
    assert classify_frame("/home/me/asynclens-demo/app.py:1 in main") == "program"  # not a file of ours
    assert classify_frame("<stdin>:1 in <module>") == "program"
    assert clean_frame("/tmp/x/a_sess/../prog.py:3 in f") == "/tmp/x/prog.py:3 in f"


def test_program_frames_by_default_full_stack_on_request_never_ours() -> None:
    program = shown_frames(STACK)
    assert program == [
        "/opt/app/service.py:148 in <module>",
        "/opt/app/service.py:99 in serve_connection",
        "/opt/app/service.py:67 in score_documents",
    ]
    full = shown_frames(STACK, full=True)
    assert full[0] == "<frozen runpy>:198 in _run_module_as_main" and len(full) == len(STACK) - 1
    assert OURS not in full
    only_library = ("/usr/lib/python3.11/asyncio/events.py:80 in _run", OURS)
    assert shown_frames(only_library) == ["/usr/lib/python3.11/asyncio/events.py:80 in _run"]


def test_html_stalls_and_leaks_show_program_frames_with_the_full_stack_behind_them() -> None:
    payload = build_payload(run(stall(), *connection_leaks()))
    (row,) = payload["stalls"]
    assert row["culprit"] == "/opt/app/service.py:67 in score_documents"
    assert row["stack"] == shown_frames(STACK)
    assert row["stack_full"] == shown_frames(STACK, full=True)
    assert row["astack"] == ["/opt/app/service.py:99 in serve_connection", "/opt/app/service.py:59 in handle"]
    assert payload["leaks"][0]["stack"] == shown_frames(STACK)
    flame = json.dumps(payload["flame"]["root"])
    strings = payload["strings"]
    assert "service.py:67 in score_documents" in strings
    full_only = [i for i, s in enumerate(strings) if "runpy" in s]
    assert full_only and not any(f"[{i}," in flame for i in full_only)  # runpy only in the full-stack tree
    assert "root_full" in payload["flame"]
    page = render_html(run(stall(), *connection_leaks()))
    assert "spans.py" not in page and "traced" not in page


def test_folded_and_chrome_stacks() -> None:
    data = run(stall())
    folded = render_folded(data)
    assert "runpy" not in folded and "spans.py" not in folded and "service.py:67 in score_documents" in folded
    full = render_folded(data, full_stacks=True)
    assert "<frozen runpy>" in full and "spans.py" not in full
    trace = json.dumps(render_chrome(data))
    assert "spans.py" not in trace and '"full_stack"' in trace


# ---------------------------------------------------------------- counting


def test_a_connection_left_open_is_one_thing() -> None:
    groups = group_leaks(connection_leaks())
    assert [g.kind for g in groups] == ["connection", "socket", "file"]
    assert groups[0].description == (
        "_SelectorSocketTransport 127.0.0.1:60590 -> 127.0.0.1:38419 (socket fd=21 AF_INET SOCK_STREAM)"
    )
    aggregates = SpanAggregates()
    aggregates.add_batch(connection_leaks())
    text = render_summary(aggregates, None, 100 * MS, {}, width=100)
    assert "Left open: 3 (1 connection, 1 socket, 1 file)" in text
    assert text.count("opened at") == 3
    payload = build_payload(run(*connection_leaks()))
    assert len(payload["leaks"]) == 3 and payload["counts"]["leak"] == 3


# ----------------------------------------------------------------- summary


def test_the_records_summary_has_the_probe_only_sections() -> None:
    task = SimpleNamespace(
        kind="task",
        task_id=5,
        name="Task-9",
        loop_id=1,
        created_ns=T0 + MS,
        done_ns=T0 + 90 * MS,
        span_id=2,
        span_name="GET /user",
        outlived_span=True,
        state="done",
        steps=1,
    )
    data = RunData()
    data.begin(info())
    data.add(request_spans())
    data.add([*stand_ins(), task])
    text = summary_from_run(data, width=100)
    assert "  where span time went, by name:" in text
    assert "    1× GET /user 75.0 ms = 15.0 ms CPU + 5.0 ms starved by the loop + 40.0 ms I/O + 10.0 ms executor" in text
    assert "  outlived their request: 'Task-9' outlived 'GET /user' by 10.0 ms" in text
    assert "I/O: sent 1.0 kB" in text
    assert build_payload(data)["summary"] == text


def test_the_html_carries_the_text_the_session_hands_over(tmp_path: Any) -> None:
    sink = HtmlSink(tmp_path / "r.html")
    sink.open(info())
    sink.write(request_spans())
    sink.set_summary("asynclens: the session's own <text>")
    sink.close()
    page = (tmp_path / "r.html").read_text()
    assert "asynclens: the session's own \\u003ctext\\u003e" in page
    sink.open(info())  # a new run forgets the old text
    assert sink.summary_text is None


def test_lines_wrap_at_spaces_to_the_width() -> None:
    aggregates = SpanAggregates()
    name = "handler " + " ".join(f"word{i}" for i in range(40))
    aggregates.add_batch([span(name, 1, None, 0, 10)])
    wide = render_summary(aggregates, None, 10 * MS, {}, width=400)
    assert any(line.endswith("word39 [Task-1]") and name in line for line in wide.splitlines())
    narrow = render_summary(aggregates, None, 10 * MS, {}, width=100).splitlines()
    assert max(len(line) for line in narrow) <= 100
    words = " ".join(line.strip() for line in narrow).split()
    assert all(f"word{i}" in words for i in range(40))  # nothing clipped, no word cut


# --------------------------------------------------------------- lag chart


def test_lag_payload_has_windows_and_stalls_where_they_happened() -> None:
    lag = SimpleNamespace(
        kind="lag", loop_id=1, start_ns=T0, end_ns=T0 + 100 * MS, p50_ns=MS, p99_ns=5 * MS, max_ns=9 * MS, elu=0.5
    )
    payload = build_payload(run(lag, stall()))
    assert payload["lag"] == [[0.0, 100_000.0, 1.0, 5.0, 9.0, 0.5]]
    assert payload["lag_window_us"] == 100_000.0
    assert payload["stalls"][0]["t"] == 10_000.0 and payload["stalls"][0]["dur"] == 20_000.0


# ------------------------------------------------------------------- modes


@pytest.mark.skipif(os.name != "posix", reason="file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_rendered_files_get_the_umask_mode(tmp_path: Any, umask: int) -> None:
    old = os.umask(umask)
    try:
        sink = HtmlSink(tmp_path / "r.html")
        sink.open(info())
        sink.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "r.html").st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["r.html"]
