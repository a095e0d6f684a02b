"""Carry the current context into thread-pool workers while a session is active.

``asyncio.to_thread`` copies the context, but ``loop.run_in_executor`` (and any
direct ``ThreadPoolExecutor.submit``) does not, so spans started in a worker
would lose their parent. While installed, ``ThreadPoolExecutor.submit`` runs the
job inside a copy of the submitter's context. Results and exceptions are those
of the job itself.

A probe may set :data:`job_observer`: its ``job(executor, fn)`` returns the
callable to submit instead of ``fn`` (the scheduler probe times queue wait and
run time that way).

Executors whose jobs run in another interpreter (3.14's
``concurrent.futures.InterpreterPoolExecutor``, which inherits this ``submit``)
get their jobs untouched: a subinterpreter can receive neither a ``_Job``
wrapper nor ``Context.run`` (``NotShareableError``), and a span could not cross
into it anyway.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._state import context as _context
from ..probes._patch import Patch

__all__ = ["ExecutorContext", "set_job_observer"]

#: ``job(executor, fn) -> callable`` for every submitted job, or None.
job_observer: Any = None


def set_job_observer(observer: Any) -> None:
    global job_observer
    job_observer = observer


_crosses: dict[type, bool] = {}  # executor class -> its jobs run in another interpreter


def _crosses_interpreters(executor: Any) -> bool:
    cls = type(executor)
    known = _crosses.get(cls)
    if known is None:
        # 3.14+: a worker context of its own (prepare_context overridden) is how an
        # executor says where its jobs run; InterpreterPoolExecutor's are interpreters.
        # Whether another one's runs in this interpreter can't be told: untouched is safe.
        prepare = getattr(cls, "prepare_context", None)
        base = getattr(ThreadPoolExecutor, "prepare_context", None)
        # Not imported here: it loads the subinterpreter machinery. No instance exists before it is loaded.
        module = sys.modules.get("concurrent.futures.interpreter")
        pool = getattr(module, "InterpreterPoolExecutor", None)
        known = (isinstance(pool, type) and issubclass(cls, pool)) or (
            base is not None and getattr(prepare, "__func__", prepare) is not getattr(base, "__func__", base)
        )
        if len(_crosses) < 256:
            _crosses[cls] = known
    return known


def _submit(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _context.active is None or not args:
        return wrapped(*args, **kwargs)
    try:
        crosses = type(instance) is not ThreadPoolExecutor and _crosses_interpreters(instance)
    except Exception:
        crosses = True
    if crosses:
        return wrapped(*args, **kwargs)
    fn, *rest = args
    observer = job_observer
    if observer is not None:
        try:
            fn = observer.job(instance, fn)
        except Exception:  # timing is optional; the job is not
            fn = args[0]
    if _context.current_span.get() is None:
        return wrapped(fn, *rest, **kwargs)
    return wrapped(contextvars.copy_context().run, fn, *rest, **kwargs)


class ExecutorContext:
    """The ``ThreadPoolExecutor.submit`` patch, installed for the session's lifetime."""

    def __init__(self) -> None:
        self._patch = Patch(ThreadPoolExecutor, "submit", _submit)

    def start(self) -> None:
        self._patch.install()

    def stop(self) -> None:
        self._patch.remove()
