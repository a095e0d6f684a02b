"""The open-handle registry: weak entries, exact counters, lazy descriptions.

Every tracked object gets one :class:`Entry`, a ``weakref.ref`` subclass, so
tracking never keeps an object alive or changes when it is collected. Whether a
handle is closed is checked lazily (at snapshot and session end), never by
patching close paths. An entry leaves the registry when its object is
collected; if the object's finaliser raised a ``ResourceWarning`` about it
first, the garbage collector closed it (``closed_by="gc"``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..._state import context as _context
from ...records import HandleRecord, Leak
from .sites import site_of, stack_of

__all__ = ["KINDS", "Entry", "ExactCounter", "Registry"]

SOCKET, FILE, SUBPROCESS, TRANSPORT, TASK, THREAD = range(6)
KINDS = ("socket", "file", "subprocess", "transport", "task", "thread")

#: Bounds on what is kept for the report (beyond them, counted only).
MAX_GC_CLOSED = 1000
RECENT_MASK = 255  # the ring holds RECENT_MASK + 1 entries


class ExactCounter:
    """A counter incremented lock-free from any thread (``itertools.count`` is atomic)."""

    __slots__ = ("_count", "_lock", "_reads", "inc")

    def __init__(self) -> None:
        self._count = itertools.count()
        self._reads = 0
        self._lock = threading.Lock()
        self.inc = self._count.__next__

    @property
    def value(self) -> int:
        with self._lock:  # readers only: the hot path never takes it
            value = next(self._count) - self._reads
            self._reads += 1
            return value


class Entry(weakref.ref):  # type: ignore[type-arg]
    """One tracked object (a weak reference to it) and what was learnt when it opened."""

    __slots__ = (
        "close_ns",
        "closed_by",
        "desc",
        "frames",
        "hid",
        "info",
        "io",
        "kind",
        "oid",
        "open_ns",
        "span_id",
        "span_name",
        "trace_id",
        "type_name",
    )
    oid: int
    hid: int
    kind: int
    open_ns: int
    frames: list[Any] | None
    trace_id: int | None
    span_id: int | None
    span_name: str | None
    info: Any
    close_ns: int | None
    closed_by: str | None
    io: list[Any] | None
    desc: str | None
    type_name: str


def describe(kind: int, obj: Any, info: Any) -> str:
    """A short human description; ``obj`` may be ``None`` (collected)."""
    if kind == SOCKET:
        return _describe_socket(obj, info)
    if kind == FILE:
        if obj is not None:
            name = getattr(obj, "name", info[0] if info else "?")
            mode = getattr(obj, "mode", info[1] if info else "?")
        else:
            name, mode = info if info else ("?", "?")
        return f"{name!r} mode {mode!r}"
    if kind == SUBPROCESS:
        if info and info[0] == "pid":
            return f"pid {info[1]}"
        if obj is not None and hasattr(obj, "get_pid"):
            return f"{type(obj).__name__} pid {obj.get_pid()}"
        pid = getattr(obj, "pid", None) if obj is not None else (info[0] if info else None)
        args = getattr(obj, "args", None) if obj is not None else (info[1] if info else None)
        return f"pid {pid}: {_short(args)}"
    if kind == TRANSPORT:
        return _describe_transport(obj, info)
    if kind == THREAD:
        if obj is None:
            return str(info)
        target = getattr(obj, "_target", None)
        label = getattr(target, "__qualname__", None) or type(obj).__qualname__
        return f"thread {obj.name!r} ({label})"
    return str(info)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _addr(value: Any) -> str:
    if isinstance(value, tuple) and len(value) >= 2:
        return f"{value[0]}:{value[1]}"
    return str(value) if value else "?"


def _describe_socket(obj: Any, info: Any) -> str:
    if obj is None:
        return str(info or "socket")
    if isinstance(obj, socket.socket):
        parts = [
            f"fd={obj.fileno()}",
            getattr(obj.family, "name", str(obj.family)),
            getattr(obj.type, "name", str(obj.type)),
        ]
        try:
            local = obj.getsockname()
        except OSError:
            local = None
        try:
            peer = obj.getpeername()
        except OSError:
            peer = None
        if peer:
            parts.append(f"{_addr(local)} -> {_addr(peer)}")
        elif local:
            parts.append(f"on {_addr(local)}")
        return " ".join(parts)
    # a server object of a loop that creates its sockets in C (uvloop)
    try:
        addresses = ", ".join(_addr(s.getsockname()) for s in obj.sockets)
    except Exception:
        addresses = "?"
    return f"{type(obj).__name__} listening on {addresses}"


def _describe_transport(obj: Any, info: Any) -> str:
    if obj is None:
        return str(info or "transport")
    name = type(obj).__name__
    get = obj.get_extra_info
    peer = get("peername")
    if peer is not None:
        return f"{name} {_addr(get('sockname'))} -> {_addr(peer)}"
    local = get("sockname")
    if local is not None:
        return f"{name} on {_addr(local)}"
    pid = obj.get_pid() if hasattr(obj, "get_pid") else None
    if pid is not None:
        return f"{name} pid {pid}"
    pipe = get("pipe")
    return f"{name} {pipe!r}" if pipe is not None else name


def is_closed(kind: int, obj: Any, info: Any = None) -> bool:
    """Whether the program has closed ``obj`` (checked lazily, never patched)."""
    if kind == FILE:
        return bool(obj.closed)
    if kind == SOCKET:
        if isinstance(obj, socket.socket):
            return obj.fileno() < 0
        return not obj.is_serving()
    if kind == SUBPROCESS:
        if info and info[0] == "pid":  # known by pid only: open while the process exists
            try:
                os.kill(info[1], 0)
            except ProcessLookupError:
                return True
            except OSError:
                pass
            return False
        if hasattr(obj, "get_returncode"):  # a loop's process transport (uvloop)
            return obj.get_returncode() is not None
        return obj.returncode is not None
    if kind == TRANSPORT:
        return bool(obj.is_closing())
    if kind == THREAD:
        return not obj.is_alive()
    return False


class Registry:
    """Live entries by ``id(obj)``, counters per kind, handles closed by the GC."""

    def __init__(self, now: Callable[[], int], on_error: Callable[[str, BaseException], None]) -> None:
        self.now = now
        self.on_error = on_error
        self.live: dict[int, Entry] = {}
        self._ids = itertools.count(1)
        self.opened = [ExactCounter() for _ in KINDS]
        self.collected = ExactCounter()
        self.gc_closed: list[Entry] = []
        self.gc_closed_count = ExactCounter()
        self._recent: list[Entry | None] = [None] * (RECENT_MASK + 1)  # ring of entries just collected
        self._recent_seq = itertools.count().__next__
        self.record_closes = False
        self.stopped = False  # after the session: entries still referenced record nothing
        self.untracked = ExactCounter()  # objects that do not support weak references
        #: called with each collected entry that counted I/O (or every one, with record_closes)
        self.on_collected: Callable[[Entry], None] | None = None
        self._collected_cb = self._collected

    # -------------------------------------------------------------- hot path

    def add(
        self, obj: Any, kind: int, info: Any, frames: list[Any] | None, parent: Entry | None = None
    ) -> Entry | None:
        """Track ``obj``; ``frames`` from :func:`asynclens._sites.capture`.

        With ``parent`` (the entry of the handle ``obj`` was made from: the listening
        socket of an accepted one, the socket of a transport) its site and span are used.
        """
        try:
            entry = Entry(obj, self._collected_cb)
        except TypeError:
            self.untracked.inc()
            return None
        oid = id(obj)
        entry.oid = oid
        entry.hid = next(self._ids)
        entry.kind = kind
        entry.open_ns = self.now()
        if parent is not None:
            entry.frames = parent.frames
            entry.trace_id = parent.trace_id
            entry.span_id = parent.span_id
            entry.span_name = parent.span_name
        else:
            entry.frames = frames
            span = _context.current_span.get()
            if span is None:
                entry.trace_id = entry.span_id = entry.span_name = None
            else:
                entry.trace_id = span.trace_id
                entry.span_id = span.span_id
                entry.span_name = span.name
        entry.info = info
        entry.close_ns = entry.closed_by = entry.io = entry.desc = None
        entry.type_name = type(obj).__name__
        self.live[oid] = entry
        self.opened[kind].inc()
        return entry

    def _collected(self, entry: Entry) -> None:
        # Runs wherever the object dies (any thread, maybe inside the GC): keep it short.
        if self.stopped:
            return
        try:
            oid = entry.oid
            live = self.live
            if live.get(oid) is entry:
                live.pop(oid, None)
            if entry.close_ns is None:
                entry.close_ns = self.now()
                entry.closed_by = "program"
                # A ResourceWarning about it may still follow (cyclic garbage loses its
                # weak references before its finaliser runs): remember it for a while.
                self._recent[self._recent_seq() & RECENT_MASK] = entry
            self.collected.inc()
            if entry.io is not None or self.record_closes:
                callback = self.on_collected
                if callback is not None:
                    callback(entry)
        except Exception as exc:
            self.on_error("handle collected", exc)

    def entry_of(self, obj: Any) -> Entry | None:
        """The live entry tracking ``obj``, if any."""
        entry = self.live.get(id(obj))
        return entry if entry is not None and entry() is obj else None

    # ------------------------------------------------------- closed by the GC

    def resource_warning(self, source: Any) -> bool:
        """A finaliser warned that ``source`` was never closed; True if it was tracked."""
        oid = id(source)
        entry = self.live.get(oid)
        if entry is None or entry() is not source:
            type_name = type(source).__name__
            entry = next(
                (
                    e
                    for e in list(self._recent)
                    if e is not None and e.oid == oid and e.type_name == type_name and e() is None
                ),
                None,
            )
            if entry is None:
                return False
        if entry.closed_by == "gc":
            return True
        entry.desc = describe(entry.kind, source, entry.info)
        entry.type_name = type(source).__name__
        entry.close_ns = self.now()
        entry.closed_by = "gc"
        self.gc_closed_count.inc()
        if len(self.gc_closed) < MAX_GC_CLOSED:
            self.gc_closed.append(entry)
        return True

    # ------------------------------------------------------------- reporting

    def open_entries(self) -> list[tuple[Entry, Any]]:
        """(entry, object) for every tracked object still alive and not closed."""
        out = []
        for entry in list(self.live.values()):
            obj = entry()
            if obj is None or entry.closed_by is not None:
                continue
            try:
                closed = is_closed(entry.kind, obj, entry.info)
            except Exception:
                closed = False  # cannot tell: report it rather than hide a leak
            if not closed:
                out.append((entry, obj))
        return out

    def record(self, cls: type[HandleRecord | Leak], entry: Entry, obj: Any = None) -> Any:
        """Freeze ``entry`` into a :class:`HandleRecord` or :class:`Leak`."""
        desc = entry.desc
        if desc is None:
            try:
                desc = describe(entry.kind, obj, entry.info)
            except Exception:
                desc = KINDS[entry.kind]
        io = entry.io
        return cls(
            handle_id=entry.hid,
            handle_kind=KINDS[entry.kind],
            description=desc,
            open_ns=entry.open_ns,
            close_ns=entry.close_ns,
            closed_by=entry.closed_by,
            site=site_of(entry.frames),
            stack=stack_of(entry.frames),
            trace_id=entry.trace_id,
            span_id=entry.span_id,
            span_name=entry.span_name,
            bytes_sent=io[0] if io else None,
            bytes_received=io[1] if io else None,
            ops=io[2] if io else None,
        )


def task_is_own(task: asyncio.Task[Any]) -> bool:
    """asynclens's own tasks are named with an ``asynclens`` prefix."""
    try:
        return task.get_name().startswith("asynclens")
    except Exception:
        return False
