"""Describing a task left pending: its creation site and span, and where it waits."""

from __future__ import annotations

import asyncio
from typing import Any

from ...records import Leak
from ..scheduler.steps import task_state_of
from .registry import KINDS, TASK
from .sites import code_location, site_of, stack_of

__all__ = ["task_leak"]


def task_leak(session_start_ns: int, task: asyncio.Task[Any], note: str) -> Leak:
    """A :class:`Leak` for a pending ``task``: where it was created (and in which span)
    when the scheduler probe saw that, else where it waits now."""
    coro: Any = task.get_coro()
    chain: list[Any] = []  # outermost first
    while coro is not None and len(chain) < 80:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        chain.append((frame.f_code, frame.f_lasti))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    pairs: list[Any] = []
    for code, line in reversed(chain):
        pairs.append(code)
        pairs.append(line)
    # The scheduler probe saw the task being created: where, when and in which span.
    created = task_state_of(task)
    span = getattr(created, "span", None)
    if span is None:
        get_context = getattr(task, "get_context", None)  # Python 3.12+
        if get_context is not None:
            from ..._state.context import current_span

            span = get_context().get(current_span)
    creation = getattr(created, "site", None)
    if creation is not None:
        site: str | None = code_location(*creation)
        stack: tuple[str, ...] = (site,) if site is not None else ()
        waiting = f", waiting at {site_of(pairs)}" if pairs else ""
    else:  # only where it waits now is known
        site, stack, waiting = site_of(pairs), stack_of(pairs), ""
    qualname = getattr(task.get_coro(), "__qualname__", type(task.get_coro()).__name__)
    return Leak(
        handle_id=id(task),
        handle_kind=KINDS[TASK],
        description=f"task {task.get_name()!r} ({qualname}) {note}{waiting}",
        open_ns=getattr(created, "created_ns", None) or session_start_ns,
        site=site,
        stack=stack,
        trace_id=span.trace_id if span is not None else None,
        span_id=span.span_id if span is not None else None,
        span_name=span.name if span is not None else None,
    )
