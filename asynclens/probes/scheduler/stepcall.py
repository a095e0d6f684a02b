"""Timing a task step: the wrapper the loop runs in place of a tracked task's wake-up,
and the per-task and per-loop fields it touches.

It imports nothing of the step bookkeeping it drives (a ``TaskState``, duck-typed), so
that :mod:`.steps` can create it on every wake-up without a cycle. With the compiled
core (:mod:`asynclens._native`), :class:`StepCall`, :class:`TaskFields` and
:class:`LoopFields` are its C types, with the same accounting and the same fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._native import core

__all__ = ["FOLD_EVERY", "LoopFields", "StepCall", "TaskFields", "finish_task", "state_of_done"]

#: The fields of a task's state that every step and span touches (in C with the compiled core).
TASK_FIELDS = (
    "ls", "outer", "jobs", "call", "held", "offcpu", "x", "span",
    "task_ref", "parent", "parent_task_id", "site", "name",
    "created_ns", "ready_ns", "start_ns", "last_end_ns", "run_ns", "sched_ns", "io_ns", "exec_ns",
    "steps", "cpu_start", "max_sched_ns", "nested_ns", "step_ready", "first_ns", "max_sched_earlier", "blocked_ns",
    "cpu_ns", "done", "wakes", "self_wakes", "slow_steps",
)  # fmt: skip
#: The fields of a loop's state that every step and wake-up touches.
LOOP_FIELDS = (
    "now", "cpu", "delays", "probe", "running", "waker", "creating", "creating_coro", "book",
    "origin", "window_due", "step_budget", "part_ns", "tasks", "window_tasks", "unexplained", "active",
    "timer_owner",
)  # fmt: skip

#: Ready->run delays collected per loop before they are folded into its histogram.
FOLD_EVERY = 512
#: The lints' histograms (lints.py holds the same, with their meaning; C hard-codes them).
HIST_BUCKETS = 24
HIST_LAST = HIST_BUCKETS - 1
HIST_SHIFT = 10
SLOW_STEP_NS = 10_000_000
_PY_FIELDS = core is None  # the task states are PyTaskFields (their histograms are lists)


def state_of_done(task: Any) -> str:
    """``"done"``, ``"cancelled"`` or ``"error"`` for a finished task, without
    ``exception()`` (which would mark a failure as retrieved and silence asyncio's
    "exception was never retrieved")."""
    if task.cancelled():
        return "cancelled"
    return "error" if getattr(task, "_exception", None) is not None else "done"


def finish_task(st: Any, task: Any, t: int) -> None:
    """A step of ``st``'s task ended and the task is done: tell the probe."""
    try:
        st.done = True
        st.ls.probe.task_finished(st, state_of_done(task), t)
    except Exception as error:
        st.ls.probe.internal_error("finishing a task", error)


class PyTaskFields:
    """The pure-Python :class:`TaskFields`: slots (``TaskState`` sets them), and the
    lints' histograms (docs/lints.md), which the C type keeps as arrays."""

    __slots__ = (*TASK_FIELDS, "step_hist", "wait_hist")
    slow_steps: int
    step_hist: list[int]
    wait_hist: list[int]

    def count_step(self, elapsed: int, delay: int) -> None:
        """A step's time and its ready->run wait, into the lints' counters."""
        if elapsed >= SLOW_STEP_NS:
            self.slow_steps += 1
        self.step_hist[min(HIST_LAST, (elapsed >> HIST_SHIFT).bit_length()) if elapsed > 0 else 0] += 1
        self.wait_hist[min(HIST_LAST, (delay >> HIST_SHIFT).bit_length()) if delay > 0 else 0] += 1

    def step_histogram(self) -> tuple[int, ...]:
        """Step times as log2 buckets (see ``lints.HIST_BUCKETS``)."""
        return tuple(self.step_hist)

    def wait_histogram(self) -> tuple[int, ...]:
        """Ready->run waits, the same buckets."""
        return tuple(self.wait_hist)


class PyLoopFields:
    """The pure-Python :class:`LoopFields`: slots only (``LoopState`` sets them)."""

    __slots__ = LOOP_FIELDS


