"""The watchdog: one thread per session that samples the stacks of blocked loops.

The loop thread measures a stall's true duration itself (a gap between two
heartbeats, see :mod:`asynclens._loopmon`); it cannot see *what* blocked it.
The watchdog polls every few milliseconds; while a loop has been away from its
selector / its ticks for a while it samples the loop thread's stack with
``sys._current_frames()``, notes the running task, its span and async stack,
and the thread's CPU time. When the loop reports the gap, the watchdog turns
the samples taken inside it into one :class:`~asynclens.records.Stall`.

All of it is driven by :meth:`Watchdog.poll` with an explicit time, so tests
run it with a fake clock, fake frames and a fake CPU clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..._state import context as _context
from ...records import StackSample, Stall, StallPart
from .._threads import thread_blocked_in_call, thread_busy_ns, thread_cpu_ns
from ..scheduler.asyncstack import HAS_AWAITED_BY, awaiter_frames
from ..scheduler.steps import ATTR as _SCHED_ATTR
from ..scheduler.steps import LoopState as _SchedLoop
from . import frames as _frames
from .frames import FrameKey

__all__ = [
    "Collection",
    "Segment",
    "Watchdog",
    "build_stall",
    "classify",
    "split",
    "stalls_from_parts",
    "thread_blocked_in_call",
    "thread_busy_ns",
    "thread_cpu_ns",
]

MAX_DISTINCT_STACKS = 64
MAX_SAMPLES = 10_000
PARK_MAX_S = 1.0  # a parked watchdog still looks around this often (closed loops, stops)
IDLE_SLACK_NS = 2_000_000  # timers fire up to ~1 ms late by rounding alone (uvloop: ms resolution)
MIN_CPU_SPAN_NS = 2_000_000  # CPU readings closer than this say little about a share
MIN_OFFCPU_SAMPLES = 3  # samples of a step before its off-CPU share counts as blocked time
MIN_OFFCPU_SHARE = 0.25  # less is GIL hand-offs to the watchdog and sampling noise, not a blocking call
EPISODE_PARTS = 5  # contributors named in a lag episode


class Segment:
    """Samples of one task's step while its loop was blocked (one step, when the
    scheduler probe names the running step; else one task's run of samples)."""

    __slots__ = (
        "async_stack",
        "blocked_votes",
        "cpu_first",
        "cpu_last",
        "first_ns",
        "last_ns",
        "samples",
        "span",
        "stacks",
        "step",
        "task",
        "task_key",
        "thread_cpu_first",
        "votes",
    )

    def __init__(self, task_key: Any) -> None:
        self.task_key = task_key
        self.stacks: dict[tuple[FrameKey, ...], int] = {}
        self.samples = 0
        self.first_ns = 0
        self.last_ns = 0
        self.cpu_first: tuple[int, int] | None = None  # (time, thread cpu) at the first sample
        self.cpu_last: tuple[int, int] | None = None  # ... and at the latest
        self.thread_cpu_first: tuple[int, int] | None = None  # (time, CPU time proper) at the first sample
        self.step: Any = None  # the scheduler's TaskState of the sampled step, if known
        self.votes = 0  # samples that could tell whether the thread was in a blocking call
        self.blocked_votes = 0  # ... and of those, how many found it in one
        self.task: str | None = None
        self.span: tuple[int, int, str] | None = None  # trace_id, span_id, name
        self.async_stack: tuple[str, ...] = ()

    def add(self, t: int, stack: tuple[FrameKey, ...]) -> None:
        if self.samples >= MAX_SAMPLES:
            return
        if not self.samples:
            self.first_ns = t
        self.last_ns = t
        self.samples += 1
        stacks = self.stacks
        if stack in stacks or len(stacks) < MAX_DISTINCT_STACKS:
            stacks[stack] = stacks.get(stack, 0) + 1
        else:
            stacks[()] = stacks.get((), 0) + 1  # "other stacks", still counted

    def absorb(self, other: Segment) -> None:
        for stack, n in other.stacks.items():
            if stack in self.stacks or len(self.stacks) < MAX_DISTINCT_STACKS:
                self.stacks[stack] = self.stacks.get(stack, 0) + n
            else:
                self.stacks[()] = self.stacks.get((), 0) + n
        if other.samples > self.samples:
            self.task, self.span, self.async_stack = other.task, other.span, other.async_stack
        if other.samples and (not self.samples or other.first_ns < self.first_ns):
            self.first_ns = other.first_ns
            self.cpu_first = other.cpu_first or self.cpu_first
            self.thread_cpu_first = other.thread_cpu_first or self.thread_cpu_first
        if other.cpu_last is not None and (self.cpu_last is None or other.cpu_last[0] > self.cpu_last[0]):
            self.cpu_last = other.cpu_last
        self.step = self.step or other.step
        self.votes += other.votes
        self.blocked_votes += other.blocked_votes
        self.last_ns = max(self.last_ns, other.last_ns)
        self.samples += other.samples

    def cpu_fraction(self) -> float | None:
        """The loop thread's on-CPU share: the share of samples that did not find it in a
        blocking system call where that can be read, else from its runnable time between
        the first and the latest sample."""
        if self.votes:
            return 1.0 - self.blocked_votes / self.votes
        first, last = self.cpu_first, self.cpu_last
        if first is None or last is None or last[0] - first[0] < MIN_CPU_SPAN_NS:
            return None
        return min(1.0, max(0.0, (last[1] - first[1]) / (last[0] - first[0])))


