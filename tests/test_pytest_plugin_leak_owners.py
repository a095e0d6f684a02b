"""Whose leak is it: a leaked task's creation line and span, handles owned by a loop
or fixture that outlives the test, and ``--asynclens`` judging what a marked test's
own session would (issue 17). Real probes, real pytest-asyncio and anyio loops."""

from __future__ import annotations

import importlib.util

import pytest

pytest_plugins = ["pytester"]

MODES = {"--asynclens": ["--asynclens"], "marker": []}

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this suite may itself run under xdist
    pytester.makeini(INI)
    return pytester


def _source(body: str, mode: str, extra_marks: str = "") -> str:
    """``body`` with the module marked for asynclens when the run is not ``--asynclens``."""
    marks = [m for m in (extra_marks, "pytest.mark.asynclens" if mode == "marker" else "") if m]
    return f"import pytest\npytestmark = [{', '.join(marks)}]\n" + body


def line_of(source: str, comment: str) -> int:
    """The line number of the line of ``source`` that ends with ``# comment``."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.endswith(f"# {comment}"))


def _run(inner: pytest.Pytester, mode: str, *args: str) -> pytest.RunResult:
    return inner.runpytest("-p", "no:randomly", "--asynclens-leaks=fail", *MODES[mode], *args)


# ------------------------------------------------- 1. a leaked task's creation site

LEAKED_TASK = """
import asyncio, asynclens

async def worker():
    await asyncio.sleep(3600)  # where it waits

@pytest.mark.asyncio
async def test_leaky():
    async with asynclens.span("req"):
        asyncio.create_task(worker())  # where it was made
    await asyncio.sleep(0)
"""


@pytest.mark.parametrize("mode", [*MODES, "lens"])
def test_a_leaked_task_is_named_by_its_create_task_line_and_span_then_where_it_waits(
    inner: pytest.Pytester, mode: str
) -> None:
    """Without the scheduler probe (--asynclens, marker) as with it (the lens fixture turns
    it on), like the CLI: the create_task line and the span, then the suspension point."""
    body = (
        LEAKED_TASK.replace("async def test_leaky():", "async def test_leaky(lens):") if mode == "lens" else LEAKED_TASK
    )
    source = _source(body, "marker" if mode == "lens" else mode)
    made, waits = line_of(source, "where it was made"), line_of(source, "where it waits")
    inner.makepyfile(test_tasks=source)
    result = _run(inner, "marker" if mode == "lens" else mode)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaky*",
            "asynclens: 1 leaked handle (leaks='fail'):",
            f"  leaked task 'Task-*' (worker) pending, open for * at test_tasks.py:{made} in test_leaky",
            f"    waiting at test_tasks.py:{waits} in worker",
            "    in span 'req'",
        ]
    )
    result.stdout.fnmatch_lines(
        ["Leaks:", f"  task 'Task-*' (worker) pending, opened at test_tasks.py:{made} in test_leaky [[]span 'req'[]]*"]
    )
    result.stdout.no_fnmatch_line("*in no span*")


def test_an_allow_rule_matches_where_a_leaked_task_waits(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_tasks=_source(LEAKED_TASK, "--asynclens"))
    result = _run(inner, "--asynclens", "--asynclens-allow=leak:test_tasks:worker")
    result.assert_outcomes(passed=1)


# --------------------------------- 2. what a loop or fixture outliving the test owns

EXECUTORS = """
import asyncio, concurrent.futures, time, pytest_asyncio

@pytest.fixture(scope="module")
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        yield executor

@pytest.mark.asyncio{marks}
async def test_to_thread():
    await asyncio.to_thread(time.sleep, 0.001)

@pytest.mark.asyncio{marks}
async def test_run_in_executor():
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.001)

@pytest.mark.asyncio{marks}
async def test_a_module_fixtures_executor(pool):
    await asyncio.get_running_loop().run_in_executor(pool, time.sleep, 0.001)

@pytest.mark.asyncio{marks}
async def test_after():
    await asyncio.sleep(0)

{leaky}
"""

LEAKY_EXECUTOR = """
KEPT = []

@pytest.mark.asyncio{marks}
async def test_its_own_executor_left_running():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="left-running")
    KEPT.append(executor)
    await asyncio.get_running_loop().run_in_executor(executor, time.sleep, 0.001)
"""


@pytest.mark.parametrize("scope", ["function", "class", "module", "package", "session"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_scoped_loops_default_executor_and_a_fixtures_executor_are_no_tests_leak(
    inner: pytest.Pytester, mode: str, scope: str
) -> None:
    """The first test to use to_thread/run_in_executor starts the loop's executor thread
    (asyncio_0); on a loop that outlives the test it is the loop's, as a module fixture's
    executor's threads are the fixture's. An executor the test made and left running is
    still the test's leak."""
    marks = f'(loop_scope="{scope}")' if scope != "function" else ""
    leaky = LEAKY_EXECUTOR.replace("{marks}", marks)
    inner.makeini(INI + f"asyncio_default_test_loop_scope = {scope}\n")
    pkg = inner.mkpydir("pkg")
    body = _source(EXECUTORS.replace("{marks}", marks).replace("{leaky}", leaky), mode)
    (pkg / "test_executors.py").write_text(body)
    result = _run(inner, mode)
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_its_own_executor_left_running*", "  leaked thread 'left-running_0'*"]
    )
    result.stdout.no_fnmatch_line("*asyncio_0*")


