"""Pure OTLP/JSON encoders: records -> ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` dicts.

Follows the OTLP JSON mapping (OTLP 1.x specification, "JSON Protobuf Encoding"):
trace and span ids as lower-case hex strings, 64-bit integers as decimal strings,
enums as integers, camelCase field names. Times are converted from the
session's monotonic clock to Unix nanoseconds with the header's anchors.

Besides :class:`~asynclens.records.Span` (scheduler breakdown as ``asynclens.*``
attributes, errors as an ``exception`` event), stalls, GC pauses, executor jobs and
leaks become child spans of the span that was running (``asynclens.stall``, …),
and a stall also becomes an event on that span when both are in the same batch.
Records without a span go into one synthetic trace per session and kind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..report.breakdown import FIELDS, held_up_by, own, part_text
from ._metrics import Family, HistogramPoint, Point

__all__ = ["SCOPE_NAME", "encode_metrics", "encode_spans", "encode_spans_json", "resource", "to_unix_offset"]

SCOPE_NAME = "asynclens"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# SpanKind and Status.code values from trace.proto
SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS_ERROR = 2
# SpanFlags: the W3C trace flags (sampled) in the low byte, then "has is_remote" and "is_remote"
_FLAG_SAMPLED = 0x01
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200
_AGGREGATION_CUMULATIVE = 2

# the critical-path breakdown (sums to the span's duration), then the scheduler's counts
_BREAKDOWN = ("cpu_ns", "blocked_ns", "sched_wait_ns", "io_wait_ns", "executor_ns", "steps", "max_sched_wait_ns")
_OWN = tuple(f"asynclens.own.{name}" for name in FIELDS)


def to_unix_offset(info: Any) -> int:
    """What to add to a record time to get Unix nanoseconds (0 without anchors)."""
    if info is None:
        return 0
    return int(getattr(info, "anchor_wall_ns", 0)) - int(getattr(info, "anchor_mono_ns", 0))


# ------------------------------------------------------------------ values


def any_value(value: Any) -> dict[str, Any]:
    """An OTLP ``AnyValue`` for a Python value (unknown types become their ``repr``)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        return {"doubleValue": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": [attribute(str(k), v) for k, v in value.items()]}}
    if value is None:
        return {}
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return {"stringValue": text[:1000]}


def attribute(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": any_value(value)}


def attributes(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Attributes for the ``(key, value)`` pairs whose value is not ``None``."""
    return [attribute(k, v) for k, v in pairs if v is not None]


def resource(service_name: str, info: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``Resource``: ``service.name``, process and SDK attributes, then ``extra``."""
    from .. import __version__

    pairs: dict[str, Any] = {
        "service.name": service_name,
        "telemetry.sdk.name": "asynclens",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    if info is not None:
        pairs["process.pid"] = getattr(info, "pid", None)
        pairs["process.runtime.name"] = "cpython"
        pairs["process.runtime.version"] = getattr(info, "python", None)
        pairs["asynclens.session_id"] = getattr(info, "session_id", None)
    if extra:
        pairs.update(extra)
    return {"attributes": attributes(pairs.items())}


def _scope() -> dict[str, Any]:
    from .. import __version__

    return {"name": SCOPE_NAME, "version": __version__}


# ------------------------------------------------------------------- spans


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _derived_id(bits: int, *parts: Any) -> int:
    """A stable non-zero id for a record that has none of its own."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8", "replace"), digest_size=bits // 8).digest()
    return int.from_bytes(digest, "big") or 1


def _span_dict(
    trace_id: int, span_id: int, parent_id: int | None, name: str, kind: int, start: int, end: int,
    attrs: list[dict[str, Any]], flags: int = _FLAG_SAMPLED | _FLAG_HAS_IS_REMOTE,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": _hex(trace_id, 32),
        "spanId": _hex(span_id, 16),
        "flags": flags,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attrs,
        "status": {},
    }
    if parent_id:
        out["parentSpanId"] = _hex(parent_id, 16)
    return out


def _encode_span(span: Any, offset: int, trace_of: Mapping[int, int]) -> dict[str, Any]:
    attrs = dict(span.attrs) if span.attrs else {}
    kind = SPAN_KINDS.get(str(attrs.pop("span.kind", "internal")).lower(), 1)
    pairs: list[tuple[str, Any]] = list(attrs.items())
    pairs.append(("asynclens.task", span.task))
    pairs.append(("thread.id", span.thread_id or None))
    for name in _BREAKDOWN:
        pairs.append((f"asynclens.{name}", getattr(span, name, None)))
    own_task = own(span)
    if own_task is not None:
        pairs.extend(zip(_OWN, own_task))
    pairs.append(("asynclens.held_up_by", held_up_by(span)))
    flags = _FLAG_SAMPLED | _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if getattr(span, "remote_parent", False) else 0)
    out = _span_dict(
        span.trace_id, span.span_id, span.parent_id, span.name, kind,
        span.start_ns + offset, span.end_ns + offset, attributes(pairs), flags,
    )
    events = [
        {"timeUnixNano": str(e.time_ns + offset), "name": e.name, "attributes": attributes(dict(e.attrs).items())}
        for e in span.events
    ]
    status = getattr(span, "status", "ok")
    if status == "error":
        out["status"] = {"code": _STATUS_ERROR, "message": f"{span.error_type}: {span.error_message}"}
        events.append(
            {
                "timeUnixNano": str(span.end_ns + offset),
                "name": "exception",
                "attributes": attributes(
                    [
                        ("exception.type", span.error_type),
                        ("exception.message", span.error_message),
                        ("exception.stacktrace", getattr(span, "error_stack", None)),
                    ]
                ),
            }
        )
    elif status == "cancelled":
        out["attributes"].append(attribute("asynclens.cancelled", span.error_type or "cancelled"))
    if events:
        out["events"] = events
    links = []
    for link in getattr(span, "links", ()) or ():
        linked_trace = trace_of.get(link)
        if linked_trace is not None:
            links.append({"traceId": _hex(linked_trace, 32), "spanId": _hex(link, 16)})
        else:
            out["attributes"].append(attribute("asynclens.link.span_id", _hex(link, 16)))
    if links:
        out["links"] = links
    return out


def _record_attrs(record: Any, names: Sequence[str]) -> list[tuple[str, Any]]:
    out = []
    for name in names:
        value = getattr(record, name, None)
        if isinstance(value, tuple) and not value:
            continue
        if isinstance(value, tuple) and value and not isinstance(value[0], (str, int, float, bool)):
            continue  # nested records (e.g. stack samples) stay in the JSON lines file
        out.append((f"asynclens.{name}", value))
    return out


_STALL_FIELDS = ("cause", "file", "line", "function", "task", "cpu_ns", "sampled", "stack", "async_stack", "span_name")
_GC_FIELDS = ("generation", "collected", "uncollectable", "task", "span_name")
_EXECUTOR_FIELDS = ("function", "thread_id", "error_type")
_LINT_FIELDS = {
    "never_resumable": ("name", "coro", "suspended_at", "waiting_on", "creation_site", "span_name"),
    "busy_yield": ("name", "coro", "line", "steps", "wakes", "self_wakes", "run_ns", "cpu_ns", "state", "creation_site", "span_name"),
}
_WAIT_FIELDS = ("resource_kind", "operation", "site", "resource_site", "task", "cancelled", "span_name")
_RESOURCE_FIELDS = (
    "resource_kind", "site", "waits", "cancelled", "waiting_at_end", "wait_ns", "max_wait_ns", "max_waiters",
    "max_hold_ns", "holder_task", "holder_span_name", "holder_site", "puts", "gets", "max_depth",
)  # fmt: skip
_BACKLOG_FIELDS = ("resource_kind", "site", "start_depth", "end_depth", "samples", "maxsize")
_LEAK_FIELDS = ("handle_kind", "description", "site", "closed_by", "stack", "span_name", "bytes_sent", "bytes_received", "ops")


def _child_span(record: Any, session_id: str, offset: int) -> dict[str, Any] | None:
    """Stalls, GC pauses, executor jobs and leaks as spans under the span that ran."""
    kind = getattr(record, "kind", None)
    fields: tuple[str, ...]
    if kind == "stall":
        name, start, end, fields = "asynclens.stall", record.start_ns, record.end_ns, _STALL_FIELDS
        extra: list[tuple[str, Any]] = [("asynclens.duration_ns", record.end_ns - record.start_ns), *_episode(record)]
    elif kind == "gc":
        name, start, end, fields = "asynclens.gc", record.start_ns, record.end_ns, _GC_FIELDS
        extra = []
    elif kind == "executor_job":
        submit = getattr(record, "submit_ns", record.start_ns)
        name, start, end, fields = f"asynclens.executor_job {getattr(record, 'function', '?')}", submit, record.end_ns, _EXECUTOR_FIELDS
        extra = [("asynclens.queue_wait_ns", record.start_ns - submit), ("asynclens.run_ns", record.end_ns - record.start_ns)]
    elif kind in _LINT_FIELDS:  # a finding (docs/lints.md): an instant under the span that created the task
        name, start, end, fields = f"asynclens.{kind}", record.found_ns, record.found_ns, _LINT_FIELDS[kind]
        extra = []
    elif kind == "leak":
        start = getattr(record, "open_ns", 0)
        close = getattr(record, "close_ns", None)
        name, end, fields = f"asynclens.leak {getattr(record, 'handle_kind', '')}".rstrip(), close if close is not None else start, _LEAK_FIELDS
        extra = []
    elif kind == "resource_wait":
        name, start, end = f"asynclens.resource_wait {getattr(record, 'resource_kind', '')}".rstrip(), record.start_ns, record.end_ns
        fields, extra = _WAIT_FIELDS, [("asynclens.duration_ns", record.end_ns - record.start_ns)]
    elif kind == "resource":
        name, start, end = f"asynclens.resource {getattr(record, 'resource_kind', '')}".rstrip(), record.start_ns, record.end_ns
        fields, extra = _RESOURCE_FIELDS, []
    elif kind == "queue_backlog":
        name, start, end, fields, extra = "asynclens.queue_backlog", record.start_ns, record.end_ns, _BACKLOG_FIELDS, []
    else:
        return None
    trace_id = getattr(record, "trace_id", None)
    parent_id = getattr(record, "span_id", None)
    if not trace_id:
        trace_id, parent_id = _derived_id(128, session_id, kind), None
    span_id = _derived_id(
        64, session_id, kind, start, end, getattr(record, "loop_id", None), getattr(record, "handle_id", None),
        getattr(record, "thread_id", None), getattr(record, "resource_id", None),
    )  # fmt: skip
    if kind in _LINT_FIELDS:  # several findings share an instant: one span per task
        span_id = _derived_id(64, session_id, kind, start, getattr(record, "task_id", None))
    attrs = attributes(_record_attrs(record, fields) + extra)
    out = _span_dict(trace_id, span_id, parent_id, name, 1, start + offset, end + offset, attrs)
    if kind == "executor_job" and getattr(record, "error_type", None):
        out["status"] = {"code": _STATUS_ERROR, "message": str(record.error_type)}
    if kind in _LINT_FIELDS:
        out["events"] = [{"timeUnixNano": str(start + offset), "name": name, "attributes": attrs}]
    return out


def _episode(stall: Any) -> list[tuple[str, Any]]:
    """``asynclens.episode`` and its biggest parts as text (``asynclens.parts``) for a lag episode."""
    if not getattr(stall, "episode", False):
        return []
    return [("asynclens.episode", True), ("asynclens.parts", [part_text(p) for p in getattr(stall, "parts", ()) or ()] or None)]


def _stall_event(record: Any, offset: int) -> dict[str, Any]:
    attrs = _record_attrs(record, ("cause", "file", "line", "function", "task"))
    attrs.append(("asynclens.duration_ns", record.end_ns - record.start_ns))
    attrs.extend(_episode(record))
    return {"timeUnixNano": str(record.start_ns + offset), "name": "asynclens.stall", "attributes": attributes(attrs)}


#: records that also become an event of the span they name
_SPAN_EVENTS = ("stall", "resource_wait")


def _wait_event(record: Any, offset: int) -> dict[str, Any]:
    """A wait on an asyncio resource as an event of the span that waited."""
    attrs = _record_attrs(record, ("resource_kind", "operation", "site", "resource_site", "cancelled"))
    attrs.append(("asynclens.duration_ns", record.end_ns - record.start_ns))
    return {"timeUnixNano": str(record.start_ns + offset), "name": "asynclens.resource_wait", "attributes": attributes(attrs)}


def encode_spans(
    records: Iterable[Any],
    *,
    resource: Mapping[str, Any],
    offset_ns: int = 0,
    session_id: str = "",
    trace_of: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """One ``ExportTraceServiceRequest`` (as a JSON-ready dict) for a batch of records.

    ``trace_of`` maps span ids seen earlier to their trace ids, to resolve
    ``Span.links`` across batches; unresolved links become attributes.
    """
    trace_of = trace_of if trace_of is not None else {}
    spans: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    stalls: list[Any] = []
    for record in records:
        kind = getattr(record, "kind", None)
        if kind == "span":
            encoded = _encode_span(record, offset_ns, trace_of)
            by_id[encoded["spanId"]] = encoded
            spans.append(encoded)
            continue
        child = _child_span(record, session_id, offset_ns)
        if child is not None:
            spans.append(child)
            if kind in _SPAN_EVENTS and getattr(record, "span_id", None):
                stalls.append(record)
    for record in stalls:
        parent = by_id.get(_hex(record.span_id, 16))
        if parent is not None:
            event = _stall_event if record.kind == "stall" else _wait_event
            parent.setdefault("events", []).append(event(record, offset_ns))
    if not spans:
        return {"resourceSpans": []}
    return {"resourceSpans": [{"resource": dict(resource), "scopeSpans": [{"scope": _scope(), "spans": spans}]}]}


# ----------------------------------------------------------------- metrics


def _labels(labels: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [attribute(k, v) for k, v in labels]


def _metric(family: Family, start: int, now: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": family.otel_name, "description": family.help, "unit": family.unit}
    points = []
    for point in family.points:
        base: dict[str, Any] = {"attributes": _labels(point.labels), "startTimeUnixNano": str(start), "timeUnixNano": str(now)}
        if isinstance(point, HistogramPoint):
            counts, previous = [], 0
            for cumulative in point.cumulative:
                counts.append(str(cumulative - previous))
                previous = cumulative
            counts.append(str(point.count - previous))
            base.update(
                count=str(point.count), sum=point.sum, bucketCounts=counts,
                explicitBounds=list(point.bounds), min=point.min, max=point.max,
            )
        elif isinstance(point, Point):
            if family.type == "counter":
                base["asInt"] = str(int(point.value))
            else:
                base["asDouble"] = point.value
        points.append(base)
    if family.type == "histogram":
        out["histogram"] = {"dataPoints": points, "aggregationTemporality": _AGGREGATION_CUMULATIVE}
    elif family.type == "counter":
        out["sum"] = {"dataPoints": points, "aggregationTemporality": _AGGREGATION_CUMULATIVE, "isMonotonic": True}
    else:
        out["gauge"] = {"dataPoints": points}
    return out


def encode_metrics(
    families: Sequence[Family], *, resource: Mapping[str, Any], start_unix_ns: int, now_unix_ns: int
) -> dict[str, Any]:
    """One ``ExportMetricsServiceRequest`` (as a JSON-ready dict), cumulative temporality."""
    if not families:
        return {"resourceMetrics": []}
    metrics = [_metric(f, start_unix_ns, now_unix_ns) for f in families]
    return {"resourceMetrics": [{"resource": dict(resource), "scopeMetrics": [{"scope": _scope(), "metrics": metrics}]}]}


# ------------------------------------------------------- fast JSON text path
# The exporter sends JSON text; building it directly for the common span (no
# events, links or error) costs a third of building dicts and dumping them.
# ``encode_spans_json`` must parse to exactly what ``encode_spans`` returns (tested).

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


_json_str = json.encoder.encode_basestring  # what _dumps does for a str (C, keeps non-ASCII), minus the dispatch
_key_prefix: dict[str, str] = {}  # attribute keys repeat: their JSON prefix is made once


def _attr_json(key: str, value: Any) -> str:
    kind = type(value)
    if kind is str or (kind is int and _INT64_MIN <= value <= _INT64_MAX):
        prefix = _key_prefix.get(key)
        if prefix is None:
            prefix = f'{{"key":{_json_str(key)},"value":{{'
            if len(_key_prefix) < 4096:
                _key_prefix[key] = prefix
        if kind is str:
            return f'{prefix}"stringValue":{_json_str(value)}}}}}'
        return f'{prefix}"intValue":"{value}"}}}}'
    return _dumps(attribute(key, value))


def _span_json(span: Any, offset: int, trace_of: Mapping[int, int]) -> str:
    attrs = span.attrs
    if span.events or getattr(span, "links", ()) or span.status == "error" or (attrs and "span.kind" in attrs):
        return _dumps(_encode_span(span, offset, trace_of))
    parts = [_attr_json(k, v) for k, v in attrs.items() if v is not None] if attrs else []
    task = span.task
    if task is not None:
        parts.append(_attr_json("asynclens.task", task))
    if span.thread_id:
        parts.append(_attr_json("thread.id", span.thread_id))
    for name in _BREAKDOWN:
        value = getattr(span, name, None)
        if value is not None:
            parts.append(_attr_json(f"asynclens.{name}", value))
    if span.status == "cancelled":
        parts.append(_attr_json("asynclens.cancelled", span.error_type or "cancelled"))
    flags = _FLAG_SAMPLED | _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if getattr(span, "remote_parent", False) else 0)
    parent = span.parent_id
    return (
        f'{{"traceId":"{span.trace_id:032x}","spanId":"{span.span_id:016x}","flags":{flags},'
        f'"name":{_json_str(span.name)},"kind":1,"startTimeUnixNano":"{span.start_ns + offset}",'
        f'"endTimeUnixNano":"{span.end_ns + offset}","attributes":[{",".join(parts)}],"status":{{}}'
        + (f',"parentSpanId":"{parent:016x}"}}' if parent else "}")
    )


def encode_spans_json(
    records: Iterable[Any],
    *,
    resource: Mapping[str, Any],
    offset_ns: int = 0,
    session_id: str = "",
    trace_of: Mapping[int, int] | None = None,
) -> str | None:
    """:func:`encode_spans` as JSON text (``None`` when the batch holds nothing to send)."""
    trace_of = trace_of if trace_of is not None else {}
    records = list(records)
    spans: list[str] = []
    for record in records:
        kind = getattr(record, "kind", None)
        if kind == "span":
            spans.append(_span_json(record, offset_ns, trace_of))
        elif kind in _SPAN_EVENTS:  # these also become events on their spans: the dict path does that
            payload = encode_spans(records, resource=resource, offset_ns=offset_ns, session_id=session_id, trace_of=trace_of)
            return _dumps(payload) if payload["resourceSpans"] else None
        else:
            child = _child_span(record, session_id, offset_ns)
            if child is not None:
                spans.append(_dumps(child))
    if not spans:
        return None
    return (
        f'{{"resourceSpans":[{{"resource":{_dumps(dict(resource))},"scopeSpans":[{{"scope":{_dumps(_scope())},'
        f'"spans":[{",".join(spans)}]}}]}}]}}'
    )
