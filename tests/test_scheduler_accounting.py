"""Deterministic tests of the step accounting: fake clocks, fake steps, no real time."""

from __future__ import annotations

from typing import Any

import pytest

from asynclens._state.clock import FakeClock
from asynclens.probes.scheduler.hooks import Timed
from asynclens.probes.scheduler.steps import LoopState, StepCall, TaskState, take_all

MS = 1_000_000


class FakeProbe:
    """Stands in for SchedulerProbe: collects what the step machinery reports."""

    def __init__(self) -> None:
        self.finished: list[tuple[TaskState, str, int]] = []
        self.records: list[Any] = []
        self.errors: list[BaseException] = []
        self.snapshots = 0

    def task_finished(self, st: TaskState, state: str, t: int) -> None:
        self.finished.append((st, state, t))

    def emit(self, record: Any) -> None:
        self.records.append(record)

    def internal_error(self, where: str, exc: BaseException) -> None:
        self.errors.append(exc)

    def _snapshot(self, ls: LoopState, t: int) -> None:
        self.snapshots += 1
        ls.window(t)


class FakeTask:
    """A task-like object whose every wake-up (``step``) runs ``script[i](clock)``;
    done after the last one, with ``outcome`` ("done", "cancelled" or an exception)."""

    def __init__(self, clock: FakeClock, script: list[Any], outcome: Any = "done") -> None:
        self.clock = clock
        self.script = list(script)
        self.outcome = outcome
        self._exception: BaseException | None = None

    def step(self, *args: Any) -> str:
        self.script.pop(0)(self.clock)
        if not self.script and isinstance(self.outcome, BaseException):
            self._exception = self.outcome
        return "stepped"

    def done(self) -> bool:
        return not self.script

    def cancelled(self) -> bool:
        return self.done() and self.outcome == "cancelled"


def woken(st: TaskState, task: FakeTask) -> StepCall:
    """The wake-up of ``task`` as the call_soon hook schedules it."""
    return StepCall(task.step, st, task)


def cpu(ns: int) -> Any:
    return lambda clock: clock.spend_cpu(ns)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ns=10 * MS)


@pytest.fixture
def loop_state(clock: FakeClock) -> LoopState:
    return LoopState(FakeProbe(), object(), clock.now_ns, None)


def test_steps_split_time_into_run_io_and_sched(clock: FakeClock, loop_state: LoopState) -> None:
    """run = steps, io = suspended until woken, sched = woken until running."""
    st = TaskState(loop_state, clock.now_ns())
    clock.advance(2 * MS)  # created, ready at once, runs 2 ms later
    st.begin(clock.now_ns())
    clock.spend_cpu(3 * MS)
    st.end(clock.now_ns())
    clock.advance(40 * MS)  # waiting for I/O
    st.ready_ns = clock.now_ns()
    clock.advance(7 * MS)  # ready, another callback holds the loop
    st.begin(clock.now_ns())
    clock.spend_cpu(1 * MS)
    st.end(clock.now_ns())
    assert (st.run_ns, st.io_ns, st.sched_ns, st.steps) == (4 * MS, 40 * MS, 9 * MS, 2)
    assert st.max_sched_ns == 7 * MS
    assert loop_state.ready_delay.count == 2 and loop_state.ready_delay.max == 7 * MS


def test_unstamped_wakeup_counts_as_io(clock: FakeClock, loop_state: LoopState) -> None:
    """A wake-up nobody stamped is waiting, not scheduling delay (never invents starvation)."""
    st = TaskState(loop_state, clock.now_ns())
    st.begin(clock.now_ns())
    st.end(clock.spend_cpu(MS))
    clock.advance(5 * MS)
    st.begin(clock.now_ns())
    st.end(clock.now_ns())
    assert (st.io_ns, st.sched_ns) == (5 * MS, 0)


def test_ready_time_is_clamped_into_the_gap(clock: FakeClock, loop_state: LoopState) -> None:
    """A timer due before the task even yielded cannot make sched wait exceed the gap."""
    st = TaskState(loop_state, clock.now_ns())
    st.begin(clock.now_ns())
    end = clock.spend_cpu(MS)
    st.end(end)
    st.ready_ns = end - 5 * MS  # due earlier than the step ended
    clock.advance(3 * MS)
    st.begin(clock.now_ns())
    assert (st.io_ns, st.sched_ns) == (0, 3 * MS)


