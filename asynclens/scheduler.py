"""The scheduler probe: where each span's time went, scheduling latency, GC, executor.

How it sees task steps (on the stdlib loops *and* uvloop, 3.10–3.13):

* ``create_task`` of ``asyncio.BaseEventLoop`` and ``uvloop.Loop`` is patched at
  class level while the session is active, so every task created from then on
  (including ``asyncio.run``'s main task, created before its loop runs, and
  tasks of loops created later) runs its coroutine inside a
  :class:`~asynclens._steps.StepCoro` that times each ``send``/``throw``. This
  composes with any task factory (eager ones included) instead of replacing it,
  so names, contexts and ``eager_start`` pass through untouched (a custom task
  factory would rename unnamed tasks to "None" on 3.13.0–3.13.2).
* Ready times come from per-instance ``call_soon``/``call_later``/``call_at``
  hooks (see :mod:`asynclens._steps`); patching ``Handle._run`` would see nothing
  on uvloop, ``sys.setprofile`` costs 15–47 µs per step here.

Not covered (and reported): tasks created before the session started, coroutines
that are not native coroutines, loops of other implementations.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from collections.abc import Coroutine as CoroutineABC
from random import getrandbits
from types import CoroutineType, MappingProxyType
from typing import Any

from . import _executor, tracing
from ._asyncstack import format_frame, running_chain, task_stack
from ._context import current_span as _span_var
from ._gc import GcWatcher
from ._patch import Patch
from ._steps import ATTR, LoopState, StepCoro, TaskState, take_all, task_state_of
from ._summary import format_ns
from .records import ExecutorJob, SchedSnapshot, TaskRecord, fast_constructor
from .stats import Histogram

__all__ = ["SchedulerProbe", "SchedulerStatistics", "async_stack", "creation_chain"]

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MAX_NAMES = 1000
_MAX_JOBS_PER_TASK = 64
_make_task_record = fast_constructor(TaskRecord)
_INTERNAL_CODE: dict[Any, bool] = {}  # code object -> is it asyncio's or ours
_span_get = _span_var.get
_TALLY_FOLD_EVERY = 256  # span breakdowns kept per name before they are summed
_get_running_loop = asyncio.events._get_running_loop
_current_task = asyncio.current_task


class NameTally:
    """Where the time of one span name went. A span's breakdown is appended as it
    ends and summed in bulk (C-level sums per few hundred spans: about half the
    cost of six additions per span); :meth:`totals` folds what is left."""

    __slots__ = ("count", "run", "sched", "io", "executor", "recent")

    def __init__(self) -> None:
        self.count = self.run = self.sched = self.io = self.executor = 0
        self.recent: list[tuple[int, ...]] = []  # (cpu, sched, io, executor, steps, longest wait)

    def fold(self) -> None:
        """Sum the breakdowns appended so far."""
        taken = take_all(self.recent)
        if taken:
            run, sched, io, executor = list(zip(*taken))[:4]
            self.count += len(taken)
            self.run += sum(run)
            self.sched += sum(sched)
            self.io += sum(io)
            self.executor += sum(executor)

    def totals(self) -> tuple[int, int, int, int, int, int]:
        """``(count, wall, cpu, sched wait, I/O wait, executor)``: a breakdown adds up to
        its span's wall time, so the wall is the sum of the parts."""
        self.fold()
        return (
            self.count,
            self.run + self.sched + self.io + self.executor,
            self.run,
            self.sched,
            self.io,
            self.executor,
        )


class SchedulerStatistics(dict):  # type: ignore[type-arg]
    """The probe's counters (a dict, so it serialises as is)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self)


class _Job:
    """A thread-pool job wrapped to time its queue wait and run time."""

    __slots__ = ("fn", "probe", "executor_id", "max_workers", "submit_ns", "start_ns", "end_ns", "span")

    def __init__(self, fn: Callable[..., Any], probe: SchedulerProbe, executor: Any, span: Any) -> None:
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


def _site_of(code: Any, lineno: int) -> str:
    return format_frame(code.co_filename, lineno, code.co_name)


def async_stack(task: Any) -> tuple[str, ...]:
    """A pending task's await chain, outermost first, continued into awaited tasks."""
    return task_stack(task)


