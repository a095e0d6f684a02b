"""Tracks: which timeline row a span belongs to, and nesting-safe lanes within a row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["assign_lanes", "track_of"]


def track_of(span: Any) -> str:
    """The row a span is drawn on: its task's name, or its thread."""
    task = getattr(span, "task", None)
    if task:
        return str(task)
    return f"thread {getattr(span, 'thread_id', 0) or 0}"


def assign_lanes(items: Sequence[Any]) -> list[int]:
    """Lane numbers for ``items`` (with ``start_ns``/``end_ns``) such that within a
    lane every pair of items is either disjoint or strictly nested.

    Spans of one task nest by construction; this only splits off the odd ones
    that do not (async generators finished elsewhere, tasks sharing a name), which
    viewers such as Perfetto would otherwise reject as badly nested.
    """
    order = sorted(range(len(items)), key=lambda i: (items[i].start_ns, -items[i].end_ns))
    lanes: list[list[int]] = []  # per lane: a stack of end times
    out = [0] * len(items)
    for i in order:
        start = items[i].start_ns
        end = items[i].end_ns
        for lane_no, stack in enumerate(lanes):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                out[i] = lane_no
                break
        else:
            lanes.append([end])
            out[i] = len(lanes) - 1
    return out
