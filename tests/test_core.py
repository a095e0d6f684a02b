"""The compiled core (``asynclens._core``) against the pure-Python implementation.

Both implement the scheduler probe's hot paths (``StepCall``, the call_soon hooks, the
task and loop fields): the records they produce must be identical, their types must
behave alike, neither may ever raise into the program, and the C one must not leak.
Tests that need the compiled core in this process skip when it is not the one running
(``ASYNCLENS_PURE_PYTHON=1``, or no build); the subprocess tests need it importable only.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import weakref
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import FunctionType
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens
from asynclens import FakeClock, Session, Sink
from asynclens._native import core
from asynclens.probes.scheduler import hooks
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.probes.scheduler.stepcall import PyStepCall
from asynclens.probes.scheduler.steps import ATTR, LoopState, StepCall, TaskState
from asynclens.records import TaskRecord
from asynclens.testing import capture

MS = 1_000_000
REPO = Path(asynclens.__file__).resolve().parent.parent
IN_PROCESS_C = asynclens.IMPLEMENTATION == "c"
needs_c = pytest.mark.skipif(
    not IN_PROCESS_C, reason=f"the compiled core is not the implementation running here ({asynclens.IMPLEMENTATION})"
)


def core_import_error() -> str | None:
    """Why ``asynclens._core`` cannot be imported here, or None when it can."""
    try:
        importlib.import_module("asynclens._core")
    except ImportError as exc:
        return f"asynclens._core cannot be imported in this environment ({exc})"
    return None


def child_env(implementation: str) -> dict[str, str]:
    """The environment of a child process that runs ``implementation`` ("c" or "python")."""
    env = {k: v for k, v in os.environ.items() if k not in ("ASYNCLENS_PURE_PYTHON", "PYTHONWARNINGS")}
    if implementation == "python":
        env["ASYNCLENS_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONHASHSEED"] = "0"
    return env


def run_child(args: list[str], implementation: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=child_env(implementation),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


# ------------------------------------------------------- 1. identical records

def eager_runs(loop_kind: str) -> bool:
    """Whether the scenario runs its eager-task part: from 3.12, and on uvloop from 3.14 (on
    3.13, uvloop passes ``eager_start`` to the task factory, which 3.13's eager_task_factory
    rejects). The scenario script gets this function's source."""
    return sys.version_info >= (3, 12) and (loop_kind != "uvloop" or sys.version_info >= (3, 14))


