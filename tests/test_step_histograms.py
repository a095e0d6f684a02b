"""Per-task step-time and ready→run wait histograms, slow steps, and their per-span-name
aggregate in the summary (docs/lints.md), on a fake clock, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loop_kinds import loop_factories, run

import asynclens
from asynclens import FakeClock
from asynclens._native import core
from asynclens.probes.scheduler import lints
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import TaskRecord, record_from_dict
from asynclens.report.lints import LintAggregates, hist_quantile_ns
from asynclens.testing import capture

MS = 1_000_000


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


def expected(*durations: int) -> tuple[int, ...]:
    hist = [0] * lints.HIST_BUCKETS
    for ns in durations:
        hist[lints.hist_bucket(ns)] += 1
    return lints.trim(hist)


def test_buckets() -> None:
    """Bucket 0 below 1024 ns, then one bucket per doubling; the last holds the rest."""
    assert [lints.hist_bucket(ns) for ns in (0, 1023, 1024, 2047, 2048, 2 * MS, 10**12)] == [0, 0, 1, 1, 2, 11, 23]
    if core is not None:
        assert (core.HIST_BUCKETS, core.HIST_SHIFT, core.SLOW_STEP_NS, core.BUSY_MIN_STEPS) == (
            lints.HIST_BUCKETS, lints.HIST_SHIFT, lints.SLOW_STEP_NS, lints.BUSY_MIN_STEPS,
        )  # fmt: skip


def test_many_medium_steps_stand_out_from_one_long_stall(factory: Any) -> None:
    """Each task's steps and waits land in their buckets; steps ≥ 10 ms count as slow."""
    clock = FakeClock()

    async def chatty() -> None:
        for _ in range(5):
            clock.spend_cpu(12 * MS)  # many medium steps: slow, none a stall
            await asyncio.sleep(0)

    async def stalls_once() -> None:
        clock.spend_cpu(400 * MS)
        await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asynclens.span("request"):
            await asyncio.gather(loop.create_task(chatty(), name="chatty"), loop.create_task(stalls_once(), name="stall"))

    with capture(clock=clock, probes=[SchedulerProbe(task_records="all")]) as cap:
        run(factory, main)
    tasks = {r.name: r for r in cap.records if isinstance(r, TaskRecord)}
    chatty, stall = tasks["chatty"], tasks["stall"]
    assert chatty.step_histogram == expected(*[12 * MS] * 5, 0)
    assert (chatty.slow_steps, stall.slow_steps) == (5, 1)
    assert stall.step_histogram == expected(400 * MS, 0)
    # chatty's second step waited for the stall's 400 ms step; the others for chatty's own turns
    assert sum(chatty.wait_histogram) == chatty.steps and chatty.wait_histogram[lints.hist_bucket(400 * MS)] == 1
    assert record_from_dict(chatty.to_dict()) == chatty
    text = cap.session.summary()
    assert "Task steps by span" in text
    assert "request: 2 tasks, 8 steps" in text and "6 slow" in text
    assert "most slow steps: 'chatty' 5 of 6, 'stall' 1 of 2" in text


def test_aggregate_per_span_name_is_bounded_and_merges() -> None:
    """Histograms of one span name's tasks add up; the number of names kept is bounded."""
    agg = LintAggregates()
    for _ in range(3):
        agg.add(TaskRecord(1, "t", 1, 0, span_name="GET /x", step_histogram=(0, 2, 1), wait_histogram=(4,), slow_steps=1))
    tasks, slow, steps, waits = agg.by_name["GET /x"]
    assert (tasks, slow, steps, waits) == (3, 3, [0, 6, 3], [12])
    assert hist_quantile_ns(steps, 0.5) == 2048 and hist_quantile_ns([], 0.5) is None
    for i in range(300):
        agg.add(TaskRecord(1, "t", 1, 0, span_name=f"n{i}", step_histogram=(1,)))
    assert len(agg.by_name) == 200 and agg.names_dropped == 101
