"""speedscope JSON (https://www.speedscope.app/file-format-schema.json).

Profiles, in order:

1. ``spans: wall time`` (sampled): every distinct span stack weighted by self
   wall time, all tasks and processes together (the left-heavy / sandwich views
   answer "which spans took the time");
2. ``spans: CPU time`` (sampled): the same stacks weighted by self on-CPU time
   (present when the scheduler probe measured ``cpu_ns``);
3. ``event loop stalls`` (sampled): the Python stacks sampled while the loop was
   blocked, weighted by stall time (present when there were stalls);
4. one ``evented`` profile per task (its spans on their real timeline), for the
   :data:`MAX_TASK_PROFILES` tasks with the most span time; the rest are only in
   the aggregate profiles (the ``exporter`` field says how many were left out).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from .. import __version__
from ..report.flame import STALL_ROOT, span_stacks, stall_stacks
from ..report.rundata import DEFAULT_LIMIT, RunData
from ..report.tracks import assign_lanes, track_of
from ._rendering import RenderingSink

__all__ = ["MAX_TASK_PROFILES", "SCHEMA_URL", "SpeedscopeSink", "render_speedscope"]

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
#: Tasks that get their own evented profile (the busiest ones).
MAX_TASK_PROFILES = 100

_FRAME_RE = re.compile(r"^(?P<file>.+):(?P<line>\d+) in (?P<name>.+)$")


class _Frames:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.index: dict[tuple[str, bool], int] = {}

    def get(self, name: str, python_frame: bool = False) -> int:
        key = (name, python_frame)
        found = self.index.get(key)
        if found is not None:
            return found
        frame: dict[str, Any] = {"name": name}
        if python_frame:
            m = _FRAME_RE.match(name)
            if m:
                frame = {"name": m["name"], "file": m["file"], "line": int(m["line"])}
        self.index[key] = len(self.frames)
        self.frames.append(frame)
        return self.index[key]


def _sampled(name: str, stacks: Iterable[tuple[list[int], int]], end: int) -> dict[str, Any]:
    samples, weights = [], []
    for stack, weight in stacks:
        if weight > 0:
            samples.append(stack)
            weights.append(weight)
    return {
        "type": "sampled",
        "name": name,
        "unit": "nanoseconds",
        "startValue": 0,
        "endValue": max(end, sum(weights)),
        "samples": samples,
        "weights": weights,
    }


def _evented(name: str, spans: list[Any], shift: int, frames: _Frames) -> list[dict[str, Any]]:
    # zero-length spans get 1 ns so that every open strictly precedes its close
    items = [SimpleNamespace(start_ns=s.start_ns, end_ns=max(s.end_ns, s.start_ns + 1), name=s.name) for s in spans]
    lanes = assign_lanes(items)
    by_lane: dict[int, list[Any]] = {}
    for item, lane in zip(items, lanes):
        by_lane.setdefault(lane, []).append(item)
    profiles = []
    for lane, members in sorted(by_lane.items()):
        # (at, open?, tie-breaks, frame): closes before opens at equal times, outer opens first, inner closes first
        events: list[tuple[int, int, int, int, int]] = []
        members.sort(key=lambda m: (m.start_ns, -m.end_ns))
        for seq, s in enumerate(members):
            frame = frames.get(str(s.name))
            start, end = s.start_ns + shift, s.end_ns + shift
            events.append((start, 1, -end, seq, frame))
            events.append((end, 0, -start, -seq, frame))
        events.sort()
        profiles.append(
            {
                "type": "evented",
                "name": name if lane == 0 else f"{name} (overlapping spans {lane + 1})",
                "unit": "nanoseconds",
                "startValue": events[0][0] if events else 0,
                "endValue": events[-1][0] if events else 0,
                "events": [{"type": "O" if o else "C", "frame": f, "at": at} for at, o, _, _, f in events],
            }
        )
    return profiles


def render_speedscope(data: RunData, *, full_stacks: bool = False) -> dict[str, Any]:
    """The speedscope file of ``data`` as a JSON-ready dict (stall stacks: the program's
    frames, or the libraries' too with ``full_stacks``)."""
    frames = _Frames()
    wall: dict[tuple[int, ...], int] = {}
    cpu: dict[tuple[int, ...], int] = {}
    by_task: dict[tuple[int, str], list[Any]] = {}
    for part in data.parts:
        for stack, span, self_wall, self_cpu in span_stacks(part):
            key = tuple(frames.get(name) for name in stack)
            wall[key] = wall.get(key, 0) + self_wall
            if self_cpu:
                cpu[key] = cpu.get(key, 0) + self_cpu
            by_task.setdefault((part.index, track_of(span)), []).append(span)
    stalls: dict[tuple[int, ...], int] = {}
    for stack, weight, _, _ in stall_stacks(data, full_stacks=full_stacks):
        key = (frames.get(STALL_ROOT), *(frames.get(f, True) for f in stack[1:]))
        stalls[key] = stalls.get(key, 0) + weight
    first, last = data.extent()
    length = max(0, last - first)
    profiles = [_sampled("spans: wall time (self, all tasks)", ((list(k), v) for k, v in wall.items()), length)]
    if cpu:
        profiles.append(_sampled("spans: CPU time (self, all tasks)", ((list(k), v) for k, v in cpu.items()), length))
    if stalls:
        profiles.append(
            _sampled("event loop stalls (sampled stacks)", ((list(k), v) for k, v in stalls.items()), length)
        )
    ranked = sorted(by_task.items(), key=lambda kv: -sum(s.end_ns - s.start_ns for s in kv[1] if s.parent_id is None))
    many_parts = len(data.parts) > 1
    for (part_index, task), spans in ranked[:MAX_TASK_PROFILES]:
        part = data.parts[part_index]
        label = f"pid {part.pid} · {task}" if many_parts else task
        profiles.extend(_evented(label, spans, part.shift_ns - first, frames))
    left_out = max(0, len(ranked) - MAX_TASK_PROFILES)
    exporter = f"asynclens {__version__}"
    if left_out:
        exporter += f" ({left_out} quieter tasks have no evented profile; they are in the aggregate profiles)"
    problems = data.problems()
    if problems:
        exporter += "; " + "; ".join(problems)
    return {
        "$schema": SCHEMA_URL,
        "shared": {"frames": frames.frames},
        "profiles": profiles,
        "name": _run_name(data),
        "activeProfileIndex": 0,
        "exporter": exporter,
    }


def _run_name(data: RunData) -> str:
    if len(data.parts) == 1:
        return f"asynclens: {data.parts[0].label}"
    return f"asynclens: {len(data.parts)} processes"


class SpeedscopeSink(RenderingSink):
    """Writes a speedscope file when the session ends (open it at speedscope.app or with ``speedscope FILE``).

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str], *, full_stacks: bool = False, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(path, limit=limit)
        self.full_stacks = full_stacks

    def render(self, data: RunData) -> str:
        return json.dumps(render_speedscope(data, full_stacks=self.full_stacks), ensure_ascii=False, separators=(",", ":"))
