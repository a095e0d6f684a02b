"""The scheduler probe in a session: span breakdown, lineage, GC, executor, coverage.

Loops are real, time is fake: the session runs on a FakeClock that moves only
where the test says, so every breakdown is checked exactly.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from typing import Any

import pytest
from loop_kinds import loop_factories, run

import asynclens
from asynclens._state.clock import FakeClock
from asynclens.probes.scheduler.probe import SchedulerProbe, async_stack, breakdown_line, creation_chain
from asynclens.probes.scheduler.steps import ATTR
from asynclens.records import ExecutorJob, GcPause, SchedSnapshot, Span, TaskRecord
from asynclens.testing import capture
from asynclens.tracing import spans as tracing

MS = 1_000_000


def spans_by_name(records: list[Any]) -> dict[str, Span]:
    return {r.name: r for r in records if isinstance(r, Span)}


def tasks_by_name(records: list[Any]) -> dict[str, TaskRecord]:
    return {r.name: r for r in records if isinstance(r, TaskRecord)}


def breakdown(span: Span) -> tuple[int | None, ...]:
    return (span.cpu_ns, span.sched_wait_ns, span.io_wait_ns, span.executor_ns)


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def no_leftover_state() -> Any:
    yield
    assert tracing._observer is None
    assert not any("create_task" in type(obj).__dict__ for obj in ())  # patches are class-level: checked below
    assert "create_task" not in asyncio.BaseEventLoop.__dict__ or not hasattr(
        asyncio.BaseEventLoop.__dict__["create_task"], "__wrapped__"
    )


def test_breakdown_of_a_victim_behind_a_stall(factory: Any) -> None:
    """I/O wait until the future is set, starved while the setter keeps the loop, own CPU."""
    clock = FakeClock()
    probe = SchedulerProbe()

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def victim() -> None:
            async with asynclens.span("victim"):
                clock.spend_cpu(5 * MS)
                await fut
                clock.spend_cpu(3 * MS)

        async def staller() -> None:
            await asyncio.sleep(0)
            clock.advance(100 * MS)  # the victim waits for its "I/O"
            fut.set_result(None)
            clock.spend_cpu(300 * MS)  # ...then is ready while this holds the loop

        await asyncio.gather(victim(), staller())

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    span = spans_by_name(cap.records)["victim"]
    assert span.duration_ns == 408 * MS
    # its own task: I/O until the future was set, then starved while the setter held the loop
    assert span.own_breakdown == (8 * MS, 0, 300 * MS, 100 * MS, 0)
    # the critical path: the wait ended when the staller, running 100 ms on the loop, set the future
    assert breakdown(span) == (108 * MS, 300 * MS, 0, 0)
    assert span.held_up_by is not None and "staller" in span.held_up_by
    assert span.steps == 2
    line = breakdown_line(
        span.name, span.duration_ns, span.cpu_ns or 0, span.sched_wait_ns or 0, span.io_wait_ns or 0, 0, None
    )
    assert line == "victim 408.0 ms = 108.0 ms CPU + 300.0 ms starved by the loop + 0 ns I/O"
    assert line in cap.session.summary()


def test_late_timer_counts_as_starvation_not_io(factory: Any) -> None:
    """A sleep's wake-up is ready when its timer is due, however late the loop fires it."""
    clock = FakeClock()
    probe = SchedulerProbe()

    async def main() -> None:
        async def victim() -> None:
            with asynclens.span("sleeper"):
                await asyncio.sleep(0.005)

        async def staller() -> None:
            await asyncio.sleep(0)
            clock.advance(300 * MS)
            time.sleep(0.03)  # plant a real stall so the timer really fires late

        await asyncio.gather(victim(), staller())

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    span = spans_by_name(cap.records)["sleeper"]
    assert breakdown(span) == (0, 295 * MS, 5 * MS, 0)
    assert probe.timer_lateness().max == 295 * MS


