"""Spans: ``@trace`` and ``span()``.

``trace`` picks its path (sync, coroutine, generator, async generator) once, when
it decorates. Functions and coroutine functions get a plain function wrapper
(``functools.update_wrapper``), generators and other callables a wrapt proxy.
With no session active every path costs one global read and a branch before
calling the wrapped function. While recording, a span is a
:class:`LiveSpan` that the session buffers as it is and turns into a frozen
:class:`~asynclens.records.Span` off the hot path.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from random import getrandbits
from threading import get_ident
from types import FunctionType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import wrapt

from .._native import core
from .._state import context as _context
from .._state.context import current_span as _span_var

__all__ = ["LiveSpan", "current_span", "span", "trace"]

F = TypeVar("F", bound=Callable[..., Any])

#: Exceptions that end a span as cancelled/exited rather than failed.
_EXIT_EXCEPTIONS: tuple[type[BaseException], ...]
try:
    from asyncio import CancelledError as _CancelledError

    _EXIT_EXCEPTIONS = (_CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)
except ImportError:  # pragma: no cover
    _EXIT_EXCEPTIONS = (GeneratorExit, KeyboardInterrupt, SystemExit)

try:
    from _asyncio import current_task as _current_task  # type: ignore[attr-defined]
    from asyncio.events import _get_running_loop
except ImportError:  # pragma: no cover
    from asyncio import current_task as _current_task
    from asyncio.events import _get_running_loop

#: Before 3.12, ``_get_running_loop()`` calls ``getpid()`` (a system call: ~0.2 µs, the
#: largest single cost of a span); there, a thread's asyncio loop is remembered instead.
_CACHE_LOOPS = sys.version_info < (3, 12) and isinstance(getattr(asyncio.tasks, "_current_tasks", None), dict)
_tasks_of: Any = asyncio.tasks._current_tasks.get if _CACHE_LOOPS else None  # type: ignore[attr-defined]
_loop_of_thread: dict[int, Any] = {}  # thread ident -> weakref to the asyncio loop it last ran


def _running_task(ident: int) -> Any:
    """The task running in thread ``ident`` (the calling thread), or None: what
    ``current_task(_get_running_loop())`` says, without the getpid() in the common case."""
    ref = _loop_of_thread.get(ident)
    if ref is not None:
        loop = ref()
        # An asyncio loop sets _thread_id while it runs, so one running here is the
        # running loop of this thread; and a task running on it runs here, now.
        if loop is not None and loop._thread_id == ident:
            task = _tasks_of(loop)
            if task is not None:
                return task
    loop = _get_running_loop()
    if loop is None:
        return None
    if isinstance(loop, asyncio.BaseEventLoop):  # other loops (uvloop) keep no _thread_id
        if len(_loop_of_thread) >= 4096:  # bounded, whatever the threads come and go
            _loop_of_thread.clear()
        _loop_of_thread[ident] = weakref.ref(loop)
    return _tasks_of(loop)


#: Told about every span start and end (the scheduler probe's breakdown); None when off.
_observer: Any = None


def set_span_observer(observer: Any, native: bool = False) -> None:
    """Install (or with ``None`` remove) the object whose ``span_started(live)`` and
    ``span_ended(live)`` run on the span's own thread; they must never raise.
    ``native``: the observer is the scheduler probe's ``SpanBreakdown`` as it is, so the
    compiled core runs its twin of those two methods instead of calling them."""
    global _observer
    _observer = observer
    if core is not None:
        core.set_span_observer(observer, native)


_thread_ids: dict[int, int] = {}
#: Re-entrant: from 3.12 a collection runs at any bytecode boundary, also while an id is
#: being made, and asynclens's gc callback asks the current span for its ids.
_new_id_lock = threading.RLock()


class PySpanFields:
    """A live span's fields, its start, its end and its lazily drawn ids (with the
    compiled core, ``asynclens._core.SpanFields``, the same in C)."""

    __slots__ = (
        "name",
        "_trace_id",
        "_span_id",
        "parent_id",
        "start_ns",
        "end_ns",
        "error",
        "attrs",
        "events",
        "task",
        "thread_id",
        "session",
        "extra",
        "breakdown",
        "_token",
    )

    def __init__(self, session: Any, name: str, parent: LiveSpan | None, attrs: dict[str, Any] | None) -> None:
        self.session = session
        self.name = name
        self._span_id: int | None = None  # made when first asked for (see span_id)
        if parent is None:
            self._trace_id: int | None = None  # made when first asked for (see trace_id)
            self.parent_id = None
        elif type(parent) is LiveSpan:  # the parent's ids, made once by its first child
            trace_id = parent._trace_id
            self._trace_id = trace_id if trace_id is not None else parent.trace_id
            parent_id = parent._span_id
            self.parent_id = parent_id if parent_id is not None else parent.span_id
        else:  # a remote parent (propagation.SpanContext)
            self._trace_id = parent.trace_id
            self.parent_id = parent.span_id
        self.attrs = attrs
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None
        self.error: tuple[str, str, str] | None = None  # (status, type, message)
        self.end_ns = 0
        self.extra: Any = None
        # the scheduler probe's: the task's running totals at start, then (cpu, sched
        # wait, I/O wait, executor, steps, longest wait) at end; None when no probe watched
        self.breakdown: Any = None
        self._token: Any = None  # the current span's token while _enter_span() made this span current
        ident = get_ident()
        if _CACHE_LOOPS:  # _running_task's common case inlined
            ref = _loop_of_thread.get(ident)
            loop = None if ref is None else ref()
            task = _tasks_of(loop) if loop is not None and loop._thread_id == ident else None
            self.task = task if task is not None else _running_task(ident)
        else:
            loop = _get_running_loop()
            self.task = None if loop is None else _current_task(loop)
        self.thread_id = _thread_ids.setdefault(ident, ident)  # one int object per thread, not per span
        self.start_ns = session.now()
        if _observer is not None:
            _observer.span_started(self)

    @property
    def trace_id(self) -> int:
        """The 128-bit trace id. A root span makes it when first asked (by a child, by
        ``inject()``, or when the session freezes the span): a root nobody asks about
        until then does not hold a 128-bit int in the buffer (44 bytes)."""
        trace_id = self._trace_id
        return trace_id if trace_id is not None else _make_id(self, "_trace_id", 128)

    @trace_id.setter
    def trace_id(self, value: int) -> None:
        self._trace_id = value

    @property
    def span_id(self) -> int:
        """The 64-bit span id, made when first asked (by a child, ``inject()``, a probe
        attributing something to the span, or when the session freezes it): a span
        that is only aggregated never draws one, nor holds it in the buffer (36 bytes)."""
        span_id = self._span_id
        return span_id if span_id is not None else _make_id(self, "_span_id", 64)

    def _leave(self) -> None:
        """Restore the current span :func:`_enter_span` replaced, then end this span."""
        token = self._token
        if token is not None:
            self._token = None  # the token holds the enclosing span: not in the buffer
            _span_var.reset(token)
        self._end()

    def _end(self) -> None:
        session = self.session
        self.end_ns = session.now()
        if _observer is not None:
            _observer.span_ended(self)
        task = self.task
        if task is not None:  # an ended span keeps the name only: the task may go (see _core.c)
            try:
                self.task = task.get_name()
            except Exception:
                self.task = None
        buffer = session._buffer  # Session.emit, inlined: this runs for every span
        size = len(buffer)
        if size < session._limit:
            buffer.append(self)
            if size == session._wake_at:
                session._wake.set()
        else:
            session._note_drop()



if TYPE_CHECKING:
    SpanFields = PySpanFields
else:
    SpanFields = core.SpanFields if core is not None else PySpanFields


class LiveSpan(SpanFields):
    """The live handle of a span that is running; ``span()`` yields it.

    ``set`` and ``event`` are the only methods user code needs; after the span has
    ended they do nothing (a span's record is frozen once handed to the session).
    """

    __slots__ = ()

    @property
    def status(self) -> str:
        """``"ok"``, ``"error"`` or ``"cancelled"`` (so far)."""
        return "ok" if self.error is None else self.error[0]

    @property
    def ended(self) -> bool:
        return self.end_ns != 0

    @property
    def recording(self) -> bool:
        """True while this span records (it has not ended)."""
        return self.end_ns == 0

    def set(self, key: str, value: Any) -> None:
        """Set attribute ``key`` on the span (ignored after the span ended)."""
        if self.end_ns:
            return
        if self.attrs is None:
            self.attrs = {key: value}
        else:
            self.attrs[key] = value

    def event(self, name: str, **attrs: Any) -> None:
        """Record a point-in-time event inside the span."""
        if self.end_ns:
            return
        entry = (name, self.session.now(), attrs)
        if self.events is None:
            self.events = [entry]
        else:
            self.events.append(entry)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, _EXIT_EXCEPTIONS):
            self.error = ("error", type(exc).__qualname__, _safe_str(exc))
        else:  # cancellation and every other BaseException end the span as exited
            self.error = ("cancelled", type(exc).__qualname__, "")

    def __repr__(self) -> str:
        state = "ended" if self.end_ns else "running"
        return f"<LiveSpan {self.name!r} {self.span_id:016x} {state}>"


def _make_id(live: PySpanFields, slot: str, bits: int) -> int:
    """Draw ``live``'s id for ``slot`` once: the span's thread, the flusher and the
    watchdog may ask at once, and a gc callback may ask again on this very thread while
    the id is being drawn (hence a re-entrant lock, and the check after drawing)."""
    with _new_id_lock:
        made = getattr(live, slot)
        if made is None:
            drawn = getrandbits(bits) or 1
            made = getattr(live, slot)  # drawn meanwhile by a gc callback on this thread?
            if made is None:
                setattr(live, slot, drawn)
                made = drawn
        return made  # type: ignore[no-any-return]


if core is not None:
    core.configure_spans(
        LiveSpan,
        getrandbits,
        _thread_ids,
        _loop_of_thread if _CACHE_LOOPS else None,
        asyncio.tasks._current_tasks if _CACHE_LOOPS else {},  # type: ignore[attr-defined]
        _get_running_loop,
        _current_task,
        _span_var,
    )


def _py_enter_span(session: Any, name: str, attrs: dict[str, Any] | None) -> LiveSpan:
    """A new span under the current one (``attrs`` copied), made the current span until
    its ``_leave()`` (``asynclens._core.enter_span``, the same in C)."""
    live = LiveSpan(session, name, _span_var.get(), dict(attrs) if attrs else None)
    live._token = _span_var.set(live)
    return live


_enter_span: Callable[[Any, str, dict[str, Any] | None], LiveSpan] = (
    core.enter_span if core is not None else _py_enter_span
)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break the host program
        return f"<unprintable {type(exc).__name__}>"


class _NoopSpan:
    """Yielded by ``span()`` when no session records: accepts and drops everything."""

    __slots__ = ()
    name = ""
    recording = False
    ended = True

    def set(self, key: str, value: Any) -> None:
        pass

    def event(self, name: str, **attrs: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<LiveSpan (not recording)>"


_NOOP = _NoopSpan()


def current_span() -> LiveSpan | None:
    """The span running in this task or thread, or ``None``."""
    return _span_var.get()


class span:  # noqa: N801 - used like a function: ``with asynclens.span("x"):``
    """Open a span for a block: ``with span("parse", bytes=n) as sp:``.

    Works as ``with`` and ``async with``; yields a :class:`LiveSpan` (or a no-op
    stand-in when no session is recording). Exceptions are recorded and
    re-raised unchanged. ``parent=`` overrides the current span as parent: pass
    a :class:`~asynclens.propagation.SpanContext` from
    :func:`~asynclens.propagation.extract` to continue a trace from another
    process (the span gets ``remote_parent=True``).

    .. versionadded:: 0.1
    """

    __slots__ = ("_name", "_attrs", "_live", "_token", "_parent", "_remote_token")

    def __init__(self, name: str, /, *, parent: Any = None, **attrs: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"span() takes the span's name as a string first, got {type(name).__name__}")
        if parent is not None and not (isinstance(getattr(parent, "trace_id", None), int) and isinstance(getattr(parent, "span_id", None), int)):
            raise TypeError(
                f"span(parent=...) takes a LiveSpan or a propagation.SpanContext, got {type(parent).__name__}"
            )
        self._name = name
        self._attrs = attrs
        self._parent = parent
        self._live: LiveSpan | None = None
        self._token: Any = None
        self._remote_token: Any = None

    def __enter__(self) -> LiveSpan:
        session = _context.active
        if session is None:
            return _NOOP  # type: ignore[return-value]
        if self._live is not None:
            raise RuntimeError(f"span({self._name!r}) is already entered; create a new span() for each block")
        parent = self._parent
        live = LiveSpan(session, self._name, _span_var.get() if parent is None else parent, self._attrs or None)
        if parent is not None and getattr(parent, "remote", False):
            self._continue_remote(live, parent)
        self._live = live
        self._token = _span_var.set(live)
        return live

    def _continue_remote(self, live: LiveSpan, parent: Any) -> None:
        # Span.remote_parent travels in LiveSpan.extra, which a probe may already hold (a dict).
        extra = live.extra
        if isinstance(extra, dict):
            extra["remote_parent"] = True
        elif extra is None:
            live.extra = {"remote_parent": True}
        self._remote_token = _context.remote_parent.set(parent)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        live = self._live
        if live is None:
            return
        self._live = None
        try:
            _span_var.reset(self._token)
        except ValueError:  # exited in another context than entered: nothing to undo there
            pass
        if self._remote_token is not None:
            try:
                _context.remote_parent.reset(self._remote_token)
            except ValueError:
                pass
            self._remote_token = None
        if live.end_ns:  # already ended by its owner (e.g. at an HTTP response's last byte)
            return
        if exc is not None:
            live._fail(exc)
        live._end()

    async def __aenter__(self) -> LiveSpan:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


# ----------------------------------------------------------------------- trace


def _traced_function(func: Callable[..., Any], name: str, attrs: dict[str, Any] | None) -> Callable[..., Any]:
    def traced(*args: Any, **kwargs: Any) -> Any:
        session = _context.active
        if session is None:
            return func(*args, **kwargs)
        live = _enter_span(session, name, attrs)
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            live._fail(exc)
            raise
        finally:
            live._leave()

    return traced


def _traced_coroutine_function(
    func: Callable[..., Any], name: str, attrs: dict[str, Any] | None
) -> Callable[..., Any]:
    async def traced(*args: Any, **kwargs: Any) -> Any:
        # Runs when the coroutine is first awaited, so the span covers the body, not creation.
        session = _context.active
        if session is None:
            return await func(*args, **kwargs)
        live = _enter_span(session, name, attrs)
        try:
            return await func(*args, **kwargs)
        except BaseException as exc:
            live._fail(exc)
            raise
        finally:
            live._leave()

    return traced


def _generator_wrapper(name: str, attrs: Mapping[str, Any] | None) -> Callable[..., Any]:
    def run(session: Any, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        # Drive the generator step by step, making the span current only while a
        # step runs: the context variable is never held across a yield, so the
        # generator may be finished (or collected) from any context.
        live: LiveSpan | None = None
        send_value: Any = None
        throw: BaseException | None = None
        while True:
            if live is None:
                live = LiveSpan(session, name, _span_var.get(), dict(attrs) if attrs else None)
            token = _span_var.set(live)
            try:
                item = gen.send(send_value) if throw is None else gen.throw(throw)
            except StopIteration as stop:
                live._end()
                return stop.value
            except BaseException as exc:
                live._fail(exc)
                live._end()
                raise
            finally:
                _span_var.reset(token)
            throw = None
            try:
                send_value = yield item
            except GeneratorExit as exc:
                try:
                    gen.close()
                finally:
                    live._fail(exc)
                    live._end()
                raise
            except BaseException as exc:
                throw = exc

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        session = _context.active
        if session is None:
            return wrapped(*args, **kwargs)
        return run(session, wrapped(*args, **kwargs))

    return wrapper


def _async_generator_wrapper(name: str, attrs: Mapping[str, Any] | None) -> Callable[..., Any]:
    async def run(session: Any, agen: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
        live: LiveSpan | None = None
        send_value: Any = None
        throw: BaseException | None = None
        while True:
            if live is None:
                live = LiveSpan(session, name, _span_var.get(), dict(attrs) if attrs else None)
            token = _span_var.set(live)
            try:
                item = await (agen.asend(send_value) if throw is None else agen.athrow(throw))
            except StopAsyncIteration:
                live._end()
                return
            except BaseException as exc:
                live._fail(exc)
                live._end()
                raise
            finally:
                _span_var.reset(token)
            throw = None
            try:
                send_value = yield item
            except GeneratorExit as exc:
                try:
                    await agen.aclose()
                finally:
                    live._fail(exc)
                    live._end()
                raise
            except BaseException as exc:
                throw = exc

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        session = _context.active
        if session is None:
            return wrapped(*args, **kwargs)
        return run(session, wrapped(*args, **kwargs))

    return wrapper


def _function_of(obj: Any) -> Any:
    """The callable under classmethod/staticmethod layers."""
    while isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    return obj


def _default_name(func: Any) -> str:
    func = _function_of(func)
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    return str(qualname)


def _decorate(func: Any, name: str | None, attrs: Mapping[str, Any] | None) -> Any:
    inner = _function_of(func)
    if not callable(inner):
        raise TypeError(
            f"@trace can only decorate a function or method, got {type(func).__name__} {func!r:.60}"
        )
    span_name = name if name is not None else _default_name(func)
    frozen_attrs = dict(attrs) if attrs else None
    if isinstance(inner, FunctionType) and not (inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner)):
        # A plain function wrapper: a Python-to-Python call costs a quarter of a wrapt
        # proxy's here, and functions need no proxying (they bind as methods by themselves).
        traced: Any
        if inspect.iscoroutinefunction(inner):
            traced = _traced_coroutine_function(inner, span_name, frozen_attrs)
        else:
            traced = _traced_function(inner, span_name, frozen_attrs)
        functools.update_wrapper(traced, inner)
        layers = []
        while isinstance(func, (classmethod, staticmethod)):
            layers.append(type(func))
            func = func.__func__
        for layer in reversed(layers):
            traced = layer(traced)
        return traced
    # Generators (whose wrapper must stay a plain function yet return the traced
    # iterator) and other callables (classes, partials, callable objects): a wrapt proxy.
    if inspect.isasyncgenfunction(inner):
        wrapper = _async_generator_wrapper(span_name, frozen_attrs)
    elif inspect.isgeneratorfunction(inner):
        wrapper = _generator_wrapper(span_name, frozen_attrs)
    else:
        wrapper = _proxy_wrapper(span_name, frozen_attrs)
    return wrapt.FunctionWrapper(func, wrapper)


def _proxy_wrapper(name: str, attrs: dict[str, Any] | None) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _context.active is None:
            return wrapped(*args, **kwargs)
        # ``wrapped`` may be bound anew per call (a callable object's method): one recording
        # path, shared with plain functions, at the price of a closure per recorded call.
        return _traced_function(wrapped, name, attrs)(*args, **kwargs)

    return wrapper


@overload
def trace(func: F, /) -> F: ...
@overload
def trace(name: str, /, *, attrs: Mapping[str, Any] | None = None) -> Callable[[F], F]: ...
@overload
def trace(*, name: str | None = None, attrs: Mapping[str, Any] | None = None) -> Callable[[F], F]: ...


def trace(
    func: Any = None, /, *, name: str | None = None, attrs: Mapping[str, Any] | None = None
) -> Any:
    """Record a span for every call of the decorated function.

    Use bare (``@trace``) or called (``@trace(name="db.query", attrs={...})``;
    ``@trace("db.query")`` is the same as ``name=``). Works on plain functions,
    coroutine functions (the span covers the awaited body), generator and
    async-generator functions (the span covers iteration and ends on exhaustion,
    ``close()``/``aclose()`` or garbage collection), methods, classmethods and
    staticmethods. Signatures, docstrings, ``__wrapped__`` and
    ``inspect.iscoroutinefunction`` & co. are preserved.

    .. versionadded:: 0.1
    """
    if attrs is not None and not isinstance(attrs, Mapping):
        raise TypeError(f"trace(attrs=...) must be a mapping, got {type(attrs).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"trace(name=...) must be a string, got {type(name).__name__}")
    if func is None:
        return lambda f: _decorate(f, name, attrs)
    if isinstance(func, str):
        if name is not None:
            raise TypeError("trace() got the span name twice: positionally and as name=")
        given = func
        return lambda f: _decorate(f, given, attrs)
    if not callable(_function_of(func)):
        raise TypeError(
            f"trace() expects a function to decorate or a span name, got {type(func).__name__} {func!r:.60}; "
            "did you mean @trace(name=...)?"
        )
    return _decorate(func, name, attrs)