@pytest.mark.parametrize("span_start, span_end", [(1, 2), (0, 4), (2, 3), (3, 4)])
def test_totals_reconcile_exactly_for_any_window(
    clock: FakeClock, loop_state: LoopState, span_start: int, span_end: int
) -> None:
    """The difference of two totals_at() readings sums exactly to the window's wall time."""
    st = TaskState(loop_state, clock.now_ns())
    marks: dict[int, tuple[int, tuple[int, ...]]] = {}
    for i in range(5):
        if i:
            clock.advance(11 * MS * i)
            st.ready_ns = clock.now_ns()
            clock.advance(3 * MS * i)
        st.begin(clock.now_ns())
        clock.spend_cpu(2 * MS)
        t = clock.now_ns()
        marks[i] = (t, st.totals_at(t))
        clock.spend_cpu(MS)
        st.end(clock.now_ns())
    (t0, a), (t1, b) = marks[span_start], marks[span_end]
    run, sched, io, ex, steps = (y - x for x, y in zip(a, b))
    assert run + sched + io + ex == t1 - t0
    assert steps == span_end - span_start
    assert run == 3 * MS * (span_end - span_start)


def test_eager_child_step_is_subtracted_from_the_parent(clock: FakeClock, loop_state: LoopState) -> None:
    """An eager task's first step runs inside the parent's step (inside create_task):
    the parent is not charged for it."""
    parent = TaskState(loop_state, clock.now_ns())
    child = TaskState(loop_state, clock.now_ns())

    def spawn_eager_child(c: FakeClock) -> None:
        c.spend_cpu(MS)
        child.created_ns = c.now_ns()
        child.tentative_begin(c.now_ns())  # what create_task does around an eager start
        assert loop_state.running is child
        c.spend_cpu(4 * MS)
        child.settle_tentative(c.now_ns(), ran=True)
        c.spend_cpu(2 * MS)

    woken(parent, FakeTask(clock, [spawn_eager_child, cpu(0)]))()
    assert parent.run_ns == 3 * MS
    assert parent.sched_ns == 4 * MS  # runnable while another task's code held the thread
    assert (child.run_ns, child.steps, child.sched_ns) == (4 * MS, 1, 0)
    assert loop_state.running is None


def test_a_first_step_that_was_only_scheduled_is_undone(clock: FakeClock, loop_state: LoopState) -> None:
    """create_task of a task that did not start eagerly leaves no step and the running task as it was."""
    parent = TaskState(loop_state, clock.now_ns())
    parent.begin(clock.now_ns())
    child = TaskState(loop_state, clock.now_ns())
    child.tentative_begin(clock.now_ns())
    child.settle_tentative(clock.spend_cpu(MS), ran=False)
    assert loop_state.running is parent and child.steps == 0 and child.start_ns == 0
    parent.end(clock.now_ns())
    assert parent.run_ns == MS and parent.nested_ns == 0


@pytest.mark.parametrize(
    ("outcome", "state"), [("done", "done"), ("cancelled", "cancelled"), (KeyError("boom"), "error")]
)
def test_a_step_call_reports_how_the_task_finished(
    clock: FakeClock, loop_state: LoopState, outcome: Any, state: str
) -> None:
    probe = loop_state.probe
    st = TaskState(loop_state, clock.now_ns())
    task = FakeTask(clock, [cpu(MS), cpu(2 * MS)], outcome)
    assert woken(st, task)() == "stepped"  # the callback's return value passes through
    assert probe.finished == []
    woken(st, task)()
    assert probe.finished == [(st, state, clock.now_ns())]
    assert st.run_ns == 3 * MS and st.steps == 2 and st.done


def test_a_step_that_raises_passes_the_exception_through_and_still_ends(
    clock: FakeClock, loop_state: LoopState
) -> None:
    """A BaseException out of a task's step (KeyboardInterrupt) reaches the loop unchanged."""
    st = TaskState(loop_state, clock.now_ns())
    error = KeyboardInterrupt()

    def interrupted(c: FakeClock) -> None:
        c.spend_cpu(MS)
        raise error

    with pytest.raises(KeyboardInterrupt) as info:
        woken(st, FakeTask(clock, [interrupted, cpu(0)]))()
    assert info.value is error
    assert st.steps == 1 and st.run_ns == MS and loop_state.running is None


def test_a_step_call_looks_like_its_callback(clock: FakeClock, loop_state: LoopState) -> None:
    """asyncio's handle reprs and slow-callback warnings read __self__, __qualname__ and repr."""
    st = TaskState(loop_state, clock.now_ns())
    task = FakeTask(clock, [cpu(MS)])
    call = woken(st, task)
    assert call.__self__ is task
    assert call.__qualname__ == "FakeTask.step"
    assert repr(call) == repr(task.step)


