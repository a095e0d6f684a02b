"""Samples and the scheduler's parts into :class:`~asynclens.records.Stall` records: the
cause, the blocking line, and the cutting of a blocked stretch along the callbacks that ran."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from ...records import StackSample, Stall, StallPart
from ..scheduler.steps import ATTR as _SCHED_ATTR
from ..scheduler.steps import LoopState as _SchedLoop
from . import frames as _frames
from .frames import FrameKey
from .samples import Collection, Segment

__all__ = ["build_stall", "classify", "loop_parts", "running_step", "split", "stalls_from_parts"]

EPISODE_PARTS = 5  # contributors named in a lag episode


def classify(duration_ns: int, cpu_ns: int | None, gc_ns: int, blocking_line: bool = False) -> str:
    """``gc`` when a collection covered most of the stall, else ``cpu`` when the
    loop thread was on-CPU for at least half of it, ``blocking`` when less.
    ``blocking_line`` (the sampled line makes a blocking call) decides when the CPU
    time is unknown or close to half; ``unknown`` when nothing tells."""
    if duration_ns > 0 and gc_ns * 2 >= duration_ns:
        return "gc"
    if cpu_ns is None or duration_ns <= 0:
        return "blocking" if blocking_line else "unknown"
    share = cpu_ns / duration_ns
    if blocking_line and share < 0.65:
        return "blocking"
    return "cpu" if share >= 0.5 else "blocking"


def split(
    start: int, end: int, cpu_end: int | None, collection: Collection | None, threshold_ns: int
) -> list[tuple[int, int, int | None, Segment | None]]:
    """Cut a gap where the running task changed; parts shorter than the
    threshold stay with their neighbour. Returns ``(start, end, cpu_end, segment)``."""
    segments = [seg for seg in collection.segments if seg.samples] if collection is not None else []
    if len(segments) <= 1:
        return [(start, end, cpu_end, segments[0] if segments else None)]
    cuts = [start] + [(a.last_ns + b.first_ns) // 2 for a, b in itertools.pairwise(segments)] + [end]
    parts: list[list[Any]] = []
    for i, seg in enumerate(segments):
        lo, hi = cuts[i], cuts[i + 1]
        if parts and (hi - lo < threshold_ns or parts[-1][1] - parts[-1][0] < threshold_ns):
            parts[-1][1] = hi
            parts[-1][2].absorb(seg)
        else:
            copy = Segment(seg.task_key)
            copy.absorb(seg)
            parts.append([lo, hi, copy])
    out: list[tuple[int, int, int | None, Segment | None]] = []
    for i, (lo, hi, seg) in enumerate(parts):
        if i + 1 < len(parts):
            following = parts[i + 1][2].cpu_first
            out.append((lo, hi, following[1] if following else None, seg))
        else:
            out.append((lo, hi, cpu_end, seg))
    return out


def build_stall(
    loop_id: int,
    start: int,
    end: int,
    cpu_end: int | None,
    segment: Segment | None,
    gc_ns: int,
    detected_ns: int | None,
) -> Stall:
    """The record for a stall ``[start, end]`` and the samples taken inside it."""
    duration = end - start
    cpu_ns: int | None = None
    fraction = segment.cpu_fraction() if segment is not None else None
    if fraction is None and segment is not None and segment.thread_cpu_first is not None and cpu_end is not None:
        t0, c0 = segment.thread_cpu_first  # cpu_end is the loop thread's own CPU clock
        if end - t0 >= 1_000_000:
            fraction = min(1.0, max(0.0, (cpu_end - c0) / (end - t0)))
    if fraction is not None:
        cpu_ns = int(fraction * duration)
    culprit: FrameKey | None = None
    stack: tuple[str, ...] = ()
    samples: tuple[StackSample, ...] = ()
    if segment is not None and segment.stacks:
        by_site: dict[FrameKey, int] = {}
        site_stack: dict[FrameKey, tuple[FrameKey, ...]] = {}
        for frames, n in segment.stacks.items():
            site = _frames.innermost_user(frames)
            if site is None:
                continue
            by_site[site] = by_site.get(site, 0) + n
            best = site_stack.get(site)
            if best is None or segment.stacks.get(best, 0) < n:
                site_stack[site] = frames
        if by_site:
            culprit = max(by_site, key=lambda k: by_site[k])  # first seen wins ties
            stack = _frames.format_stack(site_stack[culprit])
        ranked = sorted(segment.stacks.items(), key=lambda kv: -kv[1])
        samples = tuple(StackSample(_frames.format_stack(frames) or ("(other stacks)",), n) for frames, n in ranked)
    span = segment.span if segment is not None else None
    return Stall(
        loop_id=loop_id,
        start_ns=start,
        end_ns=end,
        file=culprit[0] if culprit else None,
        line=culprit[1] if culprit else None,
        function=culprit[2] if culprit else None,
        stack=stack,
        samples=samples,
        task=segment.task if segment is not None else None,
        trace_id=span[0] if span else None,
        span_id=span[1] if span else None,
        span_name=span[2] if span else None,
        async_stack=segment.async_stack if segment is not None else (),
        cause=classify(duration, cpu_ns, gc_ns, culprit is not None and _frames.calls_blocking(culprit)),
        cpu_ns=cpu_ns,
        sampled=bool(segment is not None and segment.samples),
        detected_ns=detected_ns,
        gc_ns=gc_ns,
    )


# --------------------------------------------- stalls along the scheduler's steps


def running_step(loop: Any) -> Any:
    """The scheduler probe's state of the task step running on ``loop`` now, if any."""
    ls = getattr(loop, _SCHED_ATTR, None)
    if type(ls) is not _SchedLoop:
        return None
    st = ls.running
    return st if st is not None and st.start_ns else None