def creation_chain(task: Any) -> list[str]:
    """Who created ``task``: one line per ancestor task tracked by the probe."""
    out: list[str] = []
    st = task_state_of(task)
    seen = 0
    while st is not None and seen < 16:
        seen += 1
        t = st.task_ref() if st.task_ref is not None else None
        name = t.get_name() if t is not None else "<gone>"
        where = f" at {_site_of(*st.site)}" if st.site is not None else ""
        span = f" in span {st.span.name!r}" if st.span is not None else ""
        out.append(f"task {name!r} created{where}{span}")
        st = st.parent() if st.parent is not None else None
    return out


class SchedulerProbe:
    """Task steps, per-span breakdown, scheduling latency, GC pauses, executor jobs.

    Args:
        thread_cpu: also read the thread CPU clock around every step (``cpu_ns``
            of tasks and steps; ~0.9 µs per step here). Span ``cpu_ns`` is the
            time the span's own code ran either way.
        record_steps: emit up to this many :class:`~asynclens.records.TaskStep`
            records (0: none).
        window: seconds per :class:`~asynclens.records.SchedSnapshot` window.
        worker_after: a task that outlives its creating span by at least this
            many seconds (and 10× the span's duration) is a worker that
            inherited the request's context.
        gc: watch garbage collections.
        task_records: which finished tasks get a :class:`~asynclens.records.TaskRecord`:
            ``"all"``, ``"none"`` or ``"notable"`` (the default: tasks that failed,
            were cancelled, outlived their span, lived or waited for the loop
            at least ``notable`` seconds; the others are only counted). Tasks
            still pending at session end are always recorded.

    .. versionadded:: 0.1
    """

    name = "scheduler"

    def __init__(
        self,
        *,
        thread_cpu: bool = False,
        record_steps: int = 0,
        window: float = 1.0,
        worker_after: float = 1.0,
        gc: bool = True,
        task_records: str = "notable",
        notable: float = 0.001,
    ) -> None:
        if isinstance(record_steps, bool) or not isinstance(record_steps, int) or record_steps < 0:
            raise ValueError(f"SchedulerProbe(record_steps={record_steps!r}): must be an int >= 0")
        if not isinstance(window, (int, float)) or window <= 0:
            raise ValueError(f"SchedulerProbe(window={window!r}): must be a positive number of seconds")
        if task_records not in ("all", "notable", "none"):
            raise ValueError(f"SchedulerProbe(task_records={task_records!r}): expected 'all', 'notable' or 'none'")
        self.task_records = task_records
        self.notable_ns = int(notable * 1e9)
        self.tasks_unrecorded = 0
        self.thread_cpu = bool(thread_cpu)
        self.record_steps = record_steps
        self.window_ns = int(window * 1e9)
        self.worker_after_ns = int(worker_after * 1e9)
        self.session: Any = None
        self.now: Callable[[], int] = lambda: 0
        self._emit: Callable[[Any], None] = lambda record: None
        self.active = False
        self._patches: list[Patch] = []
        self._loops: weakref.WeakKeyDictionary[Any, LoopState] = weakref.WeakKeyDictionary()
        self._loop_states: list[LoopState] = []
        self._gc: GcWatcher | None = GcWatcher(lambda: self.now(), lambda r: self._emit(r)) if gc else None
        self._lock = threading.Lock()
        # counters
        self.tasks_tracked = 0
        self.tasks_finished = 0
        self.tasks_not_covered = 0
        self.coroutines_not_covered = 0
        self.outlived: list[tuple[str, str, int]] = []  # (task, span, ns after span end), first few
        self.outlived_count = 0
        self.workers: list[tuple[str, str]] = []
        self.workers_count = 0
        self.internal_errors = 0
        self.by_name: dict[str, NameTally] = {}
        self.jobs = 0
        self.job_queue = Histogram()
        self.job_run = Histogram()
        self._busy: dict[int, list[int]] = {}  # executor id -> [busy, max busy, max workers]
        self.busy_max = 0
        self._busy_window = 0
        self.snapshots = 0
        self._worst_sched = (0, "")
        self._ready_total = Histogram()
        self._timer_total = Histogram()

    # ------------------------------------------------------------ lifecycle

    def start(self, session: Any) -> None:
        self.session = session
        self.now = session.now
        self._emit = session.emit
        self.active = True
        self._patches = [Patch(asyncio.BaseEventLoop, "create_task", self._create_task)]
        uvloop = sys.modules.get("uvloop")
        if uvloop is not None and isinstance(getattr(uvloop, "Loop", None), type):
            self._patches.append(Patch(uvloop.Loop, "create_task", self._create_task))
        for patch in self._patches:
            patch.install()
        tracing.set_span_observer(self)
        _executor.set_job_observer(self)
        if self._gc is not None:
            self._gc.start()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if asyncio.events._get_running_loop() is loop or not loop.is_running():
            self._attach(loop, count_existing=True)
        else:
            loop.call_soon_threadsafe(self._attach, loop, True)

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []
        if tracing._observer is self:
            tracing.set_span_observer(None)
        if _executor.job_observer is self:
            _executor.set_job_observer(None)
        if self._gc is not None:
            self._gc.stop()
        end = self.now()
        for loop, ls in list(self._loops.items()):
            try:
                self._report_pending(loop, ls, end)
            except Exception as exc:
                self.internal_error("reporting pending tasks", exc)
            self._snapshot(ls, end)
            ls.remove(loop)
        for ls in self._loop_states:
            ls.active = False

    # --------------------------------------------------------------- loops

    def _attach(self, loop: Any, count_existing: bool = False) -> LoopState | None:
        ls = getattr(loop, ATTR, None)
        if type(ls) is LoopState and ls.probe is self:
            return ls
        if not self.active:
            return None
        self._patch_class(type(loop))
        ls = LoopState(self, loop, self.now, self.session.clock.cpu_ns if self.thread_cpu else None)
        ls.step_budget = self.record_steps
        ls.window_ns = self.window_ns
        try:
            ls.install(loop)
            setattr(loop, ATTR, ls)
        except Exception as exc:  # a loop type we cannot hook: its tasks still get steps, without ready times
            self.internal_error(f"hooking {type(loop).__name__}", exc)
        self._loops[loop] = ls
        self._loop_states.append(ls)
        if count_existing:
            try:
                for task in asyncio.all_tasks(loop):
                    if task_state_of(task) is None:
                        self.tasks_not_covered += 1
            except Exception:
                pass
        return ls

    def _patch_class(self, cls: type) -> None:
        """Cover ``create_task`` of a loop class seen only once running (uvloop imported late)."""
        if any(isinstance(p.owner, type) and issubclass(cls, p.owner) for p in self._patches):
            return
        if "create_task" in getattr(cls, "__dict__", {}) or hasattr(cls, "create_task"):
            patch = Patch(cls, "create_task", self._create_task)
            try:
                patch.install()
            except Exception:
                return
            self._patches.append(patch)

    # ---------------------------------------------------------- task steps

    def _create_task(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.active or not args or instance is None:
            return wrapped(*args, **kwargs)
        coro = args[0]
        if type(coro) is not CoroutineType and (type(coro) is StepCoro or not isinstance(coro, CoroutineABC)):
            self.coroutines_not_covered += 1
            return wrapped(*args, **kwargs)
        try:
            ls = getattr(instance, ATTR, None)
            if type(ls) is not LoopState or ls.probe is not self:
                ls = self._attach(instance)
            st = TaskState(ls, self.now()) if ls is not None else None
        except Exception as exc:
            self.internal_error("tracking a task", exc)
            st = None
        if st is None:
            return wrapped(*args, **kwargs)
        try:
            self._lineage(st, instance)
        except Exception as exc:
            self.internal_error("recording task lineage", exc)
        task = wrapped(StepCoro(coro, st), *args[1:], **kwargs)
        try:
            st.task_ref = weakref.ref(task)
            setattr(task, ATTR, st)
            self.tasks_tracked += 1
            st.ls.tasks += 1
            st.ls.window_tasks += 1
        except Exception:  # a task type without __dict__/weakrefs: steps counted, no ready times
            pass
        return task

    def _lineage(self, st: TaskState, loop: Any) -> None:
        st.span = _span_get()
        if _get_running_loop() is loop:
            parent = _current_task(loop)
            if parent is not None:
                st.parent_task_id = id(parent)
                parent_state = getattr(parent, ATTR, None)
                if type(parent_state) is TaskState:
                    st.parent = weakref.ref(parent_state)
        frame: Any = sys._getframe(2)
        internal = _INTERNAL_CODE
        for _ in range(8):
            if frame is None:
                break
            code = frame.f_code
            hidden = internal.get(code)
            if hidden is None:
                filename = code.co_filename
                hidden = internal[code] = filename.startswith(_ASYNCIO_DIR) or filename.startswith(_PACKAGE_DIR)
            if not hidden:
                st.site = (code, frame.f_lineno)
                break
            frame = frame.f_back

    def task_finished(self, st: TaskState, exc: BaseException | None, t: int) -> None:
        """Called by the step wrapper when a task's coroutine finishes."""
        if isinstance(exc, StopIteration):
            state = "done"
        elif isinstance(exc, asyncio.CancelledError):
            state = "cancelled"
        else:
            state = "error"
        self.tasks_finished += 1
        mode = self.task_records
        if mode == "notable":
            span = st.span
            if (
                state == "done"
                and t - st.created_ns < self.notable_ns
                and st.longest_sched_ns() < self.notable_ns
                and (span is None or not span.end_ns)
            ):
                self.tasks_unrecorded += 1
                return
        elif mode == "none":
            self.tasks_unrecorded += 1
            return
        self._emit_task(st, state, t)

    def _emit_task(self, st: TaskState, state: str, t: int, stack: tuple[str, ...] = ()) -> None:
        task = st.task_ref() if st.task_ref is not None else None
        name = task.get_name() if task is not None else "?"
        span = st.span
        outlived = inherited = False
        if span is not None and span.end_ns and (state == "pending" or span.end_ns < t):
            outlived = True
            after = t - span.end_ns
            inherited = after >= self.worker_after_ns and after >= 10 * (span.end_ns - span.start_ns)
            self._note_outlived(name, span.name, after, inherited)
        longest = st.longest_sched_ns()
        if longest > self._worst_sched[0]:
            self._worst_sched = (longest, name)
        parent_name = None
        if st.parent is not None:
            parent = st.parent()
            parent_task = parent.task_ref() if parent is not None and parent.task_ref is not None else None
            parent_name = parent_task.get_name() if parent_task is not None else None
        site = st.site
        self._emit(
            _make_task_record(
                id(task) if task is not None else 0,
                name,
                st.ls.loop_id,
                st.created_ns,
                t if state != "pending" else None,
                st.steps,
                st.cpu_ns if st.ls.cpu is not None else st.run_ns,
                st.sched_ns,
                longest,
                st.parent_task_id,
                span.trace_id if span is not None else None,
                span.span_id if span is not None else None,
                outlived,
                inherited,
                state,
                st.run_ns,
                st.io_ns,
                st.exec_ns,
                span.name if span is not None else None,
                parent_name,
                f"{site[0].co_filename}:{site[1]} in {site[0].co_name}" if site is not None else None,
                stack,
            )
        )

    def _note_outlived(self, task: str, span: str, after: int, inherited: bool) -> None:
        self.outlived_count += 1
        if len(self.outlived) < 5:
            self.outlived.append((task, span, after))
        if inherited:
            self.workers_count += 1
            if len(self.workers) < 5:
                self.workers.append((task, span))

    def _report_pending(self, loop: Any, ls: LoopState, end: int) -> None:
        try:
            tasks = list(asyncio.all_tasks(loop))
        except Exception:
            return
        for task in tasks:
            st = task_state_of(task)
            if st is None or st.ls is not ls or st.done or task.done():
                continue
            self._emit_task(st, "pending", end, task_stack(task))

    # ------------------------------------------------------------ windows

    def _snapshot(self, ls: LoopState, end: int) -> None:
        """Emit the loop's current window as a SchedSnapshot and start a new one."""
        try:
            start = ls.window_start
            ready, timers, steps, tasks = ls.window(end)
            if not (ready.count or timers.count):
                return
            with self._lock:  # the most workers busy at once in this window (any pool)
                busy = self._busy_window
                self._busy_window = max((entry[0] for entry in self._busy.values()), default=0)
            self.snapshots += 1
            self._ready_total.merge(ready)
            self._timer_total.merge(timers)
            self._emit(
                SchedSnapshot(
                    loop_id=ls.loop_id,
                    start_ns=start,
                    end_ns=end,
                    ready_delay=MappingProxyType(ready.summary()),
                    timer_lateness=MappingProxyType(timers.summary()),
                    executor_busy_max=busy,
                    steps=steps,
                    tasks=tasks,
                    ready_histogram=MappingProxyType(ready.to_dict()) if ready.count else None,
                )
            )
        except Exception as exc:
            self.internal_error("emitting a scheduler snapshot", exc)

    def ready_delay(self) -> Histogram:
        """Ready→run delay over the whole session, all loops (merged)."""
        hist = self._ready_total.copy()
        for ls in list(self._loop_states):
            hist.merge(ls.ready_delay)
        return hist

    def timer_lateness(self) -> Histogram:
        """How late timer callbacks (``sleep``, ``call_later``) fired, all loops."""
        hist = self._timer_total.copy()
        for ls in list(self._loop_states):
            hist.merge(ls.timer_lateness)
        return hist

    # ------------------------------------------------------ span breakdown
    # A span started inside a task's step holds the task's running totals at its start
    # (LiveSpan.breakdown); at its end, the difference of the totals is its breakdown.

    def span_started(self, live: Any) -> None:
        task = live.task
        if task is None:
            return
        st = getattr(task, ATTR, None)
        if type(st) is not TaskState:
            st = task_state_of(task)
            if st is None:
                return
        step_start = st.start_ns
        if not step_start or st.ls.running is not st:
            return
        try:
            # the task's running totals at the span's start (inside the running step), and
            # its longest ready->run wait so far, which restarts from 0 for the span
            nested = st.nested_ns
            longest = st.max_sched_ns
            if longest:
                if longest > st.max_sched_earlier:
                    st.max_sched_earlier = longest
                st.max_sched_ns = 0
            live.breakdown = (
                st,
                st.run_ns + live.start_ns - step_start - nested,
                st.sched_ns + nested,
                st.io_ns,
                st.exec_ns,
                st.steps,
                longest,
            )
            creator = st.span
            if creator is not None and creator.end_ns and live.parent_id == creator.span_id:
                # a task that outlived its request: link to the request, do not parent
                live.parent_id = None
                live.trace_id = getrandbits(128) or 1
                live.extra = {"links": (creator.span_id,)}
        except Exception as exc:
            live.breakdown = None
            self.internal_error("starting a span breakdown", exc)

    def span_ended(self, live: Any) -> None:
        at_start = live.breakdown
        if at_start is None:
            return
        try:
            st, run0, sched0, io0, ex0, steps0, longest0 = at_start
            if st.ls.running is st and st.start_ns:
                nested = st.nested_ns
                end = live.end_ns
                run = st.run_ns + end - st.start_ns - nested - run0
                sched = st.sched_ns + nested - sched0
                io = st.io_ns - io0
                ex = st.exec_ns - ex0
                longest = st.max_sched_ns
                if longest0 > longest:  # what an enclosing span had seen before this one
                    st.max_sched_ns = longest0
                breakdown = live.breakdown = (run, sched, io, ex, st.steps - steps0 + 1, longest)
                tally = self.by_name.get(live.name)
                if tally is None:
                    tally = self._name_tally(live.name)
                if tally is not None:
                    recent = tally.recent
                    recent.append(breakdown)
                    if len(recent) >= _TALLY_FOLD_EVERY:
                        tally.fold()
            else:  # ended in another task or thread than it started in: no breakdown
                live.breakdown = None
            error = live.error
            if error is not None and error[0] == "error":
                extra = live.extra
                stack = self._error_stack(st)
                live.extra = {**extra, "error_stack": stack} if extra else {"error_stack": stack}
        except Exception as exc:
            live.breakdown = None
            self.internal_error("ending a span breakdown", exc)

    def _name_tally(self, name: str) -> NameTally | None:
        if len(self.by_name) >= _MAX_NAMES:
            return None
        tally = self.by_name[name] = NameTally()
        return tally

    def _error_stack(self, st: TaskState) -> str:
        lines = running_chain(StepCoro.send.__code__, skip=2)
        chain = creation_chain_of_state(st)
        return "\n".join(lines + chain)

    # ------------------------------------------------------------ executor

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
            if entry[0] > entry[1]:
                entry[1] = entry[0]
            if entry[0] > self.busy_max:
                self.busy_max = entry[0]
            if entry[0] > self._busy_window:
                self._busy_window = entry[0]

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

    # -------------------------------------------------------------- GC

    def gc_overlapping(self, start_ns: int, end_ns: int) -> list[Any]:
        """GC pauses (recent ones) overlapping ``[start_ns, end_ns]``, e.g. a stall."""
        return self._gc.overlapping(start_ns, end_ns) if self._gc is not None else []

    # ------------------------------------------------------------ reporting

    def emit(self, record: Any) -> None:
        self._emit(record)

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.internal_errors += 1
        session = self.session
        if session is not None:
            session.internal_error(f"scheduler: {where}", exc)

    def statistics(self) -> SchedulerStatistics:
        ready = self.ready_delay()
        timers = self.timer_lateness()
        gc = self._gc
        return SchedulerStatistics(
            loops=len(self._loop_states),
            tasks_tracked=self.tasks_tracked,
            tasks_finished=self.tasks_finished,
            tasks_unrecorded=self.tasks_unrecorded,
            tasks_not_covered=self.tasks_not_covered,
            coroutines_not_covered=self.coroutines_not_covered,
            steps=sum(ls.steps for ls in list(self._loop_states)),
            outlived_span=self.outlived_count,
            inherited_context=self.workers_count,
            ready_delay=ready.summary(),
            timer_lateness=timers.summary(),
            gc_pauses=gc.pauses.summary() if gc is not None else None,
            gc_by_generation=list(gc.by_generation) if gc is not None else None,
            executor_jobs=self.jobs,
            executor_queue=self.job_queue.summary(),
            executor_run=self.job_run.summary(),
            executor_busy_max=self.busy_max,
            snapshots=self.snapshots,
            internal_errors=self.internal_errors,
        )

    def summary_lines(self) -> list[str]:
        """What only the live probe knows, for the summary's scheduling section:
        where the time of each span name went, full-session histograms, pool
        saturation, coverage, which tasks outlived their request."""
        lines = []
        if self.by_name:
            lines.append("  where span time went, by name:")
            totals = {name: tally.totals() for name, tally in list(self.by_name.items())}
            ranked = sorted(totals.items(), key=lambda kv: kv[1][1], reverse=True)
            for name, (count, wall, run, sched, io, ex) in ranked[:5]:
                lines.append(f"    {count}× " + breakdown_line(name, wall, run, sched, io, ex, None))
        ready = self.ready_delay()
        if ready.count:
            worst = self._worst_sched
            who = f" (task {worst[1]!r})" if worst[0] and worst[0] >= ready.max else ""
            lines.append("  ready→run delay: " + _hist_line(ready) + who)
        timers = self.timer_lateness()
        if timers.count:
            lines.append("  timer lateness:  " + _hist_line(timers))
        if self.jobs:
            lines.append(
                f"  executor: queue wait p50 {format_ns(self.job_queue.percentile(50))}"
                f" p99 {format_ns(self.job_queue.percentile(99))}; busiest pool {self._busiest()}"
            )
        if not lines and not self.tasks_tracked:
            return []
        coverage = f"  coverage: {self.tasks_tracked} tasks tracked"
        if self.tasks_unrecorded:
            coverage += f", {self.tasks_unrecorded} quick ones counted without a record"
        if self.tasks_not_covered:
            coverage += f", {self.tasks_not_covered} not covered (created before the session)"
        if self.coroutines_not_covered:
            coverage += f", {self.coroutines_not_covered} non-coroutine tasks not covered"
        lines.append(coverage)
        if self.outlived_count:
            sample = ", ".join(f"{t!r} outlived {s!r} by {format_ns(ns)}" for t, s, ns in self.outlived[:3])
            lines.append(f"  outlived their request: {sample}")
        if self.workers_count:
            sample = ", ".join(f"{t!r} (from {s!r})" for t, s in self.workers[:3])
            lines.append(f"  long-lived workers that inherited a request context: {sample}")
        return lines

    def _busiest(self) -> str:
        with self._lock:
            entries = list(self._busy.values())
        if not entries:
            return "-"
        busy, peak, workers = max(entries, key=lambda e: e[1])
        return f"{peak}/{workers} workers busy at once" if workers else f"{peak} workers busy at once"


def creation_chain_of_state(st: TaskState) -> list[str]:
    task = st.task_ref() if st.task_ref is not None else None
    lines = creation_chain(task) if task is not None else []
    parent = st.parent() if st.parent is not None else None
    parent_task = parent.task_ref() if parent is not None and parent.task_ref is not None else None
    if parent_task is not None and not parent_task.done():
        stack = task_stack(parent_task)
        if stack:
            lines.append(f"task {parent_task.get_name()!r} awaiting:")
            lines.extend("  " + frame for frame in stack)
    return lines


def breakdown_line(name: str, wall: int, run: int, sched: int, io: int, ex: int, steps: int | None) -> str:
    """``GET /search 412 ms = 38 ms CPU + 301 ms starved by the loop + 73 ms I/O``."""
    text = f"{name} {format_ns(wall)} = {format_ns(run)} CPU + {format_ns(sched)} starved by the loop"
    text += f" + {format_ns(io)} I/O"
    if ex:
        text += f" + {format_ns(ex)} executor"
    if steps is not None:
        text += f" ({steps} slivers)"
    return text


def _hist_line(hist: Histogram) -> str:
    return (
        f"n={hist.count} p50 {format_ns(hist.percentile(50))} p90 {format_ns(hist.percentile(90))}"
        f" p99 {format_ns(hist.percentile(99))} max {format_ns(hist.max)}"
    )
