"""Span trees and stall samples turned into weighted stacks (flame graph input).

A span's stack is the chain of span names from its root down to it, across
tasks and threads (a child task's span sits under the span that created it).
Its weights are its *self* time:

* wall: its duration minus the time at least one child span was running
  (children that ran concurrently are each counted in full, so a parent's
  subtree can be wider than the parent itself: it adds up work, not elapsed time);
* cpu: its own task's on-CPU time (``own_breakdown`` when its critical path went
  through other tasks, else ``cpu_ns``) minus that of its children in the same
  task and thread (``0`` when the scheduler probe did not measure it). The
  critical-path ``cpu_ns`` would count a child task's CPU under the parent too,
  and again under the child's own spans. Time blocked in a call is not CPU.

Stalls add stacks under a ``[event loop stall]`` root: the sampled Python stacks
of the blocked loop, the stall's duration split over the samples by count. The
stacks hold the program's frames (``full_stacks=True``: the libraries' too, runpy
and asyncio included); asynclens's own frames are never in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .breakdown import own_or_critical
from .frames import shown_frames
from .rundata import RunData, RunPart

__all__ = ["STALL_ROOT", "span_stacks", "stall_stacks", "weighted_stacks"]

STALL_ROOT = "[event loop stall]"


def _self_wall(span: Any, children: list[Any]) -> int:
    start, end = span.start_ns, span.end_ns
    covered = 0
    cursor = start
    for child in sorted(children, key=lambda c: c.start_ns):
        s = max(child.start_ns, cursor)
        e = min(child.end_ns, end)
        if e > s:
            covered += e - s
            cursor = e
    return max(0, int(end - start - covered))


def span_stacks(part: RunPart) -> Iterator[tuple[tuple[str, ...], Any, int, int]]:
    """``(stack, span, self_wall_ns, self_cpu_ns)`` for every span of ``part``."""
    spans = part.spans
    by_id = {s.span_id: s for s in spans}
    children: dict[int, list[Any]] = {}
    for s in spans:
        parent = s.parent_id
        if parent is not None and parent in by_id:
            children.setdefault(parent, []).append(s)
    paths: dict[int, tuple[str, ...]] = {}

    def path_of(span: Any) -> tuple[str, ...]:
        chain = []
        node = span
        seen = set()
        while node is not None and node.span_id not in paths and node.span_id not in seen:
            seen.add(node.span_id)
            chain.append(node)
            parent = node.parent_id
            node = by_id.get(parent) if parent is not None else None
        prefix = paths.get(node.span_id, ()) if node is not None else ()
        for item in reversed(chain):
            prefix = (*prefix, str(item.name))
            paths[item.span_id] = prefix
        return prefix

    for s in spans:
        kids = children.get(s.span_id, ())
        wall = _self_wall(s, kids) if kids else max(0, s.end_ns - s.start_ns)
        cpu = _own_cpu(s)
        if cpu and kids:
            for k in kids:
                if k.task == s.task and k.thread_id == s.thread_id:
                    cpu -= _own_cpu(k)
            cpu = max(0, cpu)
        yield path_of(s), s, wall, cpu


def _own_cpu(span: Any) -> int:
    parts = own_or_critical(span)
    return parts[0] if parts is not None else 0


def _samples_of(stall: Any, full: bool) -> list[tuple[tuple[str, ...], int]]:
    out = []
    for sample in getattr(stall, "samples", None) or ():
        frames = getattr(sample, "frames", None)
        count = getattr(sample, "count", None)
        if frames is None and isinstance(sample, dict):
            frames, count = sample.get("frames"), sample.get("count")
        if frames:
            out.append((tuple(shown_frames(frames, full=full)), int(count or 1)))
    if not out:
        stack = getattr(stall, "stack", None) or ()
        if stack:
            out.append((tuple(shown_frames(stack, full=full)), 1))
        else:
            where = getattr(stall, "function", None) or "unknown"
            out.append(((str(where),), 1))
    return out


def stall_stacks(data: RunData, *, full_stacks: bool = False) -> Iterator[tuple[tuple[str, ...], int, int, int]]:
    """``(stack, wall_ns, cpu_ns, samples)`` for the sampled stacks of every stall."""
    for _, stall in data.all("stall"):
        duration = max(0, (getattr(stall, "end_ns", 0) or 0) - (getattr(stall, "start_ns", 0) or 0))
        cpu = getattr(stall, "cpu_ns", None) or 0
        samples = _samples_of(stall, full_stacks)
        total = sum(c for _, c in samples) or 1
        for frames, count in samples:
            yield (STALL_ROOT, *frames), duration * count // total, cpu * count // total, count


def weighted_stacks(
    data: RunData, *, stalls: bool = True, full_stacks: bool = False
) -> dict[tuple[str, ...], list[int]]:
    """Aggregated ``stack -> [wall_ns, cpu_ns]`` over every run (spans, then stalls)."""
    totals: dict[tuple[str, ...], list[int]] = {}
    for part in data.parts:
        for stack, _, wall, cpu in span_stacks(part):
            entry = totals.get(stack)
            if entry is None:
                totals[stack] = [wall, cpu]
            else:
                entry[0] += wall
                entry[1] += cpu
    if stalls:
        for stack, wall, cpu, _ in stall_stacks(data, full_stacks=full_stacks):
            entry = totals.setdefault(stack, [0, 0])
            entry[0] += wall
            entry[1] += cpu
    return totals
