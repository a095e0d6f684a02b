"""Async stacks: a task's await chain and the chain of tasks that created it.

``task.get_stack()`` gives one frame on 3.10–3.13, so the await chain is walked
by hand: a suspended coroutine's ``cr_await`` (``gi_yieldfrom``, ``ag_await``)
leads to what it awaits, and a task blocked on another task (``_fut_waiter``)
continues into that task. The running task has no ``cr_await`` (its frames are
live), so its chain is read from the thread's frame stack instead.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from .._own import PACKAGE_DIR

__all__ = ["await_chain", "format_frame", "running_chain", "task_stack"]

_MAX_DEPTH = 64


def format_frame(filename: str, lineno: int | None, name: str) -> str:
    """``"path/to/file.py:41 in handle_search"``."""
    return f"{filename}:{lineno if lineno is not None else '?'} in {name}"


def _unwrap(coro: Any) -> Any:
    inner = getattr(coro, "_asynclens_inner", None)
    return coro if inner is None else inner


def await_chain(coro: Any) -> list[str]:
    """Frames of a suspended coroutine and everything it awaits, outermost first."""
    frames: list[str] = []
    seen: set[int] = set()
    obj = _unwrap(coro)
    while obj is not None and len(frames) < _MAX_DEPTH and id(obj) not in seen:
        seen.add(id(obj))
        obj = _unwrap(obj)
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


def task_stack(task: Any, max_tasks: int = 8) -> tuple[str, ...]:
    """The await chain of a pending task, continued into the tasks it awaits."""
    frames: list[str] = []
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


def running_chain(stop_code: Any = None, skip: int = 1) -> list[str]:
    """Frames of the calling thread, outermost first, from below the frame running
    ``stop_code`` (the step wrapper) down to the caller; asynclens frames skipped."""
    try:
        frame: FrameType | None = sys._getframe(skip + 1)
    except ValueError:
        return []
    out: list[str] = []
    while frame is not None and len(out) < _MAX_DEPTH:
        code = frame.f_code
        if code is stop_code:
            break
        if not code.co_filename.startswith(PACKAGE_DIR):
            out.append(format_frame(code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    out.reverse()
    return out