ANYIO = """
import asyncio, time, anyio, anyio.to_thread

@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"

@pytest.fixture(scope="module")
async def server():
    yield "up"

async def test_anyio_worker_thread(server):
    await anyio.to_thread.run_sync(time.sleep, 0.001)

async def test_default_executor(server):
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.001)

async def test_without_the_fixture():
    await anyio.to_thread.run_sync(time.sleep, 0.001)

async def test_a_task_group(server):
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)

async def test_leaves_a_task(server):
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="anyio-leak")
"""


@pytest.mark.skipif(importlib.util.find_spec("anyio") is None, reason="anyio is not installed")
@pytest.mark.parametrize("mode", list(MODES))
def test_anyio_runner_task_and_worker_threads_are_no_tests_leak(inner: pytest.Pytester, mode: str) -> None:
    """anyio's pytest plugin keeps one runner (its loop, its task, its worker threads) for
    as long as a module-scoped async fixture lives: none of that is a test's leak."""
    inner.makepyfile(test_anyio=_source(ANYIO, mode, extra_marks="pytest.mark.anyio"))
    result = _run(inner, mode, "-p", "anyio", "-p", "no:asyncio")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_task*",
            "  leaked task 'anyio-leak' (sleep) pending, open for * at test_anyio.py:*",
        ]
    )
    for name in ("AnyIO worker thread", "asyncio_0", "_run_tests_and_fixtures"):
        result.stdout.no_fnmatch_line(f"*{name}*")


# ------------------------------------------- 3. the option and the marker agree

SYNC_TESTS = """
import asyncio, gc

def test_asyncio_run_leaves_a_task():
    async def main():
        asyncio.create_task(asyncio.sleep(3600), name="left-behind")  # left behind
        await asyncio.sleep(0)
    asyncio.run(main())

def test_asyncio_run_cancels_what_it_started():
    async def main():
        task = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()  # asked to stop, not yet done: not a leak
    asyncio.run(main())

def test_a_file_only_the_collector_closes(tmp_path):
    f = open(tmp_path / "x", "w")  # dropped open
    del f
    gc.collect()

def test_clean():
    asyncio.run(asyncio.sleep(0))
"""


@pytest.mark.parametrize("mode", list(MODES))
def test_option_and_marker_judge_a_sync_tests_leaks_alike(inner: pytest.Pytester, mode: str) -> None:
    """A task asyncio.run() had to cancel, and a file only the garbage collector closed,
    fail the sync test that left them, whether its session is the run's or its own."""
    source = _source(SYNC_TESTS, mode)
    inner.makepyfile(test_sync=source)
    result = _run(inner, mode, "-W", "ignore::pytest.PytestUnraisableExceptionWarning")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_asyncio_run_leaves_a_task*",
            (
                "  leaked task 'left-behind' (sleep) still pending when its loop was shut down*"
                f" at test_sync.py:{line_of(source, 'left behind')} in *main"  # a qualname from 3.11
            ),
            "*ERROR at teardown of test_a_file_only_the_collector_closes*",
            (
                "  leaked file * (closed only by the garbage collector), open for *"
                f" at test_sync.py:{line_of(source, 'dropped open')} in test_a_file_only_the_collector_closes"
            ),
        ]
    )
    result.stdout.no_fnmatch_line("Still open when the run's session closed*")


SERVER_HANDLER = """
import asyncio

@pytest.mark.asyncio
async def test_a_handler_left_running():
    async def handle(reader, writer):
        await asyncio.sleep(3600)  # the handler waits

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.01)
    writer.close()
    server.close()
"""


def test_a_task_a_loop_callback_made_is_named_by_the_callback_and_where_it_waits(inner: pytest.Pytester) -> None:
    """asyncio.start_server's connection callback makes the handler's task: its creation
    line is asyncio's, never whoever runs the loop (pytest-asyncio); where it waits is the test's."""
    source = _source(SERVER_HANDLER, "--asynclens")
    inner.makepyfile(test_server=source)
    result = _run(inner, "--asynclens", "-W", "ignore::ResourceWarning")
    result.stdout.fnmatch_lines(
        [
            "  leaked task 'Task-*' (*handle) pending, open for * at */asyncio/streams.py:* in *connection_made*",
            f"    waiting at test_server.py:{line_of(source, 'the handler waits')} in *handle",
        ]
    )
    result.stdout.no_fnmatch_line("*pytest_asyncio*")
