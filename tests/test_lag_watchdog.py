"""The watchdog's bookkeeping, driven by explicit poll times, fake frames, tasks and CPU clocks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import asynclens
from asynclens.probes.lag import frames as _frames
from asynclens.probes.lag.monitor import LoopBook
from asynclens.probes.lag.samples import Collection, Segment
from asynclens.probes.lag.stalls import build_stall, classify, split
from asynclens.probes.lag.watchdog import Watchdog
from asynclens.records import Stall

MS = 1_000_000
T0 = 1_000 * MS
TID = 4242
APP = "/srv/app/handlers.py"
STDLIB_JSON = os.path.join(os.path.dirname(os.__file__), "json", "decoder.py")
ASYNCIO_EVENTS = os.path.join(os.path.dirname(os.__file__), "asyncio", "events.py")


@dataclass
class Code:
    co_filename: str
    co_name: str


@dataclass
class Frame:
    f_code: Code
    f_lineno: int
    f_back: Any = None
    f_locals: dict[str, Any] = field(default_factory=dict)


def stack(*entries: tuple[str, int, str]) -> Frame:
    """Fake frames, outermost first; returns the innermost."""
    frame = None
    for filename, line, name in entries:
        frame = Frame(Code(filename, name), line, frame)
    assert frame is not None
    return frame


class FakeTask:
    def __init__(self, name: str) -> None:
        self.name = name
        self._callbacks: list[Any] = []

    def get_name(self) -> str:
        return self.name

    def get_coro(self) -> Any:
        return None


class FakeMonitor(LoopBook):
    def __init__(self, exact: bool = True) -> None:
        super().__init__(99, interval_ns=10 * MS, threshold_ns=50 * MS, window_ns=1_000 * MS, exact=exact, start_ns=T0)
        self.loop = object()
        self.running = True
        self.thread_id = TID
        self.idle_frame: Any = None

    def is_running(self) -> bool:
        return self.running


class Harness:
    def __init__(self, exact: bool = True) -> None:
        self.m = FakeMonitor(exact)
        self.frame: Any = None
        self.cpu = 0
        self.task: Any = None
        self.gc_ns = 0
        self.stalls: list[Stall] = []
        self.errors: list[str] = []
        self.w = Watchdog(
            now=lambda: 0,
            emit=self.stalls.append,
            on_error=lambda where, exc: self.errors.append(f"{where}: {exc!r}"),
            poll_ns=10 * MS,
            sample_ns=5 * MS,
            gc_overlap=lambda s, e, tid: self.gc_ns,
            current_frames=lambda: {TID: self.frame} if self.frame is not None else {},
            thread_cpu=lambda tid: self.cpu,
            current_task=lambda loop: self.task,
        )
        self.w.add(self.m)


def blocked_in(line: int) -> Frame:
    return stack(
        ("/usr/lib/python3/asyncio/base_events.py", 600, "run_forever"),
        (ASYNCIO_EVENTS, 80, "_run"),
        (APP, 30, "handle_search"),
        (APP, line, "lookup"),
        (STDLIB_JSON, 353, "raw_decode"),
    )


def test_blocked_loop_is_sampled_and_reported_with_the_user_line() -> None:
    """Samples taken while the loop is away become one Stall naming the innermost
    user frame (not the stdlib frame above it), with counts per stack."""
    h = Harness()
    m = h.m
    m.select_exit(T0)
    h.frame = blocked_in(41)
    h.task = FakeTask("req-7")
    for i in range(1, 8):
        h.cpu = i * 10 * MS  # fully on CPU
        assert h.w.poll(T0 + i * 10 * MS) is True
    m.gaps.append((T0, T0 + 75 * MS, 75 * MS, T0))  # what the loop reports when it returns
    h.w.poll(T0 + 80 * MS)
    assert len(h.stalls) == 1
    s = h.stalls[0]
    assert (s.start_ns, s.end_ns, s.duration_ns) == (T0, T0 + 75 * MS, 75 * MS)
    assert (s.file, s.line, s.function) == (APP, 41, "lookup")
    assert s.stack[-2:] == (f"{APP}:41 in lookup", f"{STDLIB_JSON}:353 in raw_decode")
    assert [x.count for x in s.samples] == [7]
    assert s.task == "req-7" and s.sampled
    assert s.cause == "cpu" and s.cpu_ns == 75 * MS
    assert s.detected_ns == T0 + 80 * MS
    assert not h.errors


def test_blocking_call_has_little_cpu() -> None:
    h = Harness()
    h.m.select_exit(T0)
    h.frame = blocked_in(12)
    for i in range(1, 6):
        h.cpu = i * 100_000
        h.w.poll(T0 + i * 20 * MS)
    h.m.gaps.append((T0, T0 + 110 * MS, 600_000, T0))
    h.w.poll(T0 + 111 * MS)
    assert h.stalls[0].cause == "blocking"
    assert h.stalls[0].cpu_ns is not None and h.stalls[0].cpu_ns < 2 * MS


def test_gc_overlapping_most_of_a_stall_is_gc() -> None:
    h = Harness()
    h.gc_ns = 60 * MS
    h.m.gaps.append((T0, T0 + 100 * MS, None, T0))
    h.w.poll(T0 + 101 * MS)
    assert h.stalls[0].cause == "gc" and h.stalls[0].gc_ns == 60 * MS


def test_idle_loop_is_not_sampled() -> None:
    h = Harness()
    h.frame = blocked_in(1)
    h.m.select_enter(T0)
    assert h.w.poll(T0 + 500 * MS) is False
    assert h.w.samples == 0


def test_samples_of_a_short_busy_stretch_are_dropped() -> None:
    """A stretch shorter than the threshold produces no gap; its tentative samples
    must not leak into the next stall."""
    h = Harness()
    h.m.select_exit(T0)
    h.frame = blocked_in(5)
    h.w.poll(T0 + 20 * MS)
    h.m.select_enter(T0 + 30 * MS)
    h.m.select_exit(T0 + 40 * MS)
    h.frame = blocked_in(99)
    h.w.poll(T0 + 60 * MS)
    h.m.gaps.append((T0 + 40 * MS, T0 + 120 * MS, None, T0 + 40 * MS))
    h.w.poll(T0 + 121 * MS)
    assert [(s.line, sum(x.count for x in s.samples)) for s in h.stalls] == [(99, 1)]


def test_unsampled_stall_is_still_reported_with_its_duration() -> None:
    """C code holding the GIL for the whole stall can't be sampled: the stall is
    reported afterwards with sampled=False and no culprit."""
    h = Harness()
    h.m.gaps.append((T0, T0 + 90 * MS, None, T0))
    h.w.poll(T0 + 91 * MS)
    s = h.stalls[0]
    assert s.duration_ns == 90 * MS and not s.sampled and s.file is None and s.cause == "unknown"


def test_back_to_back_steps_of_two_tasks_are_two_stalls() -> None:
    """Two blocking steps with no heartbeat between them are cut where the
    running task changed."""
    h = Harness()
    h.m.select_exit(T0)
    a, b = FakeTask("a"), FakeTask("b")
    h.task, h.frame = a, blocked_in(10)
    for i in range(1, 11):  # a: 0..100 ms
        h.w.poll(T0 + i * 10 * MS - 5 * MS)
    h.task, h.frame = b, blocked_in(20)
    for i in range(11, 21):  # b: 100..200 ms
        h.w.poll(T0 + i * 10 * MS - 5 * MS)
    h.m.gaps.append((T0, T0 + 200 * MS, None, T0))
    h.w.poll(T0 + 201 * MS)
    assert [(s.task, s.line, s.start_ns - T0, s.end_ns - T0) for s in h.stalls] == [
        ("a", 10, 0, 100 * MS),
        ("b", 20, 100 * MS, 200 * MS),
    ]


def test_split_keeps_short_parts_with_their_neighbour() -> None:
    coll = Collection(T0)
    for key, t in ((1, 10), (2, 20), (1, 30)):
        seg, _ = coll.segment_for(key)
        seg.add(T0 + t * MS, ())
    parts = split(T0, T0 + 200 * MS, None, coll, 50 * MS)
    assert [(lo - T0, hi - T0) for lo, hi, _, _ in parts] == [(0, 200 * MS)]
    assert parts[0][3] is not None and parts[0][3].samples == 3


def test_stopped_loop_is_marked_and_not_sampled() -> None:
    h = Harness()
    h.m.running = False
    h.frame = blocked_in(1)
    h.w.poll(T0 + 500 * MS)
    assert h.m.stopped and h.w.samples == 0


def test_tick_only_loop_seen_idle_records_when() -> None:
    """For uvloop the watchdog tells idle from busy by the loop thread's top frame."""
    h = Harness(exact=False)
    idle = stack(("/x/asyncio/runners.py", 118, "run"))
    h.m.idle_frame = idle
    h.m.arm(T0 + 25 * MS)  # the next tick is not due yet
    h.frame = idle
    h.w.poll(T0 + 30 * MS)
    assert h.m.idle_seen == T0 + 30 * MS and h.w.samples == 0
    h.frame = blocked_in(7)
    h.w.poll(T0 + 40 * MS)
    assert h.w.samples == 1


