"""Open-handle registry: what a session left open, who opened it, and I/O rates.

The ``handles`` probe (session option ``track_handles``, on by default) tracks
sockets, files, subprocesses and asyncio transports as they are opened, each
with its creation site (innermost user frame and a short stack, captured as
``(code, line)`` pairs and formatted only for reports) and the span that was
active. Tasks still pending and non-daemon threads still running are leaks too.

* ``Session.open_handles()`` is a live snapshot (why-is-node-running style).
* At session end every handle still open becomes a :class:`~asynclens.records.Leak`
  record and a line of ``summary()``; so does every handle the garbage collector
  had to close (its ``ResourceWarning``), with ``closed_by="gc"``.
* Bytes and operations sent/received are counted per transport, per span (the
  span that opened the transport) and per session. TCP connections (stdlib
  loops and uvloop) are counted by the kernel: its ``TCP_INFO`` counters are read
  once per rate window, for snapshots and when the connection is lost, so
  sending and receiving cost nothing extra (operations are then data segments).
  Other socket transports of the stdlib loops (Unix sockets; TCP where the kernel
  has no counters) are counted by hooks on ``write``/``data_received``.
  Readiness events are counted on every stdlib selector loop.
  :class:`~asynclens.records.IoRates` records carry session-wide totals per window.

Tracking holds only weak references; asynclens's own files, sockets, tasks and
threads (names starting with ``asynclens``) are not recorded; every patch is
removed when the session ends. See ``docs/handles.md`` for what each loop covers.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import threading
import weakref
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...records import HandleRecord, IoRates, Leak, NeverResumable
from .._attrs import instance_attr, remove_instance_attr
from .._patch import Patch
from .._tasks import pending_tasks
from . import patches as _handle_patches
from . import tcp_counters as _tcp_counters
from .registry import KINDS, TASK, TRANSPORT, Entry, Registry, is_closed, task_is_own
from .never_resumable import find_never_resumable, never_resumable_record
from .task_leaks import task_leak
from .text import handle_line, io_lines, left_open
from .transport_io import count_transport_io, remove_hooks

__all__ = ["HandleProbe", "HandleStatistics"]

#: Leaks and busiest transports listed in ``summary()``; all leaks are still records.
SUMMARY_LIMIT = 20
MAX_TASK_LEAKS = 1000
MAX_SPAN_NAMES = 1000
#: Reading every open TCP connection's counters may take at most this share of the time.
TCP_READ_SHARE = 0.005


@dataclass(frozen=True)
class HandleStatistics:
    """Counters of the handle registry (``Session.statistics().probes["handles"]``)."""

    opened: Mapping[str, int] = field(default_factory=dict)
    open_now: Mapping[str, int] = field(default_factory=dict)
    collected: int = 0
    closed_by_gc: int = 0
    leaks: int = 0
    untracked: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    ops: int = 0
    events: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


class HandleProbe:
    """The ``handles`` probe. Options:

    * ``count_io``: count bytes/ops of asyncio's socket transports and the loops'
      readiness events, emitted as :class:`IoRates` windows (off: no I/O rates).
    * ``record_closes``: also emit a :class:`HandleRecord` for every handle when
      it is closed and collected (off: only transports that carried bytes do).
    * ``io_interval``: seconds per :class:`IoRates` window (``0``: only at the end).
    """

    name = "handles"

    def __init__(self, *, count_io: bool = True, record_closes: bool = False, io_interval: float = 1.0) -> None:
        self.count_io = count_io
        self.record_closes = record_closes
        self.io_interval = io_interval
        self.session: Any = None
        self.registry = Registry(lambda: 0, lambda where, exc: None)
        self.leaks: list[Leak] = []
        self.totals = [0, 0, 0]  # bytes sent, bytes received, ops: counted by hooks (loop threads)
        self._tcp_totals = [0, 0, 0]  # the same from the kernel's counters (under _tcp_lock)
        self._tcp: dict[int, Entry] = {}  # handle id -> entry of each TCP transport counted by the kernel
        self._tcp_lock = threading.Lock()
        self._tcp_due = 0
        self._patches: list[Patch] = []
        self._loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._tasks_before: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._tasks_reported: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._task_leaks: list[Leak] = []
        #: tasks that can never be resumed, found when asyncio.run() ended, at session end,
        #: or when the garbage collector destroyed them pending
        self.never_resumable_found: list[NeverResumable] = []
        self._destroyed_hooks: list[tuple[weakref.ref[Any], Any]] = []
        self._never_emitted: set[int] = set()  # task ids of those emitted when destroyed
        self._event_hooks: list[tuple[weakref.ref[Any], Any, list[int]]] = []
        self._events_closed = 0
        self._events_lock = threading.Lock()  # (_event_hooks, _events_closed) change together
        self._prune_hooks_at = 64
        self._span_io: dict[str | None, list[int]] = {}
        self._busiest: list[tuple[int, int, HandleRecord | Leak]] = []
        self._window = (0, 0, 0, 0, 0)  # start_ns, events, sent, received, ops
        self._io_stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._active = False

    # ------------------------------------------------------------ lifecycle

    def start(self, session: Any) -> None:
        self.session = session
        self.registry = Registry(session.now, session.internal_error)
        self.registry.on_collected = self._on_collected
        self.registry.record_closes = self.record_closes
        self._patches = _handle_patches.install(self)
        self._window = (session.now(), 0, 0, 0, 0)
        self._active = True
        subscribe = getattr(session, "on_loop_class", None)
        if subscribe is not None:  # uvloop.Loop: now, or as soon as the program imports uvloop
            subscribe(_handle_patches.loop_class_hook(self._patches), probe=self.name)
        if self.io_interval > 0 and self.count_io:
            self._io_thread = threading.Thread(target=self._io_loop, name="asynclens-io-rates", daemon=True)
            self._io_thread.start()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._active:
            return
        self._loops.add(loop)
        for task in pending_tasks(loop):
            self._tasks_before.add(task)
        if not _handle_patches.covers_transports(loop):
            not_measured = getattr(self.session, "not_measured", None)
            if not_measured is not None:
                not_measured(self.name, loop, "no hooks for this loop type; its sockets are tracked", what="transports")
        if self.count_io and isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            self._count_events(loop)
        self._hook_destroyed(loop)

    def stop(self) -> None:
        if not self._active:
            return
        _handle_patches.uninstall(self._patches)  # first: nothing new is tracked from here on
        self._patches = []
        self._io_stop.set()
        if self._io_thread is not None and self._io_thread is not threading.current_thread():
            self._io_thread.join()
        self._tcp_due = 0  # the last window reads every connection
        self.emit_io_window()
        for loop in list(self._loops):  # before the leaks: a task that never finishes is not "pending"
            if not loop.is_closed():
                self._note_never_resumable(loop)
        for record in self.never_resumable_found:
            if record.task_id not in self._never_emitted:
                self.session.emit(record)
        self.leaks = self._collect_leaks()
        for leak in self.leaks:
            self.session.emit(leak)
        self._emit_closed_survivors()
        self._uncount_events()
        self._unhook_destroyed()
        self._unhook_transports()
        self._active = False
        self.registry.on_collected = None
        self.registry.stopped = True
        self.registry.live.clear()  # drop the weak references: no callbacks after the session

    def session_error(self, where: str, exc: BaseException) -> None:
        """Count a bug of the probe (patch wrappers call this; never raises)."""
        if self.session is not None:
            self.session.internal_error(where, exc)

    # -------------------------------------------------------------- tracking

    def track_transport(self, transport: Any, frames: list[Any], count_io: bool, parent: Entry | None = None) -> None:
        """Track a loop's transport; with ``count_io``, count its bytes and ops (from the
        kernel on TCP connections, by hooks on other stdlib socket transports)."""
        peer = None
        try:
            peer = transport.get_extra_info("peername")
        except Exception:
            pass
        entry = self.registry.add(
            transport, TRANSPORT, f"{type(transport).__name__} {peer or ''}".strip(), frames, parent
        )
        if entry is None or not count_io:
            return
        sock = transport.get_extra_info("socket")
        if _tcp_counters.AVAILABLE and _tcp_counters.is_tcp(sock) and self._count_tcp(transport, entry, sock):
            return
        if hasattr(transport, "__dict__"):  # a stdlib transport (uvloop's are C objects)
            count_transport_io(transport, entry, self.totals)

    def _count_tcp(self, transport: Any, entry: Entry, sock: Any) -> bool:
        """Count ``transport``'s bytes from its socket's kernel counters: read when asked,
        and a last time when the protocol hears the connection is lost (the socket is
        still open then, on the stdlib loops and on uvloop)."""
        try:
            if _tcp_counters.read(sock) is None:
                return False
        except OSError:
            return False
        entry.io = [0, 0, 0, None]
        self._tcp[entry.hid] = entry
        protocol = transport.get_protocol()
        if protocol is None or instance_attr(protocol, "connection_lost") is not None:
            return True  # no last reading: counts stop at the last window
        lost = type(protocol).connection_lost
        pref = entry.io[3] = weakref.ref(protocol)
        hid = entry.hid

        def connection_lost(exc: BaseException | None) -> Any:
            protocol = pref()
            remove_instance_attr(protocol, "connection_lost", connection_lost)
            last = self._tcp.pop(hid, None)
            if last is not None:
                self._read_tcp(last, final=True)
            return lost(protocol, exc)

        connection_lost.__asynclens_hook__ = True  # type: ignore[attr-defined]
        try:
            protocol.connection_lost = connection_lost
        except (AttributeError, TypeError):
            pass  # a protocol with __slots__
        return True

    def _read_tcp(self, entry: Entry, final: bool = False) -> None:
        """Bring ``entry``'s counts up to its kernel counters (any thread)."""
        transport = entry()
        if transport is None:
            return
        try:
            # Closing, its socket may be closed (and its descriptor reused) any moment:
            # only the connection_lost hook, which runs before the close, reads then.
            if not final and transport.is_closing():
                return
            counters = _tcp_counters.read(transport.get_extra_info("socket"))
            if counters is None or (not final and transport.is_closing()):
                return
        except (OSError, ValueError):  # closed after all (uvloop: "negative file descriptor")
            return
        io = entry.io
        assert io is not None
        with self._tcp_lock:
            sent, received, ops = counters
            added = (sent - io[0], received - io[1], ops - io[2])
            if min(added) < 0:
                return  # not this connection's counters (a reused descriptor)
            io[0], io[1], io[2] = sent, received, ops
            totals = self._tcp_totals
            totals[0] += added[0]
            totals[1] += added[1]
            totals[2] += added[2]

    def _read_all_tcp(self) -> None:
        for entry in list(self._tcp.values()):
            self._read_tcp(entry)

    def io_totals(self) -> tuple[int, int, int]:
        """Session-wide (bytes sent, bytes received, ops) as of the last readings."""
        hooked, tcp = self.totals, self._tcp_totals
        return hooked[0] + tcp[0], hooked[1] + tcp[1], hooked[2] + tcp[2]

    def note_abandoned_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """``asyncio.run()`` is about to cancel ``loop``'s leftover tasks: report them."""
        if loop not in self._loops:
            return  # a loop the session never watched: its tasks may predate the session
        self._note_never_resumable(loop)
        for task in pending_tasks(loop):
            if self._is_leaked_task(task) and len(self._task_leaks) < MAX_TASK_LEAKS:
                self._tasks_reported.add(task)
                self._task_leaks.append(
                    task_leak(self.session.start_ns, task, "still pending when asyncio.run() finished (cancelled by it)")
                )

    def never_resumable(self) -> list[NeverResumable]:
        """The pending tasks of the open loops that can never be resumed, found now
        (``Session.never_resumable()``; see docs/lints.md)."""
        if not self._active:
            return []
        found = []
        for loop in list(self._loops):
            if not loop.is_closed():
                found.extend(self._never_resumable_of(loop))
        return found

    def _never_resumable_of(self, loop: asyncio.AbstractEventLoop) -> list[NeverResumable]:
        try:
            stuck = find_never_resumable(loop)
            now = self.session.now()
            return [
                never_resumable_record(task, now)
                for task in stuck
                if task not in self._tasks_before and not task_is_own(task)
            ]
        except Exception as exc:
            self.session.internal_error("looking for tasks that can never be resumed", exc)
            return []

    def _note_never_resumable(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the tasks of ``loop`` that can never be resumed (emitted at the end), and
        leave them out of the pending tasks: they will never finish, not "still running"."""
        found = self._never_resumable_of(loop)
        if not found:
            return
        by_id = {id(task): task for task in pending_tasks(loop)}
        known = {record.task_id for record in self.never_resumable_found}
        for record in found:
            task = by_id.get(record.task_id)
            if task is None or record.task_id in known or len(self.never_resumable_found) >= MAX_TASK_LEAKS:
                continue
            self._tasks_reported.add(task)
            self.never_resumable_found.append(record)

    def _hook_destroyed(self, loop: Any) -> None:
        """Hear of a task the garbage collector destroys while pending (asyncio reports
        it to the loop's exception handler): nothing held it, so nothing could ever have
        resumed it. Its record is made then, while the task still exists."""
        if instance_attr(loop, "call_exception_handler") is not None:
            return  # someone else's hook: leave it alone
        handler = type(loop).call_exception_handler
        ref = weakref.ref(loop)

        def call_exception_handler(context: Any) -> Any:
            try:
                task = context.get("task") if isinstance(context, dict) else None
                if (
                    self._active
                    and isinstance(task, asyncio.Task)
                    and not task.done()
                    and "destroyed but it is pending" in str(context.get("message", ""))
                ):
                    self._note_destroyed(task)
            except Exception as exc:
                self.session_error("noting a task destroyed pending", exc)
            return handler(ref(), context)

        loop.call_exception_handler = call_exception_handler
        kept = []
        for old_ref, hook in self._destroyed_hooks:  # one per open loop, not per loop ever seen
            old = old_ref()
            if old is not None and old.is_closed():
                remove_instance_attr(old, "call_exception_handler", hook)
            elif old is not None:
                kept.append((old_ref, hook))
        kept.append((ref, call_exception_handler))
        self._destroyed_hooks = kept

    def _unhook_destroyed(self) -> None:
        for ref, hook in self._destroyed_hooks:
            loop = ref()
            if loop is not None:
                remove_instance_attr(loop, "call_exception_handler", hook)
        self._destroyed_hooks = []

    def _note_destroyed(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks_before or task_is_own(task) or len(self.never_resumable_found) >= MAX_TASK_LEAKS:
            return
        if any(record.task_id == id(task) for record in self.never_resumable_found):
            return
        record = never_resumable_record(task, self.session.now())
        self.never_resumable_found.append(record)
        self._never_emitted.add(record.task_id)
        self.session.emit(record)

    def _is_leaked_task(self, task: asyncio.Task[Any]) -> bool:
        return (
            not task.done()
            and task not in self._tasks_before
            and task not in self._tasks_reported
            and not task_is_own(task)
        )

    def _on_collected(self, entry: Entry) -> None:
        io = entry.io
        if io is not None:
            self._tcp.pop(entry.hid, None)
            self._add_span_io(entry.span_name, io)
            if io[0] or io[1] or self.record_closes:
                record = self.registry.record(HandleRecord, entry)
                self._note_busy(record)
                self.session.emit(record)
                return
        if self.record_closes:
            self.session.emit(self.registry.record(HandleRecord, entry))

    def _add_span_io(self, name: str | None, io: list[int]) -> None:
        totals = self._span_io.get(name)
        if totals is None:
            if len(self._span_io) >= MAX_SPAN_NAMES:
                name = "(other spans)"
            totals = self._span_io.setdefault(name, [0, 0, 0])
        totals[0] += io[0]
        totals[1] += io[1]
        totals[2] += io[2]

    def _note_busy(self, record: HandleRecord | Leak) -> None:
        item = ((record.bytes_sent or 0) + (record.bytes_received or 0), -record.handle_id, record)
        if len(self._busiest) < SUMMARY_LIMIT:
            heapq.heappush(self._busiest, item)
        elif item > self._busiest[0]:
            heapq.heapreplace(self._busiest, item)

    # ------------------------------------------------------- readiness events

    def _count_events(self, loop: Any) -> None:
        if instance_attr(loop, "_process_events") is not None:
            return  # someone else's hook: leave it alone
        process = type(loop)._process_events
        ref = weakref.ref(loop)  # a strong ref from the loop's own dict would make a cycle
        cell = [0]

        def _process_events(event_list: Any) -> Any:
            cell[0] += len(event_list)
            return process(ref(), event_list)

        loop._process_events = _process_events
        if len(self._event_hooks) >= self._prune_hooks_at:
            self._prune_event_hooks()
        self._event_hooks.append((ref, _process_events, cell))

    def _prune_event_hooks(self) -> None:
        """Fold the counts of closed or collected loops into ``_events_closed`` (a
        closed loop counts no more events): the hooks kept stay as many as the open
        loops, not one per loop ever seen (a test suite makes a loop per test)."""
        kept = []
        folded = 0
        for ref, hook, cell in self._event_hooks:
            loop = ref()
            if loop is None or loop.is_closed():
                if loop is not None:
                    remove_instance_attr(loop, "_process_events", hook)
                folded += cell[0]
            else:
                kept.append((ref, hook, cell))
        with self._events_lock:
            self._events_closed += folded
            self._event_hooks = kept
        self._prune_hooks_at = max(64, 2 * len(kept))

    def _emit_closed_survivors(self) -> None:
        """Handles closed but not yet collected at the end get their close record now
        (transports that carried bytes; every handle with ``record_closes``)."""
        now = self.session.now()
        for entry in list(self.registry.live.values()):
            obj = entry()
            if obj is None or entry.closed_by is not None:
                continue
            io = entry.io
            if not (self.record_closes or (io is not None and (io[0] or io[1]))):
                continue
            try:
                if not is_closed(entry.kind, obj, entry.info):
                    continue
            except Exception:
                continue
            entry.close_ns = now
            entry.closed_by = "program"
            record = self.registry.record(HandleRecord, entry, obj)
            if io is not None:
                self._add_span_io(entry.span_name, io)
                self._note_busy(record)
            self.session.emit(record)

    def _unhook_transports(self) -> None:
        for entry in list(self.registry.live.values()):
            transport = entry()
            if entry.io is None or transport is None:
                continue
            remove_hooks(transport, ("write", "writelines"))
            protocol = entry.io[3]() if entry.io[3] is not None else None
            if protocol is not None:
                remove_hooks(protocol, ("data_received", "buffer_updated", "connection_lost"))
        self._tcp.clear()

    def _uncount_events(self) -> None:
        for ref, hook, cell in self._event_hooks:
            loop = ref()
            if loop is not None:
                remove_instance_attr(loop, "_process_events", hook)
            self._events_closed += cell[0]
        self._event_hooks = []

    def _events(self) -> int | None:
        with self._events_lock:
            hooks, closed = self._event_hooks, self._events_closed
        if not hooks and not closed:
            return None
        return closed + sum(cell[0] for _, _, cell in hooks)

    # ---------------------------------------------------------------- I/O rates

    def _io_loop(self) -> None:
        while not self._io_stop.wait(self.io_interval):
            try:
                self.emit_io_window()
            except Exception as exc:
                self.session.internal_error("emitting I/O rates", exc)

    def emit_io_window(self) -> IoRates | None:
        """Emit the :class:`IoRates` of the window since the last one (if anything happened).

        Reads the open TCP connections' counters unless that took more than
        ``TCP_READ_SHARE`` of the time since the last reading (many connections)."""
        start, events0, sent0, recv0, ops0 = self._window
        now = self.session.now()
        if self._tcp and now >= self._tcp_due:
            self._read_all_tcp()
            read_at, now = now, self.session.now()
            self._tcp_due = now + int((now - read_at) / TCP_READ_SHARE)
        events = self._events()
        sent, received, ops = self.io_totals()
        self._window = (now, events or 0, sent, received, ops)
        if not (sent - sent0 or received - recv0 or ops - ops0 or (events or 0) - events0):
            return None
        record = IoRates(
            start_ns=start,
            end_ns=now,
            events=None if events is None else events - events0,
            bytes_sent=sent - sent0,
            bytes_received=received - recv0,
            ops=ops - ops0,
        )
        self.session.emit(record)
        return record

    # --------------------------------------------------------------- reporting

    def open_handles(self, only: Container[tuple[str, int]] | None = None) -> list[HandleRecord]:
        """Every handle open right now, oldest first (empty once the session ended).

        ``only``: just the handles with these ``(handle_kind, handle_id)`` keys."""
        if not self._active:
            return []
        self._read_all_tcp()
        record = self.registry.record
        records = [
            record(HandleRecord, e, obj)
            for e, obj in self.registry.open_entries()
            if only is None or (KINDS[e.kind], e.hid) in only
        ]
        stuck: set[int] = set()
        for loop in list(self._loops):
            if not loop.is_closed():
                stuck.update(r.task_id for r in self._never_resumable_of(loop))
        for task in self._open_tasks():
            if only is None or (KINDS[TASK], id(task)) in only:
                note = "pending, and can never be resumed" if id(task) in stuck else "pending"
                leak = task_leak(self.session.start_ns, task, note)
                records.append(HandleRecord(**{f: getattr(leak, f) for f in _FIELDS}))
        records.sort(key=lambda r: (r.open_ns, r.handle_id))
        return records

    def open_keys(self) -> set[tuple[str, int]]:
        """``(handle_kind, handle_id)`` of every handle :meth:`open_handles` would list,
        without making its record (no creation site formatted, no task's stack walked)."""
        if not self._active:
            return set()
        keys = {(KINDS[e.kind], e.hid) for e, _ in self.registry.open_entries()}
        keys.update((KINDS[TASK], id(task)) for task in self._open_tasks())
        return keys

    def _open_tasks(self) -> list[asyncio.Task[Any]]:
        """Pending tasks of the open loops, the session's own and those from before it aside."""
        tasks = []
        for loop in list(self._loops):
            if loop.is_closed():
                continue
            current = _current_task(loop)
            for task in pending_tasks(loop):
                if task is not current and not task.done() and task not in self._tasks_before and not task_is_own(task):
                    tasks.append(task)
        return tasks

    def _collect_leaks(self) -> list[Leak]:
        leaks = []
        for entry, obj in self.registry.open_entries():
            leak = self.registry.record(Leak, entry, obj)
            if entry.io is not None:  # what it carried counts for its span and the busiest too
                self._add_span_io(entry.span_name, entry.io)
                self._note_busy(leak)
            leaks.append(leak)
        leaks.extend(self.registry.record(Leak, e) for e in self.registry.gc_closed)
        leaks.extend(self._task_leaks)
        for loop in list(self._loops):
            if loop.is_closed():
                continue
            current = _current_task(loop)
            for task in pending_tasks(loop):
                if task is not current and self._is_leaked_task(task):
                    leaks.append(task_leak(self.session.start_ns, task, "still pending at session end"))
        leaks.sort(key=lambda r: (r.open_ns, r.handle_id))
        return leaks

    def statistics(self) -> HandleStatistics:
        reg = self.registry
        if self._active:
            self._read_all_tcp()
        sent, received, ops = self.io_totals()
        open_now: dict[str, int] = {}
        for entry, _ in reg.open_entries() if self._active else ():
            open_now[KINDS[entry.kind]] = open_now.get(KINDS[entry.kind], 0) + 1
        return HandleStatistics(
            opened={KINDS[i]: c.value for i, c in enumerate(reg.opened) if i != TASK},
            open_now=open_now,
            collected=reg.collected.value,
            closed_by_gc=reg.gc_closed_count.value,
            leaks=len(self.leaks),
            untracked=reg.untracked.value,
            bytes_sent=sent,
            bytes_received=received,
            ops=ops,
            events=self._events(),
        )

    def summary_lines(self) -> list[str]:
        """The handles section of ``summary()``: counts, what is open now (while the
        session runs) and I/O rates. The leaks themselves are rendered from the
        :class:`Leak` records by the summary ("Left open")."""
        stats = self.statistics()
        opened = ", ".join(f"{n} {k}" for k, n in stats.opened.items() if n)
        head = f"Handles: {sum(stats.opened.values())} opened ({opened or 'none'}), {stats.closed_by_gc} closed by GC"
        if not self._active:
            head += f", {left_open(self.leaks)} left open or closed by GC at the end"
        lines = [head]
        if self._active:
            current = self.open_handles()
            lines.append(f"  open now: {len(current)}")
            lines.extend(handle_line(r) for r in current[:SUMMARY_LIMIT])
            if len(current) > SUMMARY_LIMIT:
                lines.append(f"  ... and {len(current) - SUMMARY_LIMIT} more (Session.open_handles())")
        lines.extend(io_lines(self, stats))
        return lines



_FIELDS = [f.name for f in dataclasses.fields(HandleRecord)]


def _current_task(loop: asyncio.AbstractEventLoop) -> Any:
    if asyncio.events._get_running_loop() is loop:
        return asyncio.current_task(loop)
    return None


