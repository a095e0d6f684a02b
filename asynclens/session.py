"""The recording session: lifecycle, bounded buffer, flusher thread, sinks.

Instrumentation points hand the session finished live spans or frozen records
(``emit``) from any thread; both only append to a bounded deque.
A background flusher turns buffered spans into :class:`~asynclens.records.Span`
records, keeps the aggregates ``summary()`` reads, and hands batches to the
sinks (with no sink it only aggregates, from the live spans). A sink that raises is logged once, disabled and counted; nothing
asynclens does raises into the program it observes.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import operator
import os
import sys
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, cast

from . import _options
from ._durations import Duration
from ._state import context as _context
from ._state.clock import Clock, SystemClock
from .probes._loops import Coverage, LoopWatcher
from .records import SCHEMA_VERSION, Record, SessionEnd, SessionInfo, Span, SpanEvent, fast_constructor
from .report.summary import SpanAggregates, render_summary
from .sinks import Sink, SinkLike, resolve_sinks
from .tracing.executor import ExecutorContext

__all__ = ["Probe", "Session", "SessionError", "SessionStatistics", "session"]

logger = logging.getLogger("asynclens")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: The most records one sink.write() call receives.
FLUSH_BATCH = 2048
#: With no sinks, the longest the flusher sleeps between aggregations (seconds).
NO_SINK_FLUSH_S = 1.0
_NO_ERROR = ("ok", None, None)
#: LiveSpan.breakdown, once the span ended under the scheduler probe: these fields, in order.
_BREAKDOWN_FIELDS = (
    "cpu_ns",
    "sched_wait_ns",
    "io_wait_ns",
    "executor_ns",
    "steps",
    "max_sched_wait_ns",
    "blocked_ns",
    "own_breakdown",
    "held_up_by",
)
# Span fields a probe may fill through LiveSpan.extra, in field order, with their defaults.
_EXTRA_FIELDS = ("links", "remote_parent", "error_stack", *_BREAKDOWN_FIELDS)
_NO_EXTRA = ((), False, *(None,) * (len(_EXTRA_FIELDS) - 2))
_EXTRA_DEFAULTS = dict(zip(_EXTRA_FIELDS, _NO_EXTRA))
_FIRST_BREAKDOWN = len(_EXTRA_FIELDS) - len(_BREAKDOWN_FIELDS)
_extra_values = operator.itemgetter(*_EXTRA_FIELDS)  # of {**_EXTRA_DEFAULTS, **extra}: ~0.3 µs less per span
_make_span = fast_constructor(Span)


class _ReentrantEvent(threading.Event):
    """An Event whose set() may run again inside itself on the same thread (a gc callback
    that emits a record while this thread is in set() or wait()): a plain Event would
    deadlock on its own lock."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition(threading.RLock())


class SessionError(RuntimeError):
    """A session was used the wrong way (e.g. two sessions at once)."""


class Probe(Protocol):
    """An instrumentation component owned by a session (lag monitor, handle registry, …).

    ``start`` runs when the session starts, ``attach_loop`` once for every event
    loop the session sees, ``stop`` before the final flush (a good time to emit
    end-of-run records such as leaks). ``statistics`` feeds
    ``Session.statistics().probes[name]``; ``summary_lines`` adds to ``summary()``.
    """

    name: str

    def start(self, session: Session) -> None: ...
    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None: ...
    def stop(self) -> None: ...
    def statistics(self) -> Any: ...
    def summary_lines(self) -> list[str]: ...


@dataclass(frozen=True)
class SessionStatistics:
    """Counters of a session; every figure is exact at the time of the call."""

    records_emitted: int
    records_dropped: int
    records_buffered: int
    spans_recorded: int
    buffer_limit: int
    flushes: int
    sinks: int
    sinks_disabled: int
    sink_errors: int
    internal_errors: int
    probes: Mapping[str, Any] = field(default_factory=dict)
    #: What the session could not measure (``"Not measured: ..."`` lines naming the loop
    #: type, or the probe that failed to start, and what is missing); empty when it saw all.
    blind_spots: tuple[str, ...] = ()
    #: Event loops handed to the probes.
    loops_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "probes"}
        out["probes"] = {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in self.probes.items()}
        out["blind_spots"] = list(self.blind_spots)
        return out


