"""The lints' section of the text report (docs/lints.md): tasks that will never finish,
busy-yield tasks, and step-time / ready→run wait histograms per span name with their
slow steps. Folded from records by kind, with fixed-size state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._durations import format_ns

__all__ = ["LINT_KINDS", "LintAggregates", "bucket_bound_ns", "hist_quantile_ns", "lint_lines"]

LINT_KINDS = ("never_resumable", "busy_yield")
#: Findings kept for the report (all are records); span names with histograms.
KEEP = 10
MAX_NAMES = 200
_SHIFT = 10  # the scheduler's HIST_SHIFT: bucket i holds values below 1024 << i ns


def bucket_bound_ns(i: int) -> int:
    """The upper bound of histogram bucket ``i`` (bucket 0: under 1024 ns)."""
    return (1 << _SHIFT) << i


def hist_quantile_ns(hist: Any, q: float) -> int | None:
    """The upper bound of the bucket holding quantile ``q`` of a log2 histogram."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return bucket_bound_ns(i)
    return bucket_bound_ns(len(hist) - 1)


def _merge(into: list[int], hist: Any) -> None:
    for i, n in enumerate(hist or ()):
        if i >= len(into):
            into.extend([0] * (i + 1 - len(into)))
        into[i] += int(n)


class LintAggregates:
    """The lints' findings and per-span-name step histograms of a run."""

    def __init__(self) -> None:
        self.never_resumable = 0
        self.first_never: list[Any] = []
        self.busy = 0
        self.first_busy: list[Any] = []
        #: span name -> [tasks, slow steps, step histogram, wait histogram]
        self.by_name: dict[str, list[Any]] = {}
        self.names_dropped = 0
        self.slow_tasks: list[tuple[int, int, str]] = []  # (slow steps, steps, task name), the most

    def add(self, record: Any) -> None:
        kind = getattr(record, "kind", None)
        if kind == "never_resumable":
            self.never_resumable += 1
            if len(self.first_never) < KEEP:
                self.first_never.append(record)
        elif kind == "busy_yield":
            self.busy += 1
            if len(self.first_busy) < KEEP:
                self.first_busy.append(record)
        elif kind == "task":
            self.add_task(record)

    def add_task(self, record: Any) -> None:
        steps_hist = getattr(record, "step_histogram", None) or ()
        if not steps_hist:
            return
        slow = int(getattr(record, "slow_steps", 0) or 0)
        name = str(getattr(record, "span_name", None) or "(no span)")
        entry = self.by_name.get(name)
        if entry is None:
            if len(self.by_name) >= MAX_NAMES:
                self.names_dropped += 1
                return
            entry = self.by_name[name] = [0, 0, [], []]
        entry[0] += 1
        entry[1] += slow
        _merge(entry[2], steps_hist)
        _merge(entry[3], getattr(record, "wait_histogram", None) or ())
        if slow:
            self.slow_tasks.append((slow, int(getattr(record, "steps", 0) or 0), str(getattr(record, "name", "?"))))
            self.slow_tasks.sort(reverse=True)
            del self.slow_tasks[KEEP:]


def _hist_text(hist: list[int]) -> str:
    parts = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        bound = hist_quantile_ns(hist, q)
        if bound is not None:
            parts.append(f"{label} < {format_ns(bound)}")
    top = max((i for i, n in enumerate(hist) if n), default=None)
    if top is not None:
        parts.append(f"max < {format_ns(bucket_bound_ns(top))}")
    return " ".join(parts)


def lint_lines(lints: LintAggregates, bad: Callable[[str], str], head: Callable[[str], str]) -> list[str]:
    """The report's lines for the lints (empty when there is nothing to say)."""
    lines: list[str] = []
    if lints.never_resumable:
        n = lints.never_resumable
        lines.append("")
        lines.append(bad(head(f"Will never finish: {n} task{'s' if n > 1 else ''}")) + " (nothing can resume them)")
        for r in lints.first_never:
            span = f" [span {r.span_name}]" if getattr(r, "span_name", None) else ""
            lines.append(f"  task {r.name!r} ({r.coro}) awaits a {r.waiting_on or 'future'} nothing holds")
            lines.append(f"    suspended at {r.suspended_at or '?'}")
            lines.append(f"    created at {r.creation_site or 'unknown site'}{span}")
        if n > len(lints.first_never):
            lines.append(f"  … and {n - len(lints.first_never)} more")
    if lints.busy:
        n = lints.busy
        lines.append("")
        lines.append(
            bad(head(f"Busy-yield: {n} task{'s' if n > 1 else ''}")) + " (woke themselves more than half the time)"
        )
        for r in lints.first_busy:
            share = r.self_wakes / r.wakes if r.wakes else 0.0
            cpu = r.cpu_ns if r.cpu_ns is not None else r.run_ns
            span = f" [span {r.span_name}]" if getattr(r, "span_name", None) else ""
            lines.append(
                f"  task {r.name!r} at {r.line or r.creation_site or '?'}: {r.steps} steps, "
                f"{share:.0%} self-woken, {format_ns(cpu)} {'CPU' if r.cpu_ns is not None else 'on the loop'}{span}"
            )
        if n > len(lints.first_busy):
            lines.append(f"  … and {n - len(lints.first_busy)} more")
    if lints.by_name:
        lines.append("")
        lines.append(head("Task steps by span") + " (log2 histograms of the recorded tasks; slow: ≥ 10.0 ms)")
        ranked = sorted(lints.by_name.items(), key=lambda item: (-item[1][1], -sum(item[1][2])))
        for name, (tasks, slow, steps, waits) in ranked[:KEEP]:
            lines.append(
                f"  {name}: {tasks} task{'s' if tasks > 1 else ''}, {sum(steps)} steps ({_hist_text(steps)}), "
                f"{slow} slow; ready→run {_hist_text(waits)}"
            )
        if len(ranked) > KEEP:
            lines.append(f"  … and {len(ranked) - KEEP} more span names")
        if lints.slow_tasks:
            lines.append(
                "  most slow steps: "
                + ", ".join(f"{name!r} {slow} of {steps}" for slow, steps, name in lints.slow_tasks[:5])
            )
    return lines
