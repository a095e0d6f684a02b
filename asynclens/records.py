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
    "Record",
    "RecordError",
    "SessionEnd",
    "SessionInfo",
    "Span",
    "SpanEvent",
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

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


# ------------------------------------------------------------ lag and stalls
# (records of asynclens.lag go here)

# ------------------------------------------------------------------- handles
# (records of asynclens.handles go here)

# ----------------------------------------------------------------- scheduler
# (records of asynclens.scheduler go here)
