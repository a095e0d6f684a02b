"""The class patches of the resources probe, all removable (``probes._patch.Patch``).

Nothing is patched on the path that does not wait. Every asyncio synchronisation object
asks ``self._get_loop()`` for its loop only when it is about to wait (to make the waiter's
future): ``_LoopBoundMixin._get_loop`` is wrapped, and when its caller is one of the known
waiting methods (``Lock.acquire``, ``Semaphore.acquire``, ``Condition.wait``, ``Event.wait``,
``Queue.get``, ``Queue.put``) it hands back a stand-in whose ``create_future`` times that
future. Any other caller gets the loop itself. ``__init__`` of each class keeps the creation
site (a code object and an offset); ``Queue.put_nowait``/``get_nowait`` count items.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from asyncio import locks, queues
from collections.abc import Callable
from types import CodeType
from typing import Any

from .._patch import Patch
from ..handles.sites import USER, _classes
from .state import ATTR, SITE_ATTR, ResourceState, user_site

__all__ = ["WAITING_CODES", "Replace", "install", "resource_classes"]

_PATCH_FILE = sys.modules[Patch.__module__].__file__


def resource_classes() -> list[type]:
    """The classes whose creation site is kept (``Barrier`` from 3.11)."""
    classes: list[type] = [locks.Lock, locks.Event, locks.Condition, locks.Semaphore, locks.BoundedSemaphore, queues.Queue]
    barrier = getattr(locks, "Barrier", None)
    if barrier is not None:
        classes.append(barrier)
    return classes


def _code(func: Any) -> CodeType:
    return inspect.unwrap(func).__code__  # type: ignore[no-any-return]


#: code object of each waiting method -> the operation it performs
WAITING_CODES: dict[CodeType, str] = {
    _code(locks.Lock.acquire): "acquire",
    _code(locks.Semaphore.acquire): "acquire",
    _code(locks.Condition.wait): "wait",
    _code(locks.Event.wait): "wait",
    _code(queues.Queue.get): "get",
    _code(queues.Queue.put): "put",
}


class _WaitingLoop:
    """What ``_get_loop()`` returns to a method about to wait: the loop, whose
    ``create_future`` also tells the probe that a wait starts."""

    __slots__ = ("_loop", "_started")

    def __init__(self, loop: Any, started: Callable[[Any], None]) -> None:
        self._loop = loop
        self._started = started

    def create_future(self) -> Any:
        future = self._loop.create_future()
        self._started(future)
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class Replace(Patch):
    """A :class:`Patch` whose replacement is a ready function (no wrapper call in between:
    the queue counters run on every ``put_nowait``/``get_nowait``)."""

    __slots__ = ("function",)

    def __init__(self, owner: type, attr: str, function: Callable[..., Any]) -> None:
        super().__init__(owner, attr, lambda original, instance, args, kwargs: None)
        self.function = functools.update_wrapper(function, owner.__dict__[attr])

    def install(self) -> None:
        if self.installed:
            return
        self._own = self.owner.__dict__[self.attr]
        setattr(self.owner, self.attr, self.function)
        self._installed = self.function


def install(probe: Any) -> list[Patch]:
    """Install the probe's patches; the caller removes them (``Patch.remove``) at ``stop``."""
    patches: list[Patch] = []
    codes = WAITING_CODES
    wait_started = probe.wait_started

    def get_loop(original: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        loop = original(*args, **kwargs)
        frame: Any = sys._getframe(1)
        if frame.f_code.co_filename == _PATCH_FILE:
            frame = frame.f_back
        operation = codes.get(frame.f_code)
        if operation is None:
            return loop
        return _WaitingLoop(loop, lambda future: wait_started(instance, operation, future, frame))

    patches.append(Patch(asyncio.mixins._LoopBoundMixin, "_get_loop", get_loop))

    created = probe.created
    new_state = probe.new_state
    queue_class = queues.Queue
    barrier = getattr(locks, "Barrier", None)

    classes = _classes

    def noted(instance: Any, frame: Any) -> None:
        # the outermost __init__ of a subclass chain keeps the site (the program's line)
        code = frame.f_code
        site = (code, frame.f_lasti) if classes.get(code.co_filename) == USER else user_site(frame)
        setattr(instance, SITE_ATTR, site)
        kind = type(instance).__name__
        created[kind] = created.get(kind, 0) + 1
        if isinstance(instance, queue_class):
            new_state(instance, site)  # sampled for its depth from now on

    for cls in resource_classes():
        patches.append(Replace(cls, "__init__", _init(cls.__dict__["__init__"], noted, probe, cls is barrier)))

    original_put, original_get = queues.Queue.put_nowait, queues.Queue.get_nowait

    def put_nowait(self: Any, item: Any) -> None:
        original_put(self, item)
        st = getattr(self, ATTR, None)
        if st is not None:
            st.puts += 1

    def get_nowait(self: Any) -> Any:
        item = original_get(self)
        st = getattr(self, ATTR, None)
        if st is not None:
            st.gets += 1
        return item

    patches.append(Replace(queues.Queue, "put_nowait", put_nowait))
    patches.append(Replace(queues.Queue, "get_nowait", get_nowait))
    installed: list[Patch] = []
    try:
        for patch in patches:
            patch.install()
            installed.append(patch)
    except Exception:
        for patch in reversed(installed):
            patch.remove()
        raise
    return patches


def _init(original: Callable[..., None], noted: Callable[[Any, Any], None], probe: Any, barrier: bool) -> Callable[..., None]:
    """``cls.__init__`` that first notes where the object is being made. A barrier's waits
    happen on its own Condition: they are counted as the barrier's."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(self, SITE_ATTR, None) is None:
            try:
                noted(self, sys._getframe(1))
            except Exception as exc:
                probe.internal_error("noting a resource's creation", exc)
        original(self, *args, **kwargs)
        if barrier:
            try:
                cond = getattr(self, "_cond", None)
                if cond is not None:
                    setattr(cond, ATTR, probe.new_state(self, getattr(self, SITE_ATTR, None)))
            except Exception as exc:
                probe.internal_error("noting a barrier's condition", exc)

    return __init__
