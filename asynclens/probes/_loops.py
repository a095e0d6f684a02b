"""Finding the event loops a session should watch, and saying which it could not.

A session may start before any loop exists (``with session(): asyncio.run(...)``),
inside a running one (``async with session():``), before the program imports
uvloop (always the case under the CLI), or while loops already run in other
threads. The watcher hands every loop to the session's probes exactly once:

* every loop that becomes the running loop of a thread: ``asyncio.events._set_running_loop``
  (and its ``asyncio._set_running_loop`` alias) is patched while watching. The
  stdlib loops look it up at each run; uvloop captures the alias when it is
  imported, so a uvloop imported during a session calls the patched one (the
  patched function stays harmless in uvloop's hands after the session: it looks
  up the active watcher at each call);
* loops of a uvloop imported before the session: ``run_forever`` of ``uvloop.Loop``
  is patched (that uvloop holds the unpatched ``_set_running_loop``);
* a uvloop imported while the session runs: a ``sys.meta_path`` hook (removed
  at the end) announces its ``Loop`` class as soon as the module is imported, so
  the probes patch the class before the first loop, and the first task
  (``asyncio.run``'s main task is created before the loop runs), exist;
* loops already running when the session starts, in this thread or another:
  found from the running loop, the threads' frames and the live tasks;
* any loop passed to :func:`asynclens.watch`.

Probes that need to patch loop classes subscribe with :meth:`LoopWatcher.on_loop_class`.
:class:`Coverage` keeps what could not be watched (blind spots), for the report's first lines.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType, MethodType, ModuleType
from typing import Any

from ._patch import Patch

__all__ = ["LOOP_MODULES", "MEASURES", "Coverage", "LoopWatcher", "find_running_loops", "loop_type_name", "starting_here"]

#: Modules whose ``Loop`` class is announced when they are imported (uvloop and its Windows fork).
LOOP_MODULES = ("uvloop", "winloop")
#: What each probe measures on a loop: the words a blind spot uses.
MEASURES = {
    "lag": "stalls, lag and ELU",
    "handles": "pending tasks and transports",
    "scheduler": "task steps and scheduling delay",
}

_starting = threading.local()
_active: LoopWatcher | None = None  # the watcher of the active session, for the running-loop hook


def starting_here(loop: asyncio.AbstractEventLoop) -> bool:
    """True while ``loop.run_forever()`` on this thread is handing ``loop`` to the probes."""
    return getattr(_starting, "loop", None) is loop


def loop_type_name(cls: type) -> str:
    """``uvloop.Loop``, ``asyncio.unix_events._UnixSelectorEventLoop``, ..."""
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls.__name__)}"


def _running_loop_set(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    watcher = _active
    if watcher is not None and args and args[0] is not None:
        watcher._became_running(args[0])
    return result


class _NotifyingLoader(importlib.abc.Loader):
    """Runs a module's own loader, puts it back in place, then tells the watcher."""

    def __init__(self, loader: Any, done: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._done = done

    def create_module(self, spec: Any) -> Any:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # leave no trace of the hook on the module
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._done(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _ImportHook(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that only notices :data:`LOOP_MODULES` being imported."""

    def __init__(self, done: Callable[[ModuleType], None]) -> None:
        self._done = done

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in LOOP_MODULES:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _NotifyingLoader(spec.loader, self._done)
            return spec
        return None


class LoopWatcher:
    """Calls ``on_loop(loop)`` once for each loop seen while started.

    ``prepare()`` installs the hooks (loops seen from then on wait for ``start()``),
    ``start()`` hands over the waiting loops and those already running, ``stop()``
    removes everything after a last look for running loops that were never seen.
    """

    def __init__(
        self,
        on_loop: Callable[[asyncio.AbstractEventLoop], None],
        *,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_unseen: Callable[[asyncio.AbstractEventLoop, int | None], None] | None = None,
    ) -> None:
        self._on_loop = on_loop
        self._on_error = on_error
        self._on_unseen = on_unseen
        self._seen: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._strong: dict[int, asyncio.AbstractEventLoop] = {}  # seen loops that have no weak references
        self._waiting: list[asyncio.AbstractEventLoop] = []
        self._patches: list[Patch] = []
        self._classes: list[type] = []
        self._class_callbacks: list[tuple[Callable[[type], None], Callable[[type, BaseException], None] | None]] = []
        self._hook: _ImportHook | None = None
        self._lock = threading.RLock()
        self._prepared = False
        self._open = False

    # ------------------------------------------------------------ lifecycle

    def prepare(self) -> None:
        """Install the running-loop patches and the import hook; announce the loop classes known now."""
        global _active
        if self._prepared:
            return
        self._prepared = True
        _active = self
        self._patches = [Patch(asyncio.events, "_set_running_loop", _running_loop_set)]
        if getattr(asyncio, "_set_running_loop", None) is not None:
            self._patches.append(Patch(asyncio, "_set_running_loop", _running_loop_set))
        for patch in self._patches:
            patch.install()
        self._hook = _ImportHook(self._module_imported)
        sys.meta_path.insert(0, self._hook)
        self._announce(asyncio.BaseEventLoop)
        for name in LOOP_MODULES:
            module = sys.modules.get(name)
            if module is not None:
                self._module_imported(module)

    def start(self) -> None:
        """Hand the probes every loop seen since ``prepare()`` and every loop running now."""
        self.prepare()
        with self._lock:
            self._open = True
            waiting, self._waiting = self._waiting, []
        for loop in waiting:
            self._watch_safely(loop)
        running = asyncio.events._get_running_loop()
        if running is not None:
            self.watch(running)
        for loop, _thread in self._scan():
            self._watch_safely(loop)

    def stop(self) -> None:
        """Report running loops never seen (``on_unseen``), then remove every patch and hook."""
        global _active
        if self._open and self._on_unseen is not None:
            for loop, thread in self._scan():
                try:
                    self._on_unseen(loop, thread)
                except Exception as exc:
                    self._error("reporting an unseen loop", exc)
        self._open = False
        if _active is self:
            _active = None
        if self._hook is not None:
            try:
                sys.meta_path.remove(self._hook)
            except ValueError:
                pass
            self._hook = None
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []
        self._prepared = False
        self._waiting = []
        self._strong.clear()

    # ------------------------------------------------------------ loops

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        """The loops seen so far that are still alive."""
        return list(self._seen)

    def seen(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True if ``loop`` was handed to the probes."""
        try:
            return loop in self._seen
        except TypeError:  # not weak-referenceable
            return self._strong.get(id(loop)) is loop

    def watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Hand ``loop`` to the probes unless it was seen already; True if new."""
        with self._lock:
            if self.seen(loop) or any(w is loop for w in self._waiting):
                return False
            if not self._open:
                if self._prepared:  # the session is starting: its probes get it in start()
                    self._waiting.append(loop)
                return False
            try:
                self._seen.add(loop)
            except TypeError:
                self._strong[id(loop)] = loop
        cls = type(loop)
        if cls not in self._classes:
            self._announce(cls)
        self._on_loop(loop)
        return True

    def _watch_safely(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.watch(loop)
        except Exception as exc:  # never let a probe's bug stop the user's loop from running
            self._error("watching a loop", exc)

    def _became_running(self, loop: Any) -> None:
        if not self.seen(loop):
            self._watch_safely(loop)

    def _run_forever(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if instance is not None and not self.seen(instance):
            _starting.loop = instance
            try:
                self._watch_safely(instance)
            finally:
                _starting.loop = None
        return wrapped(*args, **kwargs)

    def _scan(self) -> list[tuple[asyncio.AbstractEventLoop, int | None]]:
        try:
            return [(loop, thread) for loop, thread in find_running_loops() if not self.seen(loop)]
        except Exception as exc:
            self._error("looking for running loops", exc)
            return []

    # ------------------------------------------------------------ loop classes

    def on_loop_class(
        self, callback: Callable[[type], None], on_error: Callable[[type, BaseException], None] | None = None
    ) -> None:
        """Call ``callback(cls)`` for each loop class: ``asyncio.BaseEventLoop`` and the
        classes known now at once, ``uvloop.Loop`` when uvloop gets imported, any other
        loop class when its first loop is seen. ``on_error(cls, exc)`` hears its failures."""
        with self._lock:
            self._class_callbacks.append((callback, on_error))
            classes = list(self._classes)
        for cls in classes:
            self._call_class(callback, on_error, cls)

    def _announce(self, cls: type) -> None:
        with self._lock:
            if cls in self._classes:
                return
            self._classes.append(cls)
            callbacks = list(self._class_callbacks)
        if cls.__module__.partition(".")[0] in LOOP_MODULES and self._prepared:
            self._patch_run_forever(cls)
        for callback, on_error in callbacks:
            self._call_class(callback, on_error, cls)

    def _call_class(
        self, callback: Callable[[type], None], on_error: Callable[[type, BaseException], None] | None, cls: type
    ) -> None:
        try:
            callback(cls)
        except Exception as exc:
            self._error(f"patching {loop_type_name(cls)}", exc)
            if on_error is not None:
                try:
                    on_error(cls, exc)
                except Exception:
                    pass

    def _patch_run_forever(self, cls: type) -> None:
        # A uvloop imported before the session holds the unpatched _set_running_loop.
        patch = Patch(cls, "run_forever", self._run_forever)
        try:
            patch.install()
        except Exception as exc:
            self._error(f"patching {loop_type_name(cls)}.run_forever", exc)
            return
        self._patches.append(patch)

    def _module_imported(self, module: ModuleType) -> None:
        try:
            cls = getattr(module, "Loop", None)
            if isinstance(cls, type) and _active is self:
                self._announce(cls)
        except Exception as exc:
            self._error(f"announcing {module.__name__}.Loop", exc)

    def _error(self, where: str, exc: BaseException) -> None:
        if self._on_error is not None:
            try:
                self._on_error(where, exc)
            except Exception:
                pass


# ------------------------------------------------------------ running loops


def _runner_codes() -> frozenset[Any]:
    codes = []
    base = asyncio.base_events.BaseEventLoop
    for name in ("run_forever", "_run_once", "run_until_complete", "_run_forever_setup"):
        code = getattr(base.__dict__.get(name), "__code__", None)
        if code is not None:
            codes.append(code)
    runner = getattr(asyncio, "Runner", None)
    for func in (getattr(runner, "run", None), getattr(asyncio.runners, "run", None)):
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.append(code)
    return frozenset(codes)


_RUNNER_CODES = _runner_codes()


def _loops_in(values: Iterable[Any]) -> Iterable[asyncio.AbstractEventLoop]:
    """The loops among ``values``, and those of asyncio Runners, bound methods
    (``loop.run_forever``) and threads whose target is one."""
    runner = getattr(asyncio, "Runner", None)
    for value in values:
        if isinstance(value, threading.Thread):
            value = getattr(value, "_target", None)
        if isinstance(value, MethodType):
            value = value.__self__
        if isinstance(value, asyncio.AbstractEventLoop):
            yield value
        elif runner is not None and isinstance(value, runner):
            loop = getattr(value, "_loop", None)
            if isinstance(loop, asyncio.AbstractEventLoop):
                yield loop


def _frame_loops(frame: FrameType | None) -> Iterable[asyncio.AbstractEventLoop]:
    """Loops a thread's stack runs: a loop whose method is on the stack (``self``), the
    loops of asyncio's run functions and those the innermost frame holds (a thread that
    waits in C code: uvloop's ``run_forever``)."""
    top = True
    while frame is not None:
        if top or frame.f_code in _RUNNER_CODES:
            yield from _loops_in(list(frame.f_locals.values()))
        elif "self" in frame.f_code.co_varnames[:1]:
            yield from _loops_in((frame.f_locals.get("self"),))
        top = False
        frame = frame.f_back


def _task_loops() -> Iterable[asyncio.AbstractEventLoop]:
    """The loops of every live task (asyncio keeps them in weak sets, 3.10-3.13)."""
    for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        pool = getattr(asyncio.tasks, name, None)
        if pool is None:
            continue
        for _ in range(3):  # another thread may add a task while we copy
            try:
                tasks = list(pool)
                break
            except RuntimeError:
                tasks = []
        for task in tasks:
            try:
                yield task.get_loop()
            except Exception:
                pass


def find_running_loops() -> list[tuple[asyncio.AbstractEventLoop, int | None]]:
    """``(loop, thread id or None)`` for each running loop of another thread found in the
    threads' frames and targets or through the live tasks, each once. A loop whose
    methods are C code (uvloop), run by a function that holds it in no variable and
    with no task, is not found."""
    found: dict[int, tuple[asyncio.AbstractEventLoop, int | None]] = {}
    me = threading.get_ident()
    for tid, frame in sys._current_frames().items():
        if tid == me:
            continue
        for loop in _frame_loops(frame):
            if id(loop) not in found and _is_running(loop):
                thread = getattr(loop, "_thread_id", None)
                found[id(loop)] = (loop, thread if isinstance(thread, int) and thread else tid)
    for thread in threading.enumerate():  # Thread(target=loop.run_forever)
        if thread.ident is None or thread.ident == me:
            continue
        for loop in _loops_in((thread,)):
            if id(loop) not in found and _is_running(loop):
                found[id(loop)] = (loop, thread.ident)
    for loop in _task_loops():
        if id(loop) not in found and _is_running(loop):
            thread = getattr(loop, "_thread_id", None)
            found[id(loop)] = (loop, thread if isinstance(thread, int) and thread else None)
    return list(found.values())


def _is_running(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return bool(loop.is_running()) and not loop.is_closed()
    except Exception:
        return False


# ------------------------------------------------------------ blind spots


def _thread_name(thread_id: int | None) -> str | None:
    if thread_id is None:
        return None
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    return thread.name if thread is not None else f"id {thread_id}"


def _measures(probe: str) -> str:
    return MEASURES.get(probe, f"the {probe} probe's figures")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Coverage:
    """What a session watched and what it could not: one line per blind spot.

    Blind spots of the same kind (probe, loop type, reason) are counted together,
    so a loop per test leaves one line, not thousands.
    """

    def __init__(self, probes: Iterable[str] = ()) -> None:
        self.probes = list(probes)
        self._lock = threading.Lock()
        self.loops_seen = 0
        # (probe, what, loop type, reason) -> loop ids; probe None: the whole loop was never seen
        self._loops: dict[tuple[str | None, str, str, str], set[int]] = {}
        self._missed: dict[str, set[int]] = {}  # probe -> ids of loops it missed
        self._failed: dict[str, str] = {}  # probe -> why it did not start

    def loop_seen(self) -> None:
        with self._lock:
            self.loops_seen += 1

    def probe_failed(self, probe: str, reason: str) -> None:
        """``probe`` could not start: it measures nothing."""
        with self._lock:
            self._failed.setdefault(probe, reason)

    def not_measured(self, probe: str, loop: Any, reason: str, what: str | None = None) -> None:
        """``probe`` could not watch ``loop`` (or the loop class ``loop``) for ``reason``;
        ``what`` it missed, when only part of what it measures (default: all of it)."""
        cls = loop if isinstance(loop, type) else type(loop)
        key = id(loop) if not isinstance(loop, type) else id(cls)
        with self._lock:
            self._loops.setdefault((probe, what or _measures(probe), loop_type_name(cls), reason), set()).add(key)
            if what is None:
                self._missed.setdefault(probe, set()).add(key)

    def unseen(self, loop: Any, thread_id: int | None) -> None:
        """``loop`` ran while the session was active, but was never handed to the probes."""
        name = _thread_name(thread_id)
        where = f"in thread {name!r}" if name else "in another thread"
        reason = f"it ran {where} but the session never saw it (pass it to asynclens.watch())"
        with self._lock:
            self._loops.setdefault((None, "", loop_type_name(type(loop)), reason), set()).add(id(loop))
            for probe in self.probes:
                self._missed.setdefault(probe, set()).add(id(loop))

    def missed(self, probe: str) -> int:
        """Loops ``probe`` did not watch (-1: the probe did not start, so it watched none)."""
        with self._lock:
            if probe in self._failed:
                return -1
            return len(self._missed.get(probe, ()))

    def lines(self) -> tuple[str, ...]:
        """``Not measured: ...`` lines, probes that failed first."""
        with self._lock:
            failed = dict(self._failed)
            loops = {k: len(v) for k, v in self._loops.items()}
        out = [
            f"Not measured: {_measures(probe)} on any loop: the {probe} probe failed to start ({reason})"
            for probe, reason in failed.items()
        ]
        for (probe, what, type_name, reason), count in loops.items():
            if probe is None:
                what = "; ".join(_measures(p) for p in self.probes if p not in failed) or "anything"
                out.append(f"Not measured: {what} on {_plural(count, 'loop')} of type {type_name}: {reason}")
            elif probe not in failed:
                out.append(
                    f"Not measured: {what} on {_plural(count, 'loop')} of type {type_name} ({probe} probe: {reason})"
                )
        return tuple(out)