#: Deterministic scenarios on a fake clock; prints the implementation, the results and the
#: probe's statistics, and every record normalised (ids renamed, thread ids dropped) as JSON.
SCENARIO = r'''
import asyncio
import json
import sys
import threading

import asynclens
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import ExecutorJob, SchedSnapshot, Span, TaskRecord, TaskStep
from asynclens.testing import FakeClock, capture, normalise

MS = 1_000_000
loop_kind, probe_kind = sys.argv[1], sys.argv[2]
clock = FakeClock()


def io_completes(ns, *futures, value=None):
    """A plain callback: ns of I/O pass, then the futures resolve (no task woke them)."""

    def done():
        clock.advance(ns)
        for fut in futures:
            if not fut.done():
                fut.set_result(value)

    return done


@asynclens.trace(name="db.query")
async def query(ms):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(io_completes(ms * MS, fut, value=ms))
    clock.spend_cpu(MS)
    return await fut


@asynclens.trace(name="handler")
async def handler():
    clock.spend_cpu(2 * MS)
    rows = await query(5)
    await asyncio.sleep(0)
    clock.spend_cpu(MS)
    return rows


async def victim_and_staller():
    """I/O until a future is set, then starved while the task that set it holds the loop."""
    fut = asyncio.get_running_loop().create_future()

    async def victim():
        async with asynclens.span("victim"):
            clock.spend_cpu(5 * MS)
            await fut
            clock.spend_cpu(3 * MS)

    async def staller():
        await asyncio.sleep(0)
        clock.advance(100 * MS)
        fut.set_result(None)
        clock.spend_cpu(30 * MS)

    await asyncio.gather(asyncio.ensure_future(victim()), asyncio.ensure_future(staller()))


async def gathering_parent():
    loop = asyncio.get_running_loop()

    async def child(burn, wait):
        async with asynclens.span(f"child-{burn}"):
            fut = loop.create_future()
            loop.call_soon(io_completes(wait * MS, fut))
            await fut
            clock.spend_cpu(burn * MS)
            return burn

    async with asynclens.span("parent"):
        tasks = [loop.create_task(child(b, w), name=f"child-{b}") for b, w in ((1, 10), (4, 3), (2, 7))]
        return await asyncio.gather(*tasks)


async def failing_and_cancelled():
    loop = asyncio.get_running_loop()

    async def fails():
        async with asynclens.span("fails"):
            clock.spend_cpu(MS)
            await asyncio.sleep(0)
            raise KeyError("boom")

    async def forever():
        async with asynclens.span("forever"):
            await loop.create_future()

    async with asynclens.span("supervisor"):
        bad = loop.create_task(fails(), name="fails")
        stuck = loop.create_task(forever(), name="forever")
        await asyncio.sleep(0)
        clock.advance(4 * MS)
        stuck.cancel()
        outcomes = await asyncio.gather(bad, stuck, return_exceptions=True)
        return [type(o).__name__ for o in outcomes]


async def late_timer():
    """A sleep whose timer fires late, behind a step that ran 5 ms: it was ready when due."""

    async def sleeper():
        async with asynclens.span("sleeper"):
            await asyncio.sleep(0.001)
            clock.spend_cpu(MS)

    async def hog():  # its first step runs right after the sleeper's, before any timer
        clock.spend_cpu(5 * MS)

    await asyncio.gather(sleeper(), hog())


async def executor_work():
    suspended = threading.Event()

    def blocking():
        suspended.wait(60)  # let the submitting step end first: fake time is shared
        clock.advance(30 * MS)
        return "pooled"

    async with asynclens.span("offload"):
        loop = asyncio.get_running_loop()
        loop.call_soon(suspended.set)
        clock.spend_cpu(MS)
        return await loop.run_in_executor(None, blocking)


async def eager():
    loop = asyncio.get_running_loop()

    async def child():
        clock.spend_cpu(4 * MS)
        await asyncio.sleep(0)
        clock.spend_cpu(MS)

    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        async with asynclens.span("eager-parent"):
            clock.spend_cpu(MS)
            task = asyncio.create_task(child(), name="eager-child")
            clock.spend_cpu(MS)
            await task
    finally:
        loop.set_task_factory(None)


async def main():
    results = {}
    results["handler"] = await asyncio.create_task(handler(), name="handler")
    await asyncio.create_task(victim_and_staller(), name="victim-and-staller")
    results["gather"] = await gathering_parent()
    results["failures"] = await failing_and_cancelled()
    await late_timer()
    results["executor"] = await executor_work()
    if eager_runs(loop_kind):
        await eager()
    return results


def new_loop():
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if loop_kind == "custom":  # a stdlib loop with its own call_soon: the public call_soon hook

        class CustomSoon(asyncio.SelectorEventLoop):
            def call_soon(self, callback, *args, context=None):
                return super().call_soon(callback, *args, context=context)

        return CustomSoon()
    return asyncio.new_event_loop()


if probe_kind == "cpu-and-steps":  # the thread CPU clock and TaskStep records: TaskState.end every step
    probe = SchedulerProbe(task_records="all", gc=False, thread_cpu=True, record_steps=10_000)
elif probe_kind == "notable":  # the default records: quick tasks only counted, long ones within a budget
    probe = SchedulerProbe(gc=False, notable=0.01, notable_per_second=1)
else:
    probe = SchedulerProbe(task_records="all", gc=False)

with capture(clock=clock, probes=[probe]) as cap:
    loop = new_loop()
    try:
        results = loop.run_until_complete(main())
    finally:
        loop.close()
records = cap.records
stats = dict(probe.statistics())

ids = {}


def rename(prefix, value):
    if value is None:
        return None
    key = (prefix, value)
    if key not in ids:
        ids[key] = f"{prefix}{sum(1 for k in ids if k[0] == prefix) + 1}"
    return ids[key]


spans = [r for r in records if isinstance(r, Span)]
span_dicts = {}
for span, data in zip(spans, normalise(spans)):  # keep the names normalise() gave
    span_dicts[id(span)] = data
    ids.setdefault(("s", span.span_id), data["span_id"])
    ids.setdefault(("t", span.trace_id), data["trace_id"])
    if span.parent_id is not None:
        ids.setdefault(("s", span.parent_id), data["parent_id"])
    for link, name in zip(span.links, data["links"]):
        ids.setdefault(("s", link), name)

# Task ids are addresses, reused once a task is gone: a task is named by its (unique) name;
# its steps come before its record, which every task gets (finished, or pending at the end).
step_owner = {}
pending_steps = {}
for record in records:
    if isinstance(record, TaskStep):
        pending_steps.setdefault(record.task_id, []).append(id(record))
    elif isinstance(record, TaskRecord):
        for step in pending_steps.pop(record.task_id, ()):
            step_owner[step] = record.name

out = []
for record in records:
    data = record.to_dict()
    if isinstance(record, Span):
        data = span_dicts[id(record)]
    elif isinstance(record, TaskRecord):
        data.update(
            task_id=record.name,
            parent_task_id=record.parent_task_id is not None,
            loop_id=rename("loop", record.loop_id),
            trace_id=rename("t", record.trace_id),
            span_id=rename("s", record.span_id),
        )
    elif isinstance(record, TaskStep):
        data.update(task_id=step_owner.get(id(record), "?"), span_id=rename("s", record.span_id))
    elif isinstance(record, ExecutorJob):
        data.update(
            thread_id=None,
            executor_id=rename("executor", record.executor_id),
            trace_id=rename("t", record.trace_id),
            span_id=rename("s", record.span_id),
        )
    elif isinstance(record, SchedSnapshot):
        data.update(loop_id=rename("loop", record.loop_id))
    else:
        continue  # the session's header and end: ids, pids and wall times
    out.append(data)

print(json.dumps(
    {"implementation": asynclens.IMPLEMENTATION, "results": results, "stats": stats, "records": out},
    sort_keys=True,
    default=repr,
))
'''


def uvloop_param() -> Any:
    (param,) = [p for p in loop_factories() if p.id == "uvloop"]
    return pytest.param("uvloop", id="uvloop", marks=param.marks)


