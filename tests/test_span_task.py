"""A span's task is the task running where it starts (or None), whatever loops ran
in the thread before (before 3.12 the thread's loop is remembered, not asked for)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens

NO_PROBES = dict(lag=False, track_handles=False, scheduler=False)


def _task_of_span() -> Any:
    with asynclens.span("x") as sp:
        return sp.task


async def _in_task() -> tuple[Any, Any]:
    return _task_of_span(), asyncio.current_task()


@pytest.mark.parametrize("factory", loop_factories())
def test_task_through_successive_loops_in_one_thread(factory: Any) -> None:
    with asynclens.session(**NO_PROBES):
        assert _task_of_span() is None
        for _ in range(3):
            loop = factory()
            try:
                got, expected = loop.run_until_complete(_in_task())
                assert got is expected and expected is not None
                got2, expected2 = loop.run_until_complete(_in_task())  # the same loop, a new task
                assert got2 is expected2 and got2 is not got
            finally:
                loop.close()
            assert _task_of_span() is None  # no loop running here any more


@pytest.mark.parametrize("factory", loop_factories())
def test_no_task_in_a_plain_callback(factory: Any) -> None:
    async def main() -> list[Any]:
        assert _task_of_span() is asyncio.current_task()
        seen: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        def callback() -> None:
            seen.append(_task_of_span())
            done.set_result(None)

        asyncio.get_running_loop().call_soon(callback)
        await done
        return seen

    loop = factory()
    try:
        with asynclens.session(**NO_PROBES):
            assert loop.run_until_complete(main()) == [None]
    finally:
        loop.close()


def test_no_task_in_another_thread_while_a_loop_runs() -> None:
    async def main() -> list[Any]:
        ours = _task_of_span()
        assert ours is asyncio.current_task()
        other: list[Any] = []
        thread = threading.Thread(target=lambda: other.append(_task_of_span()))
        thread.start()
        thread.join()
        return [ours is asyncio.current_task(), *other]

    with asynclens.session(**NO_PROBES):
        assert asyncio.run(main()) == [True, None]


def test_loops_in_two_threads_each_see_their_own_task() -> None:
    results: dict[str, bool] = {}
    barrier = threading.Barrier(2)

    def run(name: str) -> None:
        async def main() -> bool:
            await asyncio.sleep(0)
            barrier.wait()  # both loops running at once
            ok = all(_task_of_span() is asyncio.current_task() for _ in range(50))
            await asyncio.sleep(0)
            return ok and _task_of_span() is asyncio.current_task()

        results[name] = asyncio.run(main())

    with asynclens.session(**NO_PROBES):
        threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {"a": True, "b": True}


def test_a_closed_loop_is_not_kept_alive() -> None:
    import gc
    import weakref

    with asynclens.session(**NO_PROBES) as s:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_in_task())
        loop.close()
        ref = weakref.ref(loop)
        del loop
        s.flush()  # the buffered live span holds its task, which holds the loop
        gc.collect()
        assert ref() is None


def test_a_loop_now_running_in_another_thread_is_not_this_threads() -> None:
    """The loop this thread ran before runs a task in another thread now: not ours."""
    with asynclens.session(**NO_PROBES):
        loop = asyncio.new_event_loop()
        try:
            got, expected = loop.run_until_complete(_in_task())  # this thread remembers the loop
            assert got is expected
            inside, release = threading.Event(), threading.Event()
            seen: list[Any] = []

            async def hold() -> None:
                seen.append(_task_of_span() is asyncio.current_task())
                inside.set()
                release.wait(30)  # the task stays current on its loop, in the other thread

            thread = threading.Thread(target=loop.run_until_complete, args=(hold(),))
            thread.start()
            try:
                assert inside.wait(30)
                assert _task_of_span() is None
            finally:
                release.set()
                thread.join()
            assert seen == [True]
        finally:
            loop.close()


def test_an_ended_span_keeps_its_tasks_name_and_lets_the_task_go() -> None:
    import gc
    import weakref

    async def work() -> Any:
        with asynclens.span("buffered") as sp:
            await asyncio.sleep(0)
        return sp

    with asynclens.session(**NO_PROBES):
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(work(), name="req-9")
            live = loop.run_until_complete(task)
        finally:
            loop.close()
        gone = weakref.ref(task)
        del task
        gc.collect()
        assert live.task == "req-9"  # still in the session's buffer: the name, not the task
        assert gone() is None
