"""The resources probe: waits on asyncio locks, semaphores, conditions, events, queues and
barriers, planted on a fake clock, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import asynclens
from asynclens.probes.resources.probe import BACKLOG_MIN_DEPTH, BACKLOG_SAMPLES
from asynclens.records import QueueBacklog, ResourceStats, ResourceWait, record_from_dict
from asynclens.sinks.memory import MemorySink

from loop_kinds import loop_factories

MS = 1_000_000
ONLY = {"lag": False, "track_handles": False, "scheduler": False, "io_rates": False}


def run_planted(factory: Any, body: Callable[[asynclens.FakeClock], Coroutine[Any, Any, Any]], **options: Any) -> tuple[Any, MemorySink]:
    clock = asynclens.FakeClock()
    sink = MemorySink()
    loop = factory()
    try:
        with asynclens.session(sink, clock=clock, **{**ONLY, **options}) as session:
            loop.run_until_complete(body(clock))
    finally:
        loop.close()
    return session, sink


def of(sink: MemorySink, cls: type) -> list[Any]:
    return [r for r in sink.records if isinstance(r, cls)]


async def plant_lock(clock: asynclens.FakeClock) -> None:
    lock = asyncio.Lock()  # line kept as the creation site
    await lock.acquire()

    async def waiter() -> None:
        async with asynclens.span("handler"):
            async with lock:
                pass

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    clock.advance(50 * MS)
    lock.release()
    await task
    async with asynclens.span("holder"):
        async with lock:  # timed: the lock was waited on before
            clock.advance(30 * MS)


@pytest.mark.parametrize("factory", loop_factories())
def test_a_lock_wait_and_the_longest_hold_are_recorded(factory: Any) -> None:
    """A task waiting 50 ms on a Lock: its record names the creation line, the wait, the span;
    the later 30 ms hold is the longest, with its span and line."""
    session, sink = run_planted(factory, plant_lock)
    (stats,) = of(sink, ResourceStats)
    assert (stats.resource_kind, stats.waits, stats.wait_ns, stats.max_wait_ns, stats.max_waiters) == ("Lock", 1, 50 * MS, 50 * MS, 1)
    assert stats.site is not None and "test_resources.py" in stats.site and "plant_lock" in stats.site
    assert (stats.max_hold_ns, stats.holder_span_name) == (30 * MS, "holder")
    assert stats.holder_site is not None and "plant_lock" in stats.holder_site
    (wait,) = of(sink, ResourceWait)
    assert (wait.operation, wait.span_name, wait.duration_ns, wait.cancelled) == ("acquire", "handler", 50 * MS, False)
    assert wait.site is not None and "waiter" in wait.site
    text = session.summary()
    assert "Resource waits: 1 objects waited on" in text
    assert "span 'handler'" in text and "waiting on Lock at" in text


async def plant_semaphore(clock: asynclens.FakeClock, cls: type = asyncio.Semaphore) -> None:
    sem = cls(2)
    await sem.acquire()
    await sem.acquire()
    tasks = [asyncio.create_task(sem.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    for _ in range(3):
        sem.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


async def plant_bounded(clock: asynclens.FakeClock) -> None:
    await plant_semaphore(clock, asyncio.BoundedSemaphore)


async def plant_condition(clock: asynclens.FakeClock) -> None:
    cond = asyncio.Condition()

    async def waiter() -> None:
        async with cond:
            await cond.wait()

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    async with cond:
        cond.notify_all()
    await task


async def plant_event(clock: asynclens.FakeClock) -> None:
    event = asyncio.Event()
    task = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    event.set()
    await task


async def plant_queue_get(clock: asynclens.FakeClock) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    queue.put_nowait(1)
    assert await task == 1


async def plant_queue_put(clock: asynclens.FakeClock) -> None:
    queue: asyncio.PriorityQueue[int] = asyncio.PriorityQueue(maxsize=1)
    queue.put_nowait(1)
    task = asyncio.create_task(queue.put(2))
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    assert queue.get_nowait() == 1
    await task


async def plant_barrier(clock: asynclens.FakeClock) -> None:
    barrier = asyncio.Barrier(2)  # type: ignore[attr-defined,unused-ignore]
    task = asyncio.create_task(barrier.wait())
    await asyncio.sleep(0)
    clock.advance(20 * MS)
    await barrier.wait()
    await task


KINDS = [
    pytest.param(plant_semaphore, "Semaphore", 3, id="Semaphore"),
    pytest.param(plant_bounded, "BoundedSemaphore", 3, id="BoundedSemaphore"),
    pytest.param(plant_condition, "Condition", 1, id="Condition"),
    pytest.param(plant_event, "Event", 1, id="Event"),
    pytest.param(plant_queue_get, "Queue", 1, id="Queue.get"),
    pytest.param(plant_queue_put, "PriorityQueue", 1, id="PriorityQueue.put"),
    pytest.param(
        plant_barrier,
        "Barrier",
        1,
        id="Barrier",
        marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Barrier is 3.11+"),
    ),
]


@pytest.mark.parametrize("factory", loop_factories())
@pytest.mark.parametrize(("plant", "kind", "waiters"), KINDS)
def test_each_kind_of_wait_is_recorded(factory: Any, plant: Any, kind: str, waiters: int) -> None:
    """Each resource kind: the planted 20 ms wait(s), the most waiters at once, its creation line."""
    _, sink = run_planted(factory, plant)
    records = [r for r in of(sink, ResourceStats) if r.resource_kind == kind]
    assert len(records) == 1, of(sink, ResourceStats)
    (stats,) = records
    assert (stats.waits, stats.max_waiters, stats.max_wait_ns) == (waiters, waiters, 20 * MS)
    assert stats.site is not None and plant.__name__ in stats.site or kind == "BoundedSemaphore"
    assert stats.site is not None and "test_resources.py" in stats.site
    if "Queue" in kind:
        assert stats.puts is not None and stats.gets is not None and stats.puts >= 1


@pytest.mark.parametrize("factory", loop_factories())
def test_a_clean_program_has_no_finding(factory: Any) -> None:
    """Locks, queues and events used without waiting: no record, no summary section."""

    async def clean(clock: asynclens.FakeClock) -> None:
        lock, sem, event, queue = asyncio.Lock(), asyncio.Semaphore(), asyncio.Event(), asyncio.Queue()  # type: ignore[var-annotated]
        for i in range(20):
            async with lock, sem:
                queue.put_nowait(i)
                await queue.get()
        event.set()
        await event.wait()

    session, sink = run_planted(factory, clean)
    assert of(sink, ResourceStats) == [] and of(sink, ResourceWait) == [] and of(sink, QueueBacklog) == []
    assert "Resource waits" not in session.summary()
    assert session.statistics().probes["resources"].created["Lock"] >= 1


def test_the_patches_are_removed_and_signatures_kept() -> None:
    """During the session the classes keep their signatures; afterwards they are as before,
    and a lock that was waited on loses its own acquire/release."""
    before = {
        (cls, name): cls.__dict__.get(name)
        for cls in (asyncio.Lock, asyncio.Semaphore, asyncio.Queue, asyncio.Event, asyncio.Condition)
        for name in ("__init__", "put_nowait", "get_nowait", "acquire", "release")
    }
    get_loop = asyncio.mixins._LoopBoundMixin.__dict__["_get_loop"]
    signatures = {k: inspect.signature(v) for k, v in before.items() if v is not None}
    kept: list[Any] = []

    async def body(clock: asynclens.FakeClock) -> None:
        for key, signature in signatures.items():
            assert inspect.signature(getattr(key[0], key[1])) == signature
        await plant_lock(clock)
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        lock.release()
        await waiter
        assert "acquire" in vars(lock) and inspect.iscoroutinefunction(lock.acquire)
        assert inspect.signature(lock.acquire) == inspect.signature(asyncio.Lock().acquire)
        kept.append(lock)

    run_planted(asyncio.new_event_loop, body)
    after = {key: key[0].__dict__.get(key[1]) for key in before}
    assert after == before
    assert asyncio.mixins._LoopBoundMixin.__dict__["_get_loop"] is get_loop
    assert "_get_loop" not in asyncio.Lock.__dict__
    assert "acquire" not in vars(kept[0]) and "release" not in vars(kept[0])


@pytest.mark.parametrize("factory", loop_factories())
def test_a_cancelled_waiter_gets_its_cancellation_unchanged(factory: Any) -> None:
    """Cancelling a task waiting on a lock raises CancelledError in it as without asynclens;
    the wait is counted as cancelled."""
    seen: list[str] = []

    async def body(clock: asynclens.FakeClock) -> None:
        lock = asyncio.Lock()
        await lock.acquire()

        async def waiter() -> None:
            try:
                await lock.acquire()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        clock.advance(5 * MS)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        lock.release()
        async with lock:  # still works
            pass

    _, sink = run_planted(factory, body)
    assert seen == ["cancelled"]
    (stats,) = of(sink, ResourceStats)
    assert (stats.waits, stats.cancelled, stats.waiting_at_end) == (1, 1, 0)


def test_a_growing_queue_is_a_backlog_once_per_episode() -> None:
    """Depth growing at BACKLOG_SAMPLES samples in a row (to BACKLOG_MIN_DEPTH or more): one
    QueueBacklog; staying high adds none; after it fell, growing again is a new episode."""

    async def body(clock: asynclens.FakeClock) -> None:
        probe = asynclens._state.context.active.probe("resources")
        queue: asyncio.Queue[int] = asyncio.Queue()
        step = BACKLOG_MIN_DEPTH
        for round_ in range(2):
            probe.sample_queues()
            for _ in range(BACKLOG_SAMPLES + 2):
                for i in range(step):
                    queue.put_nowait(i)
                clock.advance(1000 * MS)
                probe.sample_queues()
            while not queue.empty():
                queue.get_nowait()
        probe.sample_queues()

    session, sink = run_planted(asyncio.new_event_loop, body, resources=True)
    backlogs = of(sink, QueueBacklog)
    assert len(backlogs) == 2
    first = backlogs[0]
    assert first.samples == BACKLOG_SAMPLES and first.end_depth > first.start_depth >= 0
    assert first.site is not None and "body" in first.site
    (stats,) = of(sink, ResourceStats)
    assert stats.waits == 0 and stats.max_depth == BACKLOG_MIN_DEPTH * (BACKLOG_SAMPLES + 2)
    assert stats.puts == stats.gets == 2 * BACKLOG_MIN_DEPTH * (BACKLOG_SAMPLES + 2)
    assert "BACKLOG: Queue" in session.summary()


def test_the_records_round_trip_through_json() -> None:
    _, sink = run_planted(asyncio.new_event_loop, plant_lock)
    for record in of(sink, ResourceStats) + of(sink, ResourceWait):
        assert record_from_dict(record.to_dict()) == record
        assert record_from_dict(record.to_dict(compact=True)) == record


def test_the_option_turns_the_probe_off() -> None:
    _, sink = run_planted(asyncio.new_event_loop, plant_lock, resources=False)
    assert of(sink, ResourceStats) == []
    assert asyncio.Lock.__init__ is asyncio.Lock.__dict__["__init__"]


def planted_records() -> list[Any]:
    """A lock wait (in span 'handler') and a backlogged queue, recorded on a fake clock."""

    async def body(clock: asynclens.FakeClock) -> None:
        await plant_lock(clock)
        probe = asynclens._state.context.active.probe("resources")
        queue: asyncio.Queue[int] = asyncio.Queue()
        for depth in range(BACKLOG_SAMPLES + 1):
            for _ in range(BACKLOG_MIN_DEPTH):
                queue.put_nowait(depth)
            clock.advance(1000 * MS)
            probe.sample_queues()

    _, sink = run_planted(asyncio.new_event_loop, body)
    assert sink.info is not None
    return [sink.info, *sink.records]


def test_the_chrome_trace_has_a_wait_track_queue_depth_and_backlog() -> None:
    from asynclens.report.rundata import RunData
    from asynclens.sinks.chrome import render_chrome

    records = planted_records()
    data = RunData()
    data.begin(records[0])
    data.add(records[1:])
    events = render_chrome(data)["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert "resource waits" in names
    (wait,) = [e for e in events if e.get("cat") == "resource" and e["ph"] == "X"]
    assert wait["name"] == "wait on Lock" and wait["dur"] == 50_000 and wait["args"]["span"] == "handler"
    assert any(e["ph"] == "C" and e["name"].startswith("queue depth") for e in events)
    assert any(e["ph"] == "i" and e["name"].startswith("backlog: Queue") for e in events)


def test_otlp_has_wait_events_on_their_spans_and_resource_spans() -> None:
    import json

    from asynclens.sinks._otlp_encode import encode_spans, encode_spans_json

    records = planted_records()[1:]
    payload = encode_spans(records, resource={"attributes": []})
    assert json.loads(encode_spans_json(records, resource={"attributes": []}) or "{}") == json.loads(json.dumps(payload))
    spans = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    (handler,) = [s for s in spans if s["name"] == "handler"]
    (event,) = handler["events"]
    assert event["name"] == "asynclens.resource_wait"
    names = {s["name"] for s in spans}
    assert {"asynclens.resource_wait Lock", "asynclens.resource Lock", "asynclens.queue_backlog"} <= names