@pytest.mark.parametrize("probe_kind", ["all-tasks", "cpu-and-steps", "notable"])
@pytest.mark.parametrize("loop_kind", ["asyncio", "custom", uvloop_param()])
def test_both_implementations_record_the_same(tmp_path: Path, loop_kind: str, probe_kind: str) -> None:
    """The same fake-clock program, run once on each implementation, gives identical records:
    spans with their breakdown (CPU, starved, I/O, executor, critical path), task records
    (with where and by whom each task was created), task steps, executor jobs, the loop's
    snapshot and the probe's statistics. ``custom`` is a stdlib loop with its own ``call_soon``
    (the public hook; stdlib loops get the private one). ``notable`` records only the tasks
    that failed, were cancelled or were long, one of the long ones a second: the others are
    counted, in C when the compiled core runs."""
    reason = core_import_error()
    if reason is not None:
        pytest.skip(reason)
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO.replace("\nMS = 1_000_000\n", "\nMS = 1_000_000\n" + inspect.getsource(eager_runs), 1))
    outputs = {}
    for implementation in ("c", "python"):
        proc = run_child([str(script), loop_kind, probe_kind], implementation, tmp_path)
        assert proc.returncode == 0, proc.stderr
        outputs[implementation] = json.loads(proc.stdout)
        assert outputs[implementation].pop("implementation") == implementation
    c, py = outputs["c"], outputs["python"]
    for key in ("results", "stats"):
        assert c[key] == py[key], key
    assert len(c["records"]) == len(py["records"])
    for i, (from_c, from_py) in enumerate(zip(c["records"], py["records"])):
        assert from_c == from_py, f"record {i}"

    # not trivially equal: the program ran, and the probe measured what it should
    assert c["results"] == {"handler": 5, "gather": [1, 4, 2], "failures": ["KeyError", "CancelledError"],
                            "executor": "pooled"}  # fmt: skip
    if probe_kind == "notable":
        stats, recorded = c["stats"], {r["name"]: r["state"] for r in c["records"] if r["kind"] == "task"}
        assert recorded["fails"] == "error" and recorded["forever"] == "cancelled"
        assert stats["tasks_unrecorded"] > stats["tasks_over_budget"] > 0 and "done" in recorded.values()
        assert stats["tasks_finished"] == stats["tasks_tracked"] - len(
            [r for r in c["records"] if r["kind"] == "task" and r["state"] == "pending"])
        return
    spans = {r["name"]: r for r in c["records"] if r["kind"] == "span"}
    tasks = {r["name"]: r for r in c["records"] if r["kind"] == "task"}
    expected_spans = {"handler", "db.query", "victim", "parent", "child-1", "child-2", "child-4", "fails", "forever",
                      "supervisor", "sleeper", "offload"}  # fmt: skip
    if eager_runs(loop_kind):
        expected_spans.add("eager-parent")
    assert set(spans) == expected_spans
    for span in spans.values():
        parts = (span["cpu_ns"], span["sched_wait_ns"], span["io_wait_ns"], span["executor_ns"], span["blocked_ns"])
        assert None not in parts and span["steps"], span
        assert sum(parts) == span["end_ns"] - span["start_ns"], span
    victim = spans["victim"]
    # its own task: 8 ms CPU, 30 ms starved by the staller that set its future, 100 ms of I/O
    assert victim["own_breakdown"] == [8 * MS, 0, 30 * MS, 100 * MS, 0]
    assert "staller" in victim["held_up_by"]
    assert (spans["db.query"]["cpu_ns"], spans["db.query"]["io_wait_ns"]) == (MS, 5 * MS)
    assert spans["db.query"]["parent_id"] == spans["handler"]["span_id"]
    assert spans["offload"]["executor_ns"] == 30 * MS
    # the timer was due after 1 ms, fired 4 ms late: ready (not waiting for I/O) from then on
    assert (spans["sleeper"]["sched_wait_ns"], spans["sleeper"]["io_wait_ns"]) == (4 * MS, MS)
    assert c["stats"]["timer_lateness"]["max"] == 4 * MS
    assert spans["parent"]["io_wait_ns"] > 0 and spans["parent"]["held_up_by"] is not None
    assert (spans["fails"]["status"], spans["forever"]["status"]) == ("error", "cancelled")
    assert (tasks["fails"]["state"], tasks["forever"]["state"], tasks["handler"]["state"]) == (
        "error", "cancelled", "done")  # fmt: skip
    assert tasks["child-4"]["run_ns"] == 4 * MS and tasks["child-4"]["io_wait_ns"] > 0
    assert tasks["child-4"]["parent_task"] == "Task-1" and tasks["child-4"]["span_name"] == "parent"
    assert any(t["executor_ns"] == 30 * MS for t in tasks.values())
    assert c["stats"]["steps"] > 20 and c["stats"]["tasks_tracked"] == len(tasks)
    assert c["stats"]["internal_errors"] == 0
    assert [r["kind"] for r in c["records"]].count("sched") == 1
    if probe_kind == "cpu-and-steps":
        steps = [r for r in c["records"] if r["kind"] == "step"]
        assert len(steps) == c["stats"]["steps"] and "?" not in {s["task_id"] for s in steps}
        assert tasks["child-4"]["cpu_ns"] == 4 * MS


# ------------------------------------------------------- 2. the types behave alike


class FakeProbe:
    """Stands in for SchedulerProbe under a bare LoopState: collects what it is told."""

    def __init__(self) -> None:
        self.finished: list[tuple[Any, str, int]] = []
        self.errors: list[tuple[str, BaseException]] = []

    def task_finished(self, st: Any, state: str, t: int) -> None:
        self.finished.append((st, state, t))

    def emit(self, record: Any) -> None:
        pass

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.errors.append((where, exc))

    def _snapshot(self, ls: LoopState, t: int) -> None:
        ls.window(t)