def test_tick_only_loop_between_callbacks_is_not_idle() -> None:
    """The idle frame seen while the tick is overdue means uvloop is between two
    callbacks of a busy stretch (it released the GIL), not waiting: the stall
    start must not move, and samples taken so far are kept."""
    h = Harness(exact=False)
    idle = stack(("/x/asyncio/runners.py", 118, "run"))
    h.m.idle_frame = idle
    h.m.arm(T0)  # tick due at T0 + 10 ms
    h.frame = blocked_in(7)
    h.w.poll(T0 + 30 * MS)
    h.frame = idle
    h.w.poll(T0 + 120 * MS)
    assert h.m.idle_seen == 0
    h.m.tick(T0 + 121 * MS)
    h.w.poll(T0 + 122 * MS)
    assert [(s.start_ns, s.end_ns, s.line) for s in h.stalls] == [(T0 + 5 * MS, T0 + 121 * MS, 7)]


def test_classify() -> None:
    assert classify(100, 90, 0) == "cpu"
    assert classify(100, 10, 0) == "blocking"
    assert classify(100, None, 0) == "unknown"
    assert classify(100, 90, 50) == "gc"


def test_build_stall_round_trips_through_json_dicts() -> None:
    seg = Segment(None)
    seg.add(T0, _frames.capture(blocked_in(3)))
    seg.span = (0xABC, 0xDEF, "GET /search")
    s = build_stall(1, T0, T0 + 60 * MS, None, seg, 0, T0 + 61 * MS)
    again = asynclens.records.record_from_dict(s.to_dict())
    assert again == s
    assert s.to_dict()["trace_id"] == "00000000000000000000000000000abc"
    assert s.span_name == "GET /search" and s.site == f"{APP}:3 in lookup"


