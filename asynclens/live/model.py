"""The live view's figures, folded from records (as dicts) and snapshots as they arrive.

Memory is bounded: the last few stalls, a window of recent executor jobs, and per
name/task tallies capped in number (the least busy are dropped, and counted).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LiveModel", "LoopFigures", "Row"]

#: Stalls kept for the view (the newest).
STALLS_KEPT = 20
#: Distinct task and span names tallied; more are dropped (and counted).
NAMES_KEPT = 500
#: Executor jobs kept to work out saturation over the last seconds.
JOBS_KEPT = 5000
JOB_WINDOW_NS = 5_000_000_000


@dataclass
class LoopFigures:
    """The latest lag window of one loop."""

    loop_id: int
    p50_ns: int = 0
    p90_ns: int = 0
    p99_ns: int = 0
    p999_ns: int = 0
    max_ns: int = 0
    elu: float | None = None
    stalls: int = 0


@dataclass
class Row:
    """A task or span name's tally: CPU (time running), scheduling delay, time alive."""

    name: str
    count: int = 0
    cpu_ns: int = 0
    sched_ns: int = 0
    alive_ns: int = 0
    live: bool = False


@dataclass
class LiveModel:
    """Everything the screen shows; ``feed``/``feed_line`` and ``set_snapshot`` from any thread."""

    pid: int | None = None
    python: str | None = None
    start_ns: int = 0
    now_ns: int = 0
    loops: dict[int, LoopFigures] = field(default_factory=dict)
    stalls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=STALLS_KEPT))
    stall_count: int = 0
    tasks: dict[str, Row] = field(default_factory=dict)
    spans: dict[str, Row] = field(default_factory=dict)
    live_tasks: list[Row] = field(default_factory=list)
    handles: dict[str, int] = field(default_factory=dict)
    jobs: deque[tuple[int, int, int, int, int]] = field(default_factory=lambda: deque(maxlen=JOBS_KEPT))
    workers: dict[int, int] = field(default_factory=dict)
    names_dropped: int = 0
    records: int = 0
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------ input

    def feed_line(self, line: bytes) -> None:
        """One JSON line of the record stream."""
        try:
            data = json.loads(line)
        except ValueError:
            return
        if isinstance(data, dict):
            self.feed(data)

    def feed(self, record: Mapping[str, Any]) -> None:
        """One record as its dict (``Record.to_dict(compact=True)``)."""
        kind = record.get("kind")
        with self.lock:
            self.records += 1
            end = record.get("end_ns")
            if isinstance(end, int) and end > self.now_ns:
                self.now_ns = end
            handler = _HANDLERS.get(str(kind))
            if handler is not None:
                handler(self, record)

    def set_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """What the live session knows now: open handles by kind, the live tasks."""
        with self.lock:
            now = int(snapshot.get("now_ns") or self.now_ns)
            self.now_ns = max(self.now_ns, now)
            self.handles = {str(k): int(v) for k, v in dict(snapshot.get("handles") or {}).items()}
            self.live_tasks = [
                Row(
                    name=str(t.get("name")),
                    count=1,
                    cpu_ns=int(t.get("cpu_ns") or 0),
                    sched_ns=int(t.get("sched_ns") or 0),
                    alive_ns=max(0, now - int(t.get("created_ns") or now)),
                    live=True,
                )
                for t in snapshot.get("tasks") or ()
            ]

    # ------------------------------------------------------------ records

    def _session(self, r: Mapping[str, Any]) -> None:
        self.pid = r.get("pid")
        self.python = r.get("python")
        self.start_ns = int(r.get("anchor_mono_ns") or 0)
        self.now_ns = max(self.now_ns, self.start_ns)

    def _lag(self, r: Mapping[str, Any]) -> None:
        loop_id = int(r.get("loop_id") or 0)
        figures = self.loops.get(loop_id)
        if figures is None:
            figures = self.loops[loop_id] = LoopFigures(loop_id)
        figures.p50_ns = int(r.get("p50_ns") or 0)
        figures.p90_ns = int(r.get("p90_ns") or 0)
        figures.p99_ns = int(r.get("p99_ns") or 0)
        figures.p999_ns = int(r.get("p999_ns") or 0)
        figures.max_ns = int(r.get("max_ns") or 0)
        figures.elu = r.get("elu")
        figures.stalls += int(r.get("stalls") or 0)

    def _stall(self, r: Mapping[str, Any]) -> None:
        self.stall_count += 1
        self.stalls.append(dict(r))

    def _task(self, r: Mapping[str, Any]) -> None:
        row = self._row(self.tasks, str(r.get("name") or "?"))
        if row is None:
            return
        row.count += 1
        row.cpu_ns += int(r.get("run_ns") or r.get("cpu_ns") or 0)
        row.sched_ns += int(r.get("sched_wait_ns") or 0)
        done = r.get("done_ns")
        created = int(r.get("created_ns") or 0)
        if isinstance(done, int):
            row.alive_ns = max(row.alive_ns, done - created)

    def _span(self, r: Mapping[str, Any]) -> None:
        row = self._row(self.spans, str(r.get("name") or "?"))
        if row is None:
            return
        row.count += 1
        row.cpu_ns += int(r.get("cpu_ns") or 0)
        row.sched_ns += int(r.get("sched_wait_ns") or 0)
        row.alive_ns = max(row.alive_ns, int(r.get("end_ns") or 0) - int(r.get("start_ns") or 0))

    def _job(self, r: Mapping[str, Any]) -> None:
        executor = int(r.get("executor_id") or 0)
        self.workers[executor] = int(r.get("max_workers") or 0) or self.workers.get(executor, 0)
        self.jobs.append(
            (executor, int(r.get("submit_ns") or 0), int(r.get("start_ns") or 0), int(r.get("end_ns") or 0), 0)
        )

    def _end(self, r: Mapping[str, Any]) -> None:
        self.ended = True

    def _row(self, table: dict[str, Row], name: str) -> Row | None:
        row = table.get(name)
        if row is None:
            if len(table) >= NAMES_KEPT:
                self.names_dropped += 1
                return None
            row = table[name] = Row(name)
        return row

    # ------------------------------------------------------------ figures

    def executor_figures(self) -> list[tuple[int, int, int, float, int]]:
        """``(executor id, workers, jobs, busy fraction, worst queue wait ns)`` over the
        last few seconds, per executor."""
        start = self.now_ns - JOB_WINDOW_NS
        out = []
        by_executor: dict[int, list[tuple[int, int, int, int, int]]] = {}
        for job in self.jobs:
            if job[3] >= start:
                by_executor.setdefault(job[0], []).append(job)
        for executor, jobs in sorted(by_executor.items()):
            workers = self.workers.get(executor, 0)
            busy = sum(min(end, self.now_ns) - max(begin, start) for _, _, begin, end, _ in jobs if end > begin)
            span = max(1, min(JOB_WINDOW_NS, self.now_ns - self.start_ns))
            fraction = busy / (span * workers) if workers else 0.0
            wait = max((begin - submit for _, submit, begin, _, _ in jobs), default=0)
            out.append((executor, workers, len(jobs), fraction, wait))
        return out


_HANDLERS = {
    "session": LiveModel._session,
    "lag": LiveModel._lag,
    "stall": LiveModel._stall,
    "task": LiveModel._task,
    "span": LiveModel._span,
    "executor_job": LiveModel._job,
    "session_end": LiveModel._end,
}