class FakeTask:
    """A task-like owner of a wake-up callback: done after ``steps`` calls of ``step``."""

    def __init__(self, steps: int = 1) -> None:
        self.left = steps
        self._exception: BaseException | None = None

    def step(self, *args: Any) -> Any:
        self.left -= 1
        return args

    def done(self) -> bool:
        return self.left <= 0

    def cancelled(self) -> bool:
        return False


STEP_CALLS = [
    pytest.param(PyStepCall, id="python"),
    pytest.param(core.StepCall if core is not None else None, id="c", marks=needs_c),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=10 * MS)


@pytest.fixture
def loop_state(clock: FakeClock) -> LoopState:
    return LoopState(FakeProbe(), object(), clock.now_ns, None)


@pytest.mark.parametrize("step_call", STEP_CALLS)
def test_a_step_call_passes_the_return_value_and_arguments_through(
    step_call: Any, clock: FakeClock, loop_state: LoopState
) -> None:
    st = TaskState(loop_state, clock.now_ns())
    task = FakeTask(steps=2)
    arg, result = object(), object()

    def callback(*args: Any) -> Any:
        assert len(args) == 1 and args[0] is arg
        assert loop_state.running is st  # timed as the task's step
        clock.spend_cpu(MS)
        task.left -= 1
        return result

    call = step_call(callback, st, task)
    assert call(arg) is result
    assert (call.callback, call.st, call.task) == (None, None, None)  # lets go of what it ran
    assert (st.steps, st.run_ns, loop_state.running) == (1, MS, None)
    assert loop_state.probe.errors == []


@pytest.mark.parametrize("step_call", STEP_CALLS)
@pytest.mark.parametrize("error_type", [ValueError, KeyboardInterrupt, asyncio.CancelledError])
def test_a_step_call_passes_the_callbacks_exception_through_unchanged(
    step_call: Any, error_type: type[BaseException], clock: FakeClock, loop_state: LoopState
) -> None:
    st = TaskState(loop_state, clock.now_ns())
    task = FakeTask()
    error = error_type("planted")

    def failing_step() -> None:
        clock.spend_cpu(MS)
        task.left = 0
        raise error

    with pytest.raises(error_type) as info:
        step_call(failing_step, st, task)()
    assert info.value is error
    assert error.__context__ is None and error.__cause__ is None
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "failing_step"
    # and the step was still accounted, the task finished
    assert (st.steps, st.run_ns, loop_state.running) == (1, MS, None)
    assert [state for _, state, _ in loop_state.probe.finished] == ["done"]
    assert loop_state.probe.errors == []


@pytest.mark.parametrize("step_call", STEP_CALLS)
def test_a_step_call_whose_bookkeeping_fails_still_passes_the_exception_through(
    step_call: Any, clock: FakeClock, loop_state: LoopState
) -> None:
    """The clock fails while a step raises: the program sees its own exception, untouched
    (no ``__context__`` from the bookkeeping); the probe is told of the clock's."""
    st = TaskState(loop_state, clock.now_ns())
    error = LookupError("the program's")
    broken = RuntimeError("the clock's")
    failing = False

    def failing_clock() -> int:
        if failing:
            raise broken
        return clock.now_ns()

    def failing_step() -> None:
        nonlocal failing
        failing = True  # from the step's end on
        raise error

    loop_state.now = failing_clock

    with pytest.raises(LookupError) as info:
        step_call(failing_step, st, FakeTask())()
    assert info.value is error and error.__context__ is None
    assert loop_state.probe.errors == [("timing a task step", broken)]


@pytest.mark.parametrize("step_call", STEP_CALLS)
def test_a_step_call_looks_like_its_callback(step_call: Any, clock: FakeClock, loop_state: LoopState) -> None:
    """asyncio's handle reprs and slow-callback warnings read __self__, __qualname__ and repr."""
    task = FakeTask()
    call = step_call(task.step, TaskState(loop_state, clock.now_ns()), task)
    assert repr(call) == repr(task.step)
    assert call.__self__ is task
    assert call.__qualname__ == "FakeTask.step"
    assert call.__func__ is FakeTask.step
    assert call.callback == task.step and call.task is task
    with pytest.raises(AttributeError):
        call.no_such_attribute  # noqa: B018


@pytest.mark.parametrize("step_call", STEP_CALLS)
def test_a_step_call_on_an_inactive_loop_just_calls(step_call: Any, clock: FakeClock, loop_state: LoopState) -> None:
    loop_state.active = False
    st = TaskState(loop_state, clock.now_ns())
    sentinel = object()
    assert step_call(lambda: sentinel, st, FakeTask())() is sentinel
    assert (st.steps, st.run_ns, loop_state.running) == (0, 0, None)


@needs_c
@pytest.mark.parametrize("st", [None, object()], ids=["None", "not-a-task-state"])
def test_a_c_step_call_without_a_task_state_just_calls(st: Any) -> None:
    """The C StepCall checks what it was given: without a TaskFields it is a plain call.
    (The Python one is only ever scheduled with a TaskState: it reads ``st.ls`` at once.)"""
    assert core is not None
    sentinel = object()
    error = KeyError("k")

    def raising() -> None:
        raise error

    assert core.StepCall(lambda *a: (sentinel, a), st, None)(1, 2) == (sentinel, (1, 2))
    with pytest.raises(KeyError) as info:
        core.StepCall(raising, st, None)()
    assert info.value is error


