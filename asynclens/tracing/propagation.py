"""W3C Trace Context: ``traceparent``/``tracestate`` in and out of HTTP headers.

``extract(headers)`` parses an incoming ``traceparent`` strictly (W3C Trace
Context level 1: version ``00`` exactly as specified, later versions by their
first four fields; lower-case hex only; no all-zero ids) and returns a
:class:`SpanContext`, or ``None`` for a missing or invalid header: a bad header
from a client never becomes an exception in the server. ``span(name,
parent=ctx)`` continues the remote trace. ``inject(headers)`` writes the current
span's ``traceparent`` (and the ``tracestate`` received with its trace) into an
outgoing request's headers.

.. versionadded:: 0.1
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Union

from .._state import context as _context

__all__ = ["SpanContext", "extract", "format_traceparent", "inject", "parse_traceparent"]

# version "-" trace-id "-" parent-id "-" flags, then (future versions only) "-" anything
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACESTATE = 512  # the spec lets a server drop tracestate longer than this
_TRACESTATE_MEMBER = re.compile(r"[a-z0-9][_0-9a-z\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")

Headers = Union[Mapping[str, Any], Iterable[tuple[Any, Any]]]


@dataclass(frozen=True, slots=True)
class SpanContext:
    """The identity of a span in another process, as ``traceparent`` carries it.

    Pass it as ``span(name, parent=ctx)`` to continue that trace: the new span
    gets ``ctx.trace_id``, ``parent_id == ctx.span_id`` and ``remote_parent=True``.
    """

    trace_id: int
    span_id: int
    sampled: bool = True
    tracestate: str | None = None
    remote: bool = True

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    """``00-<trace id>-<span id>-<flags>`` in lower-case hex."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: Any) -> tuple[int, int, bool] | None:
    """``(trace_id, span_id, sampled)`` from a ``traceparent`` value, or ``None`` if invalid."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff":
        return None
    if version == "00" and rest is not None:
        return None  # version 00 has exactly four fields
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags_hex, 16) & 1)


def _clean_tracestate(values: list[str]) -> str | None:
    """Combine ``tracestate`` header values; ``None`` if any member is malformed."""
    members: list[str] = []
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            if _TRACESTATE_MEMBER.fullmatch(member) is None:
                return None
            members.append(member)
    if not members or len(members) > 32:
        return None
    joined = ",".join(members)
    return joined if len(joined) <= _MAX_TRACESTATE else None


def _header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` (case-insensitive) from a mapping, a
    multi-dict (aiohttp) or a list of pairs (ASGI ``scope["headers"]``, bytes)."""
    out: list[str] = []
    getall = getattr(headers, "getall", None)
    if callable(getall):  # multidict, e.g. aiohttp's CIMultiDictProxy
        try:
            found = getall(name, [])
        except Exception:
            found = []
        pairs: Iterable[tuple[Any, Any]] = [(name, v) for v in found]
    elif isinstance(headers, Mapping):
        pairs = headers.items()
    else:
        pairs = headers
    for key, value in pairs:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if isinstance(key, str) and key.lower() == name:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if isinstance(value, str):
                out.append(value)
    return out


def extract(headers: Headers) -> SpanContext | None:
    """The remote parent carried by ``headers``, or ``None`` (missing or invalid).

    ``headers`` may be a mapping (any key case), a multi-dict, or an iterable of
    ``(name, value)`` pairs of ``str`` or ``bytes``. Never raises.
    """
    try:
        parents = _header_values(headers, "traceparent")
        if len(parents) != 1:  # missing, or repeated: ambiguous, so ignored
            return None
        parsed = parse_traceparent(parents[0])
        if parsed is None:
            return None
        states = _header_values(headers, "tracestate")
        return SpanContext(parsed[0], parsed[1], parsed[2], _clean_tracestate(states) if states else None)
    except Exception:  # odd header containers from odd frameworks: no context, not a crash
        return None


def current_context() -> SpanContext | None:
    """The :class:`SpanContext` of the current span (with the trace's ``tracestate``), or None."""
    live = _context.current_span.get()
    if live is None:
        return None
    remote = _context.remote_parent.get()
    state = remote.tracestate if remote is not None and remote.trace_id == live.trace_id else None
    return SpanContext(live.trace_id, live.span_id, True, state, remote=False)


def inject(headers: MutableMapping[str, Any] | None = None, context: SpanContext | Any = None) -> MutableMapping[str, Any]:
    """Write ``traceparent`` (and ``tracestate`` if the trace came with one) for
    ``context`` (default: the current span) into ``headers``; returns ``headers``.

    With no current span (nothing recording) ``headers`` is returned unchanged.
    Never raises.
    """
    if headers is None:
        headers = {}
    try:
        ctx = context if context is not None else current_context()
        if ctx is None:
            return headers
        headers["traceparent"] = format_traceparent(ctx.trace_id, ctx.span_id, getattr(ctx, "sampled", True))
        state = getattr(ctx, "tracestate", None)
        if state:
            headers["tracestate"] = state
    except Exception:
        pass
    return headers
