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
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..._state import context as _context
from ...records import Stall
from .._threads import thread_blocked_in_call, thread_busy_ns, thread_cpu_ns
from ..scheduler.asyncstack import HAS_AWAITED_BY, awaiter_frames
from . import frames as _frames
from .samples import Collection, Segment
from .stalls import build_stall, loop_parts, running_step, split, stalls_from_parts

__all__ = ["Watchdog", "async_stack_of"]

PARK_MAX_S = 1.0  # a parked watchdog still looks around this often (closed loops, stops)
IDLE_SLACK_NS = 2_000_000  # timers fire up to ~1 ms late by rounding alone (uvloop: ms resolution)
MIN_OFFCPU_SAMPLES = 3  # samples of a step before its off-CPU share counts as blocked time
MIN_OFFCPU_SHARE = 0.25  # less is GIL hand-offs to the watchdog and sampling noise, not a blocking call


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
        self.draining = 0  # > 0 while gaps taken off a monitor are not yet emitted as stalls
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
        self.draining += 1
        try:
            self._drain(m, t)
        finally:
            self.draining -= 1

    def _drain(self, m: Any, t: int) -> None:
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
