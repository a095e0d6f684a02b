"""Metrics aggregated from records: one model, read by the Prometheus and OTLP sinks.

:class:`MetricsState` consumes record batches (the flusher thread calls
``add``) and answers :meth:`MetricsState.families` with plain data: metric
families with typed points. Encoders turn those into the Prometheus text format
(``sinks/prometheus.py``) or OTLP metrics (``_otlp_encode.py``). Memory is bounded:
at most ``max_series`` label sets per family, the excess counted under one
``"(other)"`` series.

Records other than :class:`~asynclens.records.Span` are read by ``kind`` with
``getattr`` so the aggregator only depends on the field names of the record plan.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..stats import Histogram

__all__ = ["DEFAULT_BUCKETS", "Family", "HistogramPoint", "MetricsState", "Point"]

#: Histogram bucket upper bounds in seconds (Prometheus ``le``; OTLP ``explicitBounds``).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
OTHER = "(other)"


@dataclass(frozen=True)
class Point:
    """A gauge or counter value with its labels."""

    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class HistogramPoint:
    """Cumulative counts per upper bound (seconds), plus the ``+Inf`` total."""

    labels: tuple[tuple[str, str], ...]
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # count of values <= each bound
    count: int
    sum: float
    min: float
    max: float


@dataclass(frozen=True)
class Family:
    """One metric: ``name`` is the Prometheus base name (no ``_total``/``_bucket``
    suffix), ``otel_name``/``unit`` the OTLP ones, ``type`` one of ``"gauge"``,
    ``"counter"``, ``"histogram"``."""

    name: str
    otel_name: str
    type: str
    help: str
    unit: str
    points: tuple[Any, ...] = field(default=())


class _Series:
    """A bounded map from label tuples to values."""

    def __init__(self, limit: int, make: Any) -> None:
        self.limit = limit
        self.make = make
        self.items: dict[tuple[tuple[str, str], ...], Any] = {}

    def get(self, labels: tuple[tuple[str, str], ...]) -> Any:
        item = self.items.get(labels)
        if item is None:
            if len(self.items) >= self.limit:
                labels = tuple((k, OTHER) for k, _ in labels)
                item = self.items.get(labels)
                if item is not None:
                    return item
            item = self.items[labels] = self.make()
        return item


class _Buckets:
    """Counts per fixed upper bound (ns) plus count, sum, min and max: one bisect per value."""

    __slots__ = ("bounds", "count", "counts", "max", "min", "total")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        self.record_many([value])

    def record_many(self, values: list[int]) -> None:
        """Count each of ``values`` in the first bucket whose bound is >= it (Prometheus ``le``)."""
        counts, bounds = self.counts, self.bounds
        low, high = min(values), max(values)
        if low < 0:
            values = [max(value, 0) for value in values]
            low, high = 0, max(high, 0)
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        if not self.count or low < self.min:
            self.min = low
        self.max = max(self.max, high)
        self.count += len(values)
        self.total += sum(values)

    def add_histogram(self, data: Mapping[str, Any]) -> None:
        """Fold in a window's log-linear histogram (``Histogram.to_dict()``): each of its
        buckets (≤ 1/128 wide) lands in the fixed bucket of its midpoint."""
        hist = Histogram.from_dict(data)
        if not hist.count:
            return
        for low, high, n in hist.buckets():
            middle = min(max((low + high) // 2, hist.min), hist.max)
            self.counts[bisect_left(self.bounds, middle)] += n
        if not self.count or hist.min < self.min:
            self.min = hist.min
        self.max = max(self.max, hist.max)
        self.count += hist.count
        self.total += hist.total

    def cumulative(self) -> tuple[int, ...]:
        out, running = [], 0
        for n in self.counts[:-1]:
            running += n
            out.append(running)
        return tuple(out)


class MetricsState:
    """Running metrics of one session, fed record batches from any one thread at a time
    and read from another (a lock guards both).

    ``open_handles`` is an optional callable returning the handles open right now
    (objects with ``handle_kind``), e.g. ``Session.open_handles``; without it the
    gauge counts the leaks reported at the end of the session.
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS, max_series: int = 200) -> None:
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] <= 0:
            raise ValueError(f"histogram buckets must be positive and strictly increasing, got {list(buckets)!r}")
        self.buckets = tuple(float(b) for b in buckets)
        self._bounds_ns = tuple(int(b * 1e9) for b in self.buckets)
        self._lock = threading.Lock()
        bounds_ns = self._bounds_ns

        def new_hist() -> _Buckets:
            return _Buckets(bounds_ns)

        self._span = _Series(max_series, new_hist)
        self._span_by_name: dict[str, _Buckets] = {}
        self._gc = _Series(16, new_hist)
        self._executor_wait = _Series(max_series, new_hist)
        self._stall_duration = _Series(16, new_hist)
        self._stalls = _Series(16, lambda: [0])
        self._lag = _Series(max_series, new_hist)
        self._ready = _Series(max_series, new_hist)
        self._elu = _Series(max_series, lambda: [0.0])
        self._leaks = _Series(16, lambda: [0])
        self._loops: dict[int, str] = {}
        self.open_handles: Any = None

    def _loop_label(self, loop_id: Any) -> tuple[tuple[str, str], ...]:
        label = self._loops.get(loop_id)
        if label is None:
            label = self._loops[loop_id] = str(len(self._loops)) if len(self._loops) < 1000 else OTHER
        return (("loop", label),)

    # -------------------------------------------------------------- feeding

    def add(self, records: Iterable[Any]) -> None:
        """Fold a batch of records into the metrics (records of unknown kinds are skipped)."""
        durations: dict[str, list[int]] = {}  # span durations by name, recorded per name at the end
        with self._lock:
            for record in records:
                kind = getattr(record, "kind", None)
                if kind == "span":
                    values = durations.get(record.name)
                    if values is None:
                        values = durations[record.name] = []
                    values.append(record.end_ns - record.start_ns)
                elif kind == "lag":
                    lag = getattr(record, "histogram", None)
                    if isinstance(lag, Mapping):  # files from before 0.1 lack it: no lag histogram from them
                        self._lag.get(self._loop_label(getattr(record, "loop_id", 0))).add_histogram(lag)
                    elu = getattr(record, "elu", None)
                    if elu is not None:
                        self._elu.get(self._loop_label(getattr(record, "loop_id", 0)))[0] = float(elu)
                elif kind == "stall":
                    labels = (("cause", str(getattr(record, "cause", "unknown"))),)
                    self._stalls.get(labels)[0] += 1
                    self._stall_duration.get(labels).record(record.end_ns - record.start_ns)
                elif kind == "gc":
                    self._gc.get((("generation", str(getattr(record, "generation", ""))),)).record(record.end_ns - record.start_ns)
                elif kind == "executor_job":
                    start = getattr(record, "start_ns", None)
                    submit = getattr(record, "submit_ns", None)
                    if start is not None and submit is not None:
                        self._executor_wait.get(()).record(start - submit)
                elif kind == "sched":
                    ready = getattr(record, "ready_histogram", None)
                    if isinstance(ready, Mapping):
                        self._ready.get(self._loop_label(getattr(record, "loop_id", 0))).add_histogram(ready)
                elif kind == "leak":
                    if getattr(record, "close_ns", None) is None:
                        self._leaks.get((("kind", str(getattr(record, "handle_kind", "unknown"))),))[0] += 1
            by_name = self._span_by_name
            for name, values in durations.items():
                buckets = by_name.get(name)
                if buckets is None:
                    buckets = self._span.get((("span", str(name)),))
                    if len(by_name) < 10_000:  # a cache only: names past the series limit share "(other)"
                        by_name[name] = buckets
                buckets.record_many(values)

    # -------------------------------------------------------------- reading

    def _histograms(self, series: _Series) -> tuple[HistogramPoint, ...]:
        points = []
        for labels, hist in series.items.items():
            if hist.count:
                points.append(
                    HistogramPoint(
                        labels,
                        self.buckets,
                        hist.cumulative(),
                        hist.count,
                        hist.total / 1e9,
                        hist.min / 1e9,
                        hist.max / 1e9,
                    )
                )
        return tuple(points)

    def _open_handles(self) -> tuple[Point, ...]:
        source = self.open_handles
        if source is not None and not self._leaks.items:  # leaks arrive at session end: then they are the truth
            try:
                counts: dict[str, int] = {}
                for handle in source():
                    kind = str(getattr(handle, "handle_kind", "unknown"))
                    counts[kind] = counts.get(kind, 0) + 1
                return tuple(Point((("kind", k),), float(v)) for k, v in sorted(counts.items()))
            except Exception:
                pass  # fall back to what the records say
        return tuple(Point(labels, float(v[0])) for labels, v in self._leaks.items.items())

    def families(self) -> list[Family]:
        """A consistent snapshot of every metric with at least one point."""
        with self._lock:
            out = [
                Family("asynclens_span_duration_seconds", "asynclens.span.duration", "histogram",
                       "Wall-clock duration of finished spans, by span name.", "s", self._histograms(self._span)),
                Family("asynclens_event_loop_lag_seconds", "asynclens.event_loop.lag", "histogram",
                       "Event-loop lag (timer drift), by loop.", "s", self._histograms(self._lag)),
                Family("asynclens_event_loop_utilization_ratio", "asynclens.event_loop.utilization", "gauge",
                       "Event-loop utilisation (busy / wall time, 0..1) over the last window.", "1",
                       tuple(Point(labels, v[0]) for labels, v in self._elu.items.items())),
                Family("asynclens_stalls", "asynclens.event_loop.stalls", "counter",
                       "Event-loop stalls over the threshold, by cause.", "{stall}",
                       tuple(Point(labels, float(v[0])) for labels, v in self._stalls.items.items())),
                Family("asynclens_stall_duration_seconds", "asynclens.event_loop.stall.duration", "histogram",
                       "Duration of event-loop stalls, by cause.", "s", self._histograms(self._stall_duration)),
                Family("asynclens_gc_pause_seconds", "asynclens.gc.pause", "histogram",
                       "Garbage-collector pauses, by generation.", "s", self._histograms(self._gc)),
                Family("asynclens_executor_queue_wait_seconds", "asynclens.executor.queue_wait", "histogram",
                       "Time executor jobs waited for a worker thread.", "s", self._histograms(self._executor_wait)),
                Family("asynclens_scheduling_latency_seconds", "asynclens.scheduler.ready_delay", "histogram",
                       "Ready-to-run delay of task steps, by loop.", "s", self._histograms(self._ready)),
            ]
        handles = self._open_handles()
        out.append(Family("asynclens_open_handles", "asynclens.handles.open", "gauge",
                          "Handles (sockets, files, subprocesses, transports, tasks, threads) open now, by kind.",
                          "{handle}", handles))
        return [f for f in out if f.points]
