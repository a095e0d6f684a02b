"""The loop hooks the scheduler probe installs per watched loop: ``call_soon`` (or the stdlib
loops' private ``_call_soon``) stamps a task's wake-up as ready and schedules its timed
:class:`~.steps.StepCall`; ``call_later``/``call_at`` wrap timer callbacks in :class:`Timed`
(they know when they were due: timer lateness, and wake-ups they schedule are ready then)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..._native import core
from .critical import done_call, explain_wait
from .stepcall import finish_task
from .lints import BUSY_MIN_STEPS
from .steps import ATTR, FOLD_EVERY, LoopState, StepCall, TaskState

__all__ = ["Timed", "make_call_soon"]

_Task = asyncio.Task
_MARKING_READY = "marking a task ready"  # the C hook's name for the same failure

if core is not None:
    core.configure(_Task, TaskState, ATTR, finish_task, FOLD_EVERY)


def make_call_soon(ls: LoopState, original: Callable[..., Any], private: bool) -> Callable[..., Any]:
    """The hook for a loop's ``call_soon`` (``private``: the stdlib loops' ``_call_soon``)."""
    if core is not None:
        hook: Callable[..., Any] = core.CallSoonHook(ls, original, private)
        return hook
    return _make_private_call_soon(ls, original) if private else _make_call_soon(ls, original)


def _to_schedule(ls: LoopState, callback: Any, arg: Any, one_arg: bool) -> Any:
    """What to schedule for ``callback`` (``arg``: its one argument, when ``one_arg``): a
    task's wake-up stamped ready and timed, a finished task's done callback, else itself."""
    try:
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, _Task) and ls.active:  # a task's wake-up (others: no attribute lookup)
            st = getattr(owner, ATTR, None)
            if st is None:  # a task inside create_task(): its first step is being scheduled
                st = ls.adopt(owner)
            if type(st) is TaskState:
                if not st.ready_ns:
                    t = ls.now()
                    origin = ls.origin
                    st.ready_ns = origin if 0 < origin < t else t
                    st.wakes += 1
                    if st is ls.running or st is ls.timer_owner:  # woken by itself (docs/lints.md)
                        st.self_wakes += 1
                        if st.self_wakes == BUSY_MIN_STEPS:
                            ls.probe.busy_seen(st)
                    if st.last_end_ns and (ls.running is not None or ls.waker is not None or one_arg):
                        explain_wait(st, arg, ls)
                if type(callback) is not StepCall:
                    callback = st.step_call(callback, owner)
        elif one_arg and isinstance(arg, _Task) and ls.active:
            callback = done_call(callback, arg, ls)
    except Exception as exc:  # the wake-up is scheduled as it came: never lost
        ls.probe.internal_error(_MARKING_READY, exc)
    return callback


def _make_call_soon(ls: LoopState, original: Callable[..., Any]) -> Callable[..., Any]:
    """``call_soon(callback, *args, context=None)`` of other loops (uvloop)."""

    def call_soon(callback: Any, *args: Any, context: Any = None) -> Any:
        if len(args) == 1:  # a task's wake-up (the future): a plain call, no argument dict
            arg = args[0]
            return original(_to_schedule(ls, callback, arg, True), arg, context=context)
        return original(_to_schedule(ls, callback, None, False), *args, context=context)

    return call_soon


def _is_stdlib_call_soon(cls: type) -> bool:
    base = asyncio.BaseEventLoop
    return (
        issubclass(cls, base)
        and getattr(cls, "call_soon", None) is base.call_soon
        and getattr(cls, "_call_soon", None) is getattr(base, "_call_soon", object())
    )


def _make_private_call_soon(ls: LoopState, original: Callable[..., Any]) -> Callable[..., Any]:
    """``_call_soon(callback, args, context)`` of the stdlib loops, which ``call_soon`` ends in."""

    def _call_soon(callback: Any, args: Any, context: Any) -> Any:
        one_arg = len(args) == 1
        return original(_to_schedule(ls, callback, args[0] if one_arg else None, one_arg), args, context)

    return _call_soon


def _make_call_later(ls: LoopState, original: Callable[..., Any]) -> Callable[..., Any]:
    now = ls.now

    def call_later(delay: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if type(callback) is not Timed and ls.active:
            try:
                callback = Timed(callback, now() + int(delay * 1e9), ls, ls.running if delay <= 0 else None)
            except Exception:  # a bad delay is the loop's to reject, with its own message
                pass
        return original(delay, callback, *args, context=context)

    return call_later


def _make_call_at(ls: LoopState, original: Callable[..., Any], loop_time: Callable[[], float]) -> Callable[..., Any]:
    now = ls.now

    def call_at(when: Any, callback: Any, *args: Any, context: Any = None) -> Any:
        if type(callback) is not Timed and ls.active:
            try:
                due = int((when - loop_time()) * 1e9)
                callback = Timed(callback, now() + due, ls, ls.running if due <= 0 else None)
            except Exception:
                pass
        return original(when, callback, *args, context=context)

    return call_at


class Timed:
    """A timer callback that knows when it was due: measures its lateness and
    makes wake-ups it schedules count as ready from the due time. A zero-delay
    timer knows the task that set it (``owner``): a wake-up of that task it
    schedules is the task's own (a zero-timeout poll, docs/lints.md)."""

    __slots__ = ("callback", "due_ns", "ls", "owner")

    def __init__(self, callback: Any, due_ns: int, ls: LoopState, owner: TaskState | None = None) -> None:
        self.callback = callback
        self.due_ns = due_ns
        self.ls = ls
        self.owner = owner

    def __call__(self, *args: Any) -> Any:
        ls = self.ls
        if not ls.active:
            return self.callback(*args)
        start = ls.now()
        ls.timer_lateness.record(max(0, start - self.due_ns))
        previous = ls.origin
        ls.origin = self.due_ns
        owner = ls.timer_owner
        ls.timer_owner = self.owner
        try:
            return self.callback(*args)
        finally:
            ls.origin = previous
            ls.timer_owner = owner
            end = ls.now()
            if end - start >= ls.part_ns:
                ls.add_part(start, end, None, self.callback)

    def __repr__(self) -> str:
        return repr(self.callback)
