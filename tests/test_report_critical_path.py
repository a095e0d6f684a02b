"""Every report shows a span's critical-path breakdown (blocked apart from CPU), its own
task's figures where they differ, the child task that held it up, and a lag episode's parts."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

import asynclens
from asynclens._state.clock import FakeClock
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import SessionEnd, Span, Stall, StallPart
from asynclens.report.rundata import RunData
from asynclens.report.summary import summary_from_run
from asynclens.sinks._otlp_encode import encode_spans
from asynclens.sinks.chrome import render_chrome
from asynclens.sinks.folded import render_folded
from asynclens.sinks.html import build_payload, render_html
from asynclens.testing import capture

try:  # works whether or not tests/ is a package
    from ._render_data import MS, T0, info, span
except ImportError:
    from _render_data import MS, T0, info, span  # type: ignore[no-redef]

HOLDER = "Task-7 (fetch_user)"


def request_run() -> RunData:
    """A 200 ms request (Task-1) that blocked 20 ms in a call, then waited 170 ms on a child
    task (Task-7) that did 30 ms of CPU and 140 ms of I/O; plus a lag episode of three parts."""
    data = RunData()
    data.begin(info())
    data.add(
        [
            span(
                "fetch_user",
                3,
                2,
                25,
                195,
                task="Task-7",
                cpu_ns=30 * MS,
                blocked_ns=0,
                sched_wait_ns=0,
                io_wait_ns=140 * MS,
                executor_ns=0,
            ),
            span(
                "GET /user",
                2,
                None,
                0,
                200,
                task="Task-1",
                cpu_ns=40 * MS,  # its own 10 ms and the child's 30 ms
                blocked_ns=20 * MS,
                sched_wait_ns=0,
                io_wait_ns=140 * MS,
                executor_ns=0,
                own_breakdown=(10 * MS, 20 * MS, 0, 170 * MS, 0),
                held_up_by=HOLDER,
            ),
            Stall(
                loop_id=1,
                start_ns=T0 + 300 * MS,
                end_ns=T0 + 340 * MS,
                cause="cpu",
                episode=True,
                parts=(
                    StallPart(15 * MS, task="Task-3", site="app.py:33 in score", span_name="rank", cause="cpu"),
                    StallPart(12 * MS, task="Task-4", site="app.py:50 in parse"),
                    StallPart(8 * MS, site="_on_timer"),
                ),
            ),
            SessionEnd(end_ns=T0 + 400 * MS),
        ]
    )
    return data


def test_summary_shows_blocked_own_task_and_who_held_the_span_up() -> None:
    lines = summary_from_run(request_run(), width=100).splitlines()
    header = next(i for i, line in enumerate(lines) if "executor  name [task]" in line)
    assert lines[header].split()[:6] == ["wall", "cpu", "blocked", "sched", "io", "wait"]
    row = next(i for i, line in enumerate(lines) if "GET /user [Task-1]" in line)
    assert lines[row].split()[:12] == ["200.0", "ms", "40.0", "ms", "20.0", "ms", "0", "ns", "140.0", "ms", "0", "ns"]
    assert lines[row + 1].strip() == f"↳ own task: 10.0 ms CPU + 20.0 ms blocked + 170.0 ms I/O; held up by {HOLDER}"
    unwrapped = summary_from_run(request_run(), width=300).splitlines()
    by_name = next(line for line in unwrapped if line.startswith("    1× GET /user"))
    assert by_name == (
        "    1× GET /user 200.0 ms = 40.0 ms CPU + 20.0 ms blocked + 0 starved by the loop + 140.0 ms I/O;"
        " own tasks: 10.0 ms CPU + 20.0 ms blocked + 170.0 ms I/O"
    )
    assert "    1× fetch_user 170.0 ms = 30.0 ms CPU + 0 starved by the loop + 140.0 ms I/O" in unwrapped
    # a span whose critical path is its own gets no "own" note
    child = next(i for i, line in enumerate(lines) if "fetch_user [Task-7]" in line)
    assert "↳" not in lines[child + 1]


def test_summary_lists_an_episodes_biggest_parts() -> None:
    lines = summary_from_run(request_run(), width=200).splitlines()
    stall = next(i for i, line in enumerate(lines) if line.strip().startswith("40.0 ms  cpu"))
    assert lines[stall + 1].strip() == (
        "episode: 3 biggest parts: 15.0 ms Task-3 at app.py:33 in score [span rank] (cpu);"
        " 12.0 ms Task-4 at app.py:50 in parse; 8.0 ms at _on_timer"
    )


def test_html_rows_carry_the_critical_path_and_point_at_the_holder() -> None:
    payload = build_payload(request_run())
    timeline = payload["timeline"]
    names = payload["strings"]
    rows = {names[r[4]]: (i, r) for i, r in enumerate(timeline["spans"])}
    i, request = rows["GET /user"]
    assert request[8:13] == [40_000.0, 20_000.0, 0.0, 140_000.0, 0.0]
    assert sum(request[8:13]) == request[3]  # the parts sum to the wall time
    details = timeline["info"][i]
    assert details["own"] == [10_000.0, 20_000.0, 0.0, 170_000.0, 0.0]
    assert details["held"] == HOLDER
    assert details["held_span"] == rows["fetch_user"][0]  # the arrow's other end, on Task-7's row
    (stall,) = payload["stalls"]
    assert stall["episode"].startswith("episode: 3 biggest parts: 15.0 ms Task-3 at app.py:33 in score")


def test_html_escapes_a_hostile_holder_name() -> None:
    data = request_run()
    hostile = "</script><img src=x onerror=alert(1)> (f)"
    data.parts[0].spans[1] = span("GET /user", 2, None, 0, 200, task="Task-1", cpu_ns=MS, held_up_by=hostile)
    page = render_html(data)
    assert "<img src=x" not in page and "</script><img" not in page
    block = re.search(r'id="asynclens-data">(.*?)</script>', page, re.DOTALL)
    assert block is not None
    payload = json.loads(block.group(1))
    names = payload["strings"]
    row = next(i for i, r in enumerate(payload["timeline"]["spans"]) if names[r[4]] == "GET /user")
    assert payload["timeline"]["info"][str(row)]["held"] == hostile  # the text survives, as data


def test_chrome_args_and_a_held_up_arrow_from_the_child_track() -> None:
    events = render_chrome(request_run())["traceEvents"]
    slices = {e["name"]: e for e in events if e.get("ph") == "X" and e.get("cat") == "span"}
    args = slices["GET /user"]["args"]
    assert (args["cpu_ms"], args["blocked_ms"], args["sched_wait_ms"], args["io_wait_ms"], args["executor_ms"]) == (
        40.0,
        20.0,
        0.0,
        140.0,
        0.0,
    )
    assert args["own"] == {
        "cpu_ms": 10.0,
        "blocked_ms": 20.0,
        "sched_wait_ms": 0.0,
        "io_wait_ms": 170.0,
        "executor_ms": 0.0,
    }
    assert args["held_up_by"] == HOLDER
    held = [e for e in events if e.get("cat") == "flow" and e["name"] == "held up"]
    start, finish = sorted(held, key=lambda e: e["ph"] != "s")
    child = slices["fetch_user"]
    assert (start["ph"], start["tid"], finish["ph"], finish["tid"]) == (
        "s",
        child["tid"],
        "f",
        slices["GET /user"]["tid"],
    )
    assert child["ts"] <= start["ts"] <= child["ts"] + child["dur"]  # inside the child's slice, near its end
    assert finish["ts"] == child["ts"] + child["dur"]  # the request resumed when the child's work ended
    instant = next(e for e in events if e.get("ph") == "i" and e.get("cat") == "stall")
    assert instant["args"]["episode"] is True
    assert instant["args"]["parts"][0] == "15.0 ms Task-3 at app.py:33 in score [span rank] (cpu)"


def test_otlp_attributes_name_blocked_own_and_holder() -> None:
    data = request_run()
    request = encode_spans(data.parts[0].spans + data.parts[0].of("stall"), resource={})
    spans = [s for rs in request["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]

    def attrs(s: dict[str, Any]) -> dict[str, Any]:
        return {a["key"]: next(iter(a["value"].values()), None) for a in s["attributes"]}

    top = attrs(next(s for s in spans if s["name"] == "GET /user"))
    assert top["asynclens.blocked_ns"] == str(20 * MS)
    assert top["asynclens.cpu_ns"] == str(40 * MS)
    assert top["asynclens.own.cpu_ns"] == str(10 * MS)
    assert top["asynclens.own.io_wait_ns"] == str(170 * MS)
    assert top["asynclens.held_up_by"] == HOLDER
    child = attrs(next(s for s in spans if s["name"] == "fetch_user"))
    assert "asynclens.own.cpu_ns" not in child and "asynclens.held_up_by" not in child
    stall = attrs(next(s for s in spans if s["name"] == "asynclens.stall"))
    assert stall["asynclens.episode"] is True
    parts = [v["stringValue"] for v in stall["asynclens.parts"]["values"]]
    assert parts[1] == "12.0 ms Task-4 at app.py:50 in parse"


def test_cpu_flame_weights_count_a_childs_cpu_once() -> None:
    """The request's critical-path CPU (40 ms) includes the child's 30 ms: the CPU flame graph
    gives the request its own 10 ms and the child (under it) its 30 ms."""
    folded = dict(line.rsplit(" ", 1) for line in render_folded(request_run(), "cpu").splitlines())
    assert folded["GET /user"] == "10000"
    assert folded["GET /user;fetch_user"] == "30000"


def test_a_recorded_request_names_the_child_that_held_it_up_in_every_report() -> None:
    """End to end on fake time: the request waits on a child task doing 50 ms of I/O and
    20 ms of CPU; the reports built from its records show the child as the holder."""
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def fetch_user() -> None:
            async with asynclens.span("fetch_user"):
                fut = loop.create_future()

                def io_done() -> None:
                    clock.advance(50 * MS)
                    fut.set_result(None)

                loop.call_soon(io_done)
                await fut
                clock.spend_cpu(20 * MS)

        async with asynclens.span("request"):
            await asyncio.ensure_future(fetch_user())

    with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    request = next(s for s in cap.spans if s.name == "request")
    assert request.held_up_by is not None and "fetch_user" in request.held_up_by
    data = RunData()
    data.begin(info(mono=request.start_ns))
    data.add(cap.spans)
    text = summary_from_run(data, width=200)
    assert f"held up by {request.held_up_by}" in text
    payload = build_payload(data)
    names = payload["strings"]
    rows = {names[r[4]]: i for i, r in enumerate(payload["timeline"]["spans"])}
    assert payload["timeline"]["info"][rows["request"]]["held_span"] == rows["fetch_user"]
    flows = [e for e in render_chrome(data)["traceEvents"] if e.get("cat") == "flow" and e["name"] == "held up"]
    assert len(flows) == 2


def test_spans_without_a_breakdown_render_as_not_measured() -> None:
    data = RunData()
    data.begin(info())
    data.add([Span("plain", 1, 2, None, T0, T0 + 5 * MS, task="Task-1")])
    payload = build_payload(data)
    assert payload["timeline"]["spans"][0][8:13] == [-1, -1, -1, -1, -1]
    args = next(e for e in render_chrome(data)["traceEvents"] if e.get("cat") == "span")["args"]
    assert "cpu_ms" not in args and "own" not in args


def test_the_timeline_draws_the_holder_when_the_request_is_selected(tmp_path: Any) -> None:
    """In a real browser: selecting the request (report.html#span=NAME) shows its two
    breakdowns and names the child's row that the held-up arrow starts from."""
    try:
        from .test_html_browser import CHROMIUM, body_attrs, chromium
    except ImportError:
        from test_html_browser import CHROMIUM, body_attrs, chromium  # type: ignore[no-redef]
    if CHROMIUM is None:
        pytest.skip("no chromium found (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(request_run()), encoding="utf-8")
    run = chromium(tmp_path, f"{page}#span=GET%20%2Fuser", "--dump-dom")
    attrs = body_attrs(run.stdout)
    assert 'data-rendered="ok"' in attrs and "data-error" not in attrs, (attrs, run.stderr[-2000:])
    assert f"held up by {HOLDER} (red dashed arrow: where its work ended, on Task-7)" in run.stdout
    assert "own task: " in run.stdout and "blocked in a call 20.0 ms" in run.stdout
