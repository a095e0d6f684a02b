"""Carry the current context into thread-pool workers while a session is active.

``asyncio.to_thread`` copies the context, but ``loop.run_in_executor`` (and any
direct ``ThreadPoolExecutor.submit``) does not, so spans started in a worker
would lose their parent. While installed, ``ThreadPoolExecutor.submit`` runs the
job inside a copy of the submitter's context. Results and exceptions are those
of the job itself.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import _context
from ._patch import Patch

__all__ = ["ExecutorContext"]


def _submit(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _context.active is None or not args or _context.current_span.get() is None:
        return wrapped(*args, **kwargs)
    fn, *rest = args
    return wrapped(contextvars.copy_context().run, fn, *rest, **kwargs)


class ExecutorContext:
    """The ``ThreadPoolExecutor.submit`` patch, installed for the session's lifetime."""

    def __init__(self) -> None:
        self._patch = Patch(ThreadPoolExecutor, "submit", _submit)

    def start(self) -> None:
        self._patch.install()

    def stop(self) -> None:
        self._patch.remove()
