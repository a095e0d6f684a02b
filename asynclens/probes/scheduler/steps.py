"""Task step accounting: the timeline of every task, one step ("sliver") at a time.

A task's life on its loop is a chain of contiguous intervals::

    created ─ready─▶ run ─▶ waiting (I/O or executor) ─▶ ready (sched wait) ─▶ run ─▶ …

* *run*: one of its steps is executing: the wake-up callback the loop runs for it
  (its ``__step`` or ``__wakeup``), timed by :class:`StepCall`, which the
  call_soon hooks schedule in its place; an eager task's first step runs inside
  ``create_task`` and is timed there;
* *waiting*: suspended and nothing has woken it; the part of it covered by a
  thread-pool job the task submitted is *executor*, the rest *I/O*;
* *sched wait*: woken (its wake-up callback was scheduled, or the timer it slept
  on was due) but another callback held the loop.

Because the intervals are contiguous, any window of a task's life (a span)
splits exactly into ``run + sched + io + executor``: :meth:`TaskState.totals_at`
gives running totals at any instant inside a step, and a span's breakdown is the
difference of two of them. Wake-up ("ready") times come from
:class:`LoopState`'s per-instance ``call_soon`` wrapper (it sees the task as the
``__self__`` of the wake-up callback, on stdlib loops and uvloop alike) and from
timers: a wake-up scheduled while a timer callback runs was due when the timer
was due, not when the late loop got to it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ...records import TaskStep
from ...stats import Histogram
from .._attrs import remove_instance_attr
from .stepcall import FOLD_EVERY, HIST_BUCKETS, LoopFields, PyTaskFields, StepCall, TaskFields, state_of_done

__all__ = [
    "ATTR", "NO_HELD", "NO_X", "LoopState", "StepCall", "TaskState", "state_of_done", "take_all", "task_state_of",
]  # fmt: skip

#: Attribute under which a tracked task (and a watched loop) carries its state.
ATTR = "_asynclens_sched"
_Task = asyncio.Task
#: Steps and timer callbacks at least this long are kept as parts a stall is cut along.
PART_NS = 1_000_000
MAX_PARTS = 4096
NO_X = (0, 0, 0, 0, 0)
NO_HELD: tuple[int, Any] = (0, None)


class LoopState(LoopFields):
    """Per-loop scheduler state: histograms, the running step, the ready-time hooks.

    ``install()`` shadows ``call_soon``, ``call_later`` and ``call_at`` with
    instance attributes (cheaper than class patches and the only way to see
    uvloop's wake-ups); ``remove()`` deletes exactly those attributes again.
    """

    __slots__ = (
        "__weakref__",
        "_installed",
        "_ready_hist",
        "_window_ns",
        "emit",
        "loop_id",
        "parts",
        "parts_dropped",
        "steps_before",
        "thread_cpu",
        "timer_lateness",
        "window_start",
    )

    def __init__(self, probe: Any, loop: Any, now: Callable[[], int], cpu: Callable[[], int] | None) -> None:
        self.probe = probe
        self.loop_id = id(loop)
        self.now = now
        self.cpu = cpu
        self.active = True
        self.origin = 0  # due time of the timer whose callback is running, else 0
        self.running: TaskState | None = None
        self._ready_hist = Histogram()
        self.delays: list[int] = []  # ready->run delays not yet folded into the histogram
        self.timer_lateness = Histogram()
        self.window_start = now()
        self._window_ns = 1_000_000_000
        self.window_due = self.window_start + self._window_ns  # steps from then on close the window
        self.steps_before = 0  # steps of the windows already taken
        self.tasks = 0
        self.window_tasks = 0
        self.step_budget = 0  # TaskStep records still allowed
        self.emit: Callable[[Any], None] = probe.emit if probe is not None else (lambda record: None)
        self._installed: dict[str, Any] = {}
        self.creating: TaskState | None = None  # the task create_task() is making, until it returns
        self.creating_coro: Any = None
        self.book: Any = None  # the compiled TaskMaker that counts this loop's quiet finished tasks
        self.waker: TaskState | None = None  # the finished task whose done callback runs now
        self.timer_owner: TaskState | None = None  # the task that set the zero-delay timer running now
        self.unexplained = 0  # waits on a task that had run before the wait began
        # Steps and timer callbacks that ran at least part_ns: (start, end, TaskState or None,
        # timer callback or None, the thread's CPU clock at the end when the watchdog sampled
        # the step), for the lag watchdog to cut a stall along (take_parts).
        self.part_ns = PART_NS
        self.parts: list[tuple[int, int, Any, Any, int | None]] = []
        self.thread_cpu: Callable[[], int] | None = None  # the loop thread's CPU clock (the probe's)
        self.parts_dropped = 0

    def adopt(self, task: Any) -> TaskState | None:
        """The state of ``task`` if it is the one ``create_task`` is making now (its
        first step is being scheduled from ``Task.__init__``), bound to it."""
        st = self.creating
        if st is None or st.task_ref is not None or task.get_coro() is not self.creating_coro:
            return None
        st.bind(task)
        return st

    def add_part(self, start: int, end: int, st: Any, callback: Any, cpu_end: int | None = None) -> None:
        """A step (``st``) or timer callback ran ``[start, end]``, at least :attr:`part_ns`."""
        parts = self.parts
        if len(parts) >= MAX_PARTS:  # nobody takes them (no lag probe): keep the recent half
            with _take_lock:
                dropped = len(parts) // 2
                del parts[:dropped]
            self.parts_dropped += dropped
        parts.append((start, end, st, callback, cpu_end))

    def take_parts(self, until_ns: int) -> list[tuple[int, int, Any, Any, int | None]]:
        """Remove and return the parts that ended by ``until_ns``, oldest first."""
        with _take_lock:
            parts = self.parts
            n = 0
            while n < len(parts) and parts[n][1] <= until_ns:
                n += 1
            taken = parts[:n]
            del parts[:n]
        return taken

    # ---------------------------------------------------------------- hooks

    def install(self, loop: Any) -> None:
        from .hooks import _is_stdlib_call_soon, _make_call_at, _make_call_later, make_call_soon

        if self._installed:
            return
        cls = type(loop)
        # Stdlib loops: hook the private ``_call_soon(callback, args, context)`` that
        # ``call_soon`` ends in: no argument repacking (~0.15 µs less per callback).
        soon = "_call_soon" if _is_stdlib_call_soon(cls) else "call_soon"
        originals = {name: getattr(loop, name) for name in (soon, "call_later", "call_at")}
        hooks = {
            "call_later": _make_call_later(self, originals["call_later"]),
            "call_at": _make_call_at(self, originals["call_at"], loop.time),
        }
        hooks[soon] = make_call_soon(self, originals[soon], private=soon == "_call_soon")
        for name, hook in hooks.items():
            setattr(loop, name, hook)
        self._installed = hooks

    def remove(self, loop: Any) -> None:
        self.active = False
        for name, hook in self._installed.items():
            remove_instance_attr(loop, name, hook)
        self._installed = {}

    # ------------------------------------------------------------ windows

    @property
    def window_ns(self) -> int:
        """Length of a window: the first step after it closes the window."""
        return self._window_ns

    @window_ns.setter
    def window_ns(self, ns: int) -> None:
        self._window_ns = ns
        self.window_due = self.window_start + ns

    @property
    def steps(self) -> int:
        """Steps taken on this loop (every step records one ready->run delay)."""
        return self.steps_before + self._ready_hist.count + len(self.delays)

    @property
    def ready_delay(self) -> Histogram:
        """Ready->run delays of the current window (every step's, folded in)."""
        self.fold()
        return self._ready_hist

    def fold(self) -> None:
        """Fold the delays collected by steps into the window's histogram (steps only
        append to a list: a histogram ``record`` per step costs ~0.3 µs)."""
        taken = take_all(self.delays)
        if taken:
            self._ready_hist.record_many(taken)

    def window(self, end_ns: int) -> tuple[Histogram, Histogram, int, int]:
        """Take the current window's histograms and counters and start a new window."""
        ready, timers = self.ready_delay, self.timer_lateness
        self._ready_hist = Histogram()
        self.timer_lateness = Histogram()
        steps, tasks = ready.count, self.window_tasks
        self.steps_before += steps
        self.window_tasks = 0
        self.window_start = end_ns
        self.window_due = end_ns + self._window_ns
        return ready, timers, steps, tasks


_PY_FIELDS = TaskFields is PyTaskFields
_take_lock = threading.RLock()  # re-entrant: a gc callback or finalizer may run inside


def take_all(items: list[Any]) -> list[Any]:
    """Remove and return what ``items`` holds, while its owner thread may append to it
    and a reader on another thread may take too: each item is taken exactly once."""
    with _take_lock:
        n = len(items)
        taken = items[:n]
        del items[:n]
    return taken


class TaskState(TaskFields):
    """Running totals of one task's timeline (ns on the session clock)."""

    __slots__ = ("__weakref__",)

    def __init__(self, ls: LoopState, created_ns: int) -> None:
        self.ls = ls
        self.task_ref: Any = None
        self.created_ns = created_ns
        self.ready_ns = created_ns  # a new task is ready at once (its first step is scheduled)
        self.start_ns = 0  # start of the running step, 0 while suspended
        self.last_end_ns = 0
        self.run_ns = 0
        self.sched_ns = 0
        self.io_ns = 0
        self.exec_ns = 0
        self.steps = 0
        self.cpu_ns = 0
        self.cpu_start = 0
        # Longest ready->run wait since the innermost open span started (since the task
        # started when none is open); the longest before that is in max_sched_earlier.
        self.max_sched_ns = 0
        self.max_sched_earlier = 0
        self.nested_ns = 0  # eager child steps run inside the current step
        self.step_ready = 0
        self.outer: TaskState | None = None
        self.parent: Any = None  # weakref to the creating task's TaskState
        self.parent_task_id: int | None = None
        self.span: Any = None  # the LiveSpan current when the task was created
        self.site: Any = None  # (code, lineno) of the line that created it
        self.jobs: list[Any] | None = None  # executor jobs submitted while running
        self.done = False
        self.first_ns = 0  # start of the first step
        self.blocked_ns = 0  # of run_ns: off-CPU inside steps (blocked in a synchronous call)
        # (start of the running step, its off-CPU fraction): the lag watchdog's estimate while
        # it samples a long step, taken into blocked_ns when the step ends
        self.offcpu: tuple[int, float | None] | None = None
        # Critical path = own totals + x, (cpu, blocked, sched, io, executor) summing to 0: the
        # waits other tasks explained. A new tuple per explanation, so a span compares identity.
        self.x: tuple[int, int, int, int, int] = NO_X
        self.held: tuple[int, str | None] = NO_HELD  # the longest explained wait, and who ended it
        self.call: StepCall | None = None  # reused for the next wake-up once it has run
        self.name: str | None = None  # the task's name, kept from its first long step (stalls name it)
        self.wakes = 0  # wake-ups stamped ready; self_wakes: of those, scheduled by the task itself
        self.self_wakes = 0
        self.slow_steps = 0
        if _PY_FIELDS:  # the C type keeps them as arrays
            self.step_hist = [0] * HIST_BUCKETS
            self.wait_hist = [0] * HIST_BUCKETS

    # ----------------------------------------------------------- the steps

    def begin(self, t: int) -> None:
        """A step starts at ``t``."""
        ls = self.ls
        ready = self.ready_ns
        self.ready_ns = 0
        last = self.last_end_ns
        floor = last if last else self.created_ns
        if not ready or ready > t:
            ready = t  # woken by nothing we saw: count the whole gap as waiting
        elif ready < floor:
            ready = floor
        delay = t - ready
        if not last:
            self.first_ns = t
        if last:
            waited = ready - last
            if self.jobs:
                in_pool = self._executor_overlap(last, ready)
                self.exec_ns += in_pool
                waited -= in_pool
            self.io_ns += waited
        self.step_ready = ready
        self.sched_ns += delay
        self.max_sched_ns = max(self.max_sched_ns, delay)
        delays = ls.delays
        delays.append(delay)
        if len(delays) >= FOLD_EVERY:
            ls.fold()
        if t >= ls.window_due:
            ls.probe._snapshot(ls, t)
        outer = ls.running
        self.outer = outer
        ls.running = self
        self.start_ns = t
        if ls.cpu is not None:
            self.cpu_start = ls.cpu()

    def end(self, t: int) -> None:
        """The step that began last ends at ``t``."""
        ls = self.ls
        start = self.start_ns
        elapsed = t - start
        if elapsed >= ls.part_ns:
            self.long_step_ended(start, t)
        self.count_step(elapsed, start - self.step_ready)
        nested = self.nested_ns
        if nested:  # eager child steps ran inside this one: the task waited meanwhile
            self.run_ns += elapsed - nested
            self.sched_ns += nested
            self.nested_ns = 0
        else:
            self.run_ns += elapsed
        self.steps += 1
        self.start_ns = 0
        self.last_end_ns = t
        cpu = None
        if ls.cpu is not None:
            cpu = ls.cpu() - self.cpu_start
            self.cpu_ns += cpu
        outer = self.outer
        ls.running = outer
        if outer is not None:  # an eager first step ran inside the outer task's step
            outer.nested_ns += elapsed
            self.outer = None
        if ls.step_budget > 0:
            ls.step_budget -= 1
            span = self.span
            task = self.task_ref() if self.task_ref is not None else None
            ls.emit(
                TaskStep(
                    id(task) if task is not None else 0,
                    self.step_ready,
                    start,
                    t,
                    cpu,
                    span.span_id if span is not None else None,
                )
            )

    def describe(self) -> str:
        """``"Task-7 (fetch_user)"``: the task's name and its coroutine's."""
        task = self.task_ref() if self.task_ref is not None else None
        if task is None:
            return "<gone>"
        coro = task.get_coro()
        return f"{task.get_name()} ({getattr(coro, '__qualname__', None) or type(coro).__name__})"

    def step_call(self, callback: Any, task: Any) -> StepCall:
        """``callback`` (a wake-up of ``task``) as the timed :class:`StepCall` to schedule:
        the task's own one when free (no allocation per wake-up), else a new one."""
        call = self.call
        if call is None or call.st is not None:  # first wake-up, or the last one has not run yet
            call = StepCall()
            if self.call is None:
                self.call = call
        call.callback = callback
        call.st = self
        call.task = task
        return call

    def tentative_begin(self, t: int) -> None:
        """An eager first step may start at ``t`` (inside ``create_task``): run as this
        task until :meth:`settle_tentative` says whether it did."""
        ls = self.ls
        self.outer = ls.running
        ls.running = self
        self.start_ns = t
        self.step_ready = t
        self.first_ns = t
        self.ready_ns = 0  # a wake-up the step schedules (sleep(0)) is stamped by the hook
        if ls.cpu is not None:
            self.cpu_start = ls.cpu()

    def settle_tentative(self, t: int, ran: bool) -> None:
        """``create_task`` returned at ``t``: count the eager step if the coroutine ran,
        else undo :meth:`tentative_begin` (the first step was only scheduled)."""
        if ran:
            self.ls.delays.append(0)
            self.end(t)
        else:
            self.ls.running = self.outer
            self.outer = None
            self.start_ns = 0
            self.first_ns = 0
            if not self.ready_ns:
                self.ready_ns = self.created_ns

    def bind(self, task: Any) -> None:
        """Attach this state to ``task`` (once), where the hooks and probes find it."""
        self.task_ref = weakref.ref(task)
        setattr(task, ATTR, self)

    def longest_sched_ns(self) -> int:
        """The longest single ready->run wait of the task's life so far."""
        return max(self.max_sched_ns, self.max_sched_earlier)

    def _executor_overlap(self, begin: int, end: int) -> int:
        """How much of ``[begin, end]`` the task's pool jobs covered (their union)."""
        jobs = self.jobs or []
        covered = 0
        cursor = begin
        keep = []
        for job in sorted(jobs, key=lambda j: j.submit_ns):
            job_end = job.end_ns
            if not job_end:
                keep.append(job)
                job_end = end
            lo = max(cursor, job.submit_ns)
            hi = min(end, job_end)
            if hi > lo:
                covered += hi - lo
                cursor = hi
        self.jobs = keep or None
        return covered

    def totals_at(self, t: int) -> tuple[int, int, int, int, int]:
        """``(run, sched, io, executor, steps)`` accumulated up to ``t``, an instant
        inside the running step (or after the last step when suspended)."""
        run = self.run_ns
        sched = self.sched_ns
        if self.start_ns:
            nested = self.nested_ns
            run += t - self.start_ns - nested
            sched += nested
        return run, sched, self.io_ns, self.exec_ns, self.steps

    def long_step_ended(self, start: int, end: int) -> None:
        """A step of at least ``part_ns`` ended: a part for the watchdog, and the off-CPU
        share the watchdog measured while sampling it (if it did) into ``blocked_ns``."""
        off = self.offcpu
        cpu_end = None
        if off is not None:
            self.offcpu = None
            if off[0] == start:  # the watchdog sampled this step
                if off[1]:
                    self.blocked_ns += int((end - start) * off[1])
                clock = self.ls.thread_cpu
                cpu_end = clock() if clock is not None else None
        if self.name is None:  # the task may be gone by the time its stall is reported
            task = self.task_ref() if self.task_ref is not None else None
            self.name = task.get_name() if task is not None else None
        self.ls.add_part(start, end, self, None, cpu_end)

    def blocked_at(self, t: int) -> int:
        """Off-CPU time inside steps up to ``t``: :attr:`blocked_ns`, and the running
        step's share so far when the watchdog is sampling it."""
        off = self.offcpu
        start = self.start_ns
        if off is not None and off[1] and start and off[0] == start and t > start:
            return self.blocked_ns + int((t - start) * off[1])
        return self.blocked_ns

    def critical_at(self, t: int) -> tuple[int, int, int, int, int]:
        """``(cpu, blocked, sched, io, executor)`` along the task's critical path up to
        ``t``, an instant inside its running step or after it finished (its done
        callbacks waiting to run count as waiting for the loop)."""
        run, sched, io, ex, _ = self.totals_at(t)
        if self.done and not self.start_ns and t > self.last_end_ns:
            sched += t - self.last_end_ns
        blocked = self.blocked_at(t)
        xcpu, xblocked, xsched, xio, xexec = self.x
        return (run - blocked + xcpu, blocked + xblocked, sched + xsched, io + xio, ex + xexec)


def task_state_of(task: Any) -> TaskState | None:
    """The scheduler's state of ``task``, if the probe saw it created (an eager task
    still inside ``create_task``, running its first step, included)."""
    st = getattr(task, ATTR, None)
    if st is None:
        get_loop = getattr(task, "get_loop", None)
        ls = getattr(get_loop(), ATTR, None) if get_loop is not None else None
        st = ls.adopt(task) if type(ls) is LoopState else None
    return st if type(st) is TaskState else None