@pytest.mark.parametrize("step_call", STEP_CALLS)
def test_a_scheduled_step_call_in_a_reference_cycle_is_collected(step_call: Any, clock: FakeClock) -> None:
    """A task dropped while its wake-up is scheduled: task -> state -> its StepCall -> the
    task's callback and state again. The cycle collector sees through the C types too."""
    ls = LoopState(FakeProbe(), object(), clock.now_ns, None)
    st = TaskState(ls, clock.now_ns())
    task = FakeTask()
    task.state = st  # type: ignore[attr-defined]
    st.call = step_call(task.step, st, task)
    st.outer = st
    ls.running = st
    refs: list[weakref.ref[Any]] = [weakref.ref(st), weakref.ref(ls)]
    del ls, st, task
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def hook_implementations() -> list[Any]:
    return [pytest.param("python", id="python-hooks"), pytest.param("c", id="c-hooks", marks=needs_c)]


@pytest.fixture(params=hook_implementations())
def hook_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which call_soon hooks the scheduler installs on the loops made in the test."""
    if request.param == "python":
        monkeypatch.setattr(hooks, "core", None)
    return str(request.param)


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


def run_loop(factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``main()`` run on a new loop; a wake-up lost to a failing hook fails the test instead of hanging it."""
    loop = factory()
    try:
        loop.call_later(120, loop.stop)  # timers and stop() need no call_soon
        return loop.run_until_complete(main())
    finally:
        loop.close()


def the_hook(loop: Any) -> Any:
    """The call_soon hook the scheduler installed on ``loop`` (an instance attribute)."""
    installed = getattr(loop, "__dict__", {})
    return installed.get("_call_soon") or installed.get("call_soon") or loop.call_soon


def test_hooked_loops_keep_the_programs_coroutines_results_and_cancellations(factory: Any, hook_kind: str) -> None:
    """Under a session, a task is still the program's: ``get_coro()`` is its coroutine, a
    value it returns (or a future's result) reaches its awaiter as the same object, its
    exception too, and cancelling it raises CancelledError in it and in its awaiter."""
    sentinel = object()
    error = ValueError("the task's own")
    seen: dict[str, Any] = {}

    async def worker(fut: asyncio.Future[Any]) -> Any:
        seen["coro_during"] = asyncio.current_task().get_coro()  # type: ignore[union-attr]
        value = await fut
        await asyncio.sleep(0)
        return value

    async def fails() -> None:
        await asyncio.sleep(0)
        raise error

    async def stuck(started: asyncio.Future[None]) -> None:
        started.set_result(None)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError as exc:
            seen["cancel_args"] = exc.args
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hook = the_hook(loop)
        seen["hook"] = hook
        fut = loop.create_future()
        coro = worker(fut)
        task = loop.create_task(coro, name="worker")
        assert task.get_coro() is coro
        loop.call_soon(fut.set_result, sentinel)
        assert await task is sentinel
        assert task.get_coro() is coro and seen["coro_during"] is coro
        assert task.result() is sentinel
        failing = loop.create_task(fails())
        with pytest.raises(ValueError) as info:
            await failing
        assert info.value is error
        started = loop.create_future()
        victim = loop.create_task(stuck(started))
        await started
        victim.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert victim.cancelled()
        gathered = await asyncio.gather(*(worker(done_future(loop, i)) for i in range(3)))
        assert gathered == [0, 1, 2]

    probe = SchedulerProbe(task_records="all", gc=False)
    with capture(clock=FakeClock(), probes=[probe]) as cap:
        run_loop(factory, main)
    if hook_kind == "c":
        assert type(seen["hook"]) is core.CallSoonHook  # type: ignore[union-attr]
    else:  # the Python closures
        assert isinstance(seen["hook"], FunctionType) and seen["hook"].__name__ in ("_call_soon", "call_soon")
    assert seen["cancel_args"] == ("stop",)
    states = {r.name: r.state for r in cap.records if isinstance(r, TaskRecord)}
    assert states["worker"] == "done" and sorted(states.values()).count("cancelled") == 1
    assert probe.statistics()["steps"] > 10 and probe.internal_errors == 0


def done_future(loop: asyncio.AbstractEventLoop, value: Any) -> asyncio.Future[Any]:
    fut = loop.create_future()
    loop.call_soon(fut.set_result, value)
    return fut


