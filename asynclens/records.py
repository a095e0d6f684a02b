"""Records: the frozen, slotted dataclasses every sink receives.

Times are ``int`` nanoseconds on the session's monotonic clock; the JSON lines
header carries the anchors that map them to wall-clock time. Trace ids are
128-bit and span ids 64-bit ints, rendered by :meth:`Record.to_dict` as
lower-case hex (W3C Trace Context form). ``kind`` names the record type in every
serialised form; :func:`record_from_dict` reverses :meth:`Record.to_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

__all__ = [
    "SCHEMA_VERSION",
    "LagSnapshot",
    "Record",
    "RecordError",
    "SessionEnd",
    "SessionInfo",
    "Span",
    "SpanEvent",
    "StackSample",
    "Stall",
    "record_from_dict",
    "record_types",
]

SCHEMA_VERSION = 1

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_REGISTRY: dict[str, type[Record]] = {}
R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A serialised record could not be turned back into a record."""


def _hex_id(width: int) -> Any:
    return field(metadata={"hex": width})


def _hex_ids(width: int) -> Any:
    return field(default=(), metadata={"hex": width, "many": True})


@dataclass(frozen=True, slots=True)
class Record:
    """Base of every record. Subclasses set ``kind`` and are registered by it."""

    kind: ClassVar[str] = "record"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super(Record, cls).__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _REGISTRY[cls.kind] = cls

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: ``kind`` first, ids as hex, nested records as dicts.

        ``compact`` leaves out fields that hold their empty default (``None``,
        ``False``, empty tuples and mappings); :func:`record_from_dict` restores them.
        """
        encode = type(self).__dict__.get("_encode_compact" if compact else "_encode")
        if encode is None:
            encode = _compile_encoder(type(self), compact)
        return encode(self)  # type: ignore[no-any-return]


def _codec_of(cls: type[Record]) -> tuple[tuple[str, int, bool, type[Record] | None], ...]:
    codec = cls.__dict__.get("_codec_cache")
    if codec is None:
        entries = []
        for f in dataclasses.fields(cls):
            nested = f.metadata.get("records")
            entries.append((f.name, f.metadata.get("hex", 0), f.metadata.get("many", False), nested))
        codec = tuple(entries)
        type.__setattr__(cls, "_codec_cache", codec)
    return codec  # type: ignore[no-any-return]


def _compile_encoder(cls: type[Record], compact: bool) -> Any:
    """Generate ``cls``'s to_dict as straight-line code: several times faster than
    a loop over fields, and sinks call it for every record."""
    lines = [f'    d = {{"kind": {cls.kind!r}}}']
    for f in dataclasses.fields(cls):
        width, many, name = f.metadata.get("hex", 0), f.metadata.get("many", False), f.name
        value = f"self.{name}"
        if width and many:
            expr = f'[format(v, "0{width}x") for v in {value}]'
        elif width:
            expr = f'(None if {value} is None else format({value}, "0{width}x"))'
        elif f.metadata.get("records"):
            expr = f"[v.to_dict({compact}) for v in {value}]"
        elif "Mapping" in str(f.type):
            expr = f"(None if {value} is None else dict({value}))"
        else:
            expr = value
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if compact and has_default:
            lines.append(f"    if {value}:\n        d[{name!r}] = {expr}")
        else:
            lines.append(f"    d[{name!r}] = {expr}")
    namespace: dict[str, Any] = {}
    exec("def encode(self):\n" + "\n".join(lines) + "\n    return d\n", namespace)
    encode = namespace["encode"]
    type.__setattr__(cls, "_encode_compact" if compact else "_encode", encode)
    return encode


def fast_constructor(cls: type[R]) -> Any:
    """A positional constructor for ``cls`` taking every field in order, without
    the per-field ``object.__setattr__`` calls of a frozen dataclass ``__init__``
    (twice as fast; used off the hot path to freeze buffered spans)."""
    names = [f.name for f in dataclasses.fields(cls)]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    body = [f"    set_{n}(self, {n})" for n in names]
    for n in names:
        namespace[f"set_{n}"] = cls.__dict__[n].__set__
    exec(f"def make({', '.join(names)}):\n    self = new(cls)\n" + "\n".join(body) + "\n    return self\n", namespace)
    return namespace["make"]


def record_types() -> Mapping[str, type[Record]]:
    """Every registered record type by ``kind``."""
    return MappingProxyType(_REGISTRY)


def record_from_dict(data: Mapping[str, Any]) -> Record:
    """Rebuild a record from :meth:`Record.to_dict` output.

    Unknown keys are ignored (newer writers may add fields); a missing required
    field, an unknown ``kind`` or a malformed id raises :class:`RecordError`.
    """
    if not isinstance(data, Mapping):
        raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RecordError(f"unknown record kind {kind!r}")
    kwargs: dict[str, Any] = {}
    for name, width, many, nested in _codec_of(cls):
        if name not in data:
            continue
        value = data[name]
        try:
            if value is not None:
                if width:
                    value = tuple(int(v, 16) for v in value) if many else int(value, 16)
                elif nested is not None:
                    value = tuple(record_from_dict(v) for v in value)
                elif isinstance(value, list):
                    value = tuple(value)
                elif isinstance(value, dict):
                    value = MappingProxyType(value)
        except (TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"{kind} field {name!r}: bad value {value!r}") from exc
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RecordError(f"{kind}: {exc}") from exc


# --------------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class SessionInfo(Record):
    """The header of a recorded run: schema, process and clock anchors.

    ``anchor_mono_ns`` and ``anchor_wall_ns`` were read together at session
    start: ``wall = t - anchor_mono_ns + anchor_wall_ns`` for any record time ``t``.
    """

    kind: ClassVar[str] = "session"
    session_id: str
    schema: int
    pid: int
    argv: tuple[str, ...]
    python: str
    anchor_mono_ns: int
    anchor_wall_ns: int
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class SessionEnd(Record):
    """The last record of a run: when it ended and its final statistics."""

    kind: ClassVar[str] = "session_end"
    end_ns: int
    statistics: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


# ----------------------------------------------------------------------- spans


@dataclass(frozen=True, slots=True)
class SpanEvent(Record):
    """A point in time inside a span (``LiveSpan.event``)."""

    kind: ClassVar[str] = "span_event"
    name: str
    time_ns: int
    attrs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Span(Record):
    """A finished span.

    ``status`` is ``"ok"``, ``"error"`` (an ``Exception`` escaped; ``error_type``
    and ``error_message`` say which) or ``"cancelled"`` (``CancelledError``,
    ``GeneratorExit``, ``KeyboardInterrupt`` or ``SystemExit``; ``error_type``
    names it). ``links`` are span ids this span is related to but not a child of.
    The breakdown fields are ``None`` when the scheduler probe did not measure them.
    """

    kind: ClassVar[str] = "span"
    name: str
    trace_id: int = _hex_id(32)
    span_id: int = _hex_id(16)
    parent_id: int | None = _hex_id(16)
    start_ns: int = 0
    end_ns: int = 0
    status: str = "ok"
    error_type: str | None = None
    error_message: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    events: tuple[SpanEvent, ...] = field(default=(), metadata={"records": SpanEvent})
    task: str | None = None
    thread_id: int = 0
    links: tuple[int, ...] = _hex_ids(16)
    remote_parent: bool = False
    error_stack: str | None = None
    cpu_ns: int | None = None
    sched_wait_ns: int | None = None
    io_wait_ns: int | None = None
    executor_ns: int | None = None
    steps: int | None = None
    #: the longest single ready->run wait of the span's task while the span was open
    max_sched_wait_ns: int | None = None
    #: time the span's code spent blocked in a synchronous call on the loop thread (critical path)
    blocked_ns: int | None = None
    #: the span's own task's (cpu, blocked, sched wait, I/O wait, executor) when its critical
    #: path went through other tasks (the fields above then explain those waits); else None
    own_breakdown: tuple[int, ...] | None = None
    #: the task (and its span) whose work ended the span's longest wait on another task
    held_up_by: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


# ------------------------------------------------------------ lag and stalls
# (records of asynclens.lag go here)


@dataclass(frozen=True, slots=True)
class LagSnapshot(Record):
    """Event-loop lag over one window: timer drift statistics (ns), the histogram
    they come from, and utilisation.

    One record per loop per window (and a last one at session end), never one
    per tick. ``elu`` is the event-loop utilisation (busy / wall, 0..1) over the
    window, ``None`` when unknown; ``elu_method`` says how it was measured:
    ``"select"`` (time outside the selector, exact) or ``"cpu"`` (the loop
    thread's CPU time plus the off-CPU part of detected stalls: uvloop).
    ``skipped`` counts monitor ticks not run because the loop was provably
    idle (waiting in its selector); they are counted as zero lag.
    """

    kind: ClassVar[str] = "lag"
    loop_id: int
    start_ns: int
    end_ns: int
    count: int
    min_ns: int
    max_ns: int
    mean_ns: float
    stddev_ns: float
    p50_ns: int
    p90_ns: int
    p99_ns: int
    p999_ns: int
    elu: float | None = None
    elu_method: str | None = None
    skipped: int = 0
    stalls: int = 0
    #: the window's lag histogram, losslessly (``asynclens.stats.Histogram.to_dict()``):
    #: mergeable across windows and loops, the source of exported lag histograms
    histogram: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StackSample(Record):
    """One distinct stack seen while the loop was blocked, and how often."""

    kind: ClassVar[str] = "stack_sample"
    frames: tuple[str, ...]
    count: int


@dataclass(frozen=True, slots=True)
class StallPart(Record):
    """One contributor to a lag episode: a task step or callback shorter than the
    stall threshold that ran inside a blocked stretch made of several such parts."""

    kind: ClassVar[str] = "stall_part"
    duration_ns: int
    task: str | None = None
    site: str | None = None
    span_name: str | None = None
    cause: str = "unknown"


@dataclass(frozen=True, slots=True)
class Stall(Record):
    """The event loop did not come back for longer than the stall threshold.

    With the scheduler probe, a stall is the one task step or callback that ran
    longer than the threshold (``start_ns``/``end_ns`` are its own); back-to-back
    blocking callbacks are separate stalls. A blocked stretch over the threshold
    made only of shorter parts is one *episode* (``episode=True``) whose ``parts``
    name the biggest contributors. Without the scheduler probe, a stall spans the
    whole blocked stretch (last heartbeat to the loop's return). ``file``/``line``/``function`` name the innermost user frame seen
    most often while blocked (the blocking line); ``samples`` is the small
    profile of where the blocked time went. ``cause`` is ``"cpu"``,
    ``"blocking"``, ``"gc"`` or ``"unknown"``; ``sampled`` is False when no
    stack could be taken (C code that held the GIL for the whole stall).
    """

    kind: ClassVar[str] = "stall"
    loop_id: int
    start_ns: int
    end_ns: int
    file: str | None = None
    line: int | None = None
    function: str | None = None
    stack: tuple[str, ...] = ()
    samples: tuple[StackSample, ...] = field(default=(), metadata={"records": StackSample})
    task: str | None = None
    trace_id: int | None = field(default=None, metadata={"hex": 32})
    span_id: int | None = field(default=None, metadata={"hex": 16})
    span_name: str | None = None
    async_stack: tuple[str, ...] = ()
    cause: str = "unknown"
    cpu_ns: int | None = None
    sampled: bool = False
    detected_ns: int | None = None
    gc_ns: int = 0
    episode: bool = False
    parts: tuple[StallPart, ...] = field(default=(), metadata={"records": StallPart})

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def site(self) -> str | None:
        """``"file:line in function"`` of the blocking line, or None."""
        if self.file is None:
            return None
        return f"{self.file}:{self.line} in {self.function}"

# ------------------------------------------------------------------- handles
# (records of asynclens.handles go here)


@dataclass(frozen=True, slots=True)
class _HandleFields(Record):
    """Fields shared by :class:`HandleRecord` and :class:`Leak` (no ``kind`` of its own).

    ``handle_kind`` is ``"socket"``, ``"file"``, ``"subprocess"``, ``"transport"``,
    ``"task"`` or ``"thread"``. ``close_ns`` is when asynclens saw the handle
    closed (``None`` while open); ``closed_by`` is ``"program"``, ``"gc"`` (the
    garbage collector closed it: the ``ResourceWarning`` case) or ``None``.
    ``site`` is the innermost user frame that opened it, ``stack`` the user
    frames outermost first; ``trace_id``/``span_id``/``span_name`` name the span
    active when it was opened. I/O counters are ``None`` where not measured.
    """

    handle_id: int = field(default=0, metadata={"hex": 16})
    handle_kind: str = ""
    description: str = ""
    open_ns: int = 0
    close_ns: int | None = None
    closed_by: str | None = None
    site: str | None = None
    stack: tuple[str, ...] = ()
    trace_id: int | None = field(default=None, metadata={"hex": 32})
    span_id: int | None = field(default=None, metadata={"hex": 16})
    span_name: str | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    ops: int | None = None


@dataclass(frozen=True, slots=True)
class HandleRecord(_HandleFields):
    """A tracked handle: emitted when it closes (if closes are recorded) and by snapshots."""

    kind: ClassVar[str] = "handle"


@dataclass(frozen=True, slots=True)
class Leak(_HandleFields):
    """A handle still open at session end, or one the garbage collector had to close."""

    kind: ClassVar[str] = "leak"


@dataclass(frozen=True, slots=True)
class IoRates(Record):
    """Session-wide I/O totals over one window ``[start_ns, end_ns)``.

    ``events`` counts readiness events from the loops' selectors (``None`` where
    the loop does not expose them, e.g. uvloop); ``ops`` counts the operations of
    the transports whose bytes are measured: data segments in and out on TCP
    (read from the kernel), sends and receives elsewhere (see ``docs/handles.md``).
    """

    kind: ClassVar[str] = "io_rates"
    start_ns: int = 0
    end_ns: int = 0
    events: int | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    ops: int = 0


# ----------------------------------------------------------------- scheduler
# (records of asynclens.scheduler go here)


def _optional_hex_id(width: int) -> Any:
    return field(default=None, metadata={"hex": width})


@dataclass(frozen=True, slots=True)
class TaskRecord(Record):
    """One asyncio task seen by the scheduler probe, emitted when it finishes
    (``state`` "done", "cancelled" or "error") or at session end ("pending").

    ``steps`` counts its slivers; ``cpu_ns`` is the time its own code ran
    (thread CPU time when the probe reads the CPU clock); ``sched_wait_ns`` the
    time it was ready but not running. ``trace_id``/``span_id`` name the span
    that created it; ``outlived_span`` says it was still running when that span
    ended; ``inherited_context`` flags a long-lived worker that kept a request's
    context. ``creation_site`` is the line that created it, ``async_stack`` its
    await chain when it was still pending at session end.
    """

    kind: ClassVar[str] = "task"
    task_id: int
    name: str
    loop_id: int
    created_ns: int
    done_ns: int | None = None
    steps: int = 0
    cpu_ns: int = 0
    sched_wait_ns: int = 0
    max_sched_wait_ns: int = 0
    parent_task_id: int | None = None
    trace_id: int | None = _optional_hex_id(32)
    span_id: int | None = _optional_hex_id(16)
    outlived_span: bool = False
    inherited_context: bool = False
    state: str = "done"
    run_ns: int = 0
    io_wait_ns: int = 0
    executor_ns: int = 0
    span_name: str | None = None
    parent_task: str | None = None
    creation_site: str | None = None
    async_stack: tuple[str, ...] = ()
    #: step ("poll") times and ready→run waits as log2 buckets (docs/lints.md; trailing
    #: empty buckets left out), and the steps of at least 10 ms
    step_histogram: tuple[int, ...] = ()
    wait_histogram: tuple[int, ...] = ()
    slow_steps: int = 0


@dataclass(frozen=True, slots=True)
class TaskStep(Record):
    """One step ("sliver") of a task: ready (woken), started running, yielded."""

    kind: ClassVar[str] = "step"
    task_id: int
    ready_ns: int
    start_ns: int
    end_ns: int
    cpu_ns: int | None = None
    span_id: int | None = _optional_hex_id(16)


@dataclass(frozen=True, slots=True)
class GcPause(Record):
    """One garbage collection: when, which generation, what it freed, who it interrupted."""

    kind: ClassVar[str] = "gc"
    start_ns: int
    end_ns: int
    generation: int
    collected: int = 0
    uncollectable: int = 0
    task: str | None = None
    trace_id: int | None = _optional_hex_id(32)
    span_id: int | None = _optional_hex_id(16)
    span_name: str | None = None
    thread_id: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class ExecutorJob(Record):
    """One thread-pool job (``run_in_executor``, ``to_thread``, ``submit``): queue
    wait is ``start_ns - submit_ns``, run time ``end_ns - start_ns``."""

    kind: ClassVar[str] = "executor_job"
    submit_ns: int
    start_ns: int
    end_ns: int
    function: str
    thread_id: int = 0
    trace_id: int | None = _optional_hex_id(32)
    span_id: int | None = _optional_hex_id(16)
    error_type: str | None = None
    executor_id: int = 0
    max_workers: int = 0

    @property
    def queue_ns(self) -> int:
        return self.start_ns - self.submit_ns

    @property
    def run_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class SchedSnapshot(Record):
    """Scheduling latency of one loop over a window: ready→run delay and timer
    lateness (``Histogram.summary()`` dicts, ns), and the most pool workers busy at once."""

    kind: ClassVar[str] = "sched"
    loop_id: int
    start_ns: int
    end_ns: int
    ready_delay: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    timer_lateness: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    executor_busy_max: int = 0
    steps: int = 0
    tasks: int = 0
    #: the window's ready→run delays as ``Histogram.to_dict()`` (mergeable, exported as a histogram)
    ready_histogram: Mapping[str, Any] | None = None


# --------------------------------------------------------------------- lints
# (the tokio-console-style findings of docs/lints.md)


@dataclass(frozen=True, slots=True)
class NeverResumable(Record):
    """A pending task that can never be resumed: the future it waits on (and the task
    itself) is held by nothing that could resolve or cancel it: no callback, handle,
    other live task, thread or global (see ``docs/lints.md``). "Will never finish",
    where a task :class:`Leak` is "still running".

    ``suspended_at`` is the innermost program line it is suspended at, ``waiting_on``
    the awaited future's type, ``creation_site`` the line that created the task and
    ``trace_id``/``span_id``/``span_name`` the span it was created in.
    """

    kind: ClassVar[str] = "never_resumable"
    task_id: int
    name: str
    found_ns: int
    coro: str = ""
    suspended_at: str | None = None
    waiting_on: str = ""
    created_ns: int | None = None
    creation_site: str | None = None
    trace_id: int | None = _optional_hex_id(32)
    span_id: int | None = _optional_hex_id(16)
    span_name: str | None = None


@dataclass(frozen=True, slots=True)
class BusyYield(Record):
    """A task that mostly woke itself (``await asyncio.sleep(0)`` in a loop, a zero-timeout
    poll): at least 100 of its wake-ups, and more than half of all of them, were scheduled
    by its own steps (see ``docs/lints.md``). One per task, when it finishes (``state``
    as in :class:`TaskRecord`) or at session end (``"pending"``).

    ``line`` is the program line it yielded at when it crossed the threshold; ``run_ns``
    the time its steps ran (``cpu_ns`` its thread CPU time, when the probe reads it).
    """

    kind: ClassVar[str] = "busy_yield"
    task_id: int
    name: str
    found_ns: int
    coro: str = ""
    line: str | None = None
    steps: int = 0
    wakes: int = 0
    self_wakes: int = 0
    run_ns: int = 0
    cpu_ns: int | None = None
    state: str = "pending"
    creation_site: str | None = None
    trace_id: int | None = _optional_hex_id(32)
    span_id: int | None = _optional_hex_id(16)
    span_name: str | None = None

    @property
    def self_wake_share(self) -> float:
        """The share of its wake-ups the task scheduled itself."""
        return self.self_wakes / self.wakes if self.wakes else 0.0
# ----------------------------------------------------------------- resources
# (records of the resources probe: asyncio locks, semaphores, conditions, events, queues, barriers)


@dataclass(frozen=True, slots=True)
class ResourceStats(Record):
    """One asyncio synchronisation object (``Lock``, ``Semaphore``, ``BoundedSemaphore``,
    ``Condition``, ``Event``, ``Queue`` and its subclasses, ``Barrier``) that a task had to
    wait on, or a queue that built a backlog, emitted at session end.

    ``resource_kind`` is the class name; ``site`` is where it was created (``None`` when it
    was created before the session). ``waits`` counts the waits (acquires that had to wait,
    ``wait()`` calls, ``get()`` on an empty queue, ``put()`` on a full one; uncontended
    acquires are not counted, so that they stay free), ``cancelled`` those cancelled while
    waiting, ``waiting_at_end`` those still waiting at session end. A wait runs from its
    start until the loop hands the object over (or cancels the waiter). ``max_waiters`` is the
    most tasks waiting at once. For locks and semaphores, the longest hold seen after the first
    wait (acquire to release): ``max_hold_ns`` and the holder's task, span and acquiring line.
    For queues, ``puts``/``gets`` count ``put_nowait``/``get_nowait`` (``put``/``get`` go
    through them) over the session, ``max_depth`` the deepest sample, and ``depth_times`` /
    ``depths`` the last sampled depths.
    """

    kind: ClassVar[str] = "resource"
    resource_id: int = field(default=0, metadata={"hex": 16})
    resource_kind: str = ""
    site: str | None = None
    start_ns: int = 0
    end_ns: int = 0
    waits: int = 0
    cancelled: int = 0
    waiting_at_end: int = 0
    wait_ns: int = 0
    max_wait_ns: int = 0
    max_waiters: int = 0
    max_hold_ns: int | None = None
    holder_task: str | None = None
    holder_span_id: int | None = field(default=None, metadata={"hex": 16})
    holder_span_name: str | None = None
    holder_site: str | None = None
    puts: int | None = None
    gets: int | None = None
    max_depth: int | None = None
    depth_times: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceWait(Record):
    """One wait on a resource (see :class:`ResourceStats`): ``operation`` is ``"acquire"``,
    ``"wait"``, ``"get"`` or ``"put"``; ``site`` the line that waited; the span and task that
    waited. The per-span attribution of I/O wait to resources sums these by ``span_id``."""

    kind: ClassVar[str] = "resource_wait"
    resource_id: int = field(default=0, metadata={"hex": 16})
    resource_kind: str = ""
    operation: str = ""
    start_ns: int = 0
    end_ns: int = 0
    cancelled: bool = False
    site: str | None = None
    resource_site: str | None = None
    task: str | None = None
    trace_id: int | None = field(default=None, metadata={"hex": 32})
    span_id: int | None = field(default=None, metadata={"hex": 16})
    span_name: str | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True, slots=True)
class QueueBacklog(Record):
    """A queue whose depth kept growing: it grew at every one of the last ``samples`` depth
    samples (from ``start_depth`` at ``start_ns`` to ``end_depth`` at ``end_ns``). Emitted once
    per episode; a new episode starts after the depth fell."""

    kind: ClassVar[str] = "queue_backlog"
    resource_id: int = field(default=0, metadata={"hex": 16})
    resource_kind: str = ""
    site: str | None = None
    start_ns: int = 0
    end_ns: int = 0
    start_depth: int = 0
    end_depth: int = 0
    samples: int = 0
    maxsize: int = 0