def test_innermost_user_skips_library_and_asynclens_frames() -> None:
    lens = os.path.join(os.path.dirname(asynclens.__file__), "lag.py")
    frames = ((APP, 1, "main"), (APP, 9, "work"), (STDLIB_JSON, 3, "loads"), (lens, 5, "x"))
    assert _frames.innermost_user(frames) == (APP, 9, "work")
    only_lib = ((STDLIB_JSON, 3, "loads"),)
    assert _frames.innermost_user(only_lib) == (STDLIB_JSON, 3, "loads")
    assert _frames.innermost_user(()) is None


def test_watchdog_parks_only_while_every_loop_idles_with_its_tick_parked() -> None:
    """Parking is safe only when each loop waits in select with its tick parked:
    leaving select then calls loop_woke, which wakes a parked watchdog."""
    h = Harness()
    m = h.m
    assert not h.w._all_idle()
    m.select_enter(T0)
    assert not h.w._all_idle()  # in select, but its tick is still armed
    m.park(T0)
    assert h.w._all_idle()
    h.w.parked = True
    h.w.loop_woke()
    assert not h.w.parked and h.w._wake.is_set()
    h.w._wake.clear()
    h.w.loop_woke()  # not parked: nothing to do
    assert not h.w._wake.is_set()
    uv = FakeMonitor(exact=False)
    h.w.parked = True
    h.w.add(uv)
    assert h.w._wake.is_set() and not h.w._all_idle()  # tick-only loops need polling