def test_every_span_reconciles_and_waiting_on_children_is_their_time(factory: Any) -> None:
    """Nested spans and spans awaiting child tasks split their wall time exactly; a wait
    on children is explained by what the child that ended it was doing (critical path)."""
    clock = FakeClock()
    probe = SchedulerProbe()

    async def child(n: int) -> None:
        async with asynclens.span(f"child{n}"):
            clock.spend_cpu(n * MS)
            await asyncio.sleep(0)
            clock.spend_cpu(MS)

    async def main() -> None:
        async with asynclens.span("outer"):
            clock.spend_cpu(2 * MS)
            with asynclens.span("inner"):
                clock.spend_cpu(MS)
            await asyncio.gather(child(1), child(2))
            clock.spend_cpu(MS)

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    spans = spans_by_name(cap.records)
    for span in spans.values():
        assert None not in breakdown(span)
        assert sum(breakdown(span)) == span.duration_ns  # type: ignore[arg-type]
    assert breakdown(spans["inner"]) == (MS, 0, 0, 0) and spans["inner"].own_breakdown is None
    outer = spans["outer"]
    assert outer.own_breakdown == (4 * MS, 0, 0, 5 * MS, 0)  # its own code; the 5 ms gather as waiting
    # child2 ended the wait: over it, child2 ran 3 ms and waited 2 ms while child1 ran
    assert breakdown(outer) == (7 * MS, 2 * MS, 0, 0)
    assert outer.held_up_by is not None and outer.held_up_by.endswith("child)")
    assert spans["child1"].cpu_ns == 2 * MS and spans["child1"].steps == 2


def test_executor_time_and_jobs(factory: Any) -> None:
    clock = FakeClock()
    probe = SchedulerProbe()
    suspended = threading.Event()

    def blocking() -> str:
        suspended.wait(10)  # let the submitting step end first: fake time is shared
        clock.advance(30 * MS)
        return "done"

    async def main() -> str:
        async with asynclens.span("req"):
            loop = asyncio.get_running_loop()
            loop.call_soon(suspended.set)
            return await loop.run_in_executor(None, blocking)

    with capture(clock=clock, probes=[probe]) as cap:
        assert run(factory, main) == "done"
    span = spans_by_name(cap.records)["req"]
    assert breakdown(span) == (0, 0, 0, 30 * MS)
    (job,) = [r for r in cap.records if isinstance(r, ExecutorJob)]
    assert job.end_ns - job.start_ns == 30 * MS
    assert job.span_id == span.span_id and job.function.endswith("blocking")
    assert job.error_type is None
    assert probe.statistics()["executor_jobs"] == 1


def test_executor_job_errors_pass_through_and_are_recorded(factory: Any) -> None:
    def fails() -> None:
        raise LookupError("nope")

    async def main() -> None:
        await asyncio.to_thread(fails)

    with capture(probes=[SchedulerProbe()]) as cap:
        with pytest.raises(LookupError, match="nope"):
            run(factory, main)
    (job,) = [r for r in cap.records if isinstance(r, ExecutorJob)]
    assert job.error_type == "LookupError"
    assert job.function.endswith("fails")  # not to_thread's partial(context.run, ...)
    assert job.submit_ns <= job.start_ns <= job.end_ns


def test_task_records_and_outlived_request(factory: Any) -> None:
    """A task created in a request and still running after it is linked, not parented."""
    clock = FakeClock()
    probe = SchedulerProbe(worker_after=0.05)
    release = None

    async def background() -> None:
        await release  # type: ignore[misc]
        with asynclens.span("bg-work"):
            clock.spend_cpu(MS)

    async def main() -> None:
        nonlocal release
        release = asyncio.get_running_loop().create_future()
        async with asynclens.span("request"):
            task = asyncio.create_task(background(), name="bg")
            clock.spend_cpu(MS)
        clock.advance(100 * MS)
        release.set_result(None)
        await task

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    spans = spans_by_name(cap.records)
    request, bg_work = spans["request"], spans["bg-work"]
    assert bg_work.parent_id is None and bg_work.links == (request.span_id,)
    assert bg_work.trace_id != request.trace_id
    task = tasks_by_name(cap.records)["bg"]
    assert task.outlived_span and task.span_id == request.span_id and task.span_name == "request"
    assert task.inherited_context  # 100 ms after a 1 ms request, beyond worker_after and 10x
    assert task.state == "done" and task.steps == 1  # released before it first ran
    assert task.creation_site is not None and "test_scheduler.py" in task.creation_site
    assert "outlived their request" in cap.session.summary()


