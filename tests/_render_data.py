"""Shared inputs for the renderer tests: real spans plus duck-typed stand-ins for the
record kinds other probes define (stall, lag, leak, task, step, gc, executor_job, ...)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from asynclens.records import SessionEnd, SessionInfo, Span
from asynclens.report.rundata import RunData

MS = 1_000_000
T0 = 5_000 * MS  # monotonic start of the fake run


def info(pid: int = 4242, mono: int = T0, wall: int = 1_700_000_000 * 10**9, name: str | None = None) -> SessionInfo:
    return SessionInfo(
        session_id="abc",
        schema=1,
        pid=pid,
        argv=("app.py",),
        python="3.11.7",
        anchor_mono_ns=mono,
        anchor_wall_ns=wall,
        name=name,
    )


def span(
    name: str,
    sid: int,
    parent: int | None,
    start_ms: float,
    end_ms: float,
    *,
    trace: int = 1,
    task: str | None = "Task-1",
    **kw: Any,
) -> Span:
    return Span(
        name,
        trace,
        sid,
        parent,
        T0 + int(start_ms * MS),
        T0 + int(end_ms * MS),
        task=task,
        thread_id=kw.pop("thread_id", 1),
        **kw,
    )


def request_spans() -> list[Span]:
    """One request: handler (Task-1) with two queries in Task-2/Task-3 and a pool job."""
    return [
        span("db.query", 3, 2, 10, 40, task="Task-2", cpu_ns=2 * MS),
        span("db.query", 4, 2, 10, 30, task="Task-3", cpu_ns=1 * MS),
        span("parse", 5, 2, 50, 60, task="Task-1", cpu_ns=10 * MS),
        span("hash", 6, 2, 60, 70, task=None, thread_id=99, cpu_ns=10 * MS),
        span(
            "GET /user",
            2,
            None,
            5,
            80,
            task="Task-1",
            cpu_ns=15 * MS,
            sched_wait_ns=5 * MS,
            io_wait_ns=40 * MS,
            executor_ns=10 * MS,
            steps=4,
            max_sched_wait_ns=3 * MS,
        ),
        span("<script>alert(1)</script>", 7, None, 82, 90, trace=2, task="Task-4", attrs={"q": "</script><b>x</b>"}),
        span(
            "boom",
            8,
            None,
            91,
            95,
            trace=3,
            task="Task-4",
            status="error",
            error_type="ValueError",
            error_message="bad <input>",
        ),
    ]


def stand_ins() -> list[Any]:
    sample = SimpleNamespace(kind="stack_sample", frames=("app.py:10 in main", "app.py:41 in handle_search"), count=3)
    sample2 = SimpleNamespace(kind="stack_sample", frames=("app.py:10 in main", "app.py:44 in score"), count=1)
    return [
        SimpleNamespace(
            kind="stall",
            loop_id=77,
            start_ns=T0 + 50 * MS,
            end_ns=T0 + 70 * MS,
            file="app.py",
            line=41,
            function="handle_search",
            stack=("app.py:10 in main", "app.py:41 in handle_search"),
            samples=(sample, sample2),
            task="Task-1",
            trace_id=1,
            span_id=5,
            span_name="parse",
            async_stack=("app.py:5 in serve",),
            cause="cpu",
            cpu_ns=19 * MS,
            sampled=True,
        ),
        SimpleNamespace(
            kind="stall",
            loop_id=77,
            start_ns=T0 + 72 * MS,
            end_ns=T0 + 75 * MS,
            file=None,
            line=None,
            function=None,
            stack=(),
            samples=(),
            task=None,
            trace_id=None,
            span_id=None,
            span_name=None,
            async_stack=(),
            cause="unknown",
            cpu_ns=None,
            sampled=False,
        ),
        SimpleNamespace(
            kind="lag",
            loop_id=77,
            start_ns=T0,
            end_ns=T0 + 50 * MS,
            count=5,
            min_ns=100_000,
            max_ns=2 * MS,
            mean_ns=500_000,
            stddev_ns=1,
            p50_ns=400_000,
            p90_ns=MS,
            p99_ns=2 * MS,
            p999_ns=2 * MS,
            elu=0.4,
        ),
        SimpleNamespace(
            kind="lag",
            loop_id=77,
            start_ns=T0 + 50 * MS,
            end_ns=T0 + 100 * MS,
            count=3,
            min_ns=200_000,
            max_ns=20 * MS,
            mean_ns=7 * MS,
            stddev_ns=1,
            p50_ns=MS,
            p90_ns=20 * MS,
            p99_ns=20 * MS,
            p999_ns=20 * MS,
            elu=0.9,
        ),
        SimpleNamespace(
            kind="handle",
            handle_id=1,
            handle_kind="socket",
            description="tcp 127.0.0.1:80",
            open_ns=T0 + 10 * MS,
            close_ns=T0 + 40 * MS,
            closed_by="program",
            site="app.py:20 in query",
            stack=(),
            trace_id=1,
            span_id=3,
            span_name="db.query",
            bytes_sent=10,
            bytes_received=20,
            ops=2,
        ),
        SimpleNamespace(
            kind="leak",
            handle_id=2,
            handle_kind="socket",
            description="tcp <upstream>:8080",
            open_ns=T0 + 20 * MS,
            close_ns=None,
            closed_by=None,
            site="app.py:30 in proxy",
            stack=("app.py:10 in main", "app.py:30 in proxy"),
            trace_id=1,
            span_id=2,
            span_name="GET /user",
            bytes_sent=1,
            bytes_received=0,
            ops=1,
        ),
        SimpleNamespace(
            kind="task",
            task_id=11,
            name="Task-2",
            loop_id=77,
            created_ns=T0 + 9 * MS,
            done_ns=T0 + 41 * MS,
            steps=3,
            cpu_ns=2 * MS,
            sched_wait_ns=MS,
            max_sched_wait_ns=MS,
            parent_task_id=None,
            trace_id=1,
            span_id=2,
            outlived_span=False,
            inherited_context=False,
            state="done",
        ),
        SimpleNamespace(
            kind="step",
            task_id=11,
            ready_ns=T0 + 9 * MS,
            start_ns=T0 + 10 * MS,
            end_ns=T0 + 11 * MS,
            cpu_ns=MS,
            span_id=3,
        ),
        SimpleNamespace(
            kind="step", task_id=999, ready_ns=None, start_ns=T0 + 12 * MS, end_ns=T0 + 13 * MS, cpu_ns=MS, span_id=None
        ),
        SimpleNamespace(
            kind="gc",
            start_ns=T0 + 45 * MS,
            end_ns=T0 + 47 * MS,
            generation=2,
            collected=10,
            uncollectable=0,
            task="Task-1",
            trace_id=1,
            span_id=2,
            span_name="GET /user",
        ),
        SimpleNamespace(
            kind="executor_job",
            submit_ns=T0 + 58 * MS,
            start_ns=T0 + 60 * MS,
            end_ns=T0 + 70 * MS,
            function="hash_password",
            thread_id=99,
            trace_id=1,
            span_id=2,
            error_type=None,
        ),
        SimpleNamespace(
            kind="sched",
            loop_id=77,
            start_ns=T0,
            end_ns=T0 + 100 * MS,
            ready_delay={"count": 9, "p99": 3 * MS, "max": 4 * MS},
            timer_lateness={"p99": MS},
            executor_busy_max=1,
        ),
        SimpleNamespace(
            kind="io_rates", start_ns=T0, end_ns=T0 + 100 * MS, events=50, bytes_sent=1000, bytes_received=5000
        ),
    ]


def full_run() -> RunData:
    data = RunData()
    data.begin(info())
    data.add(request_spans())
    data.add(stand_ins())
    data.add([SessionEnd(end_ns=T0 + 100 * MS)])
    return data