def loop_parts(loop: Any, until_ns: int) -> list[tuple[int, int, Any, Any, int | None]] | None:
    """The long steps and timer callbacks the scheduler probe saw end by ``until_ns``
    on ``loop``; None when the probe does not watch it."""
    ls = getattr(loop, _SCHED_ATTR, None)
    if type(ls) is not _SchedLoop:
        return None
    return ls.take_parts(until_ns)  # also once the scheduler stopped: the last gaps drain after it


def stalls_from_parts(
    loop_id: int,
    start: int,
    end: int,
    cpu_end: int | None,
    parts: list[tuple[int, int, Any, Any, int | None]],
    collection: Collection | None,
    threshold_ns: int,
    detected_ns: int,
    gc_ns: Callable[[int, int], int],
) -> list[Stall]:
    """Cut the blocked stretch ``[start, end]`` along the steps and callbacks that ran in it.

    Each part over the threshold is a stall of its own (its own start, end, samples,
    task, span and cause); what is left between them, when it is over the threshold,
    is a lag episode naming its biggest parts, or (when no timed part explains it:
    plain callbacks) a stall cut from the samples as without the scheduler probe.
    """
    segments = [seg for seg in collection.segments if seg.samples] if collection is not None else []
    # A part's own times are exact; the stretch's start is the last heartbeat, or an estimate
    # on loops whose only heartbeat is the tick: a part that began before it widens the stretch.
    inside = sorted((p for p in parts if p[1] > start and p[0] < end), key=lambda p: (p[0], p[0] - p[1]))
    if inside:
        start = min(start, inside[0][0])
    flat: list[tuple[int, int, Any, Any, int | None]] = []
    for part in inside:  # an eager child's first step runs inside its parent's: keep the outer one
        if flat and part[1] <= flat[-1][1]:
            continue
        flat.append(part)
    stalls = [
        _part_stall(loop_id, part, segments, detected_ns, gc_ns(part[0], part[1]))
        for part in flat
        if part[1] - part[0] >= threshold_ns
    ]
    bounds = [start, *(x for stall in stalls for x in (stall.start_ns, stall.end_ns)), end]
    rest: list[Stall] = []
    for lo, hi in zip(bounds[::2], bounds[1::2]):
        if hi - lo < threshold_ns:
            continue
        small = [p for p in flat if p[0] >= lo and p[1] <= hi]
        within = Collection(lo)
        within.segments = [seg for seg in segments if lo <= seg.first_ns <= hi]
        if len(small) >= 2:
            rest.append(_episode(loop_id, lo, hi, cpu_end, small, within, detected_ns, gc_ns(lo, hi)))
        else:
            rest.extend(
                build_stall(loop_id, a, b, c, seg, gc_ns(a, b), detected_ns)
                for a, b, c, seg in split(lo, hi, cpu_end if hi == end else None, within, threshold_ns)
            )
    return sorted(stalls + rest, key=lambda stall: stall.start_ns)


