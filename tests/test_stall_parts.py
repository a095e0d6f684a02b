"""A stall is the callback that blocked: with the scheduler probe, every task step or
timer callback over the threshold is a stall of its own, back-to-back ones are
separate, and a stretch of short parts is one lag episode naming each part's share.

The cutting itself is checked on fake steps and samples; the real-loop tests plant
stalls on asyncio and uvloop with generous bounds (durations at least what was
planted, and never merged with a neighbour)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens
from asynclens.probes.lag.samples import Collection, Segment
from asynclens.probes.lag.stalls import classify, stalls_from_parts
from asynclens.records import Span, Stall

MS = 1_000_000
APP = "/srv/app/handlers.py"


class FakeStep:
    """Stands in for a TaskState: the watchdog only asks for its task's name."""

    def __init__(self, name: str) -> None:
        self.task_ref = lambda: type("T", (), {"get_name": lambda _self: name})()


def sampled(step: FakeStep | None, start: int, times: list[int], line: int, cpu: list[int]) -> Segment:
    seg = Segment((id(step), start) if step is not None else None)
    seg.step = step
    for t, c in zip(times, cpu):
        seg.add(t, ((APP, line, "handler"),))
        seg.cpu_last = (t, c)
        if seg.cpu_first is None:
            seg.cpu_first = (t, c)
    return seg


def cut(parts: list[Any], segments: list[Segment], start: int, end: int) -> list[Stall]:
    coll = Collection(start)
    coll.segments = segments
    return stalls_from_parts(7, start, end, None, parts, coll, 50 * MS, end, lambda lo, hi: 0)


def test_back_to_back_steps_over_the_threshold_are_separate_stalls() -> None:
    a, b = FakeStep("burner"), FakeStep("sleeper")
    segments = [
        sampled(a, 0, [10 * MS, 30 * MS, 55 * MS], 10, [10 * MS, 30 * MS, 55 * MS]),  # on-CPU throughout
        sampled(b, 60 * MS, [70 * MS, 100 * MS, 130 * MS], 20, [55 * MS, 55 * MS, 56 * MS]),  # off-CPU
    ]
    stalls = cut([(0, 60 * MS, a, None, None), (60 * MS, 140 * MS, b, None, None)], segments, 0, 141 * MS)
    assert [(s.start_ns, s.end_ns, s.task, s.line, s.cause, s.episode) for s in stalls] == [
        (0, 60 * MS, "burner", 10, "cpu", False),
        (60 * MS, 140 * MS, "sleeper", 20, "blocking", False),
    ]


def test_a_short_part_before_a_long_one_is_not_blamed_on_it() -> None:
    """40 ms of CPU then an 80 ms sleep: one 80 ms stall at the sleep; the 40 ms part is under the threshold."""
    a, b = FakeStep("burner"), FakeStep("sleeper")
    segments = [sampled(b, 40 * MS, [50 * MS, 90 * MS, 115 * MS], 20, [40 * MS, 40 * MS, 41 * MS])]
    stalls = cut([(0, 40 * MS, a, None, None), (40 * MS, 120 * MS, b, None, None)], segments, 0, 121 * MS)
    assert [(s.start_ns, s.end_ns, s.task, s.cause) for s in stalls] == [(40 * MS, 120 * MS, "sleeper", "blocking")]


def test_a_stretch_of_short_parts_is_one_episode_naming_each_share() -> None:
    steps = [FakeStep(f"t{i}") for i in range(6)]
    parts = [(i * 15 * MS, (i + 1) * 15 * MS, st, None, None) for i, st in enumerate(steps)]
    segments = [sampled(steps[4], 60 * MS, [62 * MS, 70 * MS], 33, [62 * MS, 70 * MS])]
    (episode,) = cut(parts, segments, 0, 90 * MS)
    assert episode.episode and (episode.start_ns, episode.end_ns) == (0, 90 * MS)
    assert len(episode.parts) == 5  # the biggest contributors
    assert {p.duration_ns for p in episode.parts} == {15 * MS}
    named = {p.task: p for p in episode.parts}
    assert named["t4"].site == f"{APP}:33 in handler" and named["t4"].cause == "cpu"


def test_a_step_sampled_once_gets_its_cause_from_its_own_cpu_clock_at_its_end() -> None:
    """One sample cannot give a share; the step's end reads the loop thread's CPU clock."""
    a = FakeStep("burner")
    seg = sampled(a, 0, [45 * MS], 10, [45 * MS])
    seg.thread_cpu_first = (45 * MS, 45 * MS)
    (stall,) = cut([(0, 60 * MS, a, None, 60 * MS)], [seg], 0, 61 * MS)
    assert (stall.cause, stall.cpu_ns) == ("cpu", 60 * MS)
    (unknown,) = cut([(0, 60 * MS, a, None, None)], [seg], 0, 61 * MS)
    assert unknown.cause == "unknown"


