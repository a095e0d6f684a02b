"""A span's breakdown along its critical path across tasks, on fake time.

When a span waits on other tasks, the wait is explained by what the task that ended
it was doing (recursively): waiting on children is never reported as I/O. The loops
are real, the session clock is fake: "I/O" is a plain callback (no task) that moves
the clock and resolves futures, "CPU" is ``clock.spend_cpu`` inside a task's step.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens
from asynclens._state.clock import FakeClock
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import Span
from asynclens.testing import capture

MS = 1_000_000


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


def record(factory: Any, clock: FakeClock, main: Callable[[], Coroutine[Any, Any, Any]]) -> dict[str, Span]:
    with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
        loop = factory()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    return {s.name: s for s in cap.spans}


def critical(span: Span) -> tuple[int | None, ...]:
    """(cpu, blocked, starved, I/O, executor) of the headline fields."""
    return (span.cpu_ns, span.blocked_ns, span.sched_wait_ns, span.io_wait_ns, span.executor_ns)


def io_completes(clock: FakeClock, ns: int, *futures: asyncio.Future[Any]) -> Callable[[], None]:
    """A plain callback: ``ns`` of I/O pass, then the futures resolve (no task woke them)."""

    def done() -> None:
        clock.advance(ns)
        for fut in futures:
            if not fut.done():
                fut.set_result(None)

    return done


def test_the_planted_request_splits_into_its_childrens_io_starvation_and_cpu(factory: Any) -> None:
    """The issue's case: a gather of two 50 ms I/O children that could not start for 100 ms
    (another task held the loop), then one child burns 20 ms of CPU: 50 / 100 / 20."""
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        go = loop.create_future()

        async def hog() -> None:
            await go
            clock.spend_cpu(100 * MS)

        async def child(burn: int, fut: asyncio.Future[Any], other: asyncio.Future[Any] | None) -> None:
            if other is not None:  # the first child starts the I/O both wait for
                loop.call_soon(io_completes(clock, 50 * MS, fut, other))
            await fut
            clock.spend_cpu(burn)

        async def request() -> None:
            async with asynclens.span("request"):
                a, b = loop.create_future(), loop.create_future()
                go.set_result(None)  # the hog is ready before the children are created
                await asyncio.gather(child(0, a, b), child(20 * MS, b, None))

        hog_task = asyncio.ensure_future(hog())
        await asyncio.sleep(0)
        await request()
        await hog_task

    spans = record(factory, clock, main)
    req = spans["request"]
    cpu, blocked, starved, io, ex = critical(req)
    assert (cpu, blocked, starved, io, ex) == (20 * MS, 0, 100 * MS, 50 * MS, 0)
    assert cpu + blocked + starved + io + ex == req.duration_ns
    # its own task only waited: the 100 ms of starvation were the children's, before they could start
    assert req.own_breakdown == (0, 0, 0, 170 * MS, 0)
    assert req.held_up_by is not None and "child" in req.held_up_by


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
def test_a_taskgroup_wait_is_explained_by_its_last_child(factory: Any) -> None:
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def child(burn: int) -> None:
            fut = loop.create_future()
            loop.call_soon(io_completes(clock, 10 * MS, fut))
            await fut
            clock.spend_cpu(burn)

        async with asynclens.span("request"):
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(child(MS))
                group.create_task(child(5 * MS))

    req = record(factory, clock, main)["request"]
    # the children's I/O ran back to back on the fake clock (20 ms); the last child to finish
    # then waited 1 ms while its sibling ran, and ran 5 ms
    assert critical(req) == (5 * MS, 0, MS, 20 * MS, 0)
    assert req.own_breakdown == (0, 0, 0, 26 * MS, 0)


def test_nested_children_explain_recursively(factory: Any) -> None:
    """A child waiting on its own child is explained by the grandchild in turn."""
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def grandchild() -> None:
            fut = loop.create_future()
            loop.call_soon(io_completes(clock, 30 * MS, fut))
            await fut
            clock.spend_cpu(4 * MS)

        async def child() -> None:
            clock.spend_cpu(2 * MS)
            await asyncio.create_task(grandchild())
            clock.spend_cpu(MS)

        async with asynclens.span("request"):
            await asyncio.create_task(child())

    req = record(factory, clock, main)["request"]
    assert critical(req) == (7 * MS, 0, 0, 30 * MS, 0)
    assert req.held_up_by is not None and "(" in req.held_up_by


@pytest.mark.parametrize("how", ["await", "wait_for", "shield", "wait", "as_completed", "future"])
def test_every_way_of_waiting_on_a_task_is_followed(factory: Any, how: str) -> None:
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        result = loop.create_future()

        async def worker() -> None:
            fut = loop.create_future()
            loop.call_soon(io_completes(clock, 40 * MS, fut))
            await fut
            clock.spend_cpu(3 * MS)
            result.set_result(None)  # "future": a future another task resolves

        async with asynclens.span("request"):
            task = asyncio.create_task(worker())
            if how == "await":
                await task
            elif how == "wait_for":
                await asyncio.wait_for(task, 10)
            elif how == "shield":
                await asyncio.shield(task)
            elif how == "wait":
                await asyncio.wait([task])
            elif how == "as_completed":
                for next_done in asyncio.as_completed([task]):
                    await next_done
            else:
                await result
        await task

    req = record(factory, clock, main)["request"]
    cpu, blocked, starved, io, ex = critical(req)
    assert (cpu, io, ex) == (3 * MS, 40 * MS, 0)
    assert cpu + blocked + starved + io + ex == req.duration_ns  # type: ignore[operator]


def test_a_child_that_fails_or_is_cancelled_still_explains_the_wait(factory: Any) -> None:
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def failing() -> None:
            fut = loop.create_future()
            loop.call_soon(io_completes(clock, 10 * MS, fut))
            await fut
            clock.spend_cpu(2 * MS)
            raise KeyError("boom")

        async def cancelled() -> None:
            clock.spend_cpu(MS)
            await asyncio.sleep(3600)

        with pytest.raises(KeyError):
            async with asynclens.span("fails"):
                await asyncio.create_task(failing())
        async with asynclens.span("cancelled"):
            task = asyncio.create_task(cancelled())
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    spans = record(factory, clock, main)
    assert critical(spans["fails"]) == (2 * MS, 0, 0, 10 * MS, 0)
    assert spans["fails"].status == "error"
    # the child's 1 ms of CPU ran while the request was ready (after sleep(0)): starved by its child
    assert critical(spans["cancelled"]) == (0, 0, MS, 0, 0)


def test_a_child_that_outlives_the_request_does_not_explain_it(factory: Any) -> None:
    """Fire-and-forget: the request never waited on it, so none of its time is the request's."""
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def background() -> None:
            clock.spend_cpu(7 * MS)

        async with asynclens.span("request"):
            keep = asyncio.create_task(background())
            fut = loop.create_future()
            loop.call_soon(io_completes(clock, 5 * MS, fut))
            await fut
        await keep

    req = record(factory, clock, main)["request"]
    # the background task ran before the I/O callback: all of it the request's own I/O wait
    assert critical(req) == (0, 0, 0, 12 * MS, 0)
    assert req.own_breakdown is None and req.held_up_by is None


def test_a_wait_on_a_task_that_had_already_run_stays_the_waiters_own(factory: Any) -> None:
    """The waker ran before the wait began: its share of the wait is not known, so the
    wait stays the waiter's I/O (and is counted), rather than a guess."""
    clock = FakeClock()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def early() -> None:
            clock.spend_cpu(MS)
            await fut
            clock.spend_cpu(MS)

        task = asyncio.create_task(early())
        await asyncio.sleep(0)  # the task has run once
        async with asynclens.span("request"):
            loop.call_soon(io_completes(clock, 8 * MS, fut))
            await task

    req = record(factory, clock, main)["request"]
    assert critical(req) == (0, 0, 0, 9 * MS, 0)