def _merged(segments: list[Segment], lo: int, hi: int, step: Any = None) -> Segment | None:
    """The samples taken inside ``[lo, hi]`` (of ``step`` when given), as one segment."""
    chosen = [
        seg
        for seg in segments
        if (step is not None and seg.step is step and seg.task_key[1] == lo) or (lo <= seg.first_ns <= hi)
    ]
    if not chosen:
        return None
    merged = Segment(chosen[0].task_key)
    for seg in chosen:
        merged.absorb(seg)
    return merged


def _part_stall(
    loop_id: int, part: tuple[int, int, Any, Any, int | None], segments: list[Segment], t: int, gc_ns: int
) -> Stall:
    lo, hi, st, callback, busy_end = part
    seg = _merged(segments, lo, hi, st)
    stall = build_stall(loop_id, lo, hi, None, seg, gc_ns, t)
    if (
        seg is not None
        and not seg.votes
        and seg.cpu_first is not None
        and busy_end is not None
        and hi > seg.cpu_first[0]
    ):
        # no sample could read the thread's state: its runnable time from the first sample to
        # the step's end (read by the step itself) decides
        t0, busy0 = seg.cpu_first
        share = min(1.0, max(0.0, (busy_end - busy0) / (hi - t0))) if busy_end >= busy0 else None
        cpu_ns = int(share * (hi - lo)) if share is not None else None
        line = stall.file is not None and stall.line is not None
        blocking_line = line and _frames.calls_blocking((stall.file, stall.line, stall.function or ""))  # type: ignore[arg-type]
        cause = classify(hi - lo, cpu_ns, gc_ns, bool(blocking_line))
        stall = dataclasses.replace(stall, cpu_ns=cpu_ns, cause=cause)
    if stall.task is None and st is not None:
        stall = dataclasses.replace(stall, task=_task_name(st))
    if stall.file is None and callback is not None:
        stall = dataclasses.replace(stall, function=_callback_name(callback))
    return stall


def _episode(
    loop_id: int,
    lo: int,
    hi: int,
    cpu_end: int | None,
    parts: list[tuple[int, int, Any, Any, int | None]],
    within: Collection,
    t: int,
    gc_ns: int,
) -> Stall:
    named = []
    for a, b, st, callback, _cpu in sorted(parts, key=lambda p: p[0] - p[1])[:EPISODE_PARTS]:
        seg = _merged(within.segments, a, b, st)
        site = None
        if seg is not None and seg.stacks:
            top = max(seg.stacks.items(), key=lambda kv: kv[1])[0]
            user = _frames.innermost_user(top)
            site = _frames.format_frame(user) if user is not None else None
        fraction = seg.cpu_fraction() if seg is not None else None
        named.append(
            StallPart(
                duration_ns=b - a,
                task=_task_name(st) if st is not None else None,
                site=site or (_callback_name(callback) if callback is not None else None),
                span_name=seg.span[2] if seg is not None and seg.span else None,
                cause="unknown" if fraction is None else ("cpu" if fraction >= 0.5 else "blocking"),
            )
        )
    merged = Segment(None)
    for seg in within.segments:
        merged.absorb(seg)
    stall = build_stall(loop_id, lo, hi, cpu_end, merged if merged.samples else None, gc_ns, t)
    return dataclasses.replace(stall, episode=True, parts=tuple(named))


def _task_name(st: Any) -> str | None:
    task = st.task_ref() if st.task_ref is not None else None
    return task.get_name() if task is not None else getattr(st, "name", None)


def _callback_name(callback: Any) -> str:
    return getattr(callback, "__qualname__", None) or type(callback).__name__
