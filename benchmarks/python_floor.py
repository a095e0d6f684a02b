"""The least per-request work any pure-Python step probe with spans can do.

An echo-service variant (see ``echo_service.py``) for comparison with asynclens:
what the issue's step probe and per-span breakdown need at the very least, with
nothing else. No ids, no parent links, no task lookup, no accounting, no
histograms, no aggregation, no background thread, no error handling:

* a task factory wraps every task's coroutine in an object whose ``send`` reads
  the clock before and after the step (the task step probe's two time stamps);
* the loop's ``call_soon`` stamps the wake-up time on the task it wakes (when
  it became ready);
* every request runs in a wrapper coroutine that sets a context variable, reads
  the clock at start and end and appends the pair to a bounded deque (a span).

Whatever asynclens does on top of this is its features; this part no
pure-Python implementation can avoid. ``setup="python_floor:setup"``,
``wrap="python_floor:span"``.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any

__all__ = ["setup", "span"]

_current: ContextVar[Any] = ContextVar("python_floor_span", default=None)
_spans: collections.deque[tuple[int, int]] = collections.deque(maxlen=65536)


class _StampedCoro(collections.abc.Coroutine):  # type: ignore[type-arg]
    __slots__ = ("inner", "start", "end")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.start = self.end = 0

    def send(self, value: Any) -> Any:
        self.start = perf_counter_ns()
        result = self.inner.send(value)
        self.end = perf_counter_ns()
        return result

    def throw(self, *args: Any) -> Any:
        return self.inner.throw(*args)

    def close(self) -> None:
        self.inner.close()

    def __await__(self) -> Any:
        return self.inner.__await__()


def _task_factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    return asyncio.Task(_StampedCoro(coro), loop=loop, **kwargs)


@contextlib.asynccontextmanager
async def setup() -> Any:
    """Setup: the task factory and the wake-up stamp on the running loop."""
    loop = asyncio.get_running_loop()
    task_type = asyncio.Task
    name = "_call_soon" if hasattr(loop, "_call_soon") else "call_soon"
    original = getattr(loop, name)

    if name == "_call_soon":

        def stamp(callback: Any, args: Any, context: Any) -> Any:
            owner = getattr(callback, "__self__", None)
            if isinstance(owner, task_type):
                owner.ready_ns = perf_counter_ns()
            return original(callback, args, context)

    else:

        def stamp(callback: Any, *args: Any, context: Any = None) -> Any:
            owner = getattr(callback, "__self__", None)
            if isinstance(owner, task_type):
                owner.ready_ns = perf_counter_ns()
            if len(args) == 1:  # no argument dict for the common call
                return original(callback, args[0], context=context)
            return original(callback, *args, context=context)

    setattr(loop, name, stamp)
    loop.set_task_factory(_task_factory)
    try:
        yield
    finally:
        loop.set_task_factory(None)
        delattr(loop, name)


def span(handler: Any) -> Any:
    """Wrap: every request in the least a span can be (a context variable, two clock reads)."""

    async def traced(*args: Any) -> Any:
        start = perf_counter_ns()
        token = _current.set(start)
        try:
            return await handler(*args)
        finally:
            _current.reset(token)
            _spans.append((start, perf_counter_ns()))

    return traced
