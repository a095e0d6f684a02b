"""Tasks that can never be resumed, found by reachability (not by timing).

A pending task that is not running and not scheduled waits on a future (its
``_fut_waiter``). Something must hold that future to resolve it (a callback or
handle of the loop, another task's frame, a thread, a global), or hold the task to
cancel it. When only the task's own await chain holds the future, and only the
future's callbacks hold the task, nothing can ever wake it: it will never finish.

The walk goes backwards over ``gc.get_referrers``, one level at a time for the
whole frontier (one heap traversal per level, not per object). It stops at

* an object that is part of another pending task's await chain (the task, its
  coroutines, their frames and awaited iterators): the finding then depends on
  whether that task can resume (a fixed point over all the loop's tasks);
* anything that can act by itself: an event loop (its ready queue and timers), a
  module, a thread; and any object with more references than the garbage
  collector can see (a running frame's local, a C structure such as uvloop's
  timers and libuv handles): it counts as reachable;
* a walk too deep or too wide: reachable (the rule is no false positives).

Its cost is one heap traversal per level and task, so it runs only on demand, at
session end, in ``open_handles()`` and at a pytest test's end (see docs/lints.md).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import types
import weakref
from typing import Any

from ...records import NeverResumable
from .._tasks import pending_tasks
from ..scheduler.steps import task_state_of
from .sites import code_location, line_at

__all__ = ["find_never_resumable", "never_resumable_record"]

#: Levels of referrers walked back from a future before it counts as reachable.
MAX_DEPTH = 12
#: Objects on one level of the walk before it counts as reachable.
MAX_WIDTH = 2000
#: Pending tasks of one loop analysed; with more, none is reported (the walk's cost).
MAX_TASKS = 500

_ACTORS = (types.ModuleType, asyncio.AbstractEventLoop, threading.Thread, types.FrameType)


def find_never_resumable(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The pending tasks of ``loop`` that can never be resumed, oldest first.

    The caller must not hold the loop's tasks in a container of its own while this
    runs (the walk counts references; one it cannot see counts as reachable)."""
    pending = [t for t in pending_tasks(loop) if not t.done()]
    if not pending or len(pending) > MAX_TASKS:
        return []
    owner: dict[int, int] = {}  # id of an object of a task's await chain -> id of the task
    keep: list[Any] = []  # holds the chains' objects while ids name them
    task: Any = None
    obj: Any = None
    for task in pending:
        for obj in _chain(task):
            owner.setdefault(id(obj), id(task))
            keep.append(obj)
    running = {id(t) for t in pending if _is_running(t)}
    candidates: list[tuple[weakref.ref[Any], Any]] = []
    fut: Any = None
    for task in pending:
        if id(task) in running:
            continue
        fut = getattr(task, "_fut_waiter", None)
        if fut is None or fut.done():  # scheduled: its step is in the ready queue
            continue
        try:
            candidates.append((weakref.ref(task), weakref.ref(fut)))
        except TypeError:  # a future type without weak references: cannot tell
            continue
    task = fut = obj = None  # the walk counts references: hold the candidates only weakly
    if not candidates:
        return []
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    # Some versions' C Task hides its future part (its done callbacks) from
    # gc.get_referrers (its traverse drops the visit's answer): find those by hand.
    by_task: dict[int, list[int]] = {}
    for task in pending:
        for obj in gc.get_referents(task):
            by_task.setdefault(id(obj), []).append(id(task))
    task = obj = None
    tasks_by_id = {id(t): t for t in pending}
    live: set[int] = set(running) | {id(t) for t in pending} - {id(ref()) for ref, _ in candidates}
    depends: dict[int, set[int]] = {}
    enabled = gc.isenabled()
    gc.disable()  # ids stay unique and nothing is freed while the walk runs
    try:
        for task_ref, fut_ref in candidates:
            me = id(task_ref())
            start = {me: task_ref(), id(fut_ref()): fut_ref()}
            reached, deps = _walk(start, owner, me, module_dicts, {id(pending), id(keep), id(tasks_by_id)}, by_task, tasks_by_id)
            del start
            if reached:
                live.add(me)
            else:
                depends[me] = deps
    finally:
        if enabled:
            gc.enable()
    changed = True
    while changed:
        changed = False
        for me, deps in depends.items():
            if me not in live and deps & live:
                live.add(me)
                changed = True
    del keep
    return [t for t in pending if id(t) in depends and id(t) not in live]


