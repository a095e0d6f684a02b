"""The pending tasks of a loop, read cheaply.

``asyncio.all_tasks(loop)`` walks asyncio's task registry (a ``WeakSet``) through
its iteration guard and builds a set: about 2 µs with a handful of tasks. The
handle registry and the pytest plugin ask several times per test, so this reads
the registry's own set of weak references directly (about 0.35 µs), falling back
to ``asyncio.all_tasks`` where the registry is not where it is expected.

From 3.14 the C tasks (``_asyncio.Task``, the default) are kept in per-thread
lists inside ``_asyncio``; ``asyncio.tasks._scheduled_tasks`` holds only the
pure-Python tasks. There only ``asyncio.all_tasks(loop)`` sees the C tasks (of
every thread: it stops the world to read each thread's list), so it is asked,
and the pure-Python registry is read beside it (the C ``all_tasks`` misses those).
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import sys
from typing import Any

__all__ = ["pending_tasks"]

_registry: Any = getattr(asyncio.tasks, "_scheduled_tasks", None)  # 3.12+
if _registry is None:
    _registry = getattr(asyncio.tasks, "_all_tasks", None)  # 3.10, 3.11
_weak_refs: Any = getattr(_registry, "data", None)  # the WeakSet's set of weak references
_eager: Any = getattr(asyncio.tasks, "_eager_tasks", None)  # 3.12+: tasks in their first, eager step
#: 3.14+ with the C tasks: the registry above lists only the pure-Python ones.
_PER_THREAD_TASKS = sys.version_info >= (3, 14) and asyncio.Task is not getattr(asyncio.tasks, "_PyTask", None)


def pending_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The tasks of ``loop`` not done yet (``asyncio.all_tasks(loop)``, as a list)."""
    if _weak_refs is None:
        return _all_tasks_retrying(loop)
    if _PER_THREAD_TASKS:
        tasks = _all_tasks_retrying(loop)
        if _weak_refs or _eager:
            known = set(tasks)
            tasks.extend(task for task in _registered(loop) if task not in known)
        return tasks
    return _registered(loop)


def _registered(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The pending tasks of ``loop`` in ``asyncio.tasks``'s own registry."""
    for _ in range(100):
        try:  # a weak reference's callback (a task collected meanwhile) may change the set
            refs = list(_weak_refs)
            eager = list(_eager) if _eager else ()
            break
        except RuntimeError:
            continue
    else:
        return []
    tasks = []
    for ref in refs:
        task = ref()
        if task is not None and task._loop is loop and not task.done():
            tasks.append(task)
    for task in eager:
        if task._loop is loop and not task.done() and task not in tasks:
            tasks.append(task)
    return tasks


def _all_tasks_retrying(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    for _ in range(100):  # the task set may change size while another thread iterates it
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
    return []
