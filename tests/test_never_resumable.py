"""Tasks that can never be resumed (docs/lints.md): found by reachability on asyncio and
uvloop, with no finding for a clean program, as their own record kind, and failing a
pytest test by default."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens
from asynclens.probes.handles.never_resumable import find_never_resumable
from asynclens.records import Leak, NeverResumable, record_from_dict
from asynclens.testing import capture

pytest_plugins = ["pytester"]


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(autouse=True)
def no_collection() -> Iterator[None]:
    """A never-resumable task is garbage: keep the collector from taking it mid-test."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def run(factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def stuck_on_future() -> None:
    await asyncio.get_running_loop().create_future()


async def stuck_on_event() -> None:
    await asyncio.Event().wait()


async def awaits(task: asyncio.Task[Any]) -> None:
    await task


async def consumer_pair() -> None:
    """A consumer of a queue only its own pair holds: nobody ever puts."""
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def consume() -> None:
        await queue.get()

    await asyncio.create_task(consume(), name="consumer")


async def awaiting(awaitable: Any) -> Any:
    return await awaitable


def names(tasks: list[asyncio.Task[Any]]) -> set[str]:
    return {t.get_name() for t in tasks}


def test_planted_tasks_are_found_and_only_they(factory: Any) -> None:
    """A future, an event or a queue nothing else holds: never resumable, and so are the
    tasks awaiting those tasks; sleeping, held and timed-out waits are not."""
    held: list[Any] = []

    async def held_future() -> None:
        fut = asyncio.get_running_loop().create_future()
        held.append(fut)
        await fut

    async def with_timeout() -> None:
        await asyncio.wait_for(asyncio.get_running_loop().create_future(), 30)

    async def main() -> set[str]:
        loop = asyncio.get_running_loop()
        for coro, name in ((stuck_on_future(), "future"), (stuck_on_event(), "event"), (consumer_pair(), "pair")):
            loop.create_task(coro, name=name)
        inner = loop.create_task(stuck_on_future(), name="inner")
        loop.create_task(awaits(inner), name="outer")
        del inner
        loop.create_task(asyncio.sleep(30), name="sleeps")
        loop.create_task(held_future(), name="held")
        loop.create_task(with_timeout(), name="timeout")
        await asyncio.sleep(0.01)
        found = names(find_never_resumable(loop))
        for task in asyncio.all_tasks(loop) - {asyncio.current_task()}:
            task.cancel()
        await asyncio.sleep(0)
        return found

    assert run(factory, main) == {"future", "event", "pair", "consumer", "inner", "outer"}


