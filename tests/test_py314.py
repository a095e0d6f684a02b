"""What changed under asynclens in Python 3.14: where the tasks are kept, executors
whose jobs run in other interpreters, and the awaited-by graph behind async stacks.

The task-registry tests run on every Python (the answer must be the same); the
others check the 3.14+ behaviour there and the older one below it.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import concurrent.futures
import math
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import asynclens
from asynclens.probes._tasks import pending_tasks
from asynclens.probes.scheduler.asyncstack import HAS_AWAITED_BY, awaiter_frames, task_stack
from asynclens.records import Leak, Span, Stall
from asynclens.testing import capture

PY314 = sys.version_info >= (3, 14)
needs_314 = pytest.mark.skipif(not PY314, reason="Python 3.14+")
below_314 = pytest.mark.skipif(PY314, reason="before Python 3.14")


def names(stack: Any) -> list[str]:
    """The functions of this file on ``stack``, outermost first."""
    return [frame.rsplit(" in ", 1)[-1] for frame in stack if frame.startswith(__file__ + ":")]


def run_in_new_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# ------------------------------------------------------------- the task registry


def test_pending_tasks_lists_pending_c_and_pure_python_tasks_of_that_loop_only() -> None:
    other = asyncio.new_event_loop()
    elsewhere = other.create_task(asyncio.sleep(0), name="elsewhere")

    async def wait(fut: asyncio.Future[None]) -> None:
        await fut

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        waiting = asyncio.create_task(wait(fut), name="waiting")
        finished = asyncio.create_task(asyncio.sleep(0), name="finished")
        pure = asyncio.tasks._PyTask(wait(fut), loop=loop, name="pure")  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        listed = pending_tasks(loop)
        assert finished.done() and finished not in listed
        assert {waiting, pure, asyncio.current_task()} <= set(listed)
        assert len(listed) == len(set(listed))  # each task once
        assert elsewhere not in listed and elsewhere in pending_tasks(other)
        fut.set_result(None)
        await asyncio.gather(waiting, pure)
        assert waiting not in pending_tasks(loop) and pure not in pending_tasks(loop)

    try:
        run_in_new_loop(main())
        other.run_until_complete(elsewhere)
    finally:
        other.close()


def test_pending_tasks_sees_a_loop_running_in_another_thread() -> None:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    release = asyncio.Event()
    holder: list[asyncio.Task[Any]] = []

    async def main() -> None:
        holder.append(asyncio.create_task(release.wait(), name="in-thread"))
        ready.set()
        await holder[0]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    try:
        assert ready.wait(10)
        assert holder[0] in pending_tasks(loop)  # read from this thread: 3.14 keeps C tasks per thread
    finally:
        loop.call_soon_threadsafe(release.set)
        thread.join(10)
        loop.close()


def test_a_task_left_pending_is_an_open_handle_and_a_leak() -> None:
    async def start() -> asyncio.Task[Any]:
        never = asyncio.get_running_loop().create_future()
        return asyncio.create_task(asyncio.wait_for(never, None), name="forgotten")

    loop = asyncio.new_event_loop()
    task = None
    try:
        with asynclens.session(sinks=["memory"], lag=False, scheduler=False) as session:
            task = loop.run_until_complete(start())
            assert [h.handle_id for h in session.open_handles() if h.handle_kind == "task"] == [id(task)]
        leaks = session.sinks[0].of_type(Leak)  # type: ignore[attr-defined]
        assert [leak.handle_id for leak in leaks if "'forgotten'" in leak.description] == [id(task)], leaks
    finally:
        if task is not None:
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


# ------------------------------------------------- jobs for another interpreter


@needs_314
def test_interpreter_pool_jobs_run_untouched_in_a_session_with_a_span() -> None:
    pool_class = concurrent.futures.InterpreterPoolExecutor  # type: ignore[attr-defined]

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        with pool_class(1) as pool, asynclens.span("request"):
            by_loop = await loop.run_in_executor(pool, math.factorial, 5)
            return by_loop, pool.submit(math.factorial, 6).result(10)

    with asynclens.session(sinks=["memory"]) as session:
        assert run_in_new_loop(main()) == (120, 720)
    assert session.statistics().internal_errors == 0


def test_thread_pool_jobs_still_carry_the_span() -> None:
    seen: list[Any] = []

    def job() -> None:
        with asynclens.span("in-worker") as live:
            seen.append(live)

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, asynclens.span("request"):
            await asyncio.get_running_loop().run_in_executor(pool, job)

    with capture() as cap:
        run_in_new_loop(main())
    spans = {s.name: s for s in cap.records if isinstance(s, Span)}
    assert spans["in-worker"].parent_id == spans["request"].span_id


# ----------------------------------------------------------- async stacks


async def child(entered: threading.Event, release: threading.Event, out: list[Any]) -> None:
    out.append(asyncio.current_task())
    entered.set()
    release.wait(10)  # blocks the loop, as a stall does


async def handler_gather(*args: Any) -> None:
    await asyncio.gather(child(*args), asyncio.sleep(0))


async def handler_taskgroup(*args: Any) -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(child(*args))


async def main(handler: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    await asyncio.create_task(handler(*args), name="handler")


HANDLERS = [
    handler_gather,
    pytest.param(handler_taskgroup, marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup: 3.11+")),
]


def blocked_child_stack(handler: Any, read: Callable[[Any], Any]) -> Any:
    """``read(child_task)`` from another thread while the child blocks its loop (as the watchdog does)."""
    entered, release, out = threading.Event(), threading.Event(), []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(handler, entered, release, out),))
    thread.start()
    try:
        assert entered.wait(10)
        return read(out[0])
    finally:
        release.set()
        thread.join(10)
        loop.close()


@needs_314
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_blocked_childs_awaiters_are_read_from_another_thread(handler: Any) -> None:
    assert names(blocked_child_stack(handler, awaiter_frames)) == ["main", handler.__name__]


@below_314
@pytest.mark.parametrize("handler", HANDLERS)
def test_before_314_no_awaiter_frames_are_claimed(handler: Any) -> None:
    assert not HAS_AWAITED_BY
    assert blocked_child_stack(handler, awaiter_frames) == []


async def pending_child_stack(handler: Any) -> tuple[str, ...]:
    """``task_stack`` of a gather or TaskGroup child waiting on a future (a leak's stack)."""
    never = asyncio.get_running_loop().create_future()
    tasks: list[Any] = []

    async def waiting_child() -> None:
        tasks.append(asyncio.current_task())
        await never

    async def waiting_handler() -> None:
        if handler == "gather":
            await asyncio.gather(waiting_child())
        else:
            async with asyncio.TaskGroup() as group:
                group.create_task(waiting_child())

    async def waiting_main() -> None:
        await asyncio.create_task(waiting_handler())

    outer = asyncio.create_task(waiting_main())
    for _ in range(5):
        await asyncio.sleep(0)
    try:
        return task_stack(tasks[0])
    finally:
        outer.cancel()
        await asyncio.gather(outer, return_exceptions=True)


GROUPINGS = ["gather", pytest.param("taskgroup", marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="3.11+"))]


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_a_pending_childs_stack_goes_up_to_main_from_314_only(grouping: str) -> None:
    stack = run_in_new_loop(pending_child_stack(grouping))
    if PY314:
        assert names(stack) == ["waiting_main", "waiting_handler", "waiting_child"]
    else:  # the old walk: the child's own chain
        assert names(stack) == ["waiting_child"]


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_an_error_in_a_child_has_the_awaiting_chain_first(grouping: str) -> None:
    async def failing() -> None:
        with asynclens.span("inner-op"):
            raise RuntimeError("broken")

    async def failing_handler() -> None:
        if grouping == "gather":
            await asyncio.gather(failing())
        else:
            async with asyncio.TaskGroup() as group:
                group.create_task(failing())

    async def failing_main() -> None:
        await asyncio.create_task(failing_handler())

    with capture(scheduler=True) as cap:
        with pytest.raises(Exception, match="broken|unhandled errors in a TaskGroup"):
            run_in_new_loop(failing_main())
    span = next(s for s in cap.records if isinstance(s, Span) and s.name == "inner-op")
    running = (span.error_stack or "").split("\ntask ")[0].splitlines()  # before the creation chain
    if PY314:
        assert names(running) == ["failing_main", "failing_handler", "failing"]
    else:
        assert names(running) == ["failing"]


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def stalling_child() -> None:
    await asyncio.sleep(0.01)
    burn(0.3)


