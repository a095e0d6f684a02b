"""The scheduler probe: where each span's time went, scheduling latency, GC, executor.

How it sees task steps (on the stdlib loops *and* uvloop):

* ``create_task`` of ``asyncio.BaseEventLoop`` and ``uvloop.Loop`` is patched at
  class level while the session is active, so every task created from then on
  (including ``asyncio.run``'s main task, created before its loop runs, and
  tasks of loops created later) gets a :class:`~.steps.TaskState`: where and in
  which span it was created, its parent. This composes with any task factory
  (eager ones included) instead of replacing it, so names, contexts and
  ``eager_start`` pass through untouched.
* Steps are timed around the wake-up callbacks the loop runs: the per-instance
  ``call_soon`` hooks (see :mod:`.steps`) schedule a :class:`~.steps.StepCall`
  in place of a tracked task's ``__step``/``__wakeup``. The task keeps its own
  coroutine, so ``get_coro()``, ``asyncio ps``/``pstree``, ``capture_call_graph``,
  profilers and debuggers see the program's frames. An eager task's first step
  runs inside ``create_task`` and is timed there. Patching ``Handle._run`` would
  see nothing on uvloop; ``sys.setprofile`` costs 15–47 µs per step here.

Not covered (and reported): tasks created before the session started, loops of
other implementations.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import weakref
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from ..._durations import format_ns
from ..._native import core
from ..._paths import PACKAGE_DIR
from ..._state.context import current_span as _span_var
from ...records import SchedSnapshot, TaskRecord, fast_constructor
from ...stats import Histogram
from ...tracing import executor as _executor
from ...tracing import spans as tracing
from .._patch import Patch
from .._threads import own_busy_ns
from .asyncstack import task_stack
from .breakdown import SpanBreakdown
from .gc import GcWatcher
from .jobs import ExecutorJobs
from .lineage import async_stack, creation_chain
from .lints import BUSY_MIN_STEPS, busy_record, is_busy, suspended_line, trim
from .steps import ATTR, NO_HELD, NO_X, LoopState, TaskState, state_of_done, task_state_of
from .tally import NameTally, breakdown_line, hist_line

__all__ = ["SchedulerProbe", "SchedulerStatistics", "async_stack", "creation_chain"]

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_make_task_record = fast_constructor(TaskRecord)
_INTERNAL_CODE: dict[Any, bool] = {}  # code object -> is it asyncio's or ours
_span_get = _span_var.get
_get_running_loop = asyncio.events._get_running_loop
_EAGER_TASKS = sys.version_info >= (3, 12)  # eager_start and eager task factories
_HANDLE_RUN = asyncio.events.Handle._run.__code__
_current_task = asyncio.current_task


class SchedulerStatistics(dict):  # type: ignore[type-arg]
    """The probe's counters (a dict, so it serialises as is)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self)


