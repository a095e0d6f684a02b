"""Aggregates over a run's records, for the text report.

:class:`SpanAggregates` sees every batch the session flushes (or every record of a file
being converted) and keeps fixed-size aggregates: per-name span totals, the slowest spans,
the longest stalls, merged lag windows, task, GC and executor totals, and the first leaks.
Records other than spans are read by ``kind`` with ``getattr`` defaults, so new record kinds
need no change here until they deserve a section.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._native import core
from ..records import Record, Span
from . import breakdown as _bd
from .leaks import endpoints
from .lints import LINT_KINDS, LintAggregates

__all__ = ["NameStats", "SpanAggregates"]

#: Span ends remembered for the "outlived their request" line (the spans a late task outlived
#: ended shortly before it; older ones are forgotten).
_RECENT_SPANS = 4096


@dataclass
class NameStats:
    count: int = 0
    errors: int = 0
    cancelled: int = 0
    total_ns: int = 0
    max_ns: int = 0


@dataclass
class _Totals:
    count: int = 0
    total_ns: int = 0
    max_ns: int = 0

    def add(self, ns: Any) -> None:
        self.count += 1
        if isinstance(ns, int) and ns > 0:
            self.total_ns += ns
            self.max_ns = max(self.max_ns, ns)


@dataclass
class _Lag:
    windows: int = 0
    samples: int = 0
    weighted_mean: float = 0.0
    min_ns: int | None = None
    max_ns: int = 0
    worst_p99_ns: int = 0
    worst_p999_ns: int = 0
    elu_time: float = 0.0
    elu_ns: int = 0
    elu_max: float = 0.0
    loops: set[int] = field(default_factory=set)


def _py_group_spans(spans: list[Any], floor: float) -> tuple[dict[str, tuple[int, int, int]], list[Any], list[int]]:
    """A flushed batch of live spans: per name ``(count, total, max)`` duration, in order of
    first appearance; the failed or cancelled spans; the indices of the spans longer than
    ``floor`` (``asynclens._core.group_spans``, the same in C)."""
    durations: dict[str, list[int]] = {}
    ended: list[Any] = []
    over: list[int] = []
    for i, live in enumerate(spans):
        duration = live.end_ns - live.start_ns
        group = durations.get(live.name)
        if group is None:
            group = durations[live.name] = []
        group.append(duration)
        if live.error is not None:
            ended.append(live)
        if duration > floor:
            over.append(i)
    return {name: (len(g), sum(g), max(g)) for name, g in durations.items()}, ended, over


_group_spans: Callable[[list[Any], float], tuple[dict[str, tuple[int, int, int]], list[Any], list[int]]] = (
    core.group_spans if core is not None else _py_group_spans
)


class SpanAggregates:
    """Fixed-memory view of a run: span totals and slowest spans, plus stalls,
    lag, tasks, GC, executor jobs and leaks when those records are present."""

    def __init__(self, keep_slowest: int = 10, max_names: int = 1000) -> None:
        self.keep_slowest = keep_slowest
        self.max_names = max_names
        self.by_name: dict[str, NameStats] = {}
        self.other = NameStats()  # names beyond max_names are folded here
        self._slowest: list[tuple[int, int, Span]] = []
        self._seq = 0
        self.spans = 0
        self.errors = 0
        self.cancelled = 0
        self.first_errors: list[Span] = []
        # other record kinds
        self.stalls = _Totals()
        self.stall_causes: Counter[str] = Counter()
        self._stalls: list[tuple[int, int, Any]] = []
        self.lag = _Lag()
        self.tasks = 0
        self.task_states: Counter[str] = Counter()
        self.task_steps = 0
        self.task_max_wait_ns = 0
        self.tasks_outlived = 0
        self.tasks_inherited = 0
        self.steps = 0
        self.gc = _Totals()
        self.gc_by_generation: Counter[int] = Counter()
        self.jobs = _Totals()
        self.job_queue = _Totals()
        self.job_errors = 0
        self.ready_p99_max: int | None = None
        self.timer_p99_max: int | None = None
        self.leaks = 0
        self.leaks_by_kind: Counter[str] = Counter()
        self.first_leaks: list[Any] = []
        self.leak_pairs = 0  # socket + transport of one connection, counted once
        self._unpaired: Counter[tuple[str, str]] = Counter()
        self.handles_closed = 0
        # per name, from span records that carry the scheduler's breakdown: [count, wall,
        # cpu, blocked, sched, io, executor (critical path), the same five of the spans'
        # own tasks, spans whose critical path went through other tasks]
        self.breakdown: dict[str, list[int]] = {}
        self._span_ends: OrderedDict[int, int] = OrderedDict()
        self.outlived: list[list[Any]] = []  # [task, span name, by ns or None, span id, done ns]
        self.io: list[int] = [0, 0, 0]  # bytes sent, received, ops (io_rates records)
        self.io_events: int | None = None
        self.io_by_span: dict[str, list[int]] = {}
        self._busiest: list[tuple[int, int, Any]] = []
        self.other_kinds: Counter[str] = Counter()
        self.lints = LintAggregates()  # never-resumable and busy-yield tasks, step histograms

    def add_batch(self, records: Iterable[Record]) -> None:
        for record in records:
            if type(record) is Span:
                self.add(record)
            else:
                self.add_other(record)

    def add(self, span: Span) -> None:
        duration = span.end_ns - span.start_ns
        stats = self.by_name.get(span.name)
        if stats is None:
            stats = (
                self.other if len(self.by_name) >= self.max_names else self.by_name.setdefault(span.name, NameStats())
            )
        stats.count += 1
        stats.total_ns += duration
        stats.max_ns = max(stats.max_ns, duration)
        self.spans += 1
        if span.status == "error":
            stats.errors += 1
            self.errors += 1
            if len(self.first_errors) < self.keep_slowest:
                self.first_errors.append(span)
        elif span.status == "cancelled":
            stats.cancelled += 1
            self.cancelled += 1
        self._seq += 1
        entry = (duration, -self._seq, span)
        if len(self._slowest) < self.keep_slowest:
            heapq.heappush(self._slowest, entry)
        elif entry > self._slowest[0]:
            heapq.heapreplace(self._slowest, entry)
        critical = _bd.critical(span)
        if critical is not None:
            parts = self.breakdown.get(span.name)
            if parts is None:
                if len(self.breakdown) >= self.max_names:
                    parts = self.breakdown.setdefault("(other names)", [0] * 13)
                else:
                    parts = self.breakdown[span.name] = [0] * 13
            own = _bd.own(span)
            parts[0] += 1
            parts[1] += duration
            for i, value in enumerate(critical):
                parts[2 + i] += value
            for i, value in enumerate(own or critical):
                parts[7 + i] += value
            parts[12] += own is not None
        ends = self._span_ends
        ends[span.span_id] = span.end_ns
        if len(ends) > _RECENT_SPANS:
            ends.popitem(last=False)

    def add_live(self, spans: Iterable[Any], freeze: Callable[[Any], Span | None]) -> None:
        """Fold finished live spans (objects with ``name``, ``start_ns``, ``end_ns`` and
        ``error``: ``None`` or ``(status, type, message)``) exactly as :meth:`add` folds
        their records, freezing (``freeze(live)``, ``None`` when that failed) only the
        few this keeps: the slowest and the first errors."""
        slowest = self._slowest
        keep = self.keep_slowest
        spans = spans if type(spans) is list else list(spans)
        frozen: dict[int, Span | None] = {}  # id(live) -> its record, for spans kept twice
        seq = self._seq
        # a new span enters the heap while it is not full, or when strictly slower than
        # its minimum ((duration, -seq) of a newer span is never above an older one's)
        floor = float("inf") if keep <= 0 else slowest[0][0] if len(slowest) >= keep else float("-inf")
        groups, ended, over = _group_spans(spans, floor)
        for i in over:  # those over the first floor, in order, against the floor as it rises
            live = spans[i]
            duration = live.end_ns - live.start_ns
            if duration > floor:
                record = frozen[id(live)] = freeze(live)
                if record is not None:
                    if len(slowest) < keep:
                        heapq.heappush(slowest, (duration, -(seq + i + 1), record))
                    else:
                        heapq.heapreplace(slowest, (duration, -(seq + i + 1), record))
                    if len(slowest) >= keep:
                        floor = slowest[0][0]
        self._seq = seq + len(spans)
        self.spans += len(spans)
        by_name = self.by_name
        for name, (count, total, longest) in groups.items():
            stats = by_name.get(name)
            if stats is None:
                stats = self.other if len(by_name) >= self.max_names else by_name.setdefault(name, NameStats())
            stats.count += count
            stats.total_ns += total
            if longest > stats.max_ns:
                stats.max_ns = longest
        first_errors = self.first_errors
        for live in ended:
            stats = by_name.get(live.name) or self.other
            status = live.error[0]
            if status == "error":
                stats.errors += 1
                self.errors += 1
                if len(first_errors) < keep:
                    key = id(live)
                    record = frozen[key] if key in frozen else freeze(live)
                    if record is not None:
                        first_errors.append(record)
            elif status == "cancelled":
                stats.cancelled += 1
                self.cancelled += 1

    def add_other(self, record: Any) -> None:
        """Fold a non-span record (dispatch on ``record.kind``)."""
        kind = getattr(record, "kind", None)
        if kind == "span":
            self.add(record)
        elif kind == "stall":
            duration = (getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0)
            self.stalls.add(duration)
            self.stall_causes[str(getattr(record, "cause", None) or "unknown")] += 1
            self._seq += 1
            entry = (duration, -self._seq, record)
            if len(self._stalls) < self.keep_slowest:
                heapq.heappush(self._stalls, entry)
            elif entry > self._stalls[0]:
                heapq.heapreplace(self._stalls, entry)
        elif kind == "lag":
            self._add_lag(record)
        elif kind == "task":
            self.tasks += 1
            self.task_states[str(getattr(record, "state", None) or "unknown")] += 1
            self.task_steps += getattr(record, "steps", 0) or 0
            self.task_max_wait_ns = max(self.task_max_wait_ns, getattr(record, "max_sched_wait_ns", 0) or 0)
            if getattr(record, "outlived_span", False):
                self.tasks_outlived += 1
                if len(self.outlived) < 3:
                    done = getattr(record, "done_ns", None)
                    span_id = getattr(record, "span_id", None)
                    ended = self._span_ends.get(span_id or 0)
                    by = done - ended if isinstance(done, int) and ended is not None else None
                    name = str(getattr(record, "name", "?"))
                    self.outlived.append([name, str(getattr(record, "span_name", None) or "?"), by, span_id, done])
            self.tasks_inherited += bool(getattr(record, "inherited_context", False))
            self.lints.add_task(record)
        elif kind == "step":
            self.steps += 1
        elif kind == "gc":
            self.gc.add((getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0))
            generation = getattr(record, "generation", None)
            if isinstance(generation, int):
                self.gc_by_generation[generation] += 1
        elif kind == "executor_job":
            start = getattr(record, "start_ns", None)
            submit = getattr(record, "submit_ns", None)
            end = getattr(record, "end_ns", None)
            self.jobs.add(end - start if isinstance(end, int) and isinstance(start, int) else None)
            self.job_queue.add(start - submit if isinstance(start, int) and isinstance(submit, int) else None)
            self.job_errors += bool(getattr(record, "error_type", None))
        elif kind == "sched":
            for attr, name in (("ready_delay", "ready_p99_max"), ("timer_lateness", "timer_p99_max")):
                summary: Any = getattr(record, attr, None)
                p99 = summary.get("p99") if hasattr(summary, "get") else None
                if isinstance(p99, (int, float)):
                    current = getattr(self, name)
                    setattr(self, name, int(p99) if current is None else max(current, int(p99)))
        elif kind == "leak":
            self.leaks += 1
            handle_kind = str(getattr(record, "handle_kind", None) or "handle")
            self.leaks_by_kind[handle_kind] += 1
            if len(self.first_leaks) < 2 * self.keep_slowest:  # pairs share a line
                self.first_leaks.append(record)
            pair = endpoints(getattr(record, "description", None))
            if pair is not None and handle_kind in ("socket", "transport"):
                other = (("transport" if handle_kind == "socket" else "socket"), pair)
                if self._unpaired[other]:
                    self._unpaired[other] -= 1
                    self.leak_pairs += 1
                elif len(self._unpaired) < 100_000:
                    self._unpaired[(handle_kind, pair)] += 1
            self._add_io(record)
        elif kind == "handle":
            self.handles_closed += getattr(record, "close_ns", None) is not None
            self._add_io(record)
        elif kind == "io_rates":
            self.io[0] += getattr(record, "bytes_sent", 0) or 0
            self.io[1] += getattr(record, "bytes_received", 0) or 0
            self.io[2] += getattr(record, "ops", 0) or 0
            events = getattr(record, "events", None)
            if isinstance(events, int):
                self.io_events = (self.io_events or 0) + events
        elif kind in LINT_KINDS:
            self.lints.add(record)
        elif isinstance(kind, str) and kind not in ("session", "session_end", "span_event"):
            self.other_kinds[kind] += 1

    def _add_io(self, record: Any) -> None:
        sent = getattr(record, "bytes_sent", None) or 0
        received = getattr(record, "bytes_received", None) or 0
        ops = getattr(record, "ops", None) or 0
        if not (sent or received or ops):
            return
        name = str(getattr(record, "span_name", None) or "(no span)")
        totals = self.io_by_span.get(name)
        if totals is None:
            totals = self.io_by_span.setdefault(name if len(self.io_by_span) < self.max_names else "(other)", [0, 0, 0])
        totals[0] += sent
        totals[1] += received
        totals[2] += ops
        self._seq += 1
        entry = (sent + received, -self._seq, record)
        if len(self._busiest) < 5:
            heapq.heappush(self._busiest, entry)
        elif entry > self._busiest[0]:
            heapq.heapreplace(self._busiest, entry)

    @property
    def left_open(self) -> int:
        """Things left open, a connection's socket and transport counted once."""
        return self.leaks - self.leak_pairs

    def _add_lag(self, record: Any) -> None:
        lag = self.lag
        count = getattr(record, "count", 0) or 0
        lag.windows += 1
        loop = getattr(record, "loop_id", None)
        if loop is not None:
            lag.loops.add(loop)
        if count:
            mean = getattr(record, "mean_ns", 0) or 0
            lag.weighted_mean = (lag.weighted_mean * lag.samples + mean * count) / (lag.samples + count)
            lag.samples += count
            low = getattr(record, "min_ns", None)
            if isinstance(low, int):
                lag.min_ns = low if lag.min_ns is None else min(lag.min_ns, low)
            lag.max_ns = max(lag.max_ns, getattr(record, "max_ns", 0) or 0)
            lag.worst_p99_ns = max(lag.worst_p99_ns, getattr(record, "p99_ns", 0) or 0)
            lag.worst_p999_ns = max(lag.worst_p999_ns, getattr(record, "p999_ns", 0) or 0)
        elu = getattr(record, "elu", None)
        if isinstance(elu, (int, float)):
            window = max(0, (getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0))
            lag.elu_time += float(elu) * window
            lag.elu_ns += window
            lag.elu_max = max(lag.elu_max, float(elu))

    def slowest(self) -> list[Span]:
        """The slowest spans, slowest first."""
        return [span for _, _, span in sorted(self._slowest, reverse=True, key=lambda e: e[:2])]

    def longest_stalls(self) -> list[Any]:
        """The longest stalls, longest first."""
        return [stall for _, _, stall in sorted(self._stalls, reverse=True, key=lambda e: e[:2])]


# --------------------------------------------------------------------- render
