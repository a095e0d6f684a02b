"""The lag probe on real event loops (asyncio and uvloop), with planted stalls.

Real time is involved, so every bound is generous: a planted 300 ms stall must be
found, last at least ~300 ms and less than a second, and name the planted line.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import asynclens
from asynclens.records import LagSnapshot, Stall

try:
    import uvloop  # imported before any session starts, so sessions see its loops
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop not installed"))]
CAN_READ_TASK_CONTEXT = sys.version_info >= (3, 12)


def line_of(func: Callable[..., Any], marker: str) -> int:
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def run(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # BURN
        pass


async def handler() -> None:
    async with asynclens.span("GET /search"):
        await asyncio.sleep(0.03)
        time.sleep(0.3)  # noqa: ASYNC251  # SLEEP
        await asyncio.sleep(0.03)
        burn(0.3)
        await asyncio.sleep(0.03)


async def serve() -> None:
    await asyncio.gather(asyncio.create_task(handler(), name="req-1"), asyncio.sleep(0.05))


def planted_stalls(kind: str, coro: Coroutine[Any, Any, Any]) -> tuple[asynclens.Session, list[Stall]]:
    """Run ``coro`` on a loop of ``kind`` in a session: the session and the planted
    stalls it recorded (the machine may add short ones of its own)."""
    with asynclens.session(sinks=["memory"], stall_threshold=0.05) as s:
        run(kind, coro)
    stalls: list[Stall] = s.sinks[0].of_type(Stall)  # type: ignore[attr-defined]
    return s, [stall for stall in stalls if stall.duration_ns > 200_000_000]


@pytest.mark.parametrize("kind", LOOPS)
def test_planted_stalls_are_found_with_line_task_span_and_cause(kind: str) -> None:
    s, stalls = planted_stalls(kind, serve())
    assert len(stalls) == 2, stalls
    slept, burned = stalls
    assert (slept.file, slept.line, slept.function) == (__file__, line_of(handler, "# SLEEP"), "handler")
    assert (burned.file, burned.line, burned.function) == (__file__, line_of(burn, "# BURN"), "burn")
    for stall in stalls:
        assert 290_000_000 <= stall.duration_ns < 1_000_000_000
        assert stall.sampled and stall.task == "req-1"
        assert stall.detected_ns is not None and stall.detected_ns >= stall.end_ns
        assert any("in handler" in frame for frame in stall.async_stack)
        if kind == "asyncio" or CAN_READ_TASK_CONTEXT:
            assert stall.span_name == "GET /search" and stall.trace_id is not None
    assert slept.cause == "blocking"
    assert burned.cpu_ns is not None and slept.cpu_ns is not None and burned.cpu_ns > 3 * slept.cpu_ns
    assert s.statistics().internal_errors == 0


async def block_at_once() -> None:
    time.sleep(0.3)  # noqa: ASYNC251  # FIRST


@pytest.mark.parametrize("kind", LOOPS)
def test_a_stall_in_a_new_loops_first_step_names_its_line(kind: str) -> None:
    """Every function-scoped pytest-asyncio test starts this way: no tick has run yet."""
    _, stalls = planted_stalls(kind, block_at_once())
    assert len(stalls) == 1, stalls
    assert stalls[0].sampled
    assert (stalls[0].line, stalls[0].function) == (line_of(block_at_once, "# FIRST"), "block_at_once")


@pytest.mark.parametrize("kind", LOOPS)
def test_lag_snapshots_statistics_and_summary(kind: str, tmp_path: Any) -> None:
    path = tmp_path / "run.jsonl"

    async def main() -> None:
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251  # one stall
        await asyncio.sleep(0.05)

    with asynclens.session(sinks=[path, "memory"], lag_interval=0.005) as s:
        run(kind, main())
    run_back = asynclens.read_jsonl(path)
    kinds = [r.kind for r in run_back.records]
    assert "lag" in kinds and kinds.count("stall") >= 1
    snaps = [r for r in run_back.records if isinstance(r, LagSnapshot)]
    assert sum(snap.count for snap in snaps) > 5
    assert all(snap.max_ns >= snap.p99_ns >= snap.p50_ns >= snap.min_ns for snap in snaps)
    assert snaps[-1].elu is not None and 0.0 < snaps[-1].elu <= 1.0
    assert snaps[-1].elu_method == ("select" if kind == "asyncio" else "cpu")
    stats = s.statistics().probes["lag"]
    assert stats.histogram.count == sum(snap.count for snap in snaps)
    assert stats.histogram.max >= 100_000_000  # the tick delayed by the stall
    assert stats.stalls >= 1
    text = s.summary()
    assert "Event loop: " in text and "stall" in text and "ELU" in text and "lag p50" in text
    assert f"test_lag_live.py:{line_of(main, '# one stall')} in main" in text
    assert run_back.end is not None and run_back.end.statistics["probes"]["lag"]["stalls"] >= 1


def test_idle_loop_skips_ticks() -> None:
    """While the default loop just waits in select the monitor does not wake up."""
    with asynclens.session(sinks=["memory"], lag_interval=0.005) as s:
        asyncio.run(asyncio.sleep(0.3))
        stats = s.probe("lag").statistics()
    assert stats.skipped_ticks > 10
    assert stats.histogram.count - stats.skipped_ticks < stats.skipped_ticks
    assert s.probe("lag").watchdog.parks >= 1  # and the watchdog slept too


def test_loops_in_other_threads_and_watch() -> None:
    """A loop started in a thread under the session and one added with watch()
    (started before the session) report their own stalls."""
    ready = threading.Event()
    early = asyncio.new_event_loop()

    def early_thread() -> None:
        asyncio.set_event_loop(early)
        early.call_soon(ready.set)
        early.run_forever()

    t_early = threading.Thread(target=early_thread)
    t_early.start()
    ready.wait(5)

    async def thread_main() -> None:
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # noqa: ASYNC251  # THREAD STALL
        await asyncio.sleep(0.03)

    async def watched_main() -> None:
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # noqa: ASYNC251  # WATCHED STALL
        await asyncio.sleep(0.03)

    holder: dict[str, Any] = {}

    def worker() -> None:
        loop = asyncio.new_event_loop()
        holder["loop"] = loop
        try:
            loop.run_until_complete(thread_main())
        finally:
            loop.close()

    try:
        with asynclens.session(sinks=["memory"]) as s:
            asynclens.watch(early)
            t = threading.Thread(target=worker)
            t.start()
            future = asyncio.run_coroutine_threadsafe(watched_main(), early)
            future.result(10)
            t.join(10)
    finally:
        early.call_soon_threadsafe(early.stop)
        t_early.join(5)
        early.close()
    stalls = [x for x in s.sinks[0].of_type(Stall) if x.duration_ns > 150_000_000]  # type: ignore[attr-defined]
    by_loop = {x.loop_id: x for x in stalls}
    assert by_loop[id(early)].line == line_of(watched_main, "# WATCHED STALL")
    assert by_loop[id(holder["loop"])].line == line_of(thread_main, "# THREAD STALL")
    assert len(stalls) == 2
    assert s.statistics().internal_errors == 0


def test_restarted_loop_pause_is_not_a_stall() -> None:
    """Between two run_until_complete calls the loop is stopped, not stalled."""
    loop = asyncio.new_event_loop()
    try:
        with asynclens.session(sinks=["memory"]) as s:
            loop.run_until_complete(asyncio.sleep(0.02))
            time.sleep(0.2)  # the loop is not running: no stall
            loop.run_until_complete(asyncio.sleep(0.05))
            stats = s.probe("lag").statistics()
    finally:
        loop.close()
    assert stats.stalls == 0
    assert stats.histogram.max < 150_000_000


def test_session_end_restores_the_selector() -> None:
    loop = asyncio.new_event_loop()
    try:
        with asynclens.session(sinks=["memory"]):
            loop.run_until_complete(asyncio.sleep(0.01))
            assert "select" in vars(loop._selector)  # type: ignore[attr-defined]
        assert "select" not in vars(loop._selector)  # type: ignore[attr-defined]
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()


def test_lag_option_off_means_no_probe() -> None:
    with asynclens.session(sinks=["memory"], lag=False) as s:
        assert s.probe("lag") is None


@pytest.mark.asyncio
async def test_session_started_inside_a_running_loop() -> None:
    async with asynclens.session(sinks=["memory"]) as s:
        await asyncio.sleep(0.02)
        time.sleep(0.15)  # noqa: ASYNC251  # INSIDE
        await asyncio.sleep(0.03)
    stalls = [x for x in s.sinks[0].of_type(Stall) if x.duration_ns > 100_000_000]  # type: ignore[attr-defined]
    assert [x.line for x in stalls] == [line_of(test_session_started_inside_a_running_loop, "# INSIDE")]


def test_garbage_collection_stall_is_classified_gc() -> None:
    """A stall spent in a collection (it holds the GIL: no stack can be taken while
    it runs) is still reported, as cause "gc"."""
    window: list[int] = []

    async def main() -> None:
        gc.disable()
        try:
            junk = []
            for _ in range(300_000):
                a: list[Any] = []
                a.append([a])
                junk.append(a)
            keep = [{} for _ in range(300_000)]
            del junk
            await asyncio.sleep(0.03)
            window.append(time.perf_counter_ns())
            gc.collect()
            window.append(time.perf_counter_ns())
            await asyncio.sleep(0.03)
            del keep
        finally:
            gc.enable()

    with asynclens.session(sinks=["memory"], stall_threshold=0.02) as s:
        asyncio.run(main())
    start, end = window
    overlapping = [x for x in s.sinks[0].of_type(Stall) if x.start_ns < end and x.end_ns > start]  # type: ignore[attr-defined]
    if end - start < 25_000_000:
        pytest.skip("the collection was too quick on this machine to be a stall")
    assert len(overlapping) == 1
    assert overlapping[0].cause == "gc" and overlapping[0].gc_ns >= (end - start) // 2