class Collection:
    """Samples taken during one busy stretch of a loop (named by its last heartbeat).

    A new :class:`Segment` starts whenever the running task changes, so two
    blocking steps that ran back to back without a heartbeat between them
    become two stalls.
    """

    __slots__ = ("segments", "stretch")

    def __init__(self, stretch: int) -> None:
        self.stretch = stretch
        self.segments: list[Segment] = []

    @property
    def samples(self) -> int:
        return sum(seg.samples for seg in self.segments)

    def segment_for(self, task_key: Any) -> tuple[Segment, bool]:
        """The segment to add a sample of ``task_key`` to; True when it is new."""
        segments = self.segments
        if segments and (segments[-1].task_key == task_key or len(segments) >= 32):
            return segments[-1], False
        seg = Segment(task_key)
        segments.append(seg)
        return seg, True


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


# ------------------------------------------------------------------ task context


def _span_of_task(task: Any) -> Any:
    get_context = getattr(task, "get_context", None)  # 3.12+
    if get_context is None:
        return None
    return get_context().get(_context.current_span)


def _span_in_frames(frames: list[Any]) -> Any:
    """Before 3.12 a task's context can't be read from outside: find the innermost
    running span among the locals of the blocked frames (``@trace`` and ``span()``)."""
    from ...tracing import spans
    from ...tracing.spans import LiveSpan

    for frame in reversed(frames):  # the default loop runs each step in Handle._run(self)
        code = frame.f_code
        if code.co_name == "_run" and code.co_filename.endswith(("asyncio/events.py", "asyncio\\events.py")):
            try:
                context = frame.f_locals["self"]._context
                if context is not None:
                    return context.get(_context.current_span)
            except Exception:
                pass
    for frame in reversed(frames):
        if not _frames.is_user_file(frame.f_code.co_filename) and frame.f_code.co_filename != spans.__file__:
            continue
        try:
            values = list(frame.f_locals.values())
        except Exception:
            continue
        for value in values:
            # getattr: the loop thread may be inside LiveSpan.__init__ (slots not all set yet)
            if type(value) is LiveSpan and getattr(value, "end_ns", None) == 0 and getattr(value, "start_ns", 0):
                return value
    return None


def _coro_chain(coro: Any, limit: int = 32) -> list[str]:
    out: list[str] = []
    while coro is not None and len(out) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(_frames.format_frame((frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_name)))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def _awaiters(task: Any, limit: int = 8) -> list[Any]:
    """Tasks waiting on ``task`` (directly awaiting it), innermost first."""
    out: list[Any] = []
    seen = {id(task)}
    current = task
    while len(out) < limit:
        try:
            callbacks = list(current._callbacks or ())
        except Exception:
            break
        parent = None
        for entry in callbacks:
            callback = entry[0] if isinstance(entry, tuple) else entry
            owner = getattr(callback, "__self__", None)
            if isinstance(owner, asyncio.Task) and id(owner) not in seen:
                parent = owner
                break
        if parent is None:
            break
        seen.add(id(parent))
        out.append(parent)
        current = parent
    return out


def async_stack_of(task: Any, frames: list[Any]) -> tuple[str, ...]:
    """The awaiting tasks' coroutine chains (outermost first), then the running
    task's own frames from its coroutine down to the blocking line."""
    out: list[str] = []
    if HAS_AWAITED_BY:  # 3.14+: the interpreter's awaited-by graph, through gather() and TaskGroup too
        out.extend(awaiter_frames(task))
    else:
        for parent in reversed(_awaiters(task)):
            out.extend(_coro_chain(parent.get_coro()))
    coro_frame = getattr(task.get_coro(), "cr_frame", None)
    start = None
    for i, frame in enumerate(frames):
        if frame is coro_frame:
            start = i
            break
    if start is not None:
        out.extend(
            _frames.format_frame((f.f_code.co_filename, f.f_lineno or 0, f.f_code.co_name)) for f in frames[start:]
        )
    else:
        out.extend(_coro_chain(task.get_coro()))
    return tuple(out)