def test_inactive_loop_state_is_a_plain_pass_through(clock: FakeClock, loop_state: LoopState) -> None:
    loop_state.active = False
    st = TaskState(loop_state, clock.now_ns())
    woken(st, FakeTask(clock, [cpu(MS), cpu(MS)]))()
    assert st.steps == 0 and st.run_ns == 0


def test_executor_jobs_turn_waiting_into_executor_time(clock: FakeClock, loop_state: LoopState) -> None:
    """Waiting covered by a job the task submitted is executor time; the rest stays I/O."""

    class Job:
        def __init__(self, submit_ns: int, end_ns: int) -> None:
            self.submit_ns, self.end_ns = submit_ns, end_ns

    st = TaskState(loop_state, clock.now_ns())
    st.begin(clock.now_ns())
    end = clock.spend_cpu(MS)
    st.jobs = [Job(end - MS // 2, end + 20 * MS), Job(end + 10 * MS, end + 25 * MS), Job(end + 30 * MS, 0)]
    st.end(end)
    clock.advance(40 * MS)
    st.ready_ns = clock.now_ns()
    st.begin(clock.now_ns())
    # union of [end, end+25] and [end+30, ready(end+40)] = 35 ms
    assert (st.exec_ns, st.io_ns) == (35 * MS, 5 * MS)
    assert st.jobs is not None and len(st.jobs) == 1  # the running job is kept


def test_timer_marks_wakeups_ready_from_its_due_time(clock: FakeClock, loop_state: LoopState) -> None:
    """A wake-up scheduled by a late timer was ready when the timer was due."""
    calls = []

    def callback(x: int) -> None:
        calls.append((x, loop_state.origin))

    due = clock.now_ns() + 5 * MS
    timed = Timed(callback, due, loop_state)
    clock.advance(305 * MS)
    timed(7)
    assert calls == [(7, due)]
    assert loop_state.origin == 0
    assert loop_state.timer_lateness.max == 300 * MS


def test_step_records_are_bounded(clock: FakeClock, loop_state: LoopState) -> None:
    loop_state.step_budget = 2
    st = TaskState(loop_state, clock.now_ns())
    for _ in range(4):
        st.begin(clock.now_ns())
        st.end(clock.spend_cpu(MS))
    steps = loop_state.probe.records
    assert len(steps) == 2
    assert steps[0].end_ns - steps[0].start_ns == MS


def test_windows_roll_over(clock: FakeClock, loop_state: LoopState) -> None:
    loop_state.window_ns = 10 * MS
    st = TaskState(loop_state, clock.now_ns())
    for _ in range(5):
        clock.advance(4 * MS)
        st.begin(clock.now_ns())
        st.end(clock.now_ns())
    assert loop_state.probe.snapshots == 1


def test_scheduler_records_round_trip_through_json() -> None:
    """Every scheduler record survives to_dict -> JSON -> record_from_dict unchanged."""
    import json
    from types import MappingProxyType

    from asynclens.records import ExecutorJob, GcPause, SchedSnapshot, TaskRecord, TaskStep, record_from_dict

    records = [
        TaskRecord(
            1,
            "Task-1",
            2,
            10,
            20,
            3,
            4,
            5,
            6,
            7,
            0xABC,
            0xDEF,
            True,
            False,
            "done",
            4,
            1,
            0,
            "req",
            "Task-0",
            "app.py:3 in main",
            ("app.py:4 in f",),
        ),
        TaskRecord(1, "Task-2", 2, 10, trace_id=None, span_id=None, state="pending"),
        TaskStep(1, 5, 6, 9, None, 0x12),
        GcPause(1, 2, 2, 10, 0, "Task-1", 0xA, 0xB, "req", 5),
        ExecutorJob(1, 2, 3, "mod.fn", 4, None, None, "KeyError", 9, 4),
        SchedSnapshot(1, 2, 3, MappingProxyType({"count": 1, "p50": 2}), MappingProxyType({"count": 0}), 2, 5, 1),
    ]
    for record in records:
        again = record_from_dict(json.loads(json.dumps(record.to_dict())))
        assert again == record, record.kind


def _state_fields(st: TaskState) -> tuple[int, ...]:
    return (st.run_ns, st.sched_ns, st.io_ns, st.exec_ns, st.steps, st.max_sched_ns, st.last_end_ns, st.step_ready)


@pytest.mark.parametrize("woken_at", [None, "before_last_end", "between"])
def test_step_call_fast_path_accounts_like_begin_and_end(clock: FakeClock, woken_at: str | None) -> None:
    """StepCall inlines TaskState.begin/end: both must give identical totals."""
    ls_fast = LoopState(FakeProbe(), object(), clock.now_ns, None)
    ls_ref = LoopState(FakeProbe(), object(), clock.now_ns, None)
    fast = TaskState(ls_fast, clock.now_ns())
    ref = TaskState(ls_ref, clock.now_ns())
    task = FakeTask(clock, [cpu(2 * MS), cpu(MS), cpu(3 * MS)])
    clock.advance(MS)
    for step_cpu in (2 * MS, MS):
        t = clock.now_ns()
        woken(fast, task)()
        ref.begin(t)
        ref.end(t + step_cpu)
        assert _state_fields(fast) == _state_fields(ref)
        clock.advance(4 * MS)
        wake = {None: 0, "before_last_end": fast.last_end_ns - MS, "between": clock.now_ns() - MS}[woken_at]
        fast.ready_ns = ref.ready_ns = wake
        clock.advance(2 * MS)
    assert ls_fast.ready_delay.summary() == ls_ref.ready_delay.summary()
    assert ls_fast.steps == ls_ref.steps == 2 and ls_fast.running is None


def test_ready_delays_fold_in_batches_without_loss(clock: FakeClock, loop_state: LoopState) -> None:
    """Steps append delays to a list; reading the histogram (or a window) folds them all."""
    st = TaskState(loop_state, clock.now_ns())
    for i in range(1200):  # more than one automatic fold
        st.ready_ns = clock.now_ns()
        clock.advance(i)
        st.begin(clock.now_ns())
        st.end(clock.now_ns())
    assert len(loop_state.delays) < 1200
    hist = loop_state.ready_delay
    assert hist.count == 1200 and hist.max == 1199 and hist.total == sum(range(1200))
    assert loop_state.delays == []
    st.ready_ns = clock.now_ns()
    clock.advance(5)
    st.begin(clock.now_ns())
    ready, _, _, _ = loop_state.window(clock.now_ns())
    assert ready.count == 1201 and loop_state.ready_delay.count == 0


def test_stdlib_loops_hook_the_private_call_soon_and_others_the_public_one(clock: FakeClock) -> None:
    import asyncio

    class CustomSoon(asyncio.SelectorEventLoop):
        def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
            return super().call_soon(callback, *args, context=context)

    for cls, name in ((asyncio.SelectorEventLoop, "_call_soon"), (CustomSoon, "call_soon")):
        loop = cls()
        try:
            ls = LoopState(FakeProbe(), loop, clock.now_ns, None)
            ls.install(loop)
            assert name in loop.__dict__ and {"call_later", "call_at"} <= set(loop.__dict__)
            st = TaskState(ls, clock.now_ns())
            st.ready_ns = 0
            other = TaskState(ls, clock.now_ns())
            other.ready_ns = 0

            class Owner:  # not a task: its callbacks are no wake-ups
                _asynclens_sched = other

                def wake(self) -> None:
                    pass

            async def idle() -> None:
                pass

            task = loop.create_task(idle())
            task._asynclens_sched = st  # type: ignore[attr-defined]
            clock.advance(MS)
            loop.call_soon(task.get_name)
            loop.call_soon(Owner().wake)
            assert st.ready_ns == clock.now_ns()  # the task's wake-up was stamped
            assert other.ready_ns == 0
            calls: list[tuple[Any, ...]] = []
            for args in ((), (1,), (1, 2)):  # forwarded whatever their number
                loop.call_soon(lambda *a: calls.append(a), *args)
            loop.run_until_complete(task)
            assert calls == [(), (1,), (1, 2)]
            ls.remove(loop)
            assert not {"call_soon", "_call_soon", "call_later", "call_at"} & set(loop.__dict__)
        finally:
            loop.close()


def test_take_all_takes_each_item_once_while_another_thread_appends() -> None:
    import threading

    items: list[int] = []
    taken: list[int] = []
    done = threading.Event()

    def producer() -> None:
        for i in range(20_000):
            items.append(i)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    while not done.is_set():
        taken.extend(take_all(items))
    thread.join()
    taken.extend(take_all(items))
    assert taken == list(range(20_000)) and items == []


def test_a_tasks_wake_up_wrapper_is_reused_once_it_ran(clock: FakeClock, loop_state: LoopState) -> None:
    """No allocation per wake-up: the task's StepCall is scheduled again once it has run; a
    wake-up scheduled while the last one is still pending gets a wrapper of its own."""
    st = TaskState(loop_state, clock.now_ns())
    task = FakeTask(clock, [cpu(MS), cpu(MS), cpu(MS)])
    first = st.step_call(task.step, task)
    pending = st.step_call(task.step, task)
    assert pending is not first
    first()
    assert first.st is None and first.callback is None  # lets go of the task once run
    again = st.step_call(task.step, task)
    assert again is first
    pending()
    again()
    assert st.steps == 3 and st.done