def test_a_clean_program_has_no_finding(factory: Any) -> None:
    """Servers, sleeps, gathers, queues, locks, events, executors, threads, subprocesses,
    timeouts: every pending task has someone to resume it."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        queue: asyncio.Queue[int] = asyncio.Queue()
        lock = asyncio.Lock()
        event = asyncio.Event()
        done = loop.create_future()

        async def reads() -> None:
            await reader.read(1)

        async def gets() -> None:
            await queue.get()

        async def locks() -> None:
            async with lock:
                pass

        async def sets_later() -> None:
            await asyncio.sleep(0.2)
            event.set()

        def worker() -> None:
            time.sleep(0.3)
            loop.call_soon_threadsafe(done.set_result, 1)

        async with lock:
            tasks = [
                loop.create_task(reads(), name="reads"),
                loop.create_task(gets(), name="gets"),
                loop.create_task(locks(), name="locks"),
                loop.create_task(event.wait(), name="event"),
                loop.create_task(sets_later(), name="sets"),
                loop.create_task(asyncio.sleep(5), name="sleeps"),
                loop.create_task(awaiting(asyncio.gather(asyncio.sleep(5), event.wait())), name="gathers"),
                loop.create_task(awaiting(loop.run_in_executor(None, time.sleep, 0.3)), name="executor"),
                loop.create_task(asyncio.wait_for(loop.create_future(), 5), name="wait_for"),
                loop.create_task(awaiting(done), name="thread"),
            ]
            threading.Thread(target=worker, daemon=True).start()
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(0.3)")
            tasks.append(loop.create_task(proc.wait(), name="subprocess"))
            await asyncio.sleep(0.05)
            found = sorted(names(find_never_resumable(loop)))
        for task in tasks:
            if task.get_name() in ("sleeps", "gathers", "wait_for"):
                task.cancel()
        queue.put_nowait(1)
        writer.close()
        server.close()
        for end in accepted:  # from 3.12 wait_closed() waits for the server's connections too
            end.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        return found

    assert run(factory, main) == []


def test_the_session_reports_it_as_its_own_kind_not_a_leak(factory: Any) -> None:
    """At the loop's end: a NeverResumable record naming where it waits, where and in which
    span it was made, and no pending-task Leak for it; on demand and in open_handles() too."""
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with asynclens.span("request"):
            asyncio.get_running_loop().create_task(stuck_on_future(), name="stuck")
        asyncio.get_running_loop().create_task(asyncio.sleep(30), name="sleeps")
        await asyncio.sleep(0.01)
        session = asynclens.current_session()
        assert session is not None
        seen["on demand"] = [r.name for r in session.never_resumable()]
        seen["open"] = sorted(h.description for h in session.open_handles() if h.handle_kind == "task")

    with capture(track_handles=True, scheduler=True) as cap:
        loop = factory()
        try:
            loop.run_until_complete(main())
            cap.session.probe("handles").note_abandoned_tasks(loop)  # what asyncio.run() does
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()
    assert seen["on demand"] == ["stuck"]
    sleeps_line, stuck_line = seen["open"]
    assert "can never be resumed" in stuck_line and "can never be resumed" not in sleeps_line
    (record,) = [r for r in cap.records if isinstance(r, NeverResumable)]
    assert (record.name, record.coro, record.span_name, record.waiting_on) == ("stuck", "stuck_on_future", "request", "Future")
    assert record.suspended_at is not None and "stuck_on_future" in record.suspended_at
    assert record.creation_site is not None and record.creation_site.endswith("main")  # qualname from 3.11
    assert record_from_dict(record.to_dict()) == record
    leaked = [r for r in cap.records if isinstance(r, Leak) and r.handle_kind == "task"]
    assert [l.description.split("'")[1] for l in leaked] == ["sleeps"]
    text = cap.session.summary()
    assert "Will never finish: 1 task" in text and "suspended at" in text


def test_a_task_the_collector_destroys_pending_is_found(factory: Any) -> None:
    """Nothing held it, so nothing could have resumed it: reported when the collector takes it."""

    async def main() -> None:
        asyncio.get_running_loop().create_task(stuck_on_future(), name="collected")
        await asyncio.sleep(0)
        gc.collect()

    with capture(track_handles=True) as cap:
        run(factory, main)
    assert [r.name for r in cap.records if isinstance(r, NeverResumable)] == ["collected"]


INNER = '''
import asyncio
import pytest

async def stuck():
    await asyncio.get_running_loop().create_future()

@pytest.mark.asyncio
async def test_leaves_stuck():
    asyncio.get_running_loop().create_task(stuck(), name="stuck")
    await asyncio.sleep(0)

@pytest.mark.asyncio
@pytest.mark.asynclens(never_resumable="ignore")
async def test_ignored():
    asyncio.get_running_loop().create_task(stuck(), name="stuck")
    await asyncio.sleep(0)

@pytest.mark.asyncio
@pytest.mark.asynclens(allow=["never_resumable:stu*"])
async def test_allowed():
    asyncio.get_running_loop().create_task(stuck(), name="stuck")
    await asyncio.sleep(0)

@pytest.mark.asyncio
async def test_clean():
    await asyncio.gather(asyncio.sleep(0.001), asyncio.create_task(asyncio.sleep(0)))
'''


def test_pytest_fails_a_test_on_it_by_default(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("--asynclens", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_stuck*", "*1 task that will never finish*"])
    result.stdout.fnmatch_lines(["*task 'stuck' (stuck) will never finish*created at test_inner.py:*"])
    assert "leaked task" not in result.stdout.str()  # not also a pending-task leak


def test_pytest_ini_turns_it_into_a_warning(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nasynclens_never_resumable = warn\n"
    )
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("--asynclens", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, warnings=1)
    bad = pytester.runpytest("--asynclens", "--asynclens-never-resumable=sometimes", "-p", "no:cacheprovider")
    bad.stderr.fnmatch_lines(["*--asynclens-never-resumable*'sometimes' is not one of fail, warn, ignore*"])


def test_the_findings_reach_every_output(tmp_path: Any) -> None:
    """JSON lines, the text report of the file, the HTML report's notes, the Chrome trace's
    lints track and OTLP spans with an event: never-resumable and busy-yield alike."""
    import json

    from asynclens.sinks._otlp_encode import encode_spans

    async def spinner() -> None:
        for _ in range(150):
            await asyncio.sleep(0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with asynclens.span("request"):
            loop.create_task(stuck_on_future(), name="stuck")
            await loop.create_task(spinner(), name="spinner")

    paths = [tmp_path / "t.jsonl", tmp_path / "t.html", tmp_path / "t.json"]
    with asynclens.session(sinks=[str(p) for p in paths], lag=False):
        asyncio.run(main())
    run_ = asynclens.read_jsonl(str(paths[0]))
    kinds = [r.kind for r in run_.records if r.kind in ("never_resumable", "busy_yield")]
    assert sorted(kinds) == ["busy_yield", "never_resumable"]
    html = paths[1].read_text()
    assert "task &#x27;stuck&#x27; will never finish" in html or "task 'stuck' will never finish" in html
    trace = json.loads(paths[2].read_text())
    lints = [e for e in trace["traceEvents"] if e.get("cat") in ("never_resumable", "busy_yield")]
    assert {e["ph"] for e in lints} == {"i"} and {e["args"]["task"] for e in lints} == {"stuck", "spinner"}
    found = [r for r in run_.records if r.kind in ("never_resumable", "busy_yield")]
    spans = encode_spans(found, resource={})["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert sorted((s["name"], s["events"][0]["name"]) for s in spans) == [
        ("asynclens.busy_yield", "asynclens.busy_yield"),
        ("asynclens.never_resumable", "asynclens.never_resumable"),
    ]
    assert all(s["parentSpanId"] for s in spans)  # under the span that created the task