def test_a_stretch_no_timed_part_explains_is_cut_from_the_samples() -> None:
    """Plain callbacks are not timed: a long one is still a stall, named by its samples."""
    seg = sampled(None, 0, [10 * MS, 40 * MS, 70 * MS], 44, [0, 1 * MS, 1 * MS])
    (stall,) = cut([], [seg], 0, 80 * MS)
    assert (stall.start_ns, stall.end_ns, stall.line, stall.episode) == (0, 80 * MS, 44, False)
    assert stall.cause == "blocking"


@pytest.mark.parametrize(
    ("cpu_share", "blocking_line", "cause"),
    [(0.9, False, "cpu"), (0.9, True, "cpu"), (0.55, True, "blocking"), (0.55, False, "cpu"), (0.1, False, "blocking")],
)
def test_the_cause_comes_from_cpu_time_and_the_sampled_line(cpu_share: float, blocking_line: bool, cause: str) -> None:
    assert classify(100 * MS, int(cpu_share * 100 * MS), 0, blocking_line) == cause


def test_unknown_cpu_time_with_a_blocking_line_is_blocking() -> None:
    assert classify(100 * MS, None, 0, True) == "blocking"
    assert classify(100 * MS, None, 0, False) == "unknown"
    assert classify(100 * MS, 90 * MS, 60 * MS, False) == "gc"


# ------------------------------------------------------------------- real loops


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # BURN
        pass


def line_of(func: Callable[..., Any], marker: str) -> int:
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, text in enumerate(lines) if marker in text)


async def burner() -> None:
    burn(0.12)


async def sleeper() -> None:
    time.sleep(0.2)  # noqa: ASYNC251  # SLEEP


async def back_to_back() -> None:
    await asyncio.gather(asyncio.create_task(burner(), name="burner"), asyncio.create_task(sleeper(), name="sleeper"))


def record(factory: Any, coro: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[list[Stall], list[Span]]:
    with asynclens.session(sinks=["memory"], stall_threshold="50ms", track_handles=False) as s:
        loop = factory()
        try:
            loop.run_until_complete(coro())
        finally:
            loop.close()
    sink = s.sinks[0]
    return sink.of_type(Stall), sink.of_type(Span)  # type: ignore[attr-defined]


@pytest.mark.parametrize("factory", loop_factories())
def test_back_to_back_blocking_steps_are_two_stalls_with_their_own_line_and_cause(factory: Any) -> None:
    stalls, _ = record(factory, back_to_back)
    planted = [s for s in stalls if s.task in ("burner", "sleeper")]
    assert [s.task for s in planted] == ["burner", "sleeper"], stalls
    burned, slept = planted
    assert (burned.line, burned.cause) == (line_of(burn, "# BURN"), "cpu")
    assert (slept.line, slept.cause) == (line_of(sleeper, "# SLEEP"), "blocking")
    assert burned.end_ns <= slept.start_ns  # not merged
    # what was planted (120 ms and 200 ms), give or take the clocks and, on a busy machine, the first
    # samples of a step that the watchdog takes late
    assert burned.duration_ns >= 80 * MS and slept.duration_ns >= 150 * MS
    assert burned.duration_ns < 320 * MS and slept.duration_ns < 320 * MS


@pytest.mark.parametrize("factory", loop_factories())
def test_a_blocking_call_is_blocked_time_not_cpu(factory: Any) -> None:
    async def handler() -> None:
        async with asynclens.span("request"):
            await asyncio.sleep(0)
            time.sleep(0.25)  # noqa: ASYNC251
            await asyncio.sleep(0)

    _, spans = record(factory, handler)
    (span,) = [s for s in spans if s.name == "request"]
    assert span.blocked_ns is not None and span.cpu_ns is not None
    assert span.blocked_ns >= 150 * MS and span.cpu_ns < 100 * MS
    parts = (span.cpu_ns, span.blocked_ns, span.sched_wait_ns, span.io_wait_ns, span.executor_ns)
    assert sum(p or 0 for p in parts) == span.duration_ns


def test_parts_recorded_while_the_scheduler_ran_stay_usable_after_it_stopped() -> None:
    """A session stops the scheduler before the lag probe drains its last gaps."""
    from asynclens.probes.lag.stalls import loop_parts
    from asynclens.probes.scheduler.steps import ATTR, LoopState

    class Loop:
        pass

    loop = Loop()
    ls = LoopState(None, loop, lambda: 0, None)
    setattr(loop, ATTR, ls)
    ls.add_part(0, 60 * MS, None, print)
    ls.active = False
    assert loop_parts(loop, 100 * MS) == [(0, 60 * MS, None, print, None)]
    assert loop_parts(Loop(), 100 * MS) is None  # a loop the scheduler never watched