def test_adding_a_loop_wakes_only_a_parked_watchdog() -> None:
    """A polling watchdog sees a new loop on its next poll; only a parked one is woken
    (a wake-up per loop costs a thread switch per test under the pytest plugin)."""
    h = Harness()
    h.w._wake.clear()
    h.w.add(FakeMonitor(exact=False))
    assert not h.w._wake.is_set()
    h.w.parked = True
    h.w.add(FakeMonitor(exact=False))
    assert h.w._wake.is_set()


def test_span_in_frames_skips_a_span_still_being_constructed() -> None:
    """The watchdog samples another thread: it may catch LiveSpan.__init__ half way."""
    import sys

    from asynclens.probes.lag.watchdog import _span_in_frames
    from asynclens.tracing.spans import LiveSpan

    def blocked_in(first: Any, second: Any = None) -> Any:
        return sys._getframe()

    half_built = LiveSpan.__new__(LiveSpan)  # not initialised yet
    assert _span_in_frames([blocked_in(half_built)]) is None
    with asynclens.session(lag=False, track_handles=False, scheduler=False):
        with asynclens.span("running") as running:
            assert _span_in_frames([blocked_in(half_built, running)]) is running


def test_formatted_stacks_leave_out_asynclens_own_frames() -> None:
    import os

    from asynclens.probes.lag import frames as _frames

    own = os.path.join(os.path.dirname(os.path.abspath(_frames.__file__)), "tracing.py")
    stack = [("app.py", 3, "main"), (own, 300, "traced"), ("app.py", 9, "handler")]
    assert _frames.format_stack(stack) == ("app.py:3 in main", "app.py:9 in handler")
    assert _frames.format_stack([(own, 300, "traced")]) == (f"{own}:300 in traced",)  # nothing else: keep it


def test_a_samples_state_reading_counts_for_the_step_it_was_taken_in() -> None:
    """Reading the loop thread's system call lets go of the GIL, so the loop may move on to
    its next step meanwhile: "in a blocking call" then may be that step's and is dropped;
    "running" was still this one's."""
    from asynclens.probes.scheduler.steps import ATTR, LoopState, TaskState

    h = Harness()
    loop = type("Loop", (), {})()
    h.m.loop = loop
    ls = LoopState(None, loop, lambda: 0, None)
    setattr(loop, ATTR, ls)
    first, second = TaskState(ls, T0), TaskState(ls, T0)
    first.start_ns, second.start_ns = T0 + 1, T0 + 2
    answers: list[bool] = []

    def moved_on_while_read(tid: int) -> bool:
        ls.running = second
        return answers.pop(0)

    h.w.thread_blocked = moved_on_while_read
    h.m.select_exit(T0)
    h.frame = blocked_in(41)
    for i, blocked in enumerate([True, False], 1):
        ls.running = first
        answers.append(blocked)
        h.w.poll(T0 + i * 10 * MS)
    (segment,) = [s for s in h.w._collections[id(h.m)].segments if s.step is first]
    assert (segment.samples, segment.votes, segment.blocked_votes) == (2, 1, 0)