def _positive(option: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind) or cast(float, value) <= 0:
        raise ValueError(f"session({option}={value!r}): must be a positive number")
    return value


class Session:
    """Records everything asynclens instruments while it is active.

    Use ``with asynclens.session(...) as s:`` or ``async with``; only one session
    may be active in a process at a time.

    Options:
        sinks: where records go: :class:`~asynclens.sinks.Sink` objects or paths
            (``"run.jsonl"``; the suffix picks the sink), or ``"memory"``.
        clock: a :class:`~asynclens._clock.Clock`; tests pass a ``FakeClock``.
        buffer_limit: records buffered before new ones are dropped (and counted).
        flush_interval: seconds between flushes of the buffer to the sinks (with no
            sinks, a flush only aggregates: it happens every few hundred records, at
            least once a second, and when ``summary()`` is asked for).
        lag, lag_interval, stall_threshold: the event-loop lag monitor.
        track_handles: the open-handle registry; ``io_rates=False`` keeps it from
            counting bytes and readiness events (no :class:`~asynclens.records.IoRates`).
        scheduler: the task step probe.
        resources: the resources probe (waits on asyncio locks, semaphores, conditions,
            events, queues, barriers; ``docs/resources.md``).
        name: a label for the run, written into the header.
        flight_recorder: keep only the last this many seconds of records (in a ring
            bounded by ``flight_max_bytes`` too) and write them out when ``dump_on``
            triggers or :func:`asynclens.dump` is called: ``sinks`` are then where the
            dumps go (paths, ``{n}`` numbering them, or factories ``n -> Sink``).
            ``dump_after``, ``dump_interval`` and ``max_dumps`` shape the dumps
            (see ``docs/flight-recorder.md``).

    .. versionadded:: 0.1
    """

    @_options.checked_options(
        where="asynclens.session()", durations=("flush_interval", "lag_interval", "stall_threshold")
    )
    def __init__(
        self,
        sinks: SinkLike | Iterable[SinkLike] | None = None,
        *,
        clock: Clock | None = None,
        buffer_limit: int = 100_000,
        flush_interval: Duration = 0.1,
        lag: bool = True,
        lag_interval: Duration = 0.01,
        stall_threshold: Duration = 0.05,
        track_handles: bool = True,
        io_rates: bool = True,
        scheduler: bool = True,
        resources: bool = True,
        probes: Iterable[Probe] | None = None,
        name: str | None = None,
        flight_recorder: Duration | None = None,
        dump_on: Any = None,
        dump_after: Duration = 1.0,
        dump_interval: Duration = 30.0,
        max_dumps: int = 10,
        flight_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.buffer_limit = _positive("buffer_limit", buffer_limit, int)
        self.flush_interval = float(_positive("flush_interval", flush_interval, (int, float)))
        self.lag_interval = float(_positive("lag_interval", lag_interval, (int, float)))
        self.stall_threshold = float(_positive("stall_threshold", stall_threshold, (int, float)))
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.now = self.clock.now_ns
        self.name = name
        self.options: dict[str, Any] = {
            "buffer_limit": buffer_limit,
            "flush_interval": flush_interval,
            "lag": bool(lag),
            "lag_interval": lag_interval,
            "stall_threshold": stall_threshold,
            "track_handles": bool(track_handles),
            "io_rates": bool(io_rates),
            "scheduler": bool(scheduler),
            "resources": bool(resources),
        }
        #: the flight recorder (``flight_recorder=SECONDS``), or None
        self.flight_recorder: Any = None
        if flight_recorder is not None:
            from .flight import FlightRecorder

            targets = [sinks] if isinstance(sinks, (str, os.PathLike, Sink)) or callable(sinks) else list(sinks or ())
            self.flight_recorder = FlightRecorder(
                targets,
                flight_recorder,
                dump_on=dump_on,
                dump_after=dump_after,
                dump_interval=dump_interval,
                max_dumps=max_dumps,
                max_bytes=flight_max_bytes,
                now=self.now,
            )
            self.options["flight_recorder"] = self.flight_recorder.window_s
            self._sinks: list[Sink] = [self.flight_recorder.ring]
        else:
            _flight_options_need_a_recorder(dump_on, dump_after, dump_interval, max_dumps, flight_max_bytes)
            self._sinks = resolve_sinks(sinks)
        self._probes: list[Probe] = list(probes) if probes is not None else _default_probes(self.options)
        self._buffer: deque[Any] = deque()
        self._limit = 0  # nothing is accepted before start() or after close()
        self._dropped = 0
        self._drain_count = 0
        self._spans = 0
        self._flushes = 0
        self._sink_errors = 0
        self._disabled: set[int] = set()
        self._internal_errors = 0
        self._logged: set[str] = set()
        # emit() runs wherever a record is made, also inside a gc callback or a weakref
        # callback, which from 3.12 may run at any bytecode boundary, even while this same
        # thread is inside emit(): the locks emit() takes are re-entrant.
        self._count_lock = threading.RLock()
        self._flush_lock = threading.RLock()
        self._stop_flusher = threading.Event()
        self._wake = _ReentrantEvent()  # set by the hot path at _wake_at buffered items, or by close()
        self._wake_at = -1  # a buffer length: never, unless start() says otherwise
        self._flusher: threading.Thread | None = None
        # a probe that needs no loop (resources: class patches only) misses nothing on an unseen one
        self.coverage = Coverage(p.name for p in self._probes if getattr(p, "watches_loops", True))
        if self.flight_recorder is not None:  # first, so that it stops last, after the probes' last records
            self._probes.insert(0, self.flight_recorder)
        self._failed_probes: set[str] = set()
        self._watcher = LoopWatcher(self._attach_loop, on_error=self.internal_error, on_unseen=self.coverage.unseen)
        self._executor_context = ExecutorContext()
        self.aggregates = SpanAggregates()
        self.info: SessionInfo | None = None
        self.state = "new"
        self.start_ns = 0
        self.end_ns = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Session:
        """Activate the session (what ``with`` does on entry)."""
        _options.check_outputs(self._sinks)
        if self.state != "new":
            raise SessionError(f"this session is already {self.state}; create a new session() for each run")
        other = _context.active
        if other is not None:
            raise SessionError(
                f"another asynclens session is already active ({other!r}); "
                "only one session can record at a time: close it first"
            )
        self.start_ns = self.now()
        self.info = SessionInfo(
            session_id=uuid.uuid4().hex,
            schema=SCHEMA_VERSION,
            pid=os.getpid(),
            argv=tuple(sys.argv),
            python=sys.version.split()[0],
            anchor_mono_ns=self.start_ns,
            anchor_wall_ns=self.clock.wall_ns(),
            name=self.name,
            options=MappingProxyType(dict(self.options)),
        )
        for sink in self._sinks:
            self._call_sink(sink, "open", self.info)
        self._limit = self.buffer_limit
        threshold = gc.get_threshold()[0]
        if not self._sinks and threshold > 0:
            # Aggregating is all a flush does then (cheap), while every buffered span
            # counts towards the GC's generation-0 threshold until it is flushed: flush
            # before they trigger a collection (which would then also promote them).
            self._wake_at = max(64, threshold // 2)
        self.state = "active"
        _context.set_active(self)
        # The hooks first, so that the probes hear of the loop classes (uvloop.Loop) as they
        # subscribe; loops seen meanwhile wait for the watcher's start().
        self._guard("loop watcher", self._watcher.prepare)
        for probe in self._probes:
            try:
                probe.start(self)
            except Exception as exc:
                self.internal_error(f"{probe.name}.start", exc)
                self._failed_probes.add(probe.name)
                self.coverage.probe_failed(probe.name, _reason(exc))
        self._guard("loop watcher", self._watcher.start)
        self._guard("executor context", self._executor_context.start)
        self._flusher = threading.Thread(target=self._flush_loop, name="asynclens-flusher", daemon=True)
        self._flusher.start()
        atexit.register(self.close)  # a session left open still writes its sinks at exit
        return self

    def close(self) -> None:
        """Stop recording, flush every buffered record to the sinks and close them."""
        if self.state != "active":
            return
        self.state = "closing"
        atexit.unregister(self.close)
        self._guard("loop watcher", self._watcher.stop)
        self._guard("executor context", self._executor_context.stop)
        for probe in reversed(self._probes):
            self._guard(f"{probe.name}.stop", probe.stop)
        if _context.active is self:
            _context.set_active(None)
        self._stop_flusher.set()
        self._wake.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        self.end_ns = self.now()
        self.flush()
        self._limit = 0  # spans still running now are counted as dropped when they end
        self._buffer.append(SessionEnd(end_ns=self.end_ns, statistics=MappingProxyType(self.statistics().as_dict())))
        self.flush()
        # the HTML and text reports show the summary `run` prints (the probes know more than their records)
        takers = [sink for sink in self._sinks if hasattr(sink, "set_summary") and id(sink) not in self._disabled]
        text = self._guard("summary", self.summary) if takers else None
        for sink in takers if text else ():
            self._call_sink(sink, "set_summary", text)
        for sink in self._sinks:
            self._call_sink(sink, "close")
        self.state = "closed"

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Instrument ``loop`` (one started before the session, or in another thread)."""
        self._watcher.watch(loop)

    def _attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.coverage.loop_seen()
        for probe in self._probes:
            if probe.name in self._failed_probes:
                continue
            try:
                probe.attach_loop(loop)
            except Exception as exc:
                self.internal_error(f"{probe.name}.attach_loop", exc)
                self.coverage.not_measured(probe.name, loop, _reason(exc, "attach_loop"))

    def on_loop_class(self, callback: Callable[[type], None], *, probe: str | None = None) -> None:
        """For probes: call ``callback(cls)`` for every event-loop class, so that the
        probe can patch it before its first loop (and its first task) exists:
        ``asyncio.BaseEventLoop`` and an already imported ``uvloop.Loop`` at once,
        ``uvloop.Loop`` as soon as the program imports uvloop, any other loop class
        when its first loop is seen. A callback that raises is counted as an internal
        error and, given the ``probe``'s name, as a blind spot on that loop class."""

        def failed(cls: type, exc: BaseException) -> None:
            if probe is not None:
                self.coverage.not_measured(probe, cls, f"patching the class failed: {_reason(exc)}")

        self._watcher.on_loop_class(callback, failed)

    def not_measured(self, probe: str, loop: Any, reason: str, *, what: str | None = None) -> None:
        """For probes: ``probe`` could not watch ``loop`` (a loop or a loop class), or
        only partly (``what`` it missed); the report names it first (see
        :attr:`SessionStatistics.blind_spots`)."""
        self.coverage.not_measured(probe, loop, reason, what)

    def blind_spots(self) -> tuple[str, ...]:
        """What this session could not measure, as ``"Not measured: ..."`` lines (empty: nothing missed)."""
        return self.coverage.lines()

    # ------------------------------------------------------------ hot path

    def emit(self, record: Record) -> None:
        """Buffer a record (or a finished live span: ``LiveSpan`` inlines this) from any
        thread; dropped (and counted) when full."""
        buffer = self._buffer
        size = len(buffer)
        if size < self._limit:
            buffer.append(record)
            if size == self._wake_at:
                self._wake.set()
        else:
            self._note_drop()

    def _note_drop(self) -> None:
        with self._count_lock:
            self._dropped += 1

    # --------------------------------------------------------------- flush

    def _flush_loop(self) -> None:
        # Every flush_interval, or sooner when woken (see _wake_at); close() flushes the rest.
        wake, stop = self._wake, self._stop_flusher
        interval = self.flush_period()
        while True:
            wake.wait(interval)
            wake.clear()
            if stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:  # keep flushing: a dead flusher would silently drop everything
                self.internal_error("flushing", exc)

    def flush_period(self) -> float:
        """Seconds between the flusher's periodic flushes: ``flush_interval``, or with no
        sinks at least ``NO_SINK_FLUSH_S``. A flush then only aggregates and ``_wake_at``
        bounds the buffer, and waking less often spares the loop thread GIL hand-offs
        (about 1 % of a busy server's throughput at 10 Hz)."""
        return self.flush_interval if self._sinks else max(self.flush_interval, NO_SINK_FLUSH_S)

    def flush(self) -> None:
        """Hand everything buffered so far to the sinks (any thread; serialised).

        Works in batches of at most ``FLUSH_BATCH`` records, so a flush never holds
        more than one small batch of frozen records beside the buffer.
        """
        with self._flush_lock:
            remaining = len(self._buffer)
            while remaining > 0:
                count = min(remaining, FLUSH_BATCH)
                remaining -= count
                self._flush_batch(count)

    def _flush_batch(self, count: int) -> None:
        if not self._sinks:
            self._aggregate_batch(count)
            return
        popleft = self._buffer.popleft
        batch: list[Record] = []
        append = batch.append
        for _ in range(count):
            item = popleft()
            if not isinstance(item, Record):
                try:
                    item = self._freeze_span(item)
                except Exception as exc:
                    self.internal_error("freezing a span", exc)
                    continue
            append(item)
        self._drain_count += count
        self._flushes += 1
        self._guard("aggregating spans", self.aggregates.add_batch, batch)
        for sink in self._sinks:
            if id(sink) not in self._disabled:
                self._call_sink(sink, "write", batch)

    def _aggregate_batch(self, count: int) -> None:
        # No sink: nothing needs a Span record but the few spans the aggregates keep,
        # so fold the live spans as they are and freeze only those (a third of the cost).
        popleft = self._buffer.popleft
        records: list[Record] = []
        spans: list[Any] = []
        for _ in range(count):
            item = popleft()
            (records if isinstance(item, Record) else spans).append(item)
        self._drain_count += count
        self._flushes += 1
        self._spans += len(spans)
        if spans:
            self._guard("aggregating spans", self.aggregates.add_live, spans, self._freeze_kept)
        if records:
            self._guard("aggregating spans", self.aggregates.add_batch, records)

    def _freeze_kept(self, live: Any) -> Span | None:
        try:
            return self._freeze_span(live, count=False)
        except Exception as exc:
            self.internal_error("freezing a span", exc)
            return None

    def _freeze_span(self, live: Any, count: bool = True) -> Span:
        if count:
            self._spans += 1
        task = live.task
        events = live.events
        error = live.error or _NO_ERROR
        extra = live.extra
        breakdown = live.breakdown
        if breakdown is not None and len(breakdown) == len(_BREAKDOWN_FIELDS):
            if not extra:  # the common case: the breakdown's values are the fields, in order
                extra_values = (*_NO_EXTRA[:_FIRST_BREAKDOWN], *breakdown)
            else:
                extra_values = _extra_values({**_EXTRA_DEFAULTS, **extra, **dict(zip(_BREAKDOWN_FIELDS, breakdown))})
        else:
            extra_values = _NO_EXTRA if not extra else _extra_values({**_EXTRA_DEFAULTS, **extra})
        return _make_span(
            live.name,
            live.trace_id,
            live.span_id,
            live.parent_id,
            live.start_ns,
            live.end_ns,
            error[0],
            error[1],
            error[2],
            MappingProxyType(live.attrs) if live.attrs else _EMPTY,
            tuple(SpanEvent(n, t, MappingProxyType(a)) for n, t, a in events) if events else (),
            task if task is None or type(task) is str else task.get_name(),  # ended spans hold the name
            live.thread_id,
            *extra_values,
        )

    # ------------------------------------------------------ failure isolation

    def _call_sink(self, sink: Sink, hook: str, *args: Any) -> None:
        method = getattr(sink, hook)
        try:
            method(*args)
        except Exception as exc:
            self._sink_errors += 1
            if id(sink) not in self._disabled:
                self._disabled.add(id(sink))
                logger.warning(
                    "asynclens: sink %r failed in %s() and was disabled: %s: %s",
                    sink,
                    hook,
                    type(exc).__name__,
                    exc,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Count a bug in asynclens itself; log it once per place, never raise."""
        self._internal_errors += 1
        if where not in self._logged:
            self._logged.add(where)
            logger.warning(
                "asynclens: internal error while %s (counted, recording goes on): %s",
                where,
                "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            )

    def _guard(self, where: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except Exception as exc:
            self.internal_error(where, exc)
            return None

    # ------------------------------------------------------------ reporting

    @property
    def sinks(self) -> Sequence[Sink]:
        return tuple(self._sinks)

    @property
    def probes(self) -> Sequence[Probe]:
        return tuple(self._probes)

    def probe(self, name: str) -> Any:
        """The probe called ``name`` (``"lag"``, ``"handles"``, ``"scheduler"``) or None."""
        return next((p for p in self._probes if p.name == name), None)

    def open_handles(self) -> list[Any]:
        """Handles open right now (sockets, files, …, pending tasks), as
        :class:`~asynclens.records.HandleRecord` s, oldest first; empty without
        the ``handles`` probe or after the session ended."""
        probe = self.probe("handles")
        return (self._guard("handles.open_handles", probe.open_handles) or []) if probe is not None else []

    def never_resumable(self) -> list[Any]:
        """Pending tasks that can never be resumed, found now by reachability (nothing
        holds the future they wait on, or them), as
        :class:`~asynclens.records.NeverResumable` records; empty without the
        ``handles`` probe or after the session ended. See ``docs/lints.md``."""
        probe = self.probe("handles")
        return (self._guard("handles.never_resumable", probe.never_resumable) or []) if probe is not None else []

    def statistics(self) -> SessionStatistics:
        """Counters: records emitted/dropped, sinks disabled, probe statistics, …"""
        buffered = len(self._buffer)
        probes = {p.name: self._guard(f"{p.name}.statistics", p.statistics) for p in self._probes}
        return SessionStatistics(
            records_emitted=self._drain_count + buffered,
            records_dropped=self._dropped,
            records_buffered=buffered,
            spans_recorded=self._spans,
            buffer_limit=self.buffer_limit,
            flushes=self._flushes,
            sinks=len(self._sinks),
            sinks_disabled=len(self._disabled),
            sink_errors=self._sink_errors,
            internal_errors=self._internal_errors,
            probes=probes,
            blind_spots=self.coverage.lines(),
            loops_seen=self.coverage.loops_seen,
        )

    def summary(self, *, color: bool = False) -> str:
        """The text report: slowest spans, errors, probe sections, counters
        (``color=True`` adds ANSI colours, for terminals)."""
        if self.state == "active":
            self.flush()
        sections: dict[str, list[str]] = {}
        for probe in self._probes:
            lines = self._guard(f"{probe.name}.summary_lines", probe.summary_lines)
            if lines:
                sections.setdefault(probe.name, []).extend(lines)
        end = self.end_ns or self.now()
        wall = (end - self.start_ns) if self.start_ns else 0
        return render_summary(self.aggregates, self.statistics(), wall, sections, color=color)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<asynclens.Session{label} {self.state}>"


def _reason(exc: BaseException, where: str | None = None) -> str:
    text = str(exc).strip().splitlines()
    name = f"{type(exc).__name__} in {where}" if where else type(exc).__name__
    return f"{name}: {text[0][:200]}" if text else name


def _flight_options_need_a_recorder(dump_on: Any, *values: Any) -> None:
    defaults = (1.0, 30.0, 10, 64 * 1024 * 1024)
    names = ("dump_after", "dump_interval", "max_dumps", "flight_max_bytes")
    given = ["dump_on"] if dump_on is not None else []
    given += [name for name, value, default in zip(names, values, defaults) if value != default]
    if given:
        raise _options.OptionError(
            f"asynclens.session({given[0]}=...): only a flight recorder dumps: add flight_recorder=SECONDS"
        )


def _default_probes(options: Mapping[str, Any]) -> list[Probe]:
    """The probes the options ask for; each lives in its own module."""
    probes: list[Probe] = []
    if options["lag"]:
        from .probes.lag.probe import LagProbe

        probes.append(LagProbe(options["lag_interval"], options["stall_threshold"]))
    if options["track_handles"]:
        from .probes.handles.probe import HandleProbe

        probes.append(HandleProbe(count_io=options.get("io_rates", True)))
    if options["scheduler"]:
        from .probes.scheduler.probe import SchedulerProbe

        probes.append(SchedulerProbe())
    if options.get("resources", False):
        from .probes.resources.probe import ResourceProbe

        probes.append(ResourceProbe())
    return probes


def session(
    sinks: SinkLike | Iterable[SinkLike] | None = None,
    **options: Any,
) -> Session:
    """Create a :class:`Session`; use it as ``with session(...) as s:`` or ``async with``.

    .. versionadded:: 0.1
    """
    return Session(sinks, **options)
