"""The critical path across tasks: a task's wait that another task's work ended is
explained by that task's own critical-path time over the wait."""

from __future__ import annotations

import asyncio
from typing import Any

from .steps import ATTR, LoopState, TaskState

__all__ = ["DoneCall", "done_call", "explain_wait"]

_Task = asyncio.Task


# ---------------------------------------------------------------- critical path
# A task's wait that another task's work ended is explained by that task's own
# (critical-path) time over the wait: "waiting on my children" is never I/O. The
# waker is the task a wake-up names (``await task``), else the finished task whose
# done callback runs (gather, TaskGroup, wait, shield, as_completed), else the task
# whose step runs (a future it resolved). Each task keeps its critical-path totals
# as its own totals plus an adjustment (``x*``) that sums to zero.


def explain_wait(st: TaskState, arg: Any, ls: LoopState) -> None:
    """``st`` was just marked ready: explain its wait by its waker's time, if a task woke it."""
    waker = getattr(arg, ATTR, None) if isinstance(arg, _Task) else None
    if type(waker) is not TaskState:
        waker = ls.waker or ls.running
    if waker is None or waker is st or st.jobs:
        return
    try:
        _explain(st, waker, st.ready_ns)
    except Exception as exc:
        ls.probe.internal_error("explaining a wait", exc)


def _explain(st: TaskState, waker: TaskState, ready: int) -> None:
    begin = max(st.last_end_ns, waker.created_ns)
    if ready <= begin:
        return
    first = waker.first_ns
    if first and first < begin:  # the waker ran before the wait began: its share is unknown
        st.ls.unexplained += 1
        return
    cpu, blocked, sched, io, ex = waker.critical_at(ready)
    sched -= begin - waker.created_ns  # before ``begin`` the waker was only waiting to start
    xcpu, xblocked, xsched, xio, xexec = st.x
    st.x = (xcpu + cpu, xblocked + blocked, xsched + sched, xio + io - (ready - begin), xexec + ex)
    if ready - begin > st.held[0]:
        st.held = (ready - begin, waker.describe())


class DoneCall:
    """A finished task's done callback (it may wake the tasks waiting on the task):
    while it runs, wake-ups are explained by the finished task's time."""

    __slots__ = ("callback", "ls", "st")

    def __init__(self, callback: Any, st: TaskState, ls: LoopState) -> None:
        self.callback = callback
        self.st = st
        self.ls = ls

    def __call__(self, *args: Any) -> Any:
        ls = self.ls
        outer = ls.waker
        ls.waker = self.st
        try:
            return self.callback(*args)
        finally:
            ls.waker = outer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.callback, name)

    def __repr__(self) -> str:
        return repr(self.callback)


def done_call(callback: Any, task: Any, ls: LoopState) -> Any:
    """``callback`` wrapped as a :class:`DoneCall` when ``task`` is a tracked task that finished."""
    st = getattr(task, ATTR, None)
    if type(st) is TaskState and task.done() and type(callback) is not DoneCall:
        return DoneCall(callback, st, ls)
    return callback
