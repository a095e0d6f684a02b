"""Where a test's tasks and executors were created: noted cheaply, read only for leaks.

The plugin's sessions usually run without the scheduler probe (the costliest),
which is what names a task's creation line and span. So, while the plugin
records, a patch on ``create_task`` notes on each task the calling frames
(``(code, offset)`` pairs, formatted only if the task leaks), the span current
then and the session clock; a patch on ``ThreadPoolExecutor.__init__`` notes
when an executor was made (to tell a fixture's or a loop's executor from the
test's); and ``asyncio.runners._cancel_all_tasks`` (what ``asyncio.run()`` and
``asyncio.Runner`` call at the end) tells the plugin which tasks a loop is
about to cancel, while they are still alive to be described.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import concurrent.futures
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from .._paths import PACKAGE_DIR
from .._state import context as _context
from ..probes._patch import Patch
from ..probes.handles.sites import capture, site_of, stack_of
from ..probes.handles.task_leaks import task_leak
from ..records import Leak

__all__ = ["ORIGIN", "Origins", "created_ns_of", "is_cancelling", "task_leak_of"]

ORIGIN = "_asynclens_origin"
EXECUTOR_BORN = "_asynclens_created_ns"
_WAITING = ", waiting at "


def _now() -> int | None:
    session = _context.active
    return session.now() if session is not None else None


_CALLBACK_CODE = asyncio.events.Handle._run.__code__


def _create_task(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    task = wrapped(*args, **kwargs)
    try:
        frames = capture(2)
        if frames is not None:
            # made by a loop callback (a server's connection handler): the frames beyond
            # the callback are whoever runs the loop, not the task's maker
            for i in range(0, len(frames), 2):
                if frames[i] is _CALLBACK_CODE:
                    del frames[i:]
                    break
            setattr(task, ORIGIN, (frames, _context.current_span.get(), _now()))
    except Exception:  # noqa: BLE001, S110 - a task type without attributes is simply not noted
        pass
    return task


def _executor_init(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    wrapped(*args, **kwargs)
    try:
        setattr(instance, EXECUTOR_BORN, _now())
    except Exception:  # noqa: BLE001, S110 - an executor type without attributes is not noted
        pass


class Origins:
    """The patches above, installed for the plugin's whole run once a test is recorded."""

    def __init__(self) -> None:
        self.patches: list[Patch] = []
        self.uvloop = False
        #: called with a loop whose leftover tasks ``asyncio.run()`` is about to cancel
        self.on_abandoned: Callable[[asyncio.AbstractEventLoop], None] | None = None

    def install(self) -> None:
        if not self.patches:
            self.patches = [
                Patch(asyncio.BaseEventLoop, "create_task", _create_task),
                Patch(concurrent.futures.ThreadPoolExecutor, "__init__", _executor_init),
                Patch(asyncio.runners, "_cancel_all_tasks", self._cancel_all_tasks),
            ]
            for patch in self.patches:
                patch.install()
        uvloop = sys.modules.get("uvloop")
        if not self.uvloop and uvloop is not None and isinstance(getattr(uvloop, "Loop", None), type):
            patch = Patch(uvloop.Loop, "create_task", _create_task)
            patch.install()
            self.patches.append(patch)
            self.uvloop = True

    def remove(self) -> None:
        for patch in reversed(self.patches):
            patch.remove()
        self.patches = []
        self.uvloop = False
        self.on_abandoned = None

    def _cancel_all_tasks(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        callback = self.on_abandoned
        if callback is not None and args:
            try:
                callback(args[0])
            except Exception:  # noqa: BLE001, S110 - the window counts its own errors; never fail asyncio.run()
                pass
        return wrapped(*args, **kwargs)


def created_ns_of(obj: Any) -> int | None:
    """When the plugin saw ``obj`` (a task or an executor) created, on the session clock."""
    origin = getattr(obj, ORIGIN, None)
    if origin is not None:
        return origin[2]  # type: ignore[no-any-return]
    born = getattr(obj, EXECUTOR_BORN, None)
    return born if isinstance(born, int) else None


def task_leak_of(task: asyncio.Task[Any], session_start_ns: int, note: str) -> Leak:
    """The handle probe's :class:`Leak` for ``task``, named by where it was created (and
    in which span) from what :func:`_create_task` noted when the scheduler probe did not
    see it; where it waits now goes to the description, as the scheduler's leaks have it."""
    leak = task_leak(session_start_ns, task, note)
    origin = getattr(task, ORIGIN, None)
    if origin is None or _WAITING in leak.description:
        return leak
    frames, span, created_ns = origin
    own = 0  # the patches' own frames (ours, the scheduler's) lead the list
    while own < len(frames) and frames[own].co_filename.startswith(PACKAGE_DIR):
        own += 2
    frames = frames[own:]
    site = site_of(frames)
    if site is None:
        return leak
    return dataclasses.replace(
        leak,
        description=f"{leak.description}{_WAITING}{leak.site}" if leak.site else leak.description,
        site=site,
        stack=stack_of(frames),
        open_ns=created_ns if created_ns is not None else leak.open_ns,
        trace_id=leak.trace_id if span is None else span.trace_id,
        span_id=leak.span_id if span is None else span.span_id,
        span_name=leak.span_name if span is None else span.name,
    )


def is_cancelling(task: Any) -> bool:
    """Whether someone already asked ``task`` to stop (it ends at the loop's next step)."""
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    try:
        return bool(cancelling()) if cancelling is not None else False
    except Exception:  # noqa: BLE001 - a task-like object of another kind
        return False
