"""Where the time of each span name went: the per-name tally and its report line."""

from __future__ import annotations

from typing import Any

from ..._durations import format_ns
from ...stats import Histogram
from .steps import take_all

__all__ = ["NameTally", "breakdown_line", "hist_line"]

TALLY_FOLD_EVERY = 256  # span breakdowns kept per name before they are summed


class NameTally:
    """Where the time of one span name went. A span's breakdown is appended as it
    ends and summed in bulk (C-level sums per few hundred spans: about half the
    cost of six additions per span); :meth:`totals` folds what is left."""

    __slots__ = ("blocked", "count", "executor", "io", "recent", "run", "sched")

    def __init__(self) -> None:
        self.count = self.run = self.sched = self.io = self.executor = self.blocked = 0
        # span breakdowns: (cpu, sched, io, executor, steps, longest wait, blocked, own, held up by)
        self.recent: list[tuple[Any, ...]] = []

    def fold(self) -> None:
        """Sum the breakdowns appended so far."""
        taken = take_all(self.recent)
        if taken:
            columns = list(zip(*taken))
            run, sched, io, executor = columns[:4]
            self.count += len(taken)
            self.blocked += sum(columns[6])
            self.run += sum(run)
            self.sched += sum(sched)
            self.io += sum(io)
            self.executor += sum(executor)

    def totals(self) -> tuple[int, int, int, int, int, int]:
        """``(count, wall, cpu, sched wait, I/O wait, executor)`` (blocked time is in
        :attr:`blocked`): a breakdown adds up to its span's wall time, so the wall is the
        sum of the parts."""
        self.fold()
        return (
            self.count,
            self.run + self.blocked + self.sched + self.io + self.executor,
            self.run,
            self.sched,
            self.io,
            self.executor,
        )


def breakdown_line(
    name: str, wall: int, run: int, sched: int, io: int, ex: int, steps: int | None, blocked: int = 0
) -> str:
    """``GET /search 412 ms = 38 ms CPU + 301 ms starved by the loop + 73 ms I/O``
    (``+ 200 ms blocked`` after the CPU when the code blocked the loop in a call)."""
    text = f"{name} {format_ns(wall)} = {format_ns(run)} CPU"
    if blocked:
        text += f" + {format_ns(blocked)} blocked"
    text += f" + {format_ns(sched)} starved by the loop + {format_ns(io)} I/O"
    if ex:
        text += f" + {format_ns(ex)} executor"
    if steps is not None:
        text += f" ({steps} slivers)"
    return text


def hist_line(hist: Histogram) -> str:
    return (
        f"n={hist.count} p50 {format_ns(hist.percentile(50))} p90 {format_ns(hist.percentile(90))}"
        f" p99 {format_ns(hist.percentile(99))} max {format_ns(hist.max)}"
    )
