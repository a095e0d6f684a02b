"""The flight recorder: keep only the last seconds of a run, write them out when something goes wrong.

A session started with ``flight_recorder=SECONDS`` hands its records to a
:class:`FlightRing` (its only sink) instead of writing them: the ring keeps the
records that ended in the last SECONDS (plus the ``dump_after`` delay), bounded
by an estimate of their size in bytes too, and counts what it lets go.
A trigger (a stall longer than a threshold, a task's exception nobody retrieved,
``SIGUSR2``, :func:`asynclens.dump`) asks the :class:`FlightRecorder` for a dump;
after ``dump_after`` seconds its worker thread writes the window (the SECONDS
before the trigger and what came after) through fresh sinks made from the
session's outputs, ``{n}`` in a name being the dump's number. Dumps are rate
limited (``dump_interval``, ``max_dumps``); skipped triggers and failed writes are
counted and reported, never raised. See ``docs/flight-recorder.md``.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import logging
import marshal
import os
import signal
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from ._durations import DurationError, format_ns, parse_seconds
from ._options import OptionError, output_problem
from .records import ExecutorJob, GcPause, Record, SessionEnd, SessionInfo, Span, Stall, TaskStep
from .sinks import Sink, sink_for

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DumpTriggers",
    "FlightRecorder",
    "FlightRing",
    "FlightStatistics",
    "estimate_size",
    "parse_dump_on",
]

logger = logging.getLogger("asynclens")

#: The ring's default bound on the estimated size of the records it keeps.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: The signal that asks for a dump (where the platform has it).
DUMP_SIGNAL_NAME = "SIGUSR2"
_BATCH = 2048
_TRIGGER_NAMES = ("stall", "task_exception", "signal")

#: A dump target: a path (``{n}`` is the dump's number) or a factory ``n -> Sink``.
Target = Any


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class DumpTriggers:
    """What makes a dump besides :func:`asynclens.dump` (always on)."""

    #: a stall longer than this (ns) dumps; None: stalls do not
    stall_ns: int | None = None
    #: a task's exception that nobody retrieved (asyncio's "Task exception was never retrieved")
    task_exception: bool = False
    #: ``SIGUSR2`` dumps
    signal: bool = False

    def describe(self) -> str:
        parts = ["asynclens.dump()"]
        if self.stall_ns is not None:
            parts.append(f"stalls over {format_ns(self.stall_ns)}")
        if self.task_exception:
            parts.append("unretrieved task exceptions")
        if self.signal:
            parts.append(DUMP_SIGNAL_NAME)
        return ", ".join(parts)


def parse_dump_on(value: Any, where: str = "asynclens.session(dump_on=...)") -> DumpTriggers:
    """``dump_on`` as given to ``session()`` or the CLI: None (the default: ``signal``), a
    mapping (``{"stall": "200ms", "task_exception": True, "signal": True}``), or one or
    more strings (``"stall=200ms"``, ``"task-exception"``, ``"signal"``). Raises
    :class:`~asynclens._options.OptionError` (one line) for anything else."""
    if value is None:
        return DumpTriggers(signal=True)
    items: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        texts = [value] if isinstance(value, str) else value
        try:
            texts = list(texts)
        except TypeError:
            raise OptionError(f"{where}: {value!r} is not a trigger: give e.g. {{'stall': '200ms', 'signal': True}}") from None
        for text in texts:
            if not isinstance(text, str):
                raise OptionError(f"{where}: {text!r} is not a trigger: use 'stall=DURATION', 'task-exception' or 'signal'")
            name, sep, arg = text.partition("=")
            items.append((name.strip(), arg.strip() if sep else True))
    stall_ns: int | None = None
    task_exception = signal_on = False
    for raw, arg in items:
        name = raw.replace("-", "_")
        if name not in _TRIGGER_NAMES:
            raise OptionError(
                f"{where}: unknown trigger {raw!r}; valid triggers: stall=DURATION, task-exception, signal"
            )
        if name == "stall":
            if arg is None or arg is False:
                continue
            if arg is True:
                raise OptionError(f"{where}: the stall trigger needs a duration (stall=200ms)")
            try:
                seconds = parse_seconds(arg, f"{where[:-1] if where.endswith(')') else where} stall")
            except DurationError as exc:
                raise OptionError(str(exc)) from None
            if seconds <= 0:
                raise OptionError(f"{where}: stall={arg!r}: must be longer than zero")
            stall_ns = int(seconds * 1e9)
        else:
            if isinstance(arg, bool):
                on = arg
            elif isinstance(arg, str) and arg.lower() in ("true", "on", "yes", "1", "false", "off", "no", "0"):
                on = arg.lower() in ("true", "on", "yes", "1")
            else:
                raise OptionError(f"{where}: {raw}={arg!r}: must be true or false")
            if name == "task_exception":
                task_exception = on
            else:
                signal_on = on
    return DumpTriggers(stall_ns=stall_ns, task_exception=task_exception, signal=signal_on)


def _seconds(option: str, value: Any, *, zero: bool = False) -> float:
    where = f"asynclens.session({option}=...)"
    try:
        seconds = parse_seconds(value, where)
    except DurationError as exc:
        raise OptionError(str(exc)) from None
    if seconds < 0 or (seconds == 0 and not zero):
        raise OptionError(f"asynclens.session({option}={value!r}): must be {'zero or more' if zero else 'longer than zero'}")
    return seconds


def _count(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise OptionError(f"asynclens.session({option}={value!r}): must be a positive whole number")
    return value


def dump_path(template: str, n: int) -> str:
    """``template`` with ``{n}`` replaced by the dump's number (other braces stay as they are)."""
    return template.replace("{n}", str(n))


