"""Aggregates over finished spans and the text rendering of ``Session.summary()``."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .records import Record, Span

__all__ = ["NameStats", "SpanAggregates", "format_ns", "render_summary"]


def format_ns(ns: float) -> str:
    """A duration for humans: ``812 ns``, ``3.4 µs``, ``41.2 ms``, ``2.31 s``."""
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


@dataclass
class NameStats:
    count: int = 0
    errors: int = 0
    cancelled: int = 0
    total_ns: int = 0
    max_ns: int = 0


class SpanAggregates:
    """Fixed-memory view of all spans seen: per-name totals and the slowest few."""

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

    def add_batch(self, records: Iterable[Record]) -> None:
        for record in records:
            if type(record) is Span:
                self.add(record)

    def add(self, span: Span) -> None:
        duration = span.end_ns - span.start_ns
        stats = self.by_name.get(span.name)
        if stats is None:
            stats = self.other if len(self.by_name) >= self.max_names else self.by_name.setdefault(span.name, NameStats())
        stats.count += 1
        stats.total_ns += duration
        if duration > stats.max_ns:
            stats.max_ns = duration
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

    def slowest(self) -> list[Span]:
        """The slowest spans, slowest first."""
        return [span for _, _, span in sorted(self._slowest, reverse=True)]


def _span_line(span: Span) -> str:
    where = f" [{span.task}]" if span.task else ""
    status = ""
    if span.status == "error":
        status = f"  error: {span.error_type}: {span.error_message}"
    elif span.status == "cancelled":
        status = f"  {span.error_type or 'cancelled'}"
    return f"  {format_ns(span.duration_ns):>10}  {span.name}{where}{status}"


def render_summary(aggregates: SpanAggregates, stats: Any, wall_ns: int, sections: Sequence[str]) -> str:
    """The text report: headline, slowest spans, per-name table, probe sections."""
    lines = [
        f"asynclens: {aggregates.spans} spans in {format_ns(wall_ns)}"
        f" ({aggregates.errors} failed, {aggregates.cancelled} cancelled)"
    ]
    slowest = aggregates.slowest()
    if slowest:
        lines.append("Slowest spans:")
        lines.extend(_span_line(s) for s in slowest)
        lines.append("By name:")
        lines.append(f"  {'count':>7}  {'total':>10}  {'mean':>10}  {'max':>10}  {'errors':>6}  name")
        ranked = sorted(aggregates.by_name.items(), key=lambda kv: kv[1].total_ns, reverse=True)
        if aggregates.other.count:
            ranked.append(("(other names)", aggregates.other))
        for name, s in ranked[:20]:
            lines.append(
                f"  {s.count:>7}  {format_ns(s.total_ns):>10}  {format_ns(s.total_ns / s.count):>10}"
                f"  {format_ns(s.max_ns):>10}  {s.errors:>6}  {name}"
            )
    lines.extend(sections)
    if stats.records_dropped or stats.sinks_disabled or stats.internal_errors:
        lines.append(
            f"Recording problems: {stats.records_dropped} records dropped (buffer limit {stats.buffer_limit}),"
            f" {stats.sinks_disabled} sinks disabled, {stats.internal_errors} internal errors"
        )
    return "\n".join(lines)
