"""The resources section of ``summary()``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..._durations import format_ns
from ...records import QueueBacklog, ResourceStats

__all__ = ["SUMMARY_LIMIT", "resource_line", "span_io_wait", "summary_lines"]

SUMMARY_LIMIT = 10


def resource_line(r: ResourceStats) -> str:
    """One waited-on object: ``Lock created at app.py:12 in main: 4 waits, ...``."""
    where = f" created at {r.site}" if r.site else " (created before the session)"
    text = f"{r.resource_kind}{where}: {r.waits} wait{'s' if r.waits != 1 else ''}"
    if r.waits:
        text += f", {format_ns(r.wait_ns)} in all, longest {format_ns(r.max_wait_ns)}"
    text += f", up to {r.max_waiters} waiting at once"
    if r.cancelled:
        text += f", {r.cancelled} cancelled"
    if r.waiting_at_end:
        text += f", {r.waiting_at_end} still waiting at the end"
    if r.max_hold_ns is not None:
        who = r.holder_task or "?"
        if r.holder_span_name:
            who += f" in span {r.holder_span_name!r}"
        text += f"; longest hold {format_ns(r.max_hold_ns)} by {who}"
        if r.holder_site:
            text += f" at {r.holder_site}"
    if r.puts is not None:
        seconds = max(r.end_ns - r.start_ns, 1) / 1e9
        text += f"; {r.puts} puts ({r.puts / seconds:.1f}/s), {r.gets} gets ({(r.gets or 0) / seconds:.1f}/s)"
        text += f", depth up to {r.max_depth}"
        if r.depths:
            text += f", now {r.depths[-1]}"
    return text


def span_io_wait(span: Any) -> int | None:
    """The I/O wait of an ended live span (its breakdown), or None."""
    breakdown = getattr(span, "breakdown", None)
    if not getattr(span, "end_ns", 0) or not isinstance(breakdown, tuple) or len(breakdown) < 3:
        return None
    io = breakdown[2]
    return io if isinstance(io, int) else None


def summary_lines(
    stats: Sequence[ResourceStats],
    backlogs: Sequence[QueueBacklog],
    span_waits: Sequence[tuple[Any, dict[int, int]]],
    counters: Any,
) -> list[str]:
    waited = [r for r in stats if r.waits or r.waiting_at_end]
    if not waited and not backlogs:
        return []
    total = sum(r.wait_ns for r in waited)
    lines = [f"Resource waits: {len(waited)} objects waited on, {sum(r.waits for r in waited)} waits, {format_ns(total)} in all"]
    for r in sorted(waited, key=lambda r: -r.wait_ns)[:SUMMARY_LIMIT]:
        lines.append("  " + resource_line(r))
    if len(waited) > SUMMARY_LIMIT:
        lines.append(f"  ... and {len(waited) - SUMMARY_LIMIT} more (ResourceStats records)")
    for b in backlogs[:SUMMARY_LIMIT]:
        where = f" created at {b.site}" if b.site else ""
        lines.append(
            f"  BACKLOG: {b.resource_kind}{where} grew at {b.samples} samples in a row, "
            f"from {b.start_depth} to {b.end_depth} items in {format_ns(b.end_ns - b.start_ns)}"
        )
    by_id = {r.resource_id: r for r in stats}
    # by span name: how many spans, their I/O wait, and their waits per resource
    by_name: dict[str, list[Any]] = {}
    for span, waits in span_waits:
        entry = by_name.setdefault(str(getattr(span, "name", "?")), [0, 0, False, {}])
        entry[0] += 1
        io = span_io_wait(span)
        if io is not None:
            entry[1] += io
            entry[2] = True
        for rid, ns in waits.items():
            entry[3][rid] = entry[3].get(rid, 0) + ns
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1][3].values()))[:SUMMARY_LIMIT]
    if ranked:
        lines.append("  Waits by span:")
    for name, (count, io, measured, waits) in ranked:
        parts = []
        for rid, ns in sorted(waits.items(), key=lambda kv: -kv[1]):
            found = by_id.get(rid)
            what = (f"{found.resource_kind} at {found.site}" if found.site else found.resource_kind) if found else "?"
            # a wait ends when the loop delivers the hand-over: at most the I/O wait it explains
            parts.append(f"{format_ns(min(ns, io) if measured else ns)} waiting on {what}")
        head = f"    span {name!r}" + (f" ({count}x)" if count > 1 else "")
        head += f": of its {format_ns(io)} I/O wait, " if measured else ": "
        lines.append(head + "; ".join(parts))
    if counters.untracked or counters.wait_records_dropped:
        lines.append(
            f"  not followed: {counters.untracked} objects over the limit, "
            f"{counters.wait_records_dropped} wait records dropped"
        )
    return lines