class PyStepCall:
    """A tracked task's wake-up as the loop runs it: the task's own callback (its
    ``__step`` or ``__wakeup``, which resumes the coroutine), timed.

    The call_soon hooks schedule this in place of the callback, so the task keeps
    its own coroutine (``get_coro()``, ``asyncio ps``, debuggers and profilers see
    the program's frames); only the loop's handle holds the wrapper. Attribute
    lookups it does not know (``__self__``, ``__qualname__``, ...) go to the
    callback, so asyncio's handle reprs and slow-callback warnings name the task.
    """

    __slots__ = ("callback", "st", "task")

    def __init__(self, callback: Any = None, st: Any = None, task: Any = None) -> None:
        self.callback = callback
        self.st = st
        self.task = task

    def __call__(self, *args: Any) -> Any:
        # The hot path of every task step: TaskState.begin and .end inlined (same
        # accounting, ~0.2 µs less per step); the tests check both agree. It lets go of
        # what it was scheduled with first, so the task can reuse it (TaskState.step_call).
        callback, st, task = self.callback, self.st, self.task
        self.callback = self.st = self.task = None
        ls = st.ls
        if not ls.active:
            return callback(*args)
        now = ls.now
        try:
            t = now()
            ready = st.ready_ns
            last = st.last_end_ns
            if not ready or ready > t:
                ready = t  # woken by nothing we saw: the whole gap was waiting
            else:
                st.ready_ns = 0
                if last:
                    ready = max(ready, last)
                elif ready < st.created_ns:
                    ready = st.created_ns
            delay = t - ready
            if last:
                if st.jobs:
                    in_pool = st._executor_overlap(last, ready)
                    st.exec_ns += in_pool
                    st.io_ns += ready - last - in_pool
                else:
                    st.io_ns += ready - last
            else:
                st.first_ns = t
            st.step_ready = ready
            st.sched_ns += delay
            st.max_sched_ns = max(st.max_sched_ns, delay)
            delays = ls.delays
            delays.append(delay)
            if len(delays) >= FOLD_EVERY:
                ls.fold()
            if t >= ls.window_due:
                ls.probe._snapshot(ls, t)
            st.outer = ls.running
            ls.running = st
            st.start_ns = t
            if ls.cpu is not None:
                st.cpu_start = ls.cpu()
        except Exception as exc:
            ls.probe.internal_error("timing a task step", exc)
        try:
            return callback(*args)
        finally:
            try:
                if ls.cpu is not None or ls.step_budget > 0:
                    st.end(now())
                else:  # TaskState.end without CPU time and TaskStep records
                    t = now()
                    elapsed = t - st.start_ns
                    if elapsed >= ls.part_ns:
                        st.long_step_ended(st.start_ns, t)
                    if _PY_FIELDS:  # st.count_step inlined (a method call per step costs ~0.3 µs)
                        if elapsed >= SLOW_STEP_NS:
                            st.slow_steps += 1
                        bucket = (elapsed >> HIST_SHIFT).bit_length()
                        st.step_hist[bucket if bucket < HIST_LAST else HIST_LAST] += 1
                        bucket = ((st.start_ns - st.step_ready) >> HIST_SHIFT).bit_length()
                        st.wait_hist[bucket if bucket < HIST_LAST else HIST_LAST] += 1
                    else:  # a compiled TaskState (the tests drive this class with both)
                        st.count_step(elapsed, st.start_ns - st.step_ready)
                    nested = st.nested_ns
                    if nested:
                        st.run_ns += elapsed - nested
                        st.sched_ns += nested
                        st.nested_ns = 0
                    else:
                        st.run_ns += elapsed
                    st.steps += 1
                    st.start_ns = 0
                    st.last_end_ns = t
                    outer = st.outer
                    ls.running = outer
                    if outer is not None:  # an eager first step ran inside the outer task's step
                        outer.nested_ns += elapsed
                        st.outer = None
                if task.done():
                    finish_task(st, task, st.last_end_ns)
            except Exception as exc:
                ls.probe.internal_error("timing a task step", exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.callback, name)

    def __repr__(self) -> str:
        return repr(self.callback)


if TYPE_CHECKING:
    TaskFields = PyTaskFields
    LoopFields = PyLoopFields
    StepCall = PyStepCall
elif core is not None:
    TaskFields, LoopFields, StepCall = core.TaskFields, core.LoopFields, core.StepCall
else:
    TaskFields, LoopFields, StepCall = PyTaskFields, PyLoopFields, PyStepCall