class SchedulerProbe(SpanBreakdown, ExecutorJobs):
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
        notable_per_second: of the tasks that only lived or waited long (under
            load, every one of them), at most this many records a second, and
            after that only those that lived or waited longer than every one
            recorded in that second; the rest are counted. Failed, cancelled and
            outliving tasks are always recorded.

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
        notable_per_second: int = 100,
    ) -> None:
        if isinstance(record_steps, bool) or not isinstance(record_steps, int) or record_steps < 0:
            raise ValueError(f"SchedulerProbe(record_steps={record_steps!r}): must be an int >= 0")
        if not isinstance(window, (int, float)) or window <= 0:
            raise ValueError(f"SchedulerProbe(window={window!r}): must be a positive number of seconds")
        if isinstance(notable_per_second, bool) or not isinstance(notable_per_second, int) or notable_per_second < 0:
            raise ValueError(f"SchedulerProbe(notable_per_second={notable_per_second!r}): must be an int >= 0")
        if task_records not in ("all", "notable", "none"):
            raise ValueError(f"SchedulerProbe(task_records={task_records!r}): expected 'all', 'notable' or 'none'")
        self.task_records = task_records
        self.notable_ns = int(notable * 1e9)
        self.notable_per_second = notable_per_second
        self._tasks_unrecorded = 0
        self._tasks_over_budget = 0  # of _tasks_unrecorded: notable only for their length, past the budget
        # this second's budget of long-task records: (ends at, records left, longest life, longest wait)
        self._budget: tuple[int, int, int, int] = (0, 0, 0, 0)
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
        self._tasks_tracked = 0  # by _create_task; the compiled TaskMaker counts its own
        self._maker: Any = None
        self._tasks_finished = 0
        self.tasks_not_covered = 0
        self.outlived: list[tuple[str, str, int]] = []  # (task, span, ns after span end), first few
        self.outlived_count = 0
        self.workers: list[tuple[str, str]] = []
        self.workers_count = 0
        self.internal_errors = 0
        self.by_name: dict[str, NameTally] = {}
        self._init_jobs()
        self.snapshots = 0
        self._worst_sched = (0, "")
        # busy-yield suspects: where each yielded when it crossed BUSY_MIN_STEPS (docs/lints.md)
        self._busy_lines: weakref.WeakKeyDictionary[TaskState, str | None] = weakref.WeakKeyDictionary()
        self.busy_found = 0
        self._ready_total = Histogram()
        self._timer_total = Histogram()

    # ------------------------------------------------------------ lifecycle

    def start(self, session: Any) -> None:
        self.session = session
        self.now = session.now
        self._emit = session.emit
        self.active = True
        self._patches = [Patch(asyncio.BaseEventLoop, "create_task", self._task_maker())]
        subscribe = getattr(session, "on_loop_class", None)
        if subscribe is not None:  # uvloop.Loop now or as soon as it is imported: before asyncio.run's main task
            subscribe(self._patch_class, probe=self.name)
        for patch in self._patches:
            patch.install()
        tracing.set_span_observer(self, native=self.native_breakdown())
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
        maker, self._maker = self._maker, None
        if maker is not None:  # a later start may have another clock: its counts become ours
            for field in ("tracked", "finished", "unrecorded", "over_budget"):
                setattr(self, "_tasks_" + field, getattr(self, "_tasks_" + field) + getattr(maker, field))
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
            self._unhook(loop, ls)
        for ls in self._loop_states:
            ls.active = False

    def _unhook(self, loop: Any, ls: LoopState) -> None:
        """Take this probe's state off the loop and its live tasks, so that nothing of the
        session stays reachable from the program once it ended (an attached session)."""
        if getattr(loop, ATTR, None) is ls:
            try:
                delattr(loop, ATTR)
            except AttributeError:
                pass
        try:
            tasks = list(asyncio.all_tasks(loop))
        except Exception:  # another thread changed the task sets while we copied: tasks keep their state
            return
        for task in tasks:
            state = getattr(task, ATTR, None)
            if state is not None and getattr(state, "ls", None) is ls:
                try:
                    delattr(task, ATTR)
                except AttributeError:
                    pass

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
        ls.book = self._maker  # the compiled core counts the quiet finished tasks there
        ls.window_ns = self.window_ns
        ls.thread_cpu = own_busy_ns  # runnable time, like the watchdog's readings of the thread
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
        """Cover ``create_task`` of a loop class (``Session.on_loop_class``: uvloop.Loop when
        imported, other classes when their first loop is seen)."""
        if not self.active or any(isinstance(p.owner, type) and issubclass(cls, p.owner) for p in self._patches):
            return
        if "create_task" in getattr(cls, "__dict__", {}) or hasattr(cls, "create_task"):
            patch = Patch(cls, "create_task", self._task_maker())
            try:
                patch.install()
            except Exception as exc:
                not_measured = getattr(self.session, "not_measured", None)
                if not_measured is not None:
                    not_measured(self.name, cls, f"{type(exc).__name__} patching create_task", what="task steps")
                return
            self._patches.append(patch)

    # ---------------------------------------------------------- task steps

    # The counters of tasks: the Python methods' plus, with the compiled core, TaskMaker's.
    def _count(self, field: str) -> int:
        return int(getattr(self, "_tasks_" + field)) + (getattr(self._maker, field) if self._maker is not None else 0)

    tasks_tracked = property(lambda self: self._count("tracked"), doc="Tasks tracked from their creation.")
    tasks_finished = property(lambda self: self._count("finished"), doc="Tracked tasks that finished.")
    tasks_unrecorded = property(
        lambda self: self._count("unrecorded"), doc="Finished tasks only counted: quick ones, those past the budget."
    )
    tasks_over_budget = property(
        lambda self: self._count("over_budget"), doc="Of tasks_unrecorded: notable only for their length, over budget."
    )

    def _task_maker(self) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
        """The ``create_task`` patch's wrapper: the compiled ``TaskMaker`` (the common case in
        C, the rest through :meth:`_create_task`) or :meth:`_create_task` itself."""
        if core is None:
            return self._create_task
        if self._maker is None:
            core.configure_tasks(
                _span_var, _HANDLE_RUN, (_ASYNCIO_DIR, PACKAGE_DIR), _drop_own_frames, NO_X, NO_HELD, _EAGER_TASKS,
            )  # fmt: skip
            notable = self.task_records == "notable"
            self._maker = core.TaskMaker(
                self, self._create_task, self.now, notable, self.notable_ns, self.notable_per_second
            )
        return self._maker  # type: ignore[no-any-return]

    def _create_task(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not self.active or instance is None:
            return wrapped(*args, **kwargs)
        try:
            ls = getattr(instance, ATTR, None)
            if type(ls) is not LoopState or ls.probe is not self:
                ls = self._attach(instance)
            st = TaskState(ls, self.now()) if ls is not None else None
        except Exception as exc:
            self.internal_error("tracking a task", exc)
            st = None
        if st is None or ls is None:
            return wrapped(*args, **kwargs)
        try:
            self._lineage(st, instance)
        except Exception as exc:
            self.internal_error("recording task lineage", exc)
        coro = args[0] if args else kwargs.get("coro")
        # Task.__init__ schedules the first step through call_soon, where the hook adopts
        # the task (ls.creating); an eager task runs its first step right here instead,
        # so it is timed as a step of its own for as long as create_task() runs.
        outer_creating, outer_coro = ls.creating, ls.creating_coro
        ls.creating, ls.creating_coro = st, coro
        eager = _EAGER_TASKS and (kwargs.get("eager_start") or getattr(instance, "_task_factory", None) is not None)
        if eager:
            st.tentative_begin(self.now())
        try:
            task = wrapped(*args, **kwargs)
        finally:
            ls.creating, ls.creating_coro = outer_creating, outer_coro
            if eager:
                st.settle_tentative(self.now(), _has_started(coro))
        try:
            if st.task_ref is None:
                st.bind(task)
            if task._source_traceback:  # debug mode (-X dev): "created at" names the program's line
                _drop_own_frames(task._source_traceback)
            self._tasks_tracked += 1
            ls.tasks += 1
            ls.window_tasks += 1
            if st.steps and task.done():  # finished within its eager first step
                st.done = True
                self.task_finished(st, state_of_done(task), st.last_end_ns)
        except Exception:  # a task type without __dict__/weakrefs: not tracked
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
            if code is _HANDLE_RUN:  # made by a loop callback: whoever runs the loop did not create it
                break
            hidden = internal.get(code)
            if hidden is None:
                filename = code.co_filename
                hidden = internal[code] = filename.startswith(_ASYNCIO_DIR) or filename.startswith(PACKAGE_DIR)
            if not hidden:
                st.site = (code, frame.f_lineno)
                break
            frame = frame.f_back

    # -------------------------------------------------------------- lints

    def busy_seen(self, st: TaskState) -> None:
        """The hooks: ``st``'s task scheduled its own wake-up for the
        :data:`~.lints.BUSY_MIN_STEPS`-th time, from its step (or a zero-delay timer of
        its own), which has already suspended: where it yields, kept for the finding."""
        try:
            if len(self._busy_lines) < 1000:
                self._busy_lines[st] = suspended_line(st.task_ref() if st.task_ref is not None else None)
        except Exception as exc:
            self.internal_error("noting a busy task", exc)

    def busy_finished(self, st: TaskState, t: int, state: str = "done") -> None:
        """A task that woke itself at least BUSY_MIN_STEPS times finished (or the session
        ends while it is pending): a BusyYield record when most of its wake-ups were its own."""
        try:
            line = self._busy_lines.pop(st, None)
            if is_busy(st) and self.busy_found < 1000:
                self.busy_found += 1
                task = st.task_ref() if st.task_ref is not None else None
                self._emit(busy_record(st, task, t, line, state))
        except Exception as exc:
            self.internal_error("reporting a busy task", exc)

    def task_finished(self, st: TaskState, state: str, t: int) -> None:
        """Called by the step machinery when a task finishes ``"done"``, ``"cancelled"`` or in ``"error"``."""
        if st.self_wakes >= BUSY_MIN_STEPS:
            self.busy_finished(st, t, state)
        self._tasks_finished += 1
        mode = self.task_records
        if mode == "notable":
            span = st.span
            if state == "done" and (span is None or not span.end_ns):
                life = t - st.created_ns
                wait = st.longest_sched_ns()
                if (life < self.notable_ns and wait < self.notable_ns) or not self._within_budget(t, life, wait):
                    self._tasks_unrecorded += 1
                    return
        elif mode == "none":
            self._tasks_unrecorded += 1
            return
        self._emit_task(st, state, t)

    def _within_budget(self, t: int, life: int, wait: int) -> bool:
        """Whether a task notable only for its length gets a record: within this
        second's budget, or longer-lived or longer-waiting than every one recorded."""
        until, left, longest_life, longest_wait = self._budget
        if t >= until:
            until, left, longest_life, longest_wait = t + 1_000_000_000, self.notable_per_second, 0, 0
        if left <= 0 and life <= longest_life and wait <= longest_wait:
            self._tasks_over_budget += 1
            return False
        self._budget = (until, left - 1, max(life, longest_life), max(wait, longest_wait))
        return True

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
                trim(st.step_histogram()),
                trim(st.wait_histogram()),
                st.slow_steps,
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
            if st.self_wakes >= BUSY_MIN_STEPS:
                self.busy_finished(st, end, "pending")
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
            tasks_over_budget=self.tasks_over_budget,
            tasks_not_covered=self.tasks_not_covered,
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
            totals = {name: (tally.totals(), tally.blocked) for name, tally in list(self.by_name.items())}
            ranked = sorted(totals.items(), key=lambda kv: kv[1][0][1], reverse=True)
            for name, ((count, wall, run, sched, io, ex), blocked) in ranked[:5]:
                lines.append(f"    {count}× " + breakdown_line(name, wall, run, sched, io, ex, None, blocked))
        ready = self.ready_delay()
        if ready.count:
            worst = self._worst_sched
            who = f" (task {worst[1]!r})" if worst[0] and worst[0] >= ready.max else ""
            lines.append("  ready→run delay: " + hist_line(ready) + who)
        timers = self.timer_lateness()
        if timers.count:
            lines.append("  timer lateness:  " + hist_line(timers))
        if self.jobs:
            lines.append(
                f"  executor: queue wait p50 {format_ns(self.job_queue.percentile(50))}"
                f" p99 {format_ns(self.job_queue.percentile(99))}; busiest pool {self._busiest()}"
            )
        if not lines and not self.tasks_tracked:
            return []
        coverage = f"  coverage: {self.tasks_tracked} tasks tracked"
        quick = self.tasks_unrecorded - self.tasks_over_budget
        if quick:
            coverage += f", {quick} quick ones counted without a record"
        if self.tasks_over_budget:
            coverage += (
                f", {self.tasks_over_budget} long ones past the {self.notable_per_second}-a-second"
                " record budget counted without one"
            )
        if self.tasks_not_covered:
            coverage += f", {self.tasks_not_covered} not covered (created before the session)"
        lines.append(coverage)
        if self.outlived_count:
            sample = ", ".join(f"{t!r} outlived {s!r} by {format_ns(ns)}" for t, s, ns in self.outlived[:3])
            lines.append(f"  outlived their request: {sample}")
        if self.workers_count:
            sample = ", ".join(f"{t!r} (from {s!r})" for t, s in self.workers[:3])
            lines.append(f"  long-lived workers that inherited a request context: {sample}")
        return lines


def _has_started(coro: Any) -> bool:
    """Whether ``coro`` ran (an eager first step) or finished: not just created."""
    if not hasattr(coro, "cr_frame"):  # not a native coroutine: a generator-based one, or unknown
        frame: Any = getattr(coro, "gi_frame", None)
        return frame is None or frame.f_lasti >= 0
    frame = coro.cr_frame
    return frame is None or bool(getattr(coro, "cr_suspended", frame.f_lasti >= 0))


def _drop_own_frames(stack: list[Any]) -> None:
    """Remove the innermost frames of ``stack`` (a ``_source_traceback``) that are ours."""
    while stack and stack[-1].filename.startswith(PACKAGE_DIR):
        del stack[-1]
