"""Parent/child across await, tasks, gather, TaskGroup, to_thread and executors."""

from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import asynclens
from asynclens.testing import capture


@asynclens.trace
async def leaf(tag: str) -> str:
    await asyncio.sleep(0)
    return tag


@asynclens.trace
def sync_leaf(tag: str) -> str:
    return tag


def _by_name(spans):  # type: ignore[no-untyped-def]
    return {s.name: s for s in spans}


@pytest.mark.asyncio
async def test_await_create_task_and_gather_parent_correctly() -> None:
    with capture() as cap:
        async with asynclens.span("root") as root:
            await leaf("awaited")
            task = asyncio.create_task(asynclens.trace(name="tasked")(leaf)("t"))
            await task
            await asyncio.gather(asynclens.trace(name="g1")(leaf)("a"), asynclens.trace(name="g2")(leaf)("b"))
    spans = cap.spans
    root_rec = _by_name(spans)["root"]
    assert root_rec.span_id == root.span_id
    for name in ("tasked", "g1", "g2"):
        outer = _by_name(spans)[name]
        assert outer.parent_id == root_rec.span_id, name
        assert outer.trace_id == root_rec.trace_id
    leaves = [s for s in spans if s.name.endswith("leaf")]
    assert len(leaves) == 4
    assert {s.trace_id for s in spans} == {root_rec.trace_id}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
@pytest.mark.asyncio
async def test_taskgroup_children_parent_to_enclosing_span() -> None:
    with capture() as cap:
        async with asynclens.span("root"):
            async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
                tg.create_task(leaf("x"))
                tg.create_task(leaf("y"))
    *children, root = cap.spans
    assert len(children) == 2
    assert all(c.parent_id == root.span_id for c in children)


@pytest.mark.asyncio
async def test_to_thread_and_run_in_executor_carry_the_span() -> None:
    loop = asyncio.get_running_loop()
    with capture() as cap:
        async with asynclens.span("root"):
            assert await asyncio.to_thread(sync_leaf, "to_thread") == "to_thread"
            assert await loop.run_in_executor(None, sync_leaf, "default") == "default"
            with ThreadPoolExecutor(1) as pool:
                assert await loop.run_in_executor(pool, sync_leaf, "pool") == "pool"
    *leaves, root = cap.spans
    assert len(leaves) == 3
    assert all(s.parent_id == root.span_id for s in leaves)
    assert all(s.thread_id != threading.get_ident() for s in leaves)


@pytest.mark.asyncio
async def test_executor_exceptions_and_results_pass_through() -> None:
    loop = asyncio.get_running_loop()

    def fails() -> None:
        raise LookupError("from worker")

    with capture():
        async with asynclens.span("root"):
            with pytest.raises(LookupError, match="from worker"):
                await loop.run_in_executor(None, fails)


@pytest.mark.asyncio
async def test_executor_patch_removed_after_session() -> None:
    original = ThreadPoolExecutor.submit
    with capture():
        assert ThreadPoolExecutor.submit is not original
    assert ThreadPoolExecutor.submit is original
    assert "submit" in ThreadPoolExecutor.__dict__


def test_plain_threads_record_root_spans() -> None:
    """A session records the whole process: a new thread's span is a root there."""
    with capture() as cap:
        with asynclens.span("main"):
            thread = threading.Thread(target=sync_leaf, args=("t",))
            thread.start()
            thread.join()
    leaf_rec, main = cap.spans
    assert leaf_rec.parent_id is None and leaf_rec.trace_id != main.trace_id


def test_concurrent_threads_record_every_span() -> None:
    """The buffer takes spans from many threads at once without losing any."""
    per_thread, threads = 2000, 4

    def work() -> None:
        for _ in range(per_thread):
            sync_leaf("x")

    with capture(flush_interval=0.001) as cap:
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    assert len(cap.spans) == per_thread * threads
    assert cap.session.statistics().records_dropped == 0
