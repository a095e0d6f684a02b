"""What a span's time and a lag episode were made of, as every renderer shows them.

A span's headline breakdown (``cpu_ns``, ``blocked_ns``, ``sched_wait_ns``,
``io_wait_ns``, ``executor_ns``) follows its critical path: a wait another task
ended is explained by that task's own time, and the five parts sum to the span's
duration. When that path went through other tasks, ``own_breakdown`` keeps the
span's own task's figures (in the same order) and ``held_up_by`` names the task
that ended its longest wait. Records are read with ``getattr``, so older records
(no ``blocked_ns``) and stand-ins work: a missing part is 0.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from .._durations import format_ns
from .frames import clean_frame

__all__ = [
    "FIELDS",
    "LABELS",
    "HolderIndex",
    "critical",
    "held_up_by",
    "own",
    "own_or_critical",
    "part_text",
    "parts_text",
    "text",
]

#: The breakdown's record fields, in the order of ``own_breakdown``.
FIELDS = ("cpu_ns", "blocked_ns", "sched_wait_ns", "io_wait_ns", "executor_ns")
#: How the text reports name each part.
LABELS = ("CPU", "blocked", "starved by the loop", "I/O", "executor")


def critical(span: Any) -> tuple[int, int, int, int, int] | None:
    """The headline (critical-path) breakdown, or None when it was not measured."""
    cpu = getattr(span, "cpu_ns", None)
    if not isinstance(cpu, int):
        return None
    blocked, sched, io, ex = (_int(getattr(span, name, None)) for name in FIELDS[1:])
    return (cpu, blocked, sched, io, ex)


def own(span: Any) -> tuple[int, int, int, int, int] | None:
    """The span's own task's breakdown when its critical path differs, else None."""
    value = getattr(span, "own_breakdown", None)
    if not isinstance(value, (tuple, list)) or len(value) != len(FIELDS):
        return None
    cpu, blocked, sched, io, ex = (_int(v) for v in value)
    return (cpu, blocked, sched, io, ex)


def own_or_critical(span: Any) -> tuple[int, int, int, int, int] | None:
    """What the span's own task did: ``own_breakdown``, else the headline (they are the same)."""
    return own(span) or critical(span)


def held_up_by(span: Any) -> str | None:
    value = getattr(span, "held_up_by", None)
    return str(value) if value else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _ns(ns: int) -> str:
    return "0" if ns == 0 else format_ns(ns)


def text(parts: Sequence[int], *, always: Sequence[int] = (0,)) -> str:
    """``38.0 ms CPU + 200.0 ms blocked + 73.0 ms I/O``: the parts that are not 0 (and
    those at the indexes ``always``), in :data:`FIELDS` order."""
    shown = [f"{_ns(v)} {label}" for i, (v, label) in enumerate(zip(parts, LABELS)) if v or i in always]
    return " + ".join(shown)


def part_text(part: Any) -> str:
    """``15.0 ms Task-3 at app.py:33 in score [span GET /x] (cpu)``: one part of a lag episode."""
    duration = getattr(part, "duration_ns", None)
    out = format_ns(duration) if isinstance(duration, int) else "?"
    task = getattr(part, "task", None)
    if task:
        out += f" {task}"
    site = getattr(part, "site", None)
    if site:
        out += f" at {clean_frame(site) if ':' in str(site) else site}"
    span_name = getattr(part, "span_name", None)
    if span_name:
        out += f" [span {span_name}]"
    cause = getattr(part, "cause", None)
    if cause and cause != "unknown":
        out += f" ({cause})"
    return out


def parts_text(stall: Any, limit: int = 3) -> str | None:
    """``episode: 5 biggest parts: 15.0 ms Task-3 at app.py:33 (cpu); 12.0 ms ...`` for a lag
    episode (its ``limit`` biggest parts), else None."""
    if not getattr(stall, "episode", False):
        return None
    parts = list(getattr(stall, "parts", None) or ())
    if not parts:
        return "episode: a blocked stretch of short callbacks (no part was named)"
    shown = "; ".join(part_text(p) for p in parts[:limit])
    more = f"; … {len(parts) - limit} more" if len(parts) > limit else ""
    noun = "biggest part" if len(parts) == 1 else f"{len(parts)} biggest parts"
    return f"episode: {noun}: {shown}{more}"


class HolderIndex:
    """Finds the span that held another up: ``held_up_by`` names a task
    (``"Task-7 (fetch_user)"``: its name and its coroutine's); its span is the one on
    that task that ended last within the held span (the work that ended the wait)."""

    def __init__(self, spans: Iterable[Any] = ()) -> None:
        self._by_task: dict[str, list[Any]] = {}
        self._ends: dict[str, list[int]] | None = None
        for span in spans:
            self.add(span)

    def add(self, span: Any) -> None:
        task = getattr(span, "task", None)
        if task:
            self._by_task.setdefault(str(task), []).append(span)
            self._ends = None

    def task_of(self, held_up_by: str) -> str | None:
        """The recorded task name ``held_up_by`` begins with (the longest such name)."""
        if held_up_by in self._by_task:
            return held_up_by
        best = None
        at = held_up_by.find(" (")
        while at > 0:  # a task name may itself contain " ("
            if held_up_by[:at] in self._by_task:
                best = held_up_by[:at]
            at = held_up_by.find(" (", at + 1)
        return best

    def holder(self, span: Any, held_up_by: str) -> Any | None:
        task = self.task_of(held_up_by)
        if task is None or task == getattr(span, "task", None):
            return None
        if self._ends is None:
            for spans in self._by_task.values():
                spans.sort(key=lambda s: s.end_ns)
            self._ends = {t: [s.end_ns for s in spans] for t, spans in self._by_task.items()}
        spans = self._by_task[task]
        at = bisect.bisect_right(self._ends[task], span.end_ns) - 1
        if at >= 0 and spans[at].end_ns > span.start_ns:
            return spans[at]
        return None