# --------------------------------------------------------------------- watchdog


class Watchdog:
    """Polls the monitored loops; samples the stacks of those that are blocked."""

    def __init__(
        self,
        *,
        now: Callable[[], int],
        emit: Callable[[Stall], None],
        on_error: Callable[[str, BaseException], None],
        poll_ns: int,
        sample_ns: int,
        gc_overlap: Callable[[int, int, int | None], int] | None = None,
        current_frames: Callable[[], dict[int, Any]] = sys._current_frames,
        thread_cpu: Callable[[int], int | None] = thread_busy_ns,
        thread_blocked: Callable[[int], bool | None] = thread_blocked_in_call,
        current_task: Callable[[Any], Any] | None = None,
        on_stall: Callable[[Any, Stall], None] | None = None,
        before_poll: Callable[[], None] | None = None,
    ) -> None:
        self.now = now
        self.emit = emit
        self.on_error = on_error
        self.poll_ns = poll_ns
        self.sample_ns = sample_ns
        self.gc_overlap = gc_overlap
        self.current_frames = current_frames
        self.thread_cpu = thread_cpu
        self.thread_blocked = thread_blocked
        self.current_task = current_task if current_task is not None else _running_task
        self.on_stall = on_stall
        self.before_poll = before_poll
        self.monitors: list[Any] = []
        self._collections: dict[int, Collection] = {}
        self.samples = 0
        self.polls = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake = threading.Event()
        self.parked = False
        self.parks = 0

    # ------------------------------------------------------------ thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="asynclens-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._thread = None

    def _run(self) -> None:
        wait = self.poll_ns / 1e9
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            self.parked = False
            if self._stopping:
                return
            try:
                suspect = self.poll(self.now())
                if not suspect and self._all_idle():
                    # Every loop waits in its selector with its tick parked: sleep until
                    # one of them leaves select (LoopMonitor.wake calls loop_woke).
                    self.parked = True
                    if self._all_idle():  # checked again after publishing ``parked``
                        self.parks += 1
                        wait = PARK_MAX_S
                        continue
                    self.parked = False
            except Exception as exc:
                self.on_error("watchdog poll", exc)
                suspect = False
            wait = (self.sample_ns if suspect else self.poll_ns) / 1e9

    def _all_idle(self) -> bool:
        monitors = self.monitors
        return bool(monitors) and all(
            m.exact and m.in_select and m.parked_at is not None and not m.gaps for m in monitors
        )

    def loop_woke(self) -> None:
        """A parked loop left its selector (called on the loop thread): resume polling."""
        if self.parked:
            self.parked = False
            self._wake.set()

    def add(self, monitor: Any) -> None:
        self.monitors.append(monitor)
        # A parked watchdog must look at the new loop now; a polling one sees it on its
        # next poll, soon enough to catch any stall over the threshold. Waking it anyway
        # would cost a thread switch per loop (one per test under the pytest plugin).
        if self.parked:
            self._wake.set()

    # ------------------------------------------------------------ polling

    def poll(self, t: int) -> bool:
        """Look at every loop once at time ``t``; True while one looks blocked."""
        self.polls += 1
        if self.before_poll is not None:
            self.before_poll()
        suspect = False
        frames: dict[int, Any] | None = None
        for m in list(self.monitors):
            in_select = m.in_select
            beat = m.beat
            self.drain(m, t)
            if not m.is_running():
                if not m.stopped and not m.in_select:
                    m.stopped = True
                self._collections.pop(id(m), None)
                continue
            if m.exact and in_select:
                self._collections.pop(id(m), None)
                continue
            tid = m.thread_id
            if tid is None:
                continue
            if not m.exact:
                if frames is None:
                    frames = self.current_frames()
                frame = frames.get(tid)
                if frame is not None and frame is m.idle_frame:
                    # Only the loop's own C code runs: idle in its selector, unless the
                    # tick is overdue (a free loop runs a due timer): then it is between
                    # two callbacks of a busy stretch, with no Python frame to sample.
                    if t <= m.expected + IDLE_SLACK_NS:
                        m.idle_seen = t
                        self._collections.pop(id(m), None)
                    continue
                stretch = max(beat, m.idle_seen)
            else:
                stretch = beat
            if t - stretch < self.sample_ns:
                continue
            suspect = True
            if frames is None:
                frames = self.current_frames()
            self.sample(m, t, stretch, frames.get(tid), tid)
        return suspect

    def sample(self, m: Any, t: int, stretch: int, frame: Any, tid: int) -> None:
        coll = self._collections.get(id(m))
        if coll is None or coll.stretch != stretch:
            coll = Collection(stretch)
            self._collections[id(m)] = coll
        if frame is None:
            return
        loop = getattr(m, "loop", None)
        task = self.current_task(loop) if loop is not None else None
        step = running_step(loop)
        key: Any = (id(step), step.start_ns) if step is not None else id(task) if task is not None else None
        seg, new = coll.segment_for(key)
        seg.add(t, _frames.capture(frame))
        self.samples += 1
        if step is not None and step.offcpu is None:
            step.offcpu = (key[1], None)  # sampled: its end reads its CPU clock (set before the GIL is let go)
        if new:  # before any call that releases the GIL: the loop thread's frames must not move on
            try:
                self._describe_task(task, seg, frame)
            except Exception as exc:
                self.on_error("describing the blocked task", exc)
        # Reading it lets go of the GIL, which the loop thread was waiting for: it may have
        # moved on meanwhile. "In a blocking call" then may be the next step's; "running" or
        # "waiting for the GIL" is still this step's (it was running when it was sampled).
        blocked = self.thread_blocked(tid)
        same = running_step(loop) is step and (step is None or step.start_ns == key[1])
        if blocked is not None and (same or not blocked):
            seg.votes += 1
            seg.blocked_votes += blocked
        cpu = self.thread_cpu(tid)
        if cpu is not None:
            seg.cpu_last = (t, cpu)
            if seg.cpu_first is None:
                seg.cpu_first = (t, cpu)
        if new:
            own = thread_cpu_ns(tid) if self.thread_cpu is thread_busy_ns else cpu
            if own is not None:
                seg.thread_cpu_first = (t, own)
        if step is not None:
            seg.step = step
            # The step's off-CPU share so far (for its span's blocked time), once the samples
            # span enough time to tell it from GIL hand-offs to this thread; else just "sampled",
            # so that the step's end reads its own CPU clock for the stall's cause.
            fraction = seg.cpu_fraction() if seg.samples >= MIN_OFFCPU_SAMPLES else None
            off = None if fraction is None or fraction > 1.0 - MIN_OFFCPU_SHARE else 1.0 - fraction
            step.offcpu = (key[1], off)

    def _describe_task(self, task: Any, seg: Segment, frame: Any) -> None:
        live_frames = _frames.frame_list(frame) if hasattr(frame, "f_back") else []
        live = None
        if task is not None:
            seg.task = task.get_name()
            live = _span_of_task(task)
            if live_frames:
                seg.async_stack = async_stack_of(task, live_frames)
        if live is None and live_frames and not hasattr(asyncio.Task, "get_context"):
            live = _span_in_frames(live_frames)
        if live is not None:
            seg.span = (live.trace_id, live.span_id, live.name)

    def drain(self, m: Any, t: int) -> None:
        """Turn the gaps the loop reported into Stall records."""
        gaps = m.gaps
        while gaps:
            try:
                start, end, cpu_end, key = gaps.popleft()
            except IndexError:  # drained by another thread meanwhile
                break
            coll = self._collections.get(id(m))
            if coll is not None and coll.stretch == key:
                self._collections.pop(id(m), None)
            else:
                coll = None
            parts = loop_parts(getattr(m, "loop", None), end)
            if parts is None:  # no scheduler probe on this loop: cut where the running task changed
                stalls = [
                    build_stall(m.loop_id, lo, hi, cpu_hi, seg, self._gc_ns(m, lo, hi), t)
                    for lo, hi, cpu_hi, seg in split(start, end, cpu_end, coll, m.threshold_ns)
                ]
            else:
                stalls = stalls_from_parts(
                    m.loop_id,
                    start,
                    end,
                    cpu_end,
                    parts,
                    coll,
                    m.threshold_ns,
                    t,
                    lambda lo, hi: self._gc_ns(m, lo, hi),
                )
            for stall in stalls:
                if stall.cpu_ns is not None:
                    m.offcpu_ns += stall.duration_ns - stall.cpu_ns
                self.emit(stall)
                if self.on_stall is not None:
                    self.on_stall(m, stall)

    def _gc_ns(self, m: Any, start: int, end: int) -> int:
        return self.gc_overlap(start, end, m.thread_id) if self.gc_overlap is not None else 0

    def forget(self, monitors: Iterable[Any]) -> None:
        for m in monitors:
            self._collections.pop(id(m), None)
            if m in self.monitors:
                self.monitors.remove(m)


def _running_task(loop: Any) -> Any:
    try:
        return asyncio.current_task(loop)
    except Exception:
        return None
