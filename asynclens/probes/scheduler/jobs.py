"""Executor jobs: each job's queue wait and run time, and how busy each pool got."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any

from ..._state.context import current_span as _span_var
from ...records import ExecutorJob
from ...stats import Histogram
from .steps import task_state_of

__all__ = ["ExecutorJobs"]

_MAX_JOBS_PER_TASK = 64


class _Job:
    """A thread-pool job wrapped to time its queue wait and run time."""

    __slots__ = ("end_ns", "executor_id", "fn", "max_workers", "probe", "span", "start_ns", "submit_ns")

    def __init__(self, fn: Callable[..., Any], probe: ExecutorJobs, executor: Any, span: Any) -> None:
        self.fn = fn
        self.probe = probe
        self.executor_id = id(executor)
        self.max_workers = int(getattr(executor, "_max_workers", 0) or 0)
        self.span = span
        self.submit_ns = probe.now()
        self.start_ns = 0
        self.end_ns = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        probe = self.probe
        self.start_ns = probe.now()
        try:
            probe._job_started(self)
        except Exception as exc:
            probe.internal_error("starting an executor job", exc)
        error = None
        try:
            return self.fn(*args, **kwargs)
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            self.end_ns = probe.now()
            probe._job_finished(self, error)

    def __repr__(self) -> str:
        return repr(self.fn)


def _function_name(fn: Any) -> str:
    target = fn
    for _ in range(4):  # unwrap functools.partial and to_thread's partial(context.run, func)
        if isinstance(target, functools.partial):
            target = target.func
        elif (
            isinstance(getattr(target, "__self__", None), contextvars.Context)
            and isinstance(fn, functools.partial)
            and fn.args
        ):
            target = fn.args[0]
            break
        else:
            break
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    return f"{module}.{name}" if module else str(name)


class ExecutorJobs:
    """The scheduler probe's executor accounting (a mixin: the probe supplies
    ``now``, ``_emit``, ``_lock`` and ``internal_error``)."""

    now: Callable[[], int]
    _emit: Callable[[Any], None]
    _lock: threading.Lock
    internal_error: Callable[[str, BaseException], None]

    def _init_jobs(self) -> None:
        self.jobs = 0
        self.job_queue = Histogram()
        self.job_run = Histogram()
        self._busy: dict[int, list[int]] = {}  # executor id -> [busy, max busy, max workers]
        self.busy_max = 0
        self._busy_window = 0

    def job(self, executor: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a job submitted to ``executor`` (see ``_executor.job_observer``)."""
        job = _Job(fn, self, executor, _span_var.get())
        loop = asyncio.events._get_running_loop()
        if loop is not None:
            task = asyncio.current_task(loop)
            st = task_state_of(task) if task is not None else None
            if st is not None and st.ls.running is st:
                jobs = st.jobs
                if jobs is None:
                    st.jobs = [job]
                elif len(jobs) < _MAX_JOBS_PER_TASK:
                    jobs.append(job)
        return job

    def _job_started(self, job: _Job) -> None:
        with self._lock:
            entry = self._busy.get(job.executor_id)
            if entry is None:
                entry = self._busy[job.executor_id] = [0, 0, job.max_workers]
            entry[0] += 1
            entry[1] = max(entry[1], entry[0])
            self.busy_max = max(self.busy_max, entry[0])
            self._busy_window = max(self._busy_window, entry[0])

    def _job_finished(self, job: _Job, error: str | None) -> None:
        try:
            with self._lock:
                entry = self._busy.get(job.executor_id)
                if entry is not None:
                    entry[0] -= 1
                self.jobs += 1
                self.job_queue.record(job.start_ns - job.submit_ns)
                self.job_run.record(job.end_ns - job.start_ns)
            span = job.span
            self._emit(
                ExecutorJob(
                    submit_ns=job.submit_ns,
                    start_ns=job.start_ns,
                    end_ns=job.end_ns,
                    function=_function_name(job.fn),
                    thread_id=threading.get_ident(),
                    trace_id=span.trace_id if span is not None else None,
                    span_id=span.span_id if span is not None else None,
                    error_type=error,
                    executor_id=job.executor_id,
                    max_workers=job.max_workers,
                )
            )
        except Exception as exc:
            self.internal_error("recording an executor job", exc)

    def _busiest(self) -> str:
        with self._lock:
            entries = list(self._busy.values())
        if not entries:
            return "-"
        busy, peak, workers = max(entries, key=lambda e: e[1])
        return f"{peak}/{workers} workers busy at once" if workers else f"{peak} workers busy at once"