def test_a_task_a_loop_callback_made_is_not_credited_to_whoever_runs_the_loop() -> None:
    """The creation site is the innermost frame of the program's own code up to the loop's
    callback: a task asyncio's own callback made (a server's connection handler) has none,
    rather than the frame that runs the loop. (uvloop runs callbacks from C: no frame marks
    where the callback began, so there the frame that runs the loop is still named.)"""
    factory = asyncio.new_event_loop
    probe = SchedulerProbe(task_records="all")

    async def handler() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, handler())
        await asyncio.sleep(0.01)

    with capture(clock=FakeClock(), probes=[probe]) as cap:
        run(factory, main)
    sites = {r.name: r.creation_site for r in cap.records if isinstance(r, TaskRecord)}
    made = [name for name, site in sites.items() if site is None]
    assert len(made) == 1 and len(sites) >= 2, sites  # the callback's task; main's has its line


def test_task_finished_inside_its_span_did_not_outlive_it(factory: Any) -> None:
    async def quick() -> int:
        return 1

    async def main() -> None:
        async with asynclens.span("request"):
            assert await asyncio.create_task(quick(), name="quick") == 1

    with capture(probes=[SchedulerProbe(task_records="all")]) as cap:
        run(factory, main)
    task = tasks_by_name(cap.records)["quick"]
    assert not task.outlived_span and not task.inherited_context and task.span_name == "request"


def test_pending_tasks_are_reported_with_their_async_stack(factory: Any) -> None:
    async def leaf(fut: asyncio.Future[None]) -> None:
        await fut

    async def waiter(fut: asyncio.Future[None]) -> None:
        await asyncio.create_task(leaf(fut), name="leaf")

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(waiter(fut), name="waiter")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        stack = async_stack(task)
        assert [s.split(" in ")[-1] for s in stack] == ["waiter", "leaf"]
        assert "test_scheduler.py" in stack[0]
        probe.stop()  # while the tasks are pending
        task.cancel()
        fut.cancel()
        await asyncio.gather(task, return_exceptions=True)

    probe = SchedulerProbe()
    with capture(probes=[probe]) as cap:
        run(factory, main)
    tasks = tasks_by_name(cap.records)
    assert tasks["waiter"].state == "pending"
    assert [s.split(" in ")[-1] for s in tasks["waiter"].async_stack] == ["waiter", "leaf"]


def test_task_states_and_results_pass_through(factory: Any) -> None:
    async def ok() -> str:
        await asyncio.sleep(0)
        return "value"

    async def bad() -> None:
        raise ValueError("bad")

    async def forever() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        a = asyncio.create_task(ok(), name="ok")
        b = asyncio.create_task(bad(), name="bad")
        c = asyncio.create_task(forever(), name="forever")
        await asyncio.sleep(0)
        c.cancel()
        assert await a == "value"
        with pytest.raises(ValueError, match="bad"):
            await b
        with pytest.raises(asyncio.CancelledError):
            await c
        assert a.get_name() == "ok"
        unnamed = asyncio.create_task(ok())
        assert unnamed.get_name().startswith("Task-")  # not "None" (3.13.0 task-factory bug)
        await unnamed
        assert "ok" in repr(a.get_coro())

    with capture(probes=[SchedulerProbe(task_records="all")]) as cap:
        run(factory, main)
    states = {name: t.state for name, t in tasks_by_name(cap.records).items()}
    assert (states["ok"], states["bad"], states["forever"]) == ("done", "error", "cancelled")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_tasks_are_tracked_and_subtracted() -> None:
    clock = FakeClock()

    async def child() -> None:
        clock.spend_cpu(4 * MS)
        await asyncio.sleep(0)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        async with asynclens.span("parent"):
            clock.spend_cpu(MS)
            task = asyncio.create_task(child(), name="eager-child")
            clock.spend_cpu(MS)
            await task

    with capture(clock=clock, probes=[SchedulerProbe(task_records="all")]) as cap:
        run(asyncio.new_event_loop, main)
    span = spans_by_name(cap.records)["parent"]
    assert span.cpu_ns == 2 * MS
    assert span.sched_wait_ns == 4 * MS
    assert tasks_by_name(cap.records)["eager-child"].run_ns == 4 * MS


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_first_wakeup_is_stamped() -> None:
    """A wake-up scheduled during an eager first step (before create_task returns) is seen."""
    clock = FakeClock()

    async def child() -> None:
        with asynclens.span("eager-span"):
            await asyncio.sleep(0)  # wake-up scheduled inside the parent's create_task()

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        task = asyncio.create_task(child())
        clock.spend_cpu(7 * MS)  # the child is ready while the parent keeps running
        await task

    with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
        run(asyncio.new_event_loop, main)
    assert breakdown(spans_by_name(cap.records)["eager-span"]) == (0, 7 * MS, 0, 0)


