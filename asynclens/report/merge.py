"""Merge runs from several processes into one timeline, linking spans across processes.

Each process writes its own JSON lines file whose times are on that process's
monotonic clock; the header's ``anchor_mono_ns``/``anchor_wall_ns`` (read together
at session start) map them to wall-clock time. :func:`merge_runs` shifts every
run onto one shared timeline (zero = the earliest session start) and finds the
spans whose parent lives in another process: requests that crossed a service
boundary with a W3C ``traceparent`` (``Span.remote_parent``), or workers of one
service sharing a trace.

::

    from asynclens.fileformat import read_jsonl
    from asynclens.merge import merge_runs

    merged = merge_runs([read_jsonl("api.jsonl"), read_jsonl("worker.jsonl")])
    for link in merged.links:
        print(link.parent.name, "->", link.child.name, "in pid", merged.runs[link.child_run].info.pid)

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TIME_FIELDS", "CrossProcessLink", "MergedRuns", "align_offsets", "cross_process_links", "merge_runs", "shift_record"]

#: Record fields that are points on the session clock (shifted when merging);
#: every other ``*_ns`` field is a duration and stays as it is.
TIME_FIELDS = frozenset(
    {"start_ns", "end_ns", "time_ns", "open_ns", "close_ns", "submit_ns", "ready_ns", "created_ns", "done_ns", "detected_ns"}
)


@dataclass(frozen=True)
class CrossProcessLink:
    """``child`` (in run ``child_run``) is a child of ``parent`` (in another run)."""

    parent_run: int
    parent: Any
    child_run: int
    child: Any

    @property
    def gap_ns(self) -> int:
        """Shared-timeline time from the parent's start to the child's start (network + queueing)."""
        return int(self.child.start_ns - self.parent.start_ns)


@dataclass
class MergedRuns:
    """Runs on one timeline: ``records`` as ``(run index, shifted record)`` by start time."""

    runs: list[Any]
    offsets: list[int]
    records: list[tuple[int, Any]] = field(default_factory=list)
    links: list[CrossProcessLink] = field(default_factory=list)

    def traces(self) -> dict[int, list[tuple[int, Any]]]:
        """Spans grouped by trace id across every run: ``{trace_id: [(run, span), ...]}``."""
        out: dict[int, list[tuple[int, Any]]] = {}
        for index, record in self.records:
            if getattr(record, "kind", None) == "span":
                out.setdefault(record.trace_id, []).append((index, record))
        return out

    def distributed_traces(self) -> dict[int, list[tuple[int, Any]]]:
        """Only the traces whose spans come from more than one run."""
        return {t: spans for t, spans in self.traces().items() if len({i for i, _ in spans}) > 1}


def align_offsets(infos: Sequence[Any]) -> list[int]:
    """Per run, what to add to its record times to put them on the shared timeline.

    The timeline's zero is the earliest session start in wall-clock time. A run
    without anchors starts at zero.
    """
    anchors: list[tuple[int, int] | None] = []
    for info in infos:
        mono = getattr(info, "anchor_mono_ns", None)
        wall = getattr(info, "anchor_wall_ns", None)
        anchors.append((mono, wall) if isinstance(mono, int) and isinstance(wall, int) else None)
    walls = [a[1] for a in anchors if a is not None]
    base = min(walls) if walls else 0
    offsets = []
    for anchor, info in zip(anchors, infos):
        if anchor is not None:
            offsets.append(anchor[1] - anchor[0] - base)
        else:  # no anchors: start the run at zero if we know where it starts at all
            offsets.append(-int(getattr(info, "anchor_mono_ns", 0) or 0) if info is not None else 0)
    return offsets


def shift_record(record: Any, offset: int) -> Any:
    """A copy of a frozen record with its time fields (and its events') moved by ``offset``."""
    if not offset or not dataclasses.is_dataclass(record):
        return record
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name in TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            changes[f.name] = value + offset
        elif f.name == "events" and value:
            changes[f.name] = tuple(shift_record(e, offset) for e in value)
    return dataclasses.replace(record, **changes) if changes else record  # type: ignore[type-var]


def cross_process_links(runs_spans: Sequence[Iterable[Any]]) -> list[CrossProcessLink]:
    """Spans whose parent is in another run (matched by trace id and parent span id).

    ``runs_spans`` holds each run's spans (other records are ignored). A parent
    found in the child's own run is an ordinary in-process parent, not a link.
    """
    where: dict[tuple[int, int], tuple[int, Any]] = {}
    per_run: list[list[Any]] = []
    for index, records in enumerate(runs_spans):
        spans = [r for r in records if getattr(r, "kind", None) == "span"]
        per_run.append(spans)
        for span in spans:
            where.setdefault((span.trace_id, span.span_id), (index, span))
    links = []
    for index, spans in enumerate(per_run):
        own = {s.span_id for s in spans}
        for span in spans:
            parent_id = span.parent_id
            if parent_id is None or parent_id in own:
                continue
            found = where.get((span.trace_id, parent_id))
            if found is not None and found[0] != index:
                links.append(CrossProcessLink(found[0], found[1], index, span))
    return links


def merge_runs(runs: Sequence[Any]) -> MergedRuns:
    """Put several runs (each with ``.info`` and ``.records``, e.g. from
    :func:`~asynclens.fileformat.read_jsonl`) on one timeline and link their spans.

    Records keep their types; time fields are shifted (see :data:`TIME_FIELDS`).
    Records are ordered by start time (``start_ns``, else ``time_ns``/``open_ns``),
    ties kept in run order.
    """
    runs = list(runs)
    offsets = align_offsets([getattr(r, "info", None) for r in runs])
    shifted: list[list[Any]] = [[shift_record(rec, off) for rec in getattr(run, "records", ())] for run, off in zip(runs, offsets)]
    merged = MergedRuns(runs=runs, offsets=offsets)
    keyed = []
    for index, records in enumerate(shifted):
        for order, record in enumerate(records):
            keyed.append((_start_of(record), index, order, record))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    merged.records = [(index, record) for _, index, _, record in keyed]
    merged.links = cross_process_links(shifted)
    return merged


def _start_of(record: Any) -> int:
    for name in ("start_ns", "submit_ns", "open_ns", "created_ns", "time_ns", "end_ns"):
        value = getattr(record, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0