def _walk(
    frontier: dict[int, Any],
    owner: dict[int, int],
    me: int,
    module_dicts: set[int],
    held: set[int],
    by_task: dict[int, list[int]],
    tasks_by_id: dict[int, Any],
) -> tuple[bool, set[int]]:
    """Walk referrers back from ``frontier`` (which alone holds its objects strongly,
    besides the caller's containers ``held``, counted but not walked): ``(True, _)``
    if something that can act reaches them, else ``(False, tasks)``: the other pending
    tasks whose chains hold them."""
    deps: set[int] = set()
    seen = set(frontier)
    own = {id(seen), id(deps), id(sys._getframe())}
    r = x = None
    for _ in range(MAX_DEPTH):
        if not frontier:
            return False, deps
        args = tuple(frontier.values())
        refs = gc.get_referrers(*args)
        found = {id(r) for r in refs}
        for key in frontier:
            for tid in by_task.get(key, ()):
                if tid not in found:
                    found.add(tid)
                    refs.append(tasks_by_id[tid])
        del found
        nxt: dict[int, Any] = {}
        visible = dict.fromkeys(frontier, 0)
        skip = own | {id(frontier), id(args), id(refs), id(nxt), id(visible)}
        for r in refs:
            if id(r) in skip:
                continue
            for x in gc.get_referents(r):
                if id(x) in visible and frontier[id(x)] is x:
                    visible[id(x)] += 1
            if id(r) in held:
                continue
            holder = owner.get(id(r))
            if holder is not None:
                if holder != me:
                    deps.add(holder)
                continue
            if id(r) in module_dicts or isinstance(r, _ACTORS):
                return True, deps
            if id(r) not in seen:
                seen.add(id(r))
                nxt[id(r)] = r
        del refs, args
        r = x = None
        for key in frontier:
            if sys.getrefcount(frontier[key]) - visible[key] > _BASE:
                return True, deps  # held where the collector cannot see: running code, C
        if len(nxt) > MAX_WIDTH:
            return True, deps
        frontier = nxt
        del nxt
    return True, deps


def _count_alone() -> int:
    """References to a walked object that the walk itself holds (its frontier, and
    ``getrefcount``'s argument): the same on every level, measured once."""
    frontier: dict[int, Any] = {}
    obj = _Alone()
    frontier[id(obj)] = obj
    del obj
    for key in frontier:
        return sys.getrefcount(frontier[key])
    return 0


class _Alone:
    __slots__ = ("__weakref__",)


_BASE = _count_alone()


def _chain(task: asyncio.Task[Any]) -> list[Any]:
    """The task and its await chain: coroutines, generators, awaited iterators, frames."""
    objs: list[Any] = [task]
    coro: Any = task.get_coro()
    while coro is not None and len(objs) < 400:
        objs.append(coro)
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            objs.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
        if isinstance(coro, asyncio.Future):
            break
    return objs


def _is_running(task: asyncio.Task[Any]) -> bool:
    try:
        loop = task.get_loop()
        return asyncio.current_task(loop) is task if loop.is_running() else False
    except Exception:
        return True


def _suspended_at(task: asyncio.Task[Any]) -> str | None:
    """The innermost frame of the task's await chain as ``"file:line in function"``."""
    where = None
    coro: Any = task.get_coro()
    for _ in range(200):
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        where = code_location(frame.f_code, line_at(frame.f_code, frame.f_lasti))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return where


def never_resumable_record(task: asyncio.Task[Any], found_ns: int) -> NeverResumable:
    """The :class:`NeverResumable` record of ``task``: where it is suspended, where and in
    which span it was created (when the scheduler probe saw that)."""
    st = task_state_of(task)
    span = getattr(st, "span", None)
    if span is None:
        get_context = getattr(task, "get_context", None)  # Python 3.12+
        if get_context is not None:
            from ..._state.context import current_span

            span = get_context().get(current_span)
    site = getattr(st, "site", None)
    coro = task.get_coro()
    fut = getattr(task, "_fut_waiter", None)
    return NeverResumable(
        task_id=id(task),
        name=task.get_name(),
        found_ns=found_ns,
        coro=getattr(coro, "__qualname__", None) or type(coro).__name__,
        suspended_at=_suspended_at(task),
        waiting_on=type(fut).__qualname__ if fut is not None else "",
        created_ns=getattr(st, "created_ns", None),
        creation_site=code_location(*site) if site is not None else None,
        trace_id=getattr(span, "trace_id", None),
        span_id=getattr(span, "span_id", None),
        span_name=getattr(span, "name", None),
    )
