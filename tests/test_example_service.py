"""The README's main job: run the example service under asynclens and get a report that
shows every mistake planted in it, every time, with the right cause, line and span."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

import asynclens
from asynclens.records import Leak, Span, Stall

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = os.path.join(ROOT, "examples", "service.py")
MS = 1_000_000


def marker_line(marker: str) -> int:
    """The line of the example that carries ``# mistake: <marker>``."""
    with open(SERVICE, encoding="utf-8") as f:
        found = [n for n, text in enumerate(f, 1) if f"# mistake: {marker}" in text]
    assert len(found) == 1, (marker, found)
    return found[0]


CPU_LINE = marker_line("CPU on the loop")
#: The CPU loop's lines (its clock check to the marked line): the watchdog samples the loop thread
#: where it lets the GIL go, the comprehension's loops or the outer loop's check, and on a busy
#: machine (longer waits for the GIL at the check) the check can be the line most samples show.
CPU_LOOP = range(CPU_LINE - 2, CPU_LINE + 1)
BLOCKING_LINE = marker_line("a blocking call on the loop")
LEAK_LINE = marker_line("never closed")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Any, list[Any]]:
    """The example run once under the CLI: the process, its folder, and run.jsonl's records."""
    folder = tmp_path_factory.mktemp("service")
    r = subprocess.run(
        [sys.executable, "-m", "asynclens", "run", "-o", "report.html", "-o", "run.jsonl", SERVICE],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    return r, folder, asynclens.read_jsonl(folder / "run.jsonl").records


def stalls_of(records: list[Any]) -> list[Stall]:
    return [r for r in records if isinstance(r, Stall)]


def request_span(records: list[Any], path: str) -> Span:
    (span,) = [r for r in records if isinstance(r, Span) and r.attrs.get("path") == path]
    return span


def planted(records: list[Any], line: int | range) -> Stall:
    """The one stall at the example's ``line`` (or one of those lines); no other stall overlaps it
    (not split, not merged)."""
    lines = line if isinstance(line, range) else range(line, line + 1)
    stalls = stalls_of(records)
    at_line = [s for s in stalls if s.line in lines and s.file is not None and os.path.samefile(s.file, SERVICE)]
    assert len(at_line) == 1, stalls
    (stall,) = at_line
    overlapping = [s for s in stalls if s is not stall and s.start_ns < stall.end_ns and stall.start_ns < s.end_ns]
    assert not overlapping, (stall, overlapping)
    return stall


def test_example_service_runs_under_asynclens(run: Any) -> None:
    r, folder, _ = run
    assert re.match(r"served 23 requests on port \d+; 1 upstream connections left open", r.stdout)
    assert "Slowest spans" in r.stderr and "handler.user" in r.stderr
    report = (folder / "report.html").read_text()
    data = re.search(r'<script type="application/json" id="asynclens-data">(.*?)</script>', report, re.DOTALL)
    assert data
    payload = json.loads(data.group(1))
    names = set(payload["strings"])
    assert {
        "GET /user/",
        "handler.user",
        "db.query",
        "handler.search",
        "score_documents",
        "render_report",
        "audit",
    } <= names
    assert payload["timeline"]["shown"] == payload["timeline"]["total"] > 60


def test_the_cpu_heavy_handler_is_one_cpu_stall_at_its_line_in_its_span(run: Any) -> None:
    stall = planted(run[2], CPU_LOOP)
    assert (stall.cause, stall.span_name, stall.episode) == ("cpu", "score_documents", False)
    assert stall.duration_ns >= 100 * MS  # 150 ms of CPU was planted: the whole of it, not a piece


def test_the_blocking_call_is_one_blocking_stall_at_its_line_in_its_span(run: Any) -> None:
    stall = planted(run[2], BLOCKING_LINE)
    assert (stall.cause, stall.span_name, stall.function, stall.episode) == (
        "blocking",
        "render_report",
        "handle_report",
        False,
    )
    assert stall.duration_ns >= 100 * MS  # time.sleep(0.15)


def test_the_cpu_and_blocking_stalls_ran_back_to_back_and_are_separate_records(run: Any) -> None:
    cpu, blocking = planted(run[2], CPU_LOOP), planted(run[2], BLOCKING_LINE)
    assert cpu.task != blocking.task
    assert cpu.end_ns <= blocking.start_ns
    # the burst runs them in one loop iteration: nothing but the step's own bookkeeping between them
    assert blocking.start_ns - cpu.end_ns < 50 * MS


def test_the_request_that_arrives_with_the_burst_is_starved_by_the_loop(run: Any) -> None:
    span = request_span(run[2], "/health?burst")
    assert span.name == "GET /health"
    assert span.sched_wait_ns is not None and span.io_wait_ns is not None
    # behind 150 ms of CPU and a 150 ms blocking call: it waited for the loop, not for its ping
    assert span.sched_wait_ns >= 100 * MS and span.sched_wait_ns > span.io_wait_ns
    assert span.sched_wait_ns * 2 > span.duration_ns


def test_the_fan_out_request_explains_its_wait_by_its_children(run: Any) -> None:
    span = request_span(run[2], "/user/42")
    assert span.name == "GET /user/"
    assert span.own_breakdown is not None and span.held_up_by
    _, _, own_sched, own_io, _ = span.own_breakdown
    assert span.io_wait_ns is not None and span.sched_wait_ns is not None
    # its own task only waited on gather(); the queries could not start until /search and /report let go
    assert span.io_wait_ns < own_io
    assert span.sched_wait_ns - own_sched >= 100 * MS
    critical = (span.cpu_ns, span.blocked_ns, span.sched_wait_ns, span.io_wait_ns, span.executor_ns)
    assert sum(x or 0 for x in critical) == span.duration_ns == sum(span.own_breakdown)
    (handler,) = [r for r in run[2] if isinstance(r, Span) and r.parent_id == span.span_id]
    assert handler.name == "handler.user" and handler.own_breakdown is not None


def test_the_leaked_connection_is_named_by_the_line_that_opened_it(run: Any) -> None:
    leaks = [r for r in run[2] if isinstance(r, Leak)]
    at_line = [
        leak for leak in leaks if leak.site and re.search(rf"service\.py:{LEAK_LINE} in handle_proxy$", leak.site)
    ]
    assert [leak.handle_kind for leak in at_line if leak.handle_kind == "socket"] == ["socket"], leaks
    assert {leak.span_name for leak in at_line} == {"handler.proxy"}
    assert all(leak in at_line for leak in leaks if leak.handle_kind in ("socket", "transport")), leaks


def test_example_service_runs_without_asynclens(tmp_path: Any) -> None:
    r = subprocess.run(
        [sys.executable, SERVICE],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("served 23 requests")


def test_demo_command(tmp_path: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "asynclens", "demo", "-q", "-o", "demo.html"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo.html").read_text().startswith("<!DOCTYPE html>")
