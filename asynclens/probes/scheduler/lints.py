"""The scheduler's lints (docs/lints.md): busy-yield tasks, and the per-task step-time and
ready->run wait histograms with their slow-step count.

The hot paths (the call_soon hooks and the step's end, in C with the compiled core) only
count: a task's wake-ups, the ones it scheduled itself, and one bucket increment per
histogram per step. This module holds the thresholds both implementations share and
turns a task's counters into records when it finishes or the session ends.
"""

from __future__ import annotations

from typing import Any

from ..._native import core
from ..._paths import LIBRARY_DIRS, PACKAGE_DIR
from ...records import BusyYield
from . import stepcall as _stepcall

__all__ = [
    "BUSY_MIN_STEPS",
    "BUSY_SHARE",
    "HIST_BUCKETS",
    "HIST_SHIFT",
    "SLOW_STEP_NS",
    "busy_record",
    "hist_bucket",
    "is_busy",
    "suspended_line",
    "trim",
]

#: Buckets of the per-task histograms: bucket 0 holds values under 1024 ns, bucket ``i``
#: values in ``[512 << i, 1024 << i)`` ns, the last everything from about 4.3 s up.
HIST_BUCKETS = _stepcall.HIST_BUCKETS
HIST_SHIFT = _stepcall.HIST_SHIFT
#: A step at least this long is a "slow step": a fifth of the default stall threshold
#: (50 ms), long enough that every other ready task noticeably waits, short enough that a
#: run of them (no single stall) still shows.
SLOW_STEP_NS = _stepcall.SLOW_STEP_NS
#: A task is a busy-yield suspect once it scheduled this many of its own wake-ups ...
BUSY_MIN_STEPS = 100
#: ... and is reported when more than this share of all its wake-ups were its own.
BUSY_SHARE = 0.5

if core is not None:  # the compiled core hard-codes them: they must agree
    assert (core.HIST_BUCKETS, core.HIST_SHIFT, core.SLOW_STEP_NS, core.BUSY_MIN_STEPS) == (
        HIST_BUCKETS,
        HIST_SHIFT,
        SLOW_STEP_NS,
        BUSY_MIN_STEPS,
    )


def hist_bucket(ns: int) -> int:
    """The histogram bucket of a duration of ``ns`` nanoseconds."""
    return min(HIST_BUCKETS - 1, (ns >> HIST_SHIFT).bit_length()) if ns > 0 else 0


def trim(hist: Any) -> tuple[int, ...]:
    """A histogram without its trailing empty buckets (records stay small)."""
    counts = tuple(hist)
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    return counts[:end]


def is_busy(st: Any) -> bool:
    """Whether a task's wake-ups make it a busy-yield finding: at least
    :data:`BUSY_MIN_STEPS` of its own, and more than :data:`BUSY_SHARE` of all of them."""
    own = st.self_wakes
    return own >= BUSY_MIN_STEPS and own > BUSY_SHARE * st.wakes


def suspended_line(task: Any) -> str | None:
    """The innermost program frame (not asyncio's, a library's or asynclens's) of a
    suspended task's await chain, as ``"file:line in function"``: where it yields."""
    where = None
    coro: Any = task.get_coro() if task is not None else None
    for _ in range(200):
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        code = frame.f_code
        name = code.co_filename
        if not name.startswith(PACKAGE_DIR) and not name.startswith(LIBRARY_DIRS) and not name.startswith("<"):
            where = f"{name}:{frame.f_lineno} in {getattr(code, 'co_qualname', code.co_name)}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return where


def busy_record(st: Any, task: Any, found_ns: int, line: str | None, state: str) -> BusyYield:
    """The :class:`BusyYield` record of a task's state ``st``."""
    span = st.span
    site = st.site
    coro = task.get_coro() if task is not None else None
    return BusyYield(
        task_id=id(task) if task is not None else 0,
        name=task.get_name() if task is not None else (st.name or "?"),
        found_ns=found_ns,
        coro=(getattr(coro, "__qualname__", None) or type(coro).__name__) if coro is not None else "",
        line=line,
        steps=st.steps,
        wakes=st.wakes,
        self_wakes=st.self_wakes,
        run_ns=st.run_ns,
        cpu_ns=st.cpu_ns if st.ls.cpu is not None else None,
        state=state,
        creation_site=f"{site[0].co_filename}:{site[1]} in {site[0].co_name}" if site is not None else None,
        trace_id=span.trace_id if span is not None else None,
        span_id=span.span_id if span is not None else None,
        span_name=span.name if span is not None else None,
    )