# -------------------------------------------------------------------- sizes


def _deep_size(obj: Any, depth: int = 0) -> int:
    if obj is None or obj is True or obj is False or obj == ():  # shared: they cost nothing per record
        return 0
    size = sys.getsizeof(obj)
    if depth > 4 or isinstance(obj, (str, bytes, int, float, bool)) or obj is None:
        return size
    if isinstance(obj, (tuple, list)):
        return size + sum(_deep_size(v, depth + 1) for v in obj)
    if isinstance(obj, Mapping):
        return size + sum(_deep_size(k, depth + 1) + _deep_size(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, Record):
        return size + sum(_deep_size(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj))
    return size


#: record types of one shape, frequent enough that their size is measured once per type
_FIXED_SHAPE = (TaskStep, GcPause, ExecutorJob)
_fixed_sizes: dict[type, int] = {}
#: per kept record: the ring's two ints (its end and size) and four deque slots
_ENTRY_BYTES = 100
#: a span's own ints (ids, times, breakdown figures) beside its slotted object
_SPAN_INTS = 200


def estimate_size(record: Record) -> int:
    """Roughly how many bytes ``record`` keeps alive in the ring (the record, its strings,
    tuples and mappings, and the ring's own entry). Exact enough to bound memory (within
    tens of percent either way, measured with tracemalloc); cheap for the frequent kinds."""
    cls = type(record)
    if cls is Span:
        span: Span = record  # type: ignore[assignment]
        size = _ENTRY_BYTES + 232 + _SPAN_INTS + len(span.name)
        if span.attrs:
            size += 100 + 70 * len(span.attrs)
        if span.events:
            size += 250 * len(span.events)
        if span.error_stack:
            size += len(span.error_stack) + 50
        if span.error_message:
            size += len(span.error_message) + 50
        return size + (100 if span.own_breakdown else 0) + (len(span.task) + 50 if span.task else 0)
    if cls in _FIXED_SHAPE:
        known = _fixed_sizes.get(cls)
        if known is None:
            known = _fixed_sizes[cls] = _ENTRY_BYTES + _deep_size(record)
        return known
    return _ENTRY_BYTES + _deep_size(record)


_END_FIELDS = ("end_ns", "done_ns", "close_ns", "open_ns", "created_ns")
_end_field: dict[type, str | None] = {}


def _end_of(record: Record, now: int) -> int:
    cls = type(record)
    try:
        name = _end_field[cls]
    except KeyError:
        fields = {f.name for f in dataclasses.fields(record)}
        name = _end_field[cls] = next((f for f in _END_FIELDS if f in fields), None)
    if name is not None:
        value = getattr(record, name)
        if name == "done_ns" and value is None:  # a pending task: its last news is now
            return now
        if name == "close_ns" and value is None:
            value = getattr(record, "open_ns", None)
        if isinstance(value, int):
            return value
    return now


# ------------------------------------------------------------------ packing
# The ring keeps records packed: a chunk of records is one bytes object (marshal of their
# field values), which the garbage collector never visits. Kept as objects, the window's
# records were walked by every full collection, again and again: that doubled the default
# session's cost on a busy service. Packed, they also take about a third of the memory.

_TYPES: list[type[Record]] = []
_TYPE_IDS: dict[type, int] = {}
_to_values: dict[type, Callable[[Record], tuple[Any, ...]]] = {}
_from_values: list[Callable[[Sequence[Any]], Record]] = []


def _codec(cls: type[Record]) -> Callable[[Record], tuple[Any, ...]]:
    """Generate ``cls``'s packer: ``record -> (type id, *plain field values)`` (mappings as
    dicts, nested records as tuples of their own values), and register its reader."""
    encode = _to_values.get(cls)
    if encode is not None:
        return encode
    fields = dataclasses.fields(cls)
    namespace: dict[str, Any] = {}
    out, back = [], []
    for i, f in enumerate(fields, start=1):
        value = f"r.{f.name}"
        nested = f.metadata.get("records")
        if nested is not None:
            namespace[f"enc_{f.name}"] = _codec(nested)
            namespace[f"dec_{f.name}"] = _from_values[_TYPE_IDS[nested]]
            out.append(f"tuple([enc_{f.name}(x) for x in {value}]) if {value} else ()")
            back.append(f"tuple([dec_{f.name}(x) for x in v[{i}]]) if v[{i}] else ()")
        elif "Mapping" in str(f.type):
            out.append(f"(dict({value}) if {value} else ({{}} if {value} is not None else None))")
            back.append(f"(None if v[{i}] is None else proxy(v[{i}]))")
        else:
            out.append(value)
            back.append(f"v[{i}]")
    namespace.update(cls=cls, proxy=MappingProxyType)
    type_id = _TYPE_IDS[cls] = len(_TYPES)  # after the nested types': ids index _from_values
    _TYPES.append(cls)
    source = (
        f"def encode(r):\n    return ({type_id}, {', '.join(out)})\n"
        f"def decode(v):\n    return cls({', '.join(back)})\n"
    )
    exec(source, namespace)
    _to_values[cls] = namespace["encode"]
    _from_values.append(namespace["decode"])
    return namespace["encode"]  # type: ignore[no-any-return]


def pack(records: Sequence[Record]) -> bytes | None:
    """``records`` as one bytes object, or None when a value is one :mod:`marshal` cannot
    write (the ring then keeps those records as they are)."""
    try:
        return marshal.dumps([(_to_values.get(type(r)) or _codec(type(r)))(r) for r in records])
    except (ValueError, TypeError):
        return None


def unpack(data: bytes) -> list[Record]:
    """The records :func:`pack` made ``data`` from."""
    return [_from_values[values[0]](values) for values in marshal.loads(data)]


#: a chunk's own cost beside its payload: the bytes header, the array of end times, the tuple
_CHUNK_BYTES = 33 + 64 + 64 + 100
#: the most records packed together (a smaller chunk lets the byte bound cut finer)
_CHUNK_RECORDS = 256


@dataclass(frozen=True)
class _Chunk:
    ends: array.array[int]  # each record's end time (an array: not visited by the collector)
    payload: Any  # packed bytes, or the list of records pack() could not write
    size: int
    newest: int


# --------------------------------------------------------------------- ring


class FlightRing(Sink):
    """The session's sink under a flight recorder: the records that ended in the last
    ``keep_ns`` (by the session's clock), at most ``max_bytes`` of them (their packed size,
    or :func:`estimate_size` for those kept as objects). ``aged_out`` counts records that left
    the window, ``evicted`` those let go early to stay within ``max_bytes``. Records are
    kept in chunks of up to 256 (as they arrived), and leave a chunk at a time."""

    def __init__(
        self,
        keep_ns: int,
        max_bytes: int,
        now: Callable[[], int],
        on_records: Callable[[Sequence[Record]], None] | None = None,
    ) -> None:
        self.keep_ns = keep_ns
        self.max_bytes = max_bytes
        self._now = now
        self._on_records = on_records
        self._chunks: deque[_Chunk] = deque()
        self._count = 0
        self._lock = threading.Lock()
        self.info: SessionInfo | None = None
        self.bytes = 0
        self.peak_bytes = 0
        self.received = 0
        self.aged_out = 0
        self.evicted = 0
        #: the end time of the newest record let go by the byte bound (the window is cut there)
        self.evicted_until_ns: int | None = None

    def open(self, info: SessionInfo) -> None:
        self.info = info

    def write(self, records: Sequence[Record]) -> None:
        now = self._now()
        chunks: list[_Chunk] = []
        for i in range(0, len(records), _CHUNK_RECORDS):
            self._chunk(records[i : i + _CHUNK_RECORDS], now, chunks)
        with self._lock:  # snapshot() may be reading on the dump worker
            for chunk in chunks:
                self._chunks.append(chunk)
                self.bytes += chunk.size
                self._count += len(chunk.ends)
            self.received += len(records)
            self._trim(now)
        if self._on_records is not None:
            self._on_records(records)

    def _chunk(self, records: Sequence[Record], now: int, out: list[_Chunk]) -> None:
        ends = array.array("q", [_end_of(record, now) for record in records])
        payload: Any = pack(records)
        if payload is None:
            payload = list(records)
            size = sum(estimate_size(r) for r in records)
        else:
            size = len(payload) + _CHUNK_BYTES + 8 * len(records)
        if len(records) > 1 and size > self.max_bytes // 8:  # too coarse for the byte bound
            half = len(records) // 2
            self._chunk(records[:half], now, out)
            self._chunk(records[half:], now, out)
            return
        out.append(_Chunk(ends, payload, size, max(ends)))

    def _trim(self, now: int) -> None:
        chunks = self._chunks
        cutoff = now - self.keep_ns
        while chunks and chunks[0].newest < cutoff:
            chunk = chunks.popleft()
            self.bytes -= chunk.size
            self._count -= len(chunk.ends)
            self.aged_out += len(chunk.ends)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        while chunks and self.bytes > self.max_bytes:
            chunk = chunks.popleft()
            self.bytes -= chunk.size
            self._count -= len(chunk.ends)
            self.evicted += len(chunk.ends)
            if self.evicted_until_ns is None or chunk.newest > self.evicted_until_ns:
                self.evicted_until_ns = chunk.newest

    def snapshot(self, since_ns: int) -> list[Record]:
        """The records kept that ended at ``since_ns`` or later, oldest first (any thread)."""
        with self._lock:
            chunks = [chunk for chunk in self._chunks if chunk.newest >= since_ns]
        out: list[Record] = []
        for chunk in chunks:
            records = chunk.payload if isinstance(chunk.payload, list) else unpack(chunk.payload)
            out.extend(record for end, record in zip(chunk.ends, records) if end >= since_ns)
        return out

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"FlightRing({self._count} records, {self.bytes} bytes)"


# ----------------------------------------------------------------- recorder


@dataclass(frozen=True)
class FlightStatistics:
    """The flight recorder's counters (``Session.statistics().probes["flight"]``)."""

    window_s: float
    max_bytes: int
    records_kept: int
    bytes_kept: int
    peak_bytes: int
    #: records that left the window (the ring's normal work)
    records_aged_out: int
    #: records let go before they left the window, to stay within max_bytes
    records_evicted: int
    triggers: int
    #: triggers folded into a dump already waiting to be written
    triggers_merged: int
    #: triggers refused by dump_interval or max_dumps
    triggers_skipped: int
    dumps_written: int
    dump_failures: int
    files: tuple[str, ...]
    signal: str

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["files"] = list(self.files)
        return out


@dataclass
class _Pending:
    n: int
    at_ns: int
    due: float  # time.monotonic()
    reasons: list[str]


class FlightRecorder:
    """Owns a :class:`FlightRing`, listens for the triggers and writes the dumps.

    It takes part in the session as a probe (``start``, ``attach_loop`` for the task
    exception trigger, ``stop``); the session makes it from its options.
    """

    name = "flight"

    def __init__(
        self,
        targets: Iterable[Target],
        window: Any,
        *,
        dump_on: Any = None,
        dump_after: Any = 1.0,
        dump_interval: Any = 30.0,
        max_dumps: int = 10,
        max_bytes: int = DEFAULT_MAX_BYTES,
        now: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.window_s = _seconds("flight_recorder", window)
        self.after_s = _seconds("dump_after", dump_after, zero=True)
        self.interval_s = _seconds("dump_interval", dump_interval, zero=True)
        self.max_dumps = _count("max_dumps", max_dumps)
        self.max_bytes = _count("flight_max_bytes", max_bytes)
        self.triggers = dump_on if isinstance(dump_on, DumpTriggers) else parse_dump_on(dump_on)
        self.targets = _check_targets(targets)
        self.window_ns = int(self.window_s * 1e9)
        self._now = now
        self.ring = FlightRing(
            self.window_ns + int(self.after_s * 1e9) + 1_000_000_000,  # a second's slack for late flushes
            self.max_bytes,
            self._clock_now,
            self._watch_records if self.triggers.stall_ns is not None else None,
        )
        self.session: Session | None = None
        self._cond = threading.Condition(threading.RLock())
        self._pending: _Pending | None = None
        self._last_ns: int | None = None
        self._next_n = 1
        self._closed = False
        self._writing = False
        self._worker: threading.Thread | None = None
        self._trigger_count = 0
        self._merged = 0
        self._skipped = 0
        self._written = 0
        self._failures = 0
        self._files: list[str] = []
        self._logged: set[str] = set()
        self._signal_state = "off"
        self._signal_handler: Callable[[int, FrameType | None], None] | None = None
        self._previous_signal: Any = None
        self._loop_handlers: list[tuple[Any, Any, Any]] = []

    def _clock_now(self) -> int:
        return self._now()

    # --------------------------------------------------------- lifecycle

    def start(self, session: Session) -> None:
        self.session = session
        self._now = session.now
        if self.triggers.signal:
            self._install_signal()
        self._worker = threading.Thread(target=self._work, name="asynclens-flight", daemon=True)
        self._worker.start()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.triggers.task_exception:
            return
        previous = loop.get_exception_handler()
        recorder = weakref.ref(self)

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            owner = recorder()
            if owner is not None:
                owner._on_loop_exception(context)
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        try:
            ref: Any = weakref.ref(loop)
        except TypeError:
            ref = lambda loop=loop: loop  # noqa: E731 - a loop type without weakrefs: hold it until stop()
        self._loop_handlers.append((ref, handler, previous))

    def stop(self) -> None:
        """Write a dump still waiting (now, without its delay), restore the signal and
        loop exception handlers, end the worker."""
        self._restore_signal()
        for ref, handler, previous in self._loop_handlers:
            loop = ref()
            if loop is not None and loop.get_exception_handler() is handler:
                try:
                    loop.set_exception_handler(previous)
                except Exception as exc:  # a closed or odd loop: ours stays, it only forwards
                    self._internal("restoring a loop's exception handler", exc)
        self._loop_handlers.clear()
        with self._cond:
            self._closed = True
            if self._pending is not None:
                self._pending.due = 0.0
            self._cond.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def statistics(self) -> FlightStatistics:
        ring = self.ring
        return FlightStatistics(
            window_s=self.window_s,
            max_bytes=self.max_bytes,
            records_kept=len(ring),
            bytes_kept=ring.bytes,
            peak_bytes=ring.peak_bytes,
            records_aged_out=ring.aged_out,
            records_evicted=ring.evicted,
            triggers=self._trigger_count,
            triggers_merged=self._merged,
            triggers_skipped=self._skipped,
            dumps_written=self._written,
            dump_failures=self._failures,
            files=tuple(self._files),
            signal=self._signal_state,
        )

    def summary_lines(self) -> list[str]:
        stats = self.statistics()
        lines = [
            f"Flight recorder: kept the last {_s(self.window_s)} (at most {_mb(self.max_bytes)}; "
            f"peak {_mb(stats.peak_bytes)}); dumps on {self.triggers.describe()}"
            f" (at most {self.max_dumps}, one per {_s(self.interval_s)})"
        ]
        written = f"{stats.dumps_written} dump(s) written"
        if stats.files:
            shown = ", ".join(stats.files[:6]) + (", ..." if len(stats.files) > 6 else "")
            written += f": {shown}"
        lines.append(f"  {written}")
        if stats.triggers_skipped or stats.triggers_merged:
            lines.append(
                f"  {stats.triggers_skipped} trigger(s) skipped by the rate limit, "
                f"{stats.triggers_merged} folded into a dump already due"
            )
        if stats.dump_failures:
            lines.append(f"  {stats.dump_failures} dump file(s) could not be written (see the warnings)")
        if stats.records_evicted:
            lines.append(
                f"  {stats.records_evicted} records let go before they left the window "
                f"(the {_mb(self.max_bytes)} bound; raise flight_max_bytes to keep them)"
            )
        if self.triggers.signal and not self._signal_state.startswith("on"):
            lines.append(f"  {DUMP_SIGNAL_NAME} trigger {self._signal_state}")
        return lines

    # ---------------------------------------------------------- triggers

    def trigger(self, reason: str, at_ns: int | None = None) -> int | None:
        """Ask for a dump of the window before ``at_ns`` (default: now). Returns the
        dump's number, or None when the rate limit (or the end of the session) refused
        it (counted). Never blocks for long; the dump is written by the worker."""
        with self._cond:
            self._trigger_count += 1
            if self._closed or self.session is None:
                self._skipped += 1
                return None
            now = self._now()
            pending = self._pending
            if pending is not None:
                pending.reasons.append(reason)
                self._merged += 1
                return pending.n
            if self._next_n > self.max_dumps or (
                self._last_ns is not None and now - self._last_ns < self.interval_s * 1e9
            ):
                self._skipped += 1
                return None
            n = self._next_n
            self._next_n += 1
            self._last_ns = now
            self._pending = _Pending(n, now if at_ns is None else min(at_ns, now), time.monotonic() + self.after_s, [reason])
            self._cond.notify_all()
            return n

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no dump is waiting or being written (tests, the CLI at exit)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _watch_records(self, records: Sequence[Record]) -> None:
        limit = self.triggers.stall_ns
        if limit is None:
            return
        for record in records:
            if type(record) is Stall and record.end_ns - record.start_ns > limit:
                where = f" at {record.site}" if record.site else ""
                self.trigger(f"stall of {format_ns(record.end_ns - record.start_ns)}{where}", record.end_ns)

    def _on_loop_exception(self, context: Mapping[str, Any]) -> None:
        try:
            task = context.get("future") or context.get("task")
            exc = context.get("exception")
            if isinstance(task, asyncio.Task) and isinstance(exc, BaseException):
                self.trigger(f"task {task.get_name()!r} raised {type(exc).__name__}, never retrieved")
        except Exception as exc:
            self._internal("the task exception trigger", exc)

    def _install_signal(self) -> None:
        signum = getattr(signal, DUMP_SIGNAL_NAME, None)
        if signum is None:
            self._signal_state = f"unavailable: this platform has no {DUMP_SIGNAL_NAME}"
            return
        if threading.current_thread() is not threading.main_thread():
            self._signal_state = "not installed: the session started outside the main thread"
            return
        current = signal.getsignal(signum)
        if current is not signal.SIG_DFL:
            self._signal_state = f"not installed: the program handles {DUMP_SIGNAL_NAME} itself"
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.trigger(DUMP_SIGNAL_NAME)

        self._previous_signal = signal.signal(signum, on_signal)
        self._signal_handler = on_signal
        self._signal_state = f"on ({DUMP_SIGNAL_NAME}, pid {os.getpid()})"

    def _restore_signal(self) -> None:
        handler = self._signal_handler
        if handler is None:
            return
        signum = getattr(signal, DUMP_SIGNAL_NAME)
        try:
            if signal.getsignal(signum) is handler:
                signal.signal(signum, self._previous_signal)
            self._signal_handler = None
        except ValueError:  # closed outside the main thread: ours stays, and ignores the signal from now
            pass

    # ------------------------------------------------------------- dumps

    def _work(self) -> None:
        while True:
            with self._cond:
                pending = self._pending
                if pending is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    continue
                delay = pending.due - time.monotonic()
                if delay > 0 and not self._closed:
                    self._cond.wait(delay)
                    continue
                self._pending = None
                self._writing = True
            try:
                self._write(pending)
            except Exception as exc:
                self._internal("writing a flight recorder dump", exc)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, pending: _Pending) -> None:
        session = self.session
        assert session is not None and session.info is not None
        try:
            session.flush()  # what the probes emitted up to now, into the ring
        except Exception as exc:
            self._internal("flushing before a dump", exc)
        records = self.ring.snapshot(pending.at_ns - self.window_ns)
        info, end = self._frame(session, pending, records)
        for target in self.targets:
            path = None
            try:
                sink = target(pending.n) if callable(target) else sink_for(dump_path(target, pending.n))
                path = getattr(sink, "path", None)
                sink.open(info)
                for i in range(0, len(records), _BATCH):
                    sink.write(records[i : i + _BATCH])
                sink.write([end])
                sink.close()
            except Exception as exc:  # a full disk, a failing sink: counted and reported, never raised
                self._failures += 1
                shown = path or (target if isinstance(target, str) else repr(target))
                logger.warning(
                    "asynclens: flight recorder dump %d could not be written to %s: %s: %s",
                    pending.n,
                    shown,
                    type(exc).__name__,
                    exc,
                )
                continue
            self._written += 1
            if isinstance(path, str):
                self._files.append(path)
        logger.info("asynclens: flight recorder dump %d written (%s)", pending.n, "; ".join(pending.reasons))

    def _frame(self, session: Session, pending: _Pending, records: Sequence[Record]) -> tuple[SessionInfo, SessionEnd]:
        """The header and last record of a dump: the session's, marked as dump ``n``."""
        base = session.info
        assert base is not None
        reason = pending.reasons[0] + (f" (+{len(pending.reasons) - 1} more)" if len(pending.reasons) > 1 else "")
        dump = {
            "n": pending.n,
            "trigger": reason,
            "triggers": list(pending.reasons),
            "trigger_ns": pending.at_ns,
            "window_s": self.window_s,
            "after_s": self.after_s,
            "session_id": base.session_id,
        }
        info = dataclasses.replace(
            base,
            session_id=uuid.uuid4().hex,
            name=f"{base.name or 'flight recorder'} dump {pending.n}",
            options=MappingProxyType({**base.options, "flight_dump": dump}),
        )
        stats = session.statistics().as_dict()
        flight = self.statistics().as_dict()
        stats["flight"] = {**flight, "dump": dump, "records_in_dump": len(records)}
        start = pending.at_ns - self.window_ns
        window = (
            f"Not measured: anything before this flight recorder dump's window "
            f"({_s(self.window_s)} before its trigger, {reason}, and up to {_s(self.after_s)} after)"
        )
        cut = self.ring.evicted_until_ns
        lines = [window]
        if cut is not None and cut >= start:
            lines.append(
                f"Not measured: records that ended before {format_ns(pending.at_ns - cut)} ahead of the trigger: "
                f"the ring let {self.ring.evicted} records go to stay within {_mb(self.max_bytes)}"
            )
        stats["blind_spots"] = lines + list(stats.get("blind_spots") or ())
        end = SessionEnd(end_ns=max(session.now(), pending.at_ns), statistics=MappingProxyType(stats))
        return info, end

    def _internal(self, where: str, exc: BaseException) -> None:
        if self.session is not None:
            self.session.internal_error(where, exc)
        elif where not in self._logged:
            self._logged.add(where)
            logger.warning("asynclens: internal error in %s: %s", where, exc)


def _check_targets(targets: Iterable[Target]) -> list[Target]:
    out: list[Target] = []
    for target in targets:
        if isinstance(target, os.PathLike):
            target = os.fspath(target)
        if isinstance(target, str):
            try:
                sink_for(dump_path(target, 1))  # an unknown suffix fails now, not at the first dump
            except (ValueError, TypeError) as exc:
                raise OptionError(f"asynclens.session(flight_recorder=...): {exc}") from None
            problem = output_problem(dump_path(target, 1))
            if problem is not None:
                raise OptionError(f"asynclens.session(flight_recorder=...): cannot write {target!r}: {problem}")
        elif isinstance(target, Sink) or not callable(target):
            raise OptionError(
                "asynclens.session(flight_recorder=...): the sinks are where dumps go: give paths "
                f"('dump-{{n}}.jsonl') or factories (n -> Sink), not {target!r}"
            )
        out.append(target)
    if not out:
        raise OptionError(
            "asynclens.session(flight_recorder=...): no output for the dumps: pass sinks=['dump-{n}.jsonl']"
        )
    return out


def _s(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 or seconds == 0 else format_ns(seconds * 1e9)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**17 else f"{n / 2**10:.0f} KiB"
