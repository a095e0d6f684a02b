"""Async stacks: a task's await chain and the chain of tasks that created it.

``task.get_stack()`` gives one frame on 3.10–3.13, so the await chain is walked
by hand: a suspended coroutine's ``cr_await`` (``gi_yieldfrom``, ``ag_await``)
leads to what it awaits, and a task blocked on another task (``_fut_waiter``)
continues into that task. The running task has no ``cr_await`` (its frames are
live), so its chain is read from the thread's frame stack instead.

From 3.14 the interpreter keeps the other direction too: every future knows the
tasks awaiting it (``_asyncio_awaited_by``, the graph ``asyncio.capture_call_graph``
reads), including a ``gather()`` or ``TaskGroup`` child's parent. There the
stacks start with the awaiting tasks' chains, outermost first, so that a child's
stack names the whole chain up to the request (``main`` <- ``handler`` <- ``child``).
The graph is only read when a stack is built (a stall, a leak, an error).
"""

from __future__ import annotations

import asyncio
import sys
from types import FrameType
from typing import Any

from ..._paths import PACKAGE_DIR

__all__ = ["HAS_AWAITED_BY", "await_chain", "awaiter_frames", "awaiters", "format_frame", "running_chain", "task_stack"]

_MAX_DEPTH = 64
_MAX_AWAITERS = 16

#: 3.14+: futures and tasks know who awaits them.
HAS_AWAITED_BY = hasattr(asyncio, "capture_call_graph")


def format_frame(filename: str, lineno: int | None, name: str) -> str:
    """``"path/to/file.py:41 in handle_search"``."""
    return f"{filename}:{lineno if lineno is not None else '?'} in {name}"


def await_chain(coro: Any) -> list[str]:
    """Frames of a suspended coroutine and everything it awaits, outermost first."""
    frames: list[str] = []
    seen: set[int] = set()
    obj = coro
    while obj is not None and len(frames) < _MAX_DEPTH and id(obj) not in seen:
        seen.add(id(obj))
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is not None:
            code = frame.f_code
            frames.append(format_frame(code.co_filename, frame.f_lineno, code.co_name))
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            nxt = getattr(obj, "ag_await", None)
        obj = nxt
    return frames


def awaiters(fut: Any, limit: int = _MAX_AWAITERS) -> list[Any]:
    """The tasks awaiting ``fut``, up the interpreter's awaited-by graph, innermost
    first (the first awaiter where there are several; plain futures between two
    tasks, e.g. ``shield()``'s, are passed through). Empty before 3.14."""
    out: list[Any] = []
    if not HAS_AWAITED_BY:
        return out
    seen = {id(fut)}
    hops = 0
    while fut is not None and len(out) < limit and hops < 4 * limit:
        hops += 1
        try:
            parents = fut._asyncio_awaited_by  # a fresh frozenset (or None): safe from another thread
        except Exception:
            break
        nxt = None
        for parent in parents or ():
            if id(parent) in seen:
                continue
            if nxt is None or (not hasattr(nxt, "get_coro") and hasattr(parent, "get_coro")):
                nxt = parent  # a task before a plain future: its frames are what the stack is for
        if nxt is None:
            break
        seen.add(id(nxt))
        if hasattr(nxt, "get_coro"):
            out.append(nxt)
        fut = nxt
    return out


def awaiter_frames(task: Any) -> list[str]:
    """The await chains of the tasks awaiting ``task`` (see :func:`awaiters`),
    outermost first: what comes before ``task``'s own frames. Empty before 3.14."""
    frames: list[str] = []
    if not HAS_AWAITED_BY:
        return frames
    for parent in reversed(awaiters(task)):
        try:
            frames.extend(await_chain(parent.get_coro()))
        except Exception:
            continue
    return frames


def task_stack(task: Any, max_tasks: int = 8) -> tuple[str, ...]:
    """The await chain of a pending task, continued into the tasks it awaits; from
    3.14 preceded by the chains of the tasks awaiting it."""
    frames: list[str] = awaiter_frames(task) if HAS_AWAITED_BY else []
    seen: set[int] = set()
    while task is not None and id(task) not in seen and len(seen) < max_tasks:
        seen.add(id(task))
        try:
            coro = task.get_coro()
        except Exception:
            break
        frames.extend(await_chain(coro))
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None and hasattr(waiter, "get_coro"):
            task = waiter
            continue
        children = getattr(waiter, "_children", None)  # gather(): follow the first pending child task
        task = None
        if children:
            for child in children:
                if hasattr(child, "get_coro") and not child.done():
                    task = child
                    break
    return tuple(frames)


def running_chain(stop_frame: FrameType | None = None, skip: int = 1) -> list[str]:
    """Frames of the calling thread, outermost first, from ``stop_frame`` (the
    running task's outermost coroutine frame; all frames when ``None``) down to the
    caller; asynclens frames skipped. From 3.14, when a task runs, preceded by the
    chains of the tasks awaiting it."""
    try:
        frame: FrameType | None = sys._getframe(skip + 1)
    except ValueError:
        return []
    out: list[str] = []
    while frame is not None and len(out) < _MAX_DEPTH:
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE_DIR):
            out.append(format_frame(code.co_filename, frame.f_lineno, code.co_name))
        if frame is stop_frame:
            break
        frame = frame.f_back
    out.reverse()
    if HAS_AWAITED_BY:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop in this thread
            task = None
        if task is not None:
            out[:0] = awaiter_frames(task)
    return out
