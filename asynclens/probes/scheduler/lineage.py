"""Who created a task, and what it awaits: creation chains and async stacks."""

from __future__ import annotations

from typing import Any

from .asyncstack import HAS_AWAITED_BY, awaiters, format_frame, task_stack
from .steps import TaskState, task_state_of

__all__ = ["async_stack", "creation_chain", "creation_chain_of_state"]


def _site_of(code: Any, lineno: int) -> str:
    return format_frame(code.co_filename, lineno, code.co_name)


def async_stack(task: Any) -> tuple[str, ...]:
    """A pending task's await chain, outermost first, continued into awaited tasks."""
    return task_stack(task)


def creation_chain(task: Any) -> list[str]:
    """Who created ``task``: one line per ancestor task tracked by the probe."""
    out: list[str] = []
    st = task_state_of(task)
    seen = 0
    while st is not None and seen < 16:
        seen += 1
        t = st.task_ref() if st.task_ref is not None else None
        name = t.get_name() if t is not None else "<gone>"
        where = f" at {_site_of(*st.site)}" if st.site is not None else ""
        span = f" in span {st.span.name!r}" if st.span is not None else ""
        out.append(f"task {name!r} created{where}{span}")
        st = st.parent() if st.parent is not None else None
    return out


def creation_chain_of_state(st: TaskState) -> list[str]:
    task = st.task_ref() if st.task_ref is not None else None
    lines = creation_chain(task) if task is not None else []
    parent = st.parent() if st.parent is not None else None
    parent_task = parent.task_ref() if parent is not None and parent.task_ref is not None else None
    if parent_task is not None and not parent_task.done():
        if HAS_AWAITED_BY and task is not None and any(t is parent_task for t in awaiters(task)):
            return lines  # 3.14+: it awaits this task, so its frames already head the running chain
        stack = task_stack(parent_task)
        if stack:
            lines.append(f"task {parent_task.get_name()!r} awaiting:")
            lines.extend("  " + frame for frame in stack)
    return lines