async def stalling_gather() -> None:
    await asyncio.gather(stalling_child(), asyncio.sleep(0.05))


async def stalling_taskgroup() -> None:
    async with asyncio.TaskGroup() as group:
        group.create_task(stalling_child())


async def stalling_main(handler: Callable[[], Coroutine[Any, Any, None]]) -> None:
    await asyncio.create_task(handler(), name="handler")


@needs_314
@pytest.mark.parametrize("handler", [stalling_gather, stalling_taskgroup])
def test_a_stall_in_a_child_names_the_chain_up_to_main(handler: Any) -> None:
    with asynclens.session(sinks=["memory"], stall_threshold=0.05) as session:
        run_in_new_loop(stalling_main(handler))
    stalls = [s for s in session.sinks[0].of_type(Stall) if s.duration_ns > 200_000_000]  # type: ignore[attr-defined]
    assert len(stalls) == 1, stalls
    assert names(stalls[0].async_stack) == ["stalling_main", handler.__name__, "stalling_child", "burn"]


@below_314
def test_before_314_a_stall_in_a_gather_child_keeps_the_old_walk() -> None:
    with asynclens.session(sinks=["memory"], stall_threshold=0.05) as session:
        run_in_new_loop(stalling_main(stalling_gather))
    stalls = [s for s in session.sinks[0].of_type(Stall) if s.duration_ns > 200_000_000]  # type: ignore[attr-defined]
    assert len(stalls) == 1, stalls
    assert names(stalls[0].async_stack) == ["stalling_child", "burn"]
