"""RunData: the records of one or more recorded runs, grouped for the renderers.

Renderers (Chrome trace, speedscope, folded stacks, HTML, text) read a
:class:`RunData`, never a live session. Each run (one process's session) is a
:class:`RunPart` with its own header; ``part.shift_ns`` moves that run's
monotonic times onto one shared timeline whose zero is the earliest session
start (wall-clock anchors of the headers line up runs from several processes).

Records are grouped by ``record.kind``. Renderers read fields with ``getattr``
and a default, so record kinds added later (or duck-typed stand-ins in tests)
render without changes here. Memory is bounded by ``limit``; records beyond it
are counted in ``dropped`` and reported by every renderer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_LIMIT", "RunData", "RunPart", "frame_label"]

#: Records kept per RunData before new ones are dropped (and counted).
DEFAULT_LIMIT = 2_000_000


@dataclass
class RunPart:
    """One recorded run (one process's session) inside a :class:`RunData`."""

    info: Any
    index: int = 0
    spans: list[Any] = field(default_factory=list)
    other: dict[str, list[Any]] = field(default_factory=dict)
    end: Any = None
    shift_ns: int = 0
    path: str | None = None

    @property
    def pid(self) -> int:
        return int(getattr(self.info, "pid", 0) or 0)

    @property
    def label(self) -> str:
        argv = getattr(self.info, "argv", ()) or ()
        name = getattr(self.info, "name", None)
        program = " ".join(str(a) for a in argv[:3]) if argv else "python"
        return f"{name or program} (pid {self.pid})"

    def of(self, kind: str) -> list[Any]:
        """Records of ``kind`` (``"stall"``, ``"lag"``, …), in arrival order."""
        if kind == "span":
            return self.spans
        return self.other.get(kind, [])

    @property
    def start_ns(self) -> int:
        return int(getattr(self.info, "anchor_mono_ns", 0) or 0)

    @property
    def end_ns(self) -> int:
        end = getattr(self.end, "end_ns", None)
        if end is not None:
            return int(end)
        latest = self.start_ns
        for span in self.spans:
            latest = max(latest, span.end_ns)
        for records in self.other.values():
            for record in records:
                t = getattr(record, "end_ns", None)
                if isinstance(t, int) and t > latest:
                    latest = t
        return latest


class RunData:
    """Records of one or more runs, grouped by kind, on one shared timeline."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.parts: list[RunPart] = []
        self.count = 0
        self.dropped = 0
        self.unknown: Counter[str] = Counter()

    # ------------------------------------------------------------- building

    def begin(self, info: Any, path: str | None = None) -> RunPart:
        """Start a new run from its header (a ``SessionInfo``)."""
        part = RunPart(info=info, index=len(self.parts), path=path)
        self.parts.append(part)
        self._align()
        return part

    def add(self, records: Iterable[Any], part: RunPart | None = None) -> None:
        """Add records to ``part`` (default: the latest run)."""
        if part is None:
            if not self.parts:
                self.begin(None)
            part = self.parts[-1]
        spans = part.spans
        other = part.other
        room = self.limit - self.count
        for record in records:
            kind = getattr(record, "kind", None)
            if kind == "session_end":
                part.end = record
                continue
            if room <= 0:
                self.dropped += 1
                continue
            room -= 1
            if kind == "span":
                spans.append(record)
            elif isinstance(kind, str):
                bucket = other.get(kind)
                if bucket is None:
                    bucket = other[kind] = []
                bucket.append(record)
            else:
                self.unknown[type(record).__name__] += 1
        self.count = self.limit - room

    def _align(self) -> None:
        from .merge import align_offsets

        for part, offset in zip(self.parts, align_offsets([part.info for part in self.parts])):
            part.shift_ns = offset

    # -------------------------------------------------------------- reading

    def all(self, kind: str) -> list[tuple[RunPart, Any]]:
        """``(part, record)`` for every record of ``kind`` across runs."""
        return [(part, record) for part in self.parts for record in part.of(kind)]

    def kinds(self) -> Counter[str]:
        """How many records of each kind (spans included)."""
        counts: Counter[str] = Counter()
        for part in self.parts:
            if part.spans:
                counts["span"] += len(part.spans)
            for kind, records in part.other.items():
                counts[kind] += len(records)
        return counts

    @property
    def span_count(self) -> int:
        return sum(len(p.spans) for p in self.parts)

    def extent(self) -> tuple[int, int]:
        """First and last time on the shared timeline (ns)."""
        first = None
        last = None
        for part in self.parts:
            s = part.start_ns + part.shift_ns
            e = part.end_ns + part.shift_ns
            first = s if first is None else min(first, s)
            last = e if last is None else max(last, e)
        return (first or 0, last or 0)

    def task_names(self) -> dict[tuple[int, int], str]:
        """``(part index, task_id) -> task name`` from ``task`` records."""
        names: dict[tuple[int, int], str] = {}
        for part in self.parts:
            for task in part.of("task"):
                task_id = getattr(task, "task_id", None)
                name = getattr(task, "name", None)
                if task_id is not None and name:
                    names[(part.index, task_id)] = str(name)
        return names

    def problems(self) -> list[str]:
        """Lines that tell a reader what the data is missing."""
        out = []
        if self.dropped:
            out.append(f"{self.dropped} records were not rendered (limit {self.limit} records)")
        for part in self.parts:
            stats = getattr(part.end, "statistics", None) or {}
            dropped = stats.get("records_dropped") if hasattr(stats, "get") else None
            if dropped:
                out.append(f"{part.label}: the session dropped {dropped} records (buffer full)")
            if part.end is None and part.info is not None:
                out.append(f"{part.label}: the run did not finish (no session_end record)")
        if self.unknown:
            out.append("records of unknown types ignored: " + ", ".join(f"{k} ×{n}" for k, n in self.unknown.items()))
        return out


def frame_label(frame: Any) -> str:
    """A frame string as recorded (``"path/file.py:41 in func"``), tolerant of other shapes."""
    if isinstance(frame, str):
        return frame
    if isinstance(frame, (list, tuple)) and frame:
        return " ".join(str(f) for f in frame)
    return str(frame)