def test_loop_in_another_thread_is_watched() -> None:
    """asynclens.watch(loop) attaches a loop running in another thread, on that thread."""
    clock = FakeClock()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:

        async def work() -> None:
            async with asynclens.span("remote"):
                clock.spend_cpu(MS)
                await asyncio.sleep(0)

        with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
            asynclens.watch(loop)
            asyncio.run_coroutine_threadsafe(work(), loop).result(10)
        assert breakdown(spans_by_name(cap.records)["remote"]) == (MS, 0, 0, 0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert not {"call_soon", "call_later", "call_at"} & set(vars(loop))


def test_error_spans_carry_the_stitched_async_stack(factory: Any) -> None:
    async def failing() -> None:
        with asynclens.span("inner-op"):
            raise RuntimeError("broken")

    async def main() -> None:
        task = asyncio.create_task(failing(), name="worker")
        with pytest.raises(RuntimeError):
            await task

    with capture(probes=[SchedulerProbe()]) as cap:
        run(factory, main)
    span = spans_by_name(cap.records)["inner-op"]
    assert span.status == "error" and span.error_stack
    assert "in failing" in span.error_stack
    assert "task 'worker' created at" in span.error_stack and "in main" in span.error_stack


def test_gc_pauses_are_recorded_and_attributed() -> None:
    async def main() -> None:
        async with asynclens.span("collecting"):
            gc.collect()

    with capture(probes=[SchedulerProbe()]) as cap:
        run(asyncio.new_event_loop, main)
    pauses = [r for r in cap.records if isinstance(r, GcPause) and r.span_name == "collecting"]
    assert pauses and pauses[0].generation == 2 and pauses[0].end_ns >= pauses[0].start_ns
    probe = cap.session.probe("scheduler")
    assert probe.gc_overlapping(pauses[0].start_ns, pauses[0].end_ns + 1)
    assert "GC pauses:" in cap.session.summary()
    assert gc.callbacks.count(probe._gc._callback) == 0


def test_tasks_created_before_the_session_are_reported_not_covered() -> None:
    async def sleeper() -> None:
        await asyncio.sleep(0.01)

    async def main() -> None:
        early = asyncio.create_task(sleeper())
        async with asynclens.session(scheduler=True) as session:
            await early
        stats = session.statistics().probes["scheduler"]
        assert stats["tasks_not_covered"] >= 1
        assert "not covered" in session.summary()

    run(asyncio.new_event_loop, main)


def test_default_session_has_the_probe_and_snapshots() -> None:
    async def main() -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    with asynclens.session("memory", scheduler=True) as session:
        asyncio.run(main())
    assert isinstance(session.probe("scheduler"), SchedulerProbe)
    records = session.sinks[0].records  # type: ignore[attr-defined]
    snaps = [r for r in records if isinstance(r, SchedSnapshot)]
    assert snaps and snaps[-1].ready_delay["count"] >= 3
    stats = session.statistics().probes["scheduler"]
    assert stats["tasks_tracked"] >= 1 and stats["steps"] >= 4  # asyncio.run's main task is covered


def test_probe_removes_every_hook(factory: Any) -> None:
    kept: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        kept.append(asyncio.get_running_loop())
        await asyncio.sleep(0)

    loop = factory()
    try:
        with capture(probes=[SchedulerProbe()]):
            loop.run_until_complete(main())
        assert not {"call_soon", "call_later", "call_at"} & set(vars(loop))
        task = loop.create_task(main())
        assert not hasattr(task, ATTR)
        loop.run_until_complete(task)
    finally:
        loop.close()
    assert creation_chain(task) == []


def test_probe_options_are_checked() -> None:
    with pytest.raises(ValueError, match="record_steps"):
        SchedulerProbe(record_steps=-1)
    with pytest.raises(ValueError, match="window"):
        SchedulerProbe(window=0)
    with pytest.raises(ValueError, match="task_records"):
        SchedulerProbe(task_records="some")


def test_only_notable_tasks_are_recorded_by_default() -> None:
    """Quick, successful tasks are counted, not recorded; failed and slow ones are recorded."""
    clock = FakeClock()

    async def quick() -> None:
        clock.spend_cpu(MS // 10)

    async def slow() -> None:
        clock.spend_cpu(2 * MS)

    async def bad() -> None:
        raise KeyError("x")

    async def main() -> None:
        await asyncio.gather(
            asyncio.create_task(quick(), name="quick"),
            asyncio.create_task(slow(), name="slow"),
            asyncio.create_task(bad(), name="bad"),
            return_exceptions=True,
        )

    probe = SchedulerProbe()
    with capture(clock=clock, probes=[probe]) as cap:
        run(asyncio.new_event_loop, main)
    assert {"slow", "bad"} <= set(tasks_by_name(cap.records)) and "quick" not in tasks_by_name(cap.records)
    assert probe.statistics()["tasks_unrecorded"] >= 1


def test_long_healthy_tasks_are_recorded_within_a_budget_a_second_then_only_new_extremes() -> None:
    """Under load every task lives long: only ``notable_per_second`` of those get a record each
    second, then only one that lived or waited longer than all recorded; the rest are counted.
    A failed task is recorded past the budget."""
    clock = FakeClock()

    async def long(ms: int) -> None:
        clock.spend_cpu(ms * MS)

    async def bad() -> None:
        raise KeyError("x")

    async def main() -> None:
        for i in range(5):
            await asyncio.create_task(long(2), name=f"first-{i}")  # 2 ms each: the budget of 3 and 2 more
        await asyncio.create_task(long(5), name="longest")  # longer than all recorded: recorded
        await asyncio.create_task(long(3), name="shorter")  # past the budget, not an extreme
        await asyncio.gather(asyncio.create_task(bad(), name="bad"), return_exceptions=True)
        clock.advance(1_000 * MS)  # a new second, a new budget
        await asyncio.create_task(long(2), name="next-second")

    probe = SchedulerProbe(notable_per_second=3)
    with capture(clock=clock, probes=[probe]) as cap:
        run(asyncio.new_event_loop, main)
    names = set(tasks_by_name(cap.records))
    assert {"first-0", "first-1", "first-2", "longest", "bad", "next-second"} <= names
    assert not names & {"first-3", "first-4", "shorter"}
    assert probe.tasks_over_budget == 3 and probe.statistics()["tasks_over_budget"] == 3
    assert "3 long ones past the 3-a-second record budget" in "\n".join(probe.summary_lines())
    with pytest.raises(ValueError, match="notable_per_second"):
        SchedulerProbe(notable_per_second=-1)


def test_spans_within_one_step_get_their_breakdown_without_a_snapshot(factory: Any) -> None:
    """Spans that start and end inside one step (the pending path): any end order,
    a remote parent's extra kept, the error stack added; one left open across an
    await gets its snapshot at the step's end."""
    from asynclens.tracing.propagation import SpanContext

    clock = FakeClock()
    probe = SchedulerProbe()

    async def main() -> None:
        a = asynclens.span("a")
        a.__enter__()
        clock.spend_cpu(MS)
        b = asynclens.span("b", parent=SpanContext(trace_id=5, span_id=6))
        b.__enter__()
        clock.spend_cpu(2 * MS)
        a.__exit__(None, None, None)  # not the innermost one first
        clock.spend_cpu(MS)
        b.__exit__(None, None, None)
        with pytest.raises(ValueError), asynclens.span("failing"):
            clock.spend_cpu(MS)
            raise ValueError("boom")
        async with asynclens.span("across"):
            clock.spend_cpu(MS)
            await asyncio.sleep(0)
            clock.spend_cpu(2 * MS)
        assert probe.by_name["a"].totals()[:3] == (1, 3 * MS, 3 * MS)  # tallied as the span ends

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    spans = spans_by_name(cap.records)
    assert breakdown(spans["a"]) == (3 * MS, 0, 0, 0) and spans["a"].steps == 1
    assert breakdown(spans["b"]) == (3 * MS, 0, 0, 0) and spans["b"].remote_parent
    assert breakdown(spans["failing"]) == (MS, 0, 0, 0) and "test_scheduler" in (spans["failing"].error_stack or "")
    assert spans["across"].cpu_ns == 3 * MS and spans["across"].steps == 2
    assert sum(breakdown(spans["across"])) == spans["across"].duration_ns  # type: ignore[arg-type]


def test_a_span_records_its_longest_ready_wait(factory: Any) -> None:
    """Per-span maximum of the ready->run delay: only wake-ups while the span is open,
    an inner span's own, the enclosing span still seeing it; the task keeps its life's."""
    clock = FakeClock()
    probe = SchedulerProbe()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(4)]

        async def victim() -> None:
            await futures[0]  # woken, then kept waiting 50 ms before any span
            async with asynclens.span("outer"):
                await futures[1]  # 20 ms
                async with asynclens.span("inner"):
                    await futures[2]  # 5 ms
                await futures[3]  # 7 ms
            with asynclens.span("one step"):
                clock.spend_cpu(MS)

        async def waker() -> None:
            for future, hold in zip(futures, (50, 20, 5, 7)):
                await asyncio.sleep(0)
                future.set_result(None)
                clock.spend_cpu(hold * MS)  # the victim is ready meanwhile

        await asyncio.gather(asyncio.create_task(victim(), name="victim"), waker())

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    spans = spans_by_name(cap.records)
    assert spans["outer"].max_sched_wait_ns == 20 * MS
    assert spans["inner"].max_sched_wait_ns == 5 * MS
    assert spans["one step"].max_sched_wait_ns == 0
    assert spans["outer"].sched_wait_ns == 32 * MS
    assert tasks_by_name(cap.records)["victim"].max_sched_wait_ns == 50 * MS


def test_breakdown_by_name_sums_every_span_across_folds(factory: Any) -> None:
    """The per-name tally appends breakdowns and sums them in bulk: nothing is lost at a
    fold, and the wall time it reports is the spans' own."""
    clock = FakeClock()
    probe = SchedulerProbe()
    count = 3 * 256 + 7  # three folds on the way and a remainder folded when read

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def waker() -> None:
            await asyncio.sleep(0)
            clock.advance(2 * MS)  # the "I/O" the last span waits for
            fut.set_result(None)

        for _ in range(count - 1):
            with asynclens.span("quick"):
                clock.spend_cpu(MS)
        helper = asyncio.ensure_future(waker())
        async with asynclens.span("quick"):
            await fut
            clock.spend_cpu(MS)
        await helper

    with capture(clock=clock, probes=[probe]) as cap:
        run(factory, main)
    walls = sum(s.duration_ns for s in cap.spans if s.name == "quick")
    runs = sum(s.cpu_ns or 0 for s in cap.spans if s.name == "quick")
    count_, wall, run_, sched, io, ex = probe.by_name["quick"].totals()
    assert (count_, wall, run_, ex) == (count, walls, runs, 0)
    # the last span waited on the waker, which held the loop 2 ms before it set the future
    assert run_ == count * MS + 2 * MS and io == 0 and sched + io + run_ == wall
    assert f"{count}× quick " in cap.session.summary()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_child_inside_a_one_step_span_is_subtracted() -> None:
    clock = FakeClock()

    async def child() -> None:
        clock.spend_cpu(4 * MS)

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        with asynclens.span("parent"):
            clock.spend_cpu(MS)
            asyncio.create_task(child())  # runs to completion inside this step
            clock.spend_cpu(MS)

    with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
        run(asyncio.new_event_loop, main)
    assert breakdown(spans_by_name(cap.records)["parent"]) == (2 * MS, 4 * MS, 0, 0)
