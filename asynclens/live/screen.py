"""The live view as plain text: at most ``height`` lines of at most ``width`` columns.

No colour and no terminal codes here (``terminal.py`` owns the screen); the same
lines are what a non-terminal output prints every second.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .model import LiveModel, Row

__all__ = ["SORTS", "render_screen"]

#: The orders of the task and span tables, in the order ``s`` cycles them.
SORTS = ("cpu", "sched", "alive")
_SORT_FIELD = {"cpu": "cpu_ns", "sched": "sched_ns", "alive": "alive_ns"}
_SORT_WORDS = {"cpu": "CPU", "sched": "scheduling delay", "alive": "time alive"}


def _t(ns: float | None) -> str:
    """A duration in at most 7 columns: 812us, 12.3ms, 4.56s, 1h02m."""
    if ns is None:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1e3:.0f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    if ns < 600e9:
        return f"{ns / 1e9:.2f}s"
    minutes = int(ns // 60e9)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(ns / 1e9) % 60:02d}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def _site(stall: dict[str, object]) -> str:
    file = stall.get("file")
    line = stall.get("line")
    if not file:
        return "(no line sampled)"
    where = f"{os.path.basename(str(file))}:{line}"
    function = stall.get("function")
    return f"{where} in {function}" if function else where


def render_screen(
    model: LiveModel,
    *,
    width: int = 80,
    height: int = 24,
    sort: str = "cpu",
    paused: bool = False,
    title: str = "asynclens",
    keys: bool = True,
) -> list[str]:
    """The screen's lines for ``model``; sections shrink to fit ``height``."""
    with model.lock:
        return _render(model, width, height, sort, paused, title, keys)


def _render(model: LiveModel, width: int, height: int, sort: str, paused: bool, title: str, keys: bool) -> list[str]:
    up = max(0, model.now_ns - model.start_ns) if model.start_ns else 0
    who = f"PID {model.pid}" if model.pid else ""
    head = f"{title} {who} up {_t(up)}  sort: {_SORT_WORDS.get(sort, sort)}"
    if paused:
        head += "  [PAUSED]"
    if model.ended:
        head += "  [ended]"
    footer = "keys: s sort  p pause  q quit" if keys else ""

    loops = [f"{'LOOP':<6}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}{'ELU':>6}{'stalls':>8}"]
    for i, figures in enumerate(sorted(model.loops.values(), key=lambda f: f.loop_id), 1):
        elu = f"{figures.elu * 100:.0f}%" if isinstance(figures.elu, (int, float)) else "-"
        loops.append(
            f"#{i:<5}{_t(figures.p50_ns):>8}{_t(figures.p90_ns):>8}{_t(figures.p99_ns):>8}"
            f"{_t(figures.p999_ns):>8}{_t(figures.max_ns):>8}{elu:>6}{figures.stalls:>8}"
        )
    if len(loops) == 1:
        loops.append("  (no lag window yet)")

    stalls = [f"STALLS {model.stall_count} (newest first)"]
    for stall in reversed(model.stalls):
        duration = int(stall.get("end_ns") or 0) - int(stall.get("start_ns") or 0)  # type: ignore[call-overload]
        span = stall.get("span_name") or stall.get("task") or "-"
        stalls.append(f"  {_t(duration):>7} {_site(stall)}  [{span}] {stall.get('cause', '')}")
    if model.stall_count == 0:
        stalls.append("  none")

    field = _SORT_FIELD.get(sort, "cpu_ns")
    live_names = {r.name for r in model.live_tasks}
    task_rows = list(model.live_tasks) + [r for r in model.tasks.values() if r.name not in live_names]
    tasks = [f"{'TASKS by ' + _SORT_WORDS.get(sort, sort):<40}{'cpu':>9}{'sched':>9}{'alive':>9}{'n':>6}"]
    tasks += _rows(task_rows, field)
    spans = [f"{'SPANS by ' + _SORT_WORDS.get(sort, sort):<40}{'cpu':>9}{'sched':>9}{'longest':>9}{'n':>6}"]
    spans += _rows(list(model.spans.values()), field)

    handles = "HANDLES " + (
        "  ".join(f"{kind} {count}" for kind, count in sorted(model.handles.items(), key=lambda kv: -kv[1])) or "none open"
    )
    executors = "EXECUTORS " + (
        "  ".join(
            f"#{i} {jobs} jobs busy {busy * 100:.0f}% of {workers or '?'} wait max {_t(wait)}"
            for i, (_, workers, jobs, busy, wait) in enumerate(model.executor_figures(), 1)
        )
        or "no jobs in the last 5 s"
    )

    # the fixed lines, then the tables share what is left
    fixed = 1 + len(loops[:4]) + 2 + (1 if footer else 0)
    room = max(0, height - fixed)
    sections = [stalls, tasks, spans]
    shares = [min(len(s), 1 + max(1, room // 3 - 1)) for s in sections]
    spare = room - sum(shares)
    for i, section in enumerate(sections):  # give the rest to whoever has more lines
        extra = min(spare, len(section) - shares[i])
        if extra > 0:
            shares[i] += extra
            spare -= extra
    lines = [head, *loops[:4]]
    for section, share in zip(sections, shares):
        lines += section[:share]
    lines += [handles, executors]
    if footer:
        lines.append(footer)
    return [_fit(line, width) for line in lines[:height]]


def _rows(rows: Sequence[Row], field: str) -> list[str]:
    ranked = sorted(rows, key=lambda r: getattr(r, field), reverse=True)
    out = []
    for r in ranked:
        name = ("* " if r.live else "  ") + r.name
        out.append(f"{_fit(name, 39):<40}{_t(r.cpu_ns):>9}{_t(r.sched_ns):>9}{_t(r.alive_ns):>9}{r.count:>6}")
    return out or ["  none yet"]