@pytest.mark.parametrize("loop_cls", ["stdlib", "custom"])
def test_a_hooked_loop_dropped_without_removing_its_hooks_is_collected(loop_cls: str, hook_kind: str) -> None:
    """loop -> its call_soon hook -> the loop's state -> the hooks it installed: a cycle
    the collector frees (the C hook's references are visible to it)."""

    class CustomSoon(asyncio.SelectorEventLoop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:  # type: ignore[override]
            return super().call_soon(callback, *args, context=context)

    loop = CustomSoon() if loop_cls == "custom" else asyncio.SelectorEventLoop()
    loop.close()  # its selector and sockets go; the object stays
    ls = LoopState(FakeProbe(), loop, FakeClock().now_ns, None)
    ls.install(loop)
    setattr(loop, ATTR, ls)
    hook = the_hook(loop)
    if hook_kind == "c":
        assert type(hook) is core.CallSoonHook  # type: ignore[union-attr]
    refs: list[weakref.ref[Any]] = [weakref.ref(ls), weakref.ref(loop)]
    del ls, loop, hook
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


@pytest.mark.parametrize("loop_cls", ["stdlib", "custom"])
def test_the_loop_schedules_a_step_call_for_a_tracked_tasks_wake_up(loop_cls: str, hook_kind: str) -> None:
    """What the hooks put in the loop's handle: the timed StepCall of the implementation in
    use, that looks like the task's own wake-up."""

    class CustomSoon(asyncio.SelectorEventLoop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:  # type: ignore[override]
            return super().call_soon(callback, *args, context=context)

    seen: list[Any] = []

    async def sleeper() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        loop: Any = asyncio.get_running_loop()
        task = loop.create_task(sleeper())
        await asyncio.sleep(0)  # the task ran its first step, and scheduled its wake-up
        for handle in list(loop._ready):
            if getattr(handle._callback, "__self__", None) is task:
                callback = handle._callback
                seen.append((callback, repr(callback) == repr(callback.callback), callback.callback.__self__))
        await task

    with capture(clock=FakeClock(), probes=[SchedulerProbe(gc=False)]):
        run_loop(CustomSoon if loop_cls == "custom" else asyncio.SelectorEventLoop, main)
    ((callback, same_repr, owner),) = seen
    assert type(callback) is StepCall  # the implementation's, whichever hooks scheduled it
    assert same_repr and owner is not None  # it wrapped the task's own wake-up, and looks like it
    assert callback.callback is None  # let go of once it ran


# ------------------------------------------------------- 3. never raise into user code


async def program(results: list[Any], before: Callable[[], None] | None = None) -> None:
    """Tasks gathered, woken by futures and sleeps, one failing, one cancelled: ``before``
    runs once the loop is watched and every task is still to be created."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)
    if before is not None:
        before()

    async def child(i: int) -> int:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, i)
        value = await fut
        await asyncio.sleep(0)
        return value * 2

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    async def stuck() -> None:
        await loop.create_future()

    results.append(await asyncio.gather(*(loop.create_task(child(i)) for i in range(4))))
    failing = loop.create_task(fails())
    cancelled = loop.create_task(stuck())
    await asyncio.sleep(0)
    cancelled.cancel()
    outcomes = await asyncio.gather(failing, cancelled, return_exceptions=True)
    results.append([type(o).__name__ for o in outcomes])


EXPECTED = [[0, 2, 4, 6], ["KeyError", "CancelledError"]]


def errors_of(probe: SchedulerProbe) -> list[tuple[str, BaseException]]:
    """Record what ``probe`` is told of its internal errors (still counting them)."""
    errors: list[tuple[str, BaseException]] = []
    original = probe.internal_error

    def spy(where: str, exc: BaseException) -> None:
        errors.append((where, exc))
        original(where, exc)

    probe.internal_error = spy  # type: ignore[method-assign]
    return errors


def test_a_failing_loop_clock_is_counted_not_raised(factory: Any, hook_kind: str) -> None:
    """The clock the loop's step timing reads fails from some point on: the program runs to
    the same results, the probe counts the errors, the session reports them."""
    broken = RuntimeError("the clock broke")
    results: list[Any] = []

    def failing_clock() -> int:
        raise broken

    def break_the_clock() -> None:
        ls = getattr(asyncio.get_running_loop(), ATTR)
        assert type(ls) is LoopState
        ls.now = failing_clock

    probe = SchedulerProbe(task_records="all", gc=False)
    errors = errors_of(probe)
    with capture(clock=FakeClock(), probes=[probe]) as cap:
        run_loop(factory, lambda: program(results, break_the_clock))
    assert results == EXPECTED
    assert errors and all(exc is broken for _, exc in errors)
    assert {where for where, _ in errors} <= {"timing a task step", "marking a task ready"}
    stats = cap.session.statistics()
    assert stats.probes["scheduler"]["internal_errors"] == probe.internal_errors == len(errors)
    assert stats.internal_errors >= len(errors)


class BreakingClock(FakeClock):
    """A fake clock that raises on every reading while ``broken``."""

    broken = False

    def now_ns(self) -> int:
        if self.broken:
            raise RuntimeError("the session clock broke")
        return super().now_ns()


def test_a_failing_session_clock_is_counted_not_raised(factory: Any) -> None:
    """The session's own clock raises on every reading after start: creating, waking and
    timing tasks all fail in the probe, never in the program (both implementations)."""
    clock = BreakingClock()
    results: list[Any] = []

    def break_the_clock() -> None:
        clock.broken = True

    async def main() -> None:
        try:
            await program(results, break_the_clock)
        finally:
            clock.broken = False

    probe = SchedulerProbe(task_records="all", gc=False)
    errors = errors_of(probe)
    with capture(clock=clock, probes=[probe]) as cap:
        run_loop(factory, main)
    assert results == EXPECTED
    assert errors and all(isinstance(exc, RuntimeError) for _, exc in errors)
    assert {"tracking a task", "marking a task ready"} <= {where for where, _ in errors}
    assert cap.session.statistics().probes["scheduler"]["internal_errors"] == len(errors)


def test_a_failing_executor_overlap_is_counted_not_raised(
    factory: Any, hook_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task wakes from waiting on its executor job and the bookkeeping of that wait fails
    (``TaskState._executor_overlap``): the task still gets its result, the probe the error."""
    broken = ArithmeticError("overlap")
    sentinel = object()

    def failing_overlap(self: TaskState, begin: int, end: int) -> int:
        raise broken

    monkeypatch.setattr(TaskState, "_executor_overlap", failing_overlap)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, lambda: sentinel)
        await asyncio.sleep(0)
        return value

    probe = SchedulerProbe(task_records="all", gc=False)
    errors = errors_of(probe)
    with capture(clock=FakeClock(), probes=[probe]) as cap:
        assert run_loop(factory, main) is sentinel
    assert ("timing a task step", broken) in errors
    assert all(exc is broken for _, exc in errors)
    assert cap.session.statistics().probes["scheduler"]["internal_errors"] == len(errors)
    assert [r.state for r in cap.records if isinstance(r, TaskRecord)] == ["done"]


# ------------------------------------------------------- 4. memory stays flat


SENTINEL = object()


async def short_tasks(n: int, clock: FakeClock) -> None:
    """``n`` short tasks of a few steps each: woken by a future set from a loop callback,
    by ``sleep(0)``, or by gathered children. Each returns :data:`SENTINEL` through its steps."""
    loop = asyncio.get_running_loop()

    async def leaf(value: Any) -> Any:
        clock.spend_cpu(1_000)
        await asyncio.sleep(0)
        return value

    async def short(i: int) -> Any:
        kind = i % 3
        if kind == 0:
            fut = loop.create_future()
            loop.call_soon(fut.set_result, SENTINEL)
            value = await fut
        elif kind == 1:
            clock.spend_cpu(1_500)
            await asyncio.sleep(0)
            value = SENTINEL
        else:
            _, value = await asyncio.gather(leaf(i), leaf(SENTINEL))
        clock.advance(700)  # ready->run delays that are not small ints
        return value

    results = await asyncio.gather(*(loop.create_task(short(i)) for i in range(n)))
    assert len(results) == n and all(r is SENTINEL for r in results)


@pytest.fixture
def quiet_session() -> Iterator[tuple[Session, SchedulerProbe, FakeClock]]:
    """A session with the scheduler probe only, whose records go nowhere (a discarding sink,
    no task records, no windows): what it keeps is the probe's own bounded state."""
    clock = FakeClock()
    probe = SchedulerProbe(task_records="none", gc=False, window=1e6)
    with Session([Sink()], clock=clock, lag=False, track_handles=False, probes=[probe]) as session:
        yield session, probe, clock


def traced_bytes() -> int:
    """Memory tracemalloc saw allocated and still alive, without asyncio's WeakSet of all
    tasks (its table grows and shrinks with the tasks alive at a time, by 256 KiB steps)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, "*_weakrefset.py"), tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@needs_c
@pytest.mark.parametrize("factory", loop_factories())
def test_memory_stays_flat_over_many_short_tasks(
    factory: Any, quiet_session: tuple[Session, SchedulerProbe, FakeClock]
) -> None:
    """20,000 short tasks in batches of 2,000: after three warm-up batches, the traced memory
    and the number of objects the collector tracks no longer grow with the steps. A leak
    of a single small object per step (a 28-byte int at least) would be 4x the bound."""
    session, probe, clock = quiet_session
    batch, warm_up, measured = 2_000, 3, 7
    loop = factory()
    tracemalloc.start()
    try:
        for _ in range(warm_up):
            loop.run_until_complete(short_tasks(batch, clock))
        gc.collect()
        session.flush()
        steps_before = probe.statistics()["steps"]  # (folds the step delays collected)
        bytes_before, objects_before = traced_bytes(), len(gc.get_objects())
        for _ in range(measured):
            loop.run_until_complete(short_tasks(batch, clock))
        gc.collect()
        session.flush()
        steps = probe.statistics()["steps"] - steps_before
        growth, objects = traced_bytes() - bytes_before, len(gc.get_objects()) - objects_before
    finally:
        tracemalloc.stop()
        loop.close()
    assert steps >= 3 * batch * measured  # the tasks ran a few steps each, all timed
    bound = steps * 28 // 4
    assert growth < bound, f"{growth} bytes more after {steps} steps"
    assert objects < batch * measured // 20, f"{objects} more objects after {batch * measured} tasks"
    assert probe.internal_errors == 0


@needs_c
@pytest.mark.parametrize("factory", loop_factories())
def test_references_are_let_go(factory: Any, quiet_session: tuple[Session, SchedulerProbe, FakeClock]) -> None:
    """Through thousands of steps, every reference the C paths take is given back: the value
    the tasks return keeps its reference count, as do the loop state and the probe every step
    touches (and ``None``, ``True`` and ``False``, not immortal before 3.12); the tasks are freed."""
    session, probe, clock = quiet_session
    loop = factory()
    try:
        loop.run_until_complete(short_tasks(300, clock))  # warm up, attach the loop
        ls = getattr(loop, ATTR)
        assert type(ls) is LoopState and isinstance(ls, core.LoopFields)  # type: ignore[union-attr]
        tasks: list[weakref.ref[Any]] = []

        async def tracked() -> None:
            async def remember() -> None:
                tasks.append(weakref.ref(asyncio.current_task()))  # type: ignore[arg-type]
                await short_tasks(30, clock)

            await asyncio.gather(*(remember() for _ in range(10)))

        gc.collect()
        counts = [sys.getrefcount(obj) for obj in (SENTINEL, ls, probe, loop)]
        singletons_before = [sys.getrefcount(obj) for obj in (None, True, False)]
        steps_before = probe.statistics()["steps"]
        for _ in range(10):
            loop.run_until_complete(short_tasks(1_000, clock))
            loop.run_until_complete(tracked())
        gc.collect()
        steps = probe.statistics()["steps"] - steps_before
        assert steps > 30_000
        assert [sys.getrefcount(obj) for obj in (SENTINEL, ls, probe, loop)] == counts
        if sys.version_info < (3, 12):  # mortal singletons: a reference leaked per step shows
            drift = [sys.getrefcount(obj) - n for obj, n in zip((None, True, False), singletons_before)]
            assert max(map(abs, drift)) < steps // 100, drift
        assert len(tasks) == 100 and [ref for ref in tasks if ref() is not None] == []
    finally:
        loop.close()


# ------------------------------------------------------- 5. -X dev stays silent

DEV_SCENARIO = textwrap.dedent(
    '''
    import asyncio
    import sys

    import asynclens

    @asynclens.trace
    async def child(i):
        await asyncio.sleep(0.001)
        return i

    @asynclens.trace
    async def handler():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 1)
        values = [await fut, *await asyncio.gather(*(child(i) for i in range(5)))]
        values.append(await loop.run_in_executor(None, sum, [1, 2]))
        values.append(await asyncio.to_thread(len, "abc"))
        stuck = asyncio.ensure_future(loop.create_future())
        await asyncio.sleep(0)
        stuck.cancel()
        try:
            await stuck
        except asyncio.CancelledError:
            values.append("cancelled")
        async def fails():
            raise KeyError("k")
        try:
            await asyncio.create_task(fails())
        except KeyError:
            values.append("failed")
        return values

    with asynclens.session(sinks=["memory"]) as session:
        loop = asyncio.new_event_loop()
        assert loop.get_debug()
        loop.slow_callback_duration = 3600  # a loaded machine may be slow: not what is looked for here
        try:
            values = loop.run_until_complete(handler())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    assert values == [1, 0, 1, 2, 3, 4, 3, 3, "cancelled", "failed"], values
    stats = session.statistics()
    assert stats.probes["scheduler"]["steps"] > 10, stats
    assert stats.internal_errors == 0, stats
    print(asynclens.IMPLEMENTATION, sys.flags.dev_mode)
    '''
)


@pytest.mark.parametrize("implementation", ["c", "python"])
def test_dev_mode_run_is_silent(tmp_path: Path, implementation: str) -> None:
    """``python -X dev`` (asyncio debug mode, ResourceWarnings, every warning shown) runs a
    session with every probe over tasks, timers, futures, the executor, a failure and a
    cancellation: exit 0, nothing on stderr."""
    if implementation == "c":
        reason = core_import_error()
        if reason is not None:
            pytest.skip(reason)
    proc = run_child(["-X", "dev", "-c", DEV_SCENARIO], implementation, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.split() == [implementation, "True"]


class Marker:
    """A weakly referenceable object (a LiveSpan is not)."""


@needs_c
def test_an_ended_span_holding_only_atoms_is_left_to_reference_counting() -> None:
    """The collector never walks a buffered span that can be in no cycle (its fields hold
    strings, ints, None); one that holds a container stays tracked, and a cycle through
    its attributes is still collected."""
    with asynclens.session(flush_interval=3600, lag=False, track_handles=False) as session:
        session._wake_at = -1
        with asynclens.span("plain") as plain:
            assert gc.is_tracked(plain)  # a running span is
        with asynclens.span("holding") as holding:
            cycle: list[Any] = []
            cycle.append(cycle)
            holding.set("cycle", cycle)
        marker = Marker()
        with asynclens.span("self") as itself:
            itself.set("me", itself)
            itself.set("marker", marker)
        assert not gc.is_tracked(plain)
        assert gc.is_tracked(holding) and gc.is_tracked(itself)
        gone = weakref.ref(marker)
        session.flush()
    del itself, holding, plain, marker, session  # its summary keeps the slowest spans' records
    gc.collect()
    assert gone() is None


@needs_c
def test_group_spans_in_c_matches_its_twin() -> None:
    """The summary's per-name fold of a flushed batch: the same groups (in order of first
    appearance, totals exact past 2**63), failed spans and over-the-floor indices."""
    from asynclens.report.aggregates import _py_group_spans
    from asynclens.tracing.spans import PySpanFields

    class Twin:  # an object with the fields, as the pure-Python spans have them
        def __init__(self, name: str, start: int, end: int, error: Any) -> None:
            self.name, self.start_ns, self.end_ns, self.error = name, start, end, error

    huge = 2**62
    spans: list[Any] = [
        Twin("a", 0, 5, None),
        Twin("b", 10, 40, ("error", "ValueError", "x")),
        Twin("a", 0, huge, None),
        Twin("a", 0, huge, None),
        Twin("a", 0, huge, ("cancelled", "CancelledError", "")),
        Twin("c", 7, 7, None),
    ]
    assert PySpanFields is not None
    for floor in (float("-inf"), 20.0, float("inf")):
        assert core.group_spans(spans, floor) == _py_group_spans(spans, floor)
    groups, ended, over = core.group_spans(spans, 20.0)
    assert list(groups) == ["a", "b", "c"] and groups["a"] == (4, 5 + 3 * huge, huge)
    assert ended == [spans[1], spans[4]] and over == [1, 2, 3, 4]
    with asynclens.session(flush_interval=3600, lag=False, track_handles=False, scheduler=False) as session:
        session._wake_at = -1
        for name in ("x", "y", "x"):
            with asynclens.span(name):
                pass
        live = list(session._buffer)
        assert core.group_spans(live, float("-inf")) == _py_group_spans(live, float("-inf"))
    with pytest.raises(AttributeError):  # not a span: the flusher's guard reports it
        core.group_spans([object()], 0.0)
