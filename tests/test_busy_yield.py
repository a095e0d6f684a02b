"""Busy-yield tasks (docs/lints.md): a task most of whose wake-ups it scheduled itself, on
asyncio and uvloop, on a fake clock, with the same records from both implementations;
a clean program has none; the pytest plugin judges them when asked."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from loop_kinds import loop_factories, run

import asynclens
from asynclens import FakeClock
from asynclens.probes.scheduler.lints import BUSY_MIN_STEPS, is_busy
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import BusyYield, record_from_dict
from asynclens.testing import capture

pytest_plugins = ["pytester"]
MS = 1_000_000
REPO = Path(asynclens.__file__).resolve().parent.parent


@pytest.fixture(params=loop_factories())
def factory(request: pytest.FixtureRequest) -> Any:
    return request.param


def busy_records(records: list[Any]) -> dict[str, BusyYield]:
    return {r.name: r for r in records if isinstance(r, BusyYield)}


def test_a_sleep_zero_loop_and_a_zero_timeout_poll_are_found(factory: Any) -> None:
    """One finding per task with its line, steps, self-wake share and the time it ran."""
    clock = FakeClock()

    async def spinner() -> None:
        for _ in range(150):
            clock.spend_cpu(MS)
            await asyncio.sleep(0)

    async def poller() -> int:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        polls = 0
        while not fut.done():
            await asyncio.wait([fut], timeout=0)
            polls += 1
            if polls == 120:
                loop.call_soon(fut.set_result, None)  # a plain callback ends it
        return polls

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.create_task(spinner(), name="spinner"), loop.create_task(poller(), name="poller"))

    with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
        run(factory, main)
    found = busy_records(cap.records)
    assert set(found) == {"spinner", "poller"}
    spin = found["spinner"]
    assert (spin.steps, spin.wakes, spin.self_wakes, spin.run_ns, spin.state) == (151, 150, 150, 150 * MS, "done")
    assert spin.self_wake_share == 1.0
    assert spin.line is not None and "test_busy_yield.py:" in spin.line and spin.line.endswith("spinner")
    poll = found["poller"]
    assert poll.self_wakes >= BUSY_MIN_STEPS and poll.self_wake_share > 0.5
    assert poll.line is not None and "poller" in poll.line
    assert record_from_dict(spin.to_dict()) == spin
    text = cap.session.summary()
    assert "Busy-yield: 2 tasks" in text and "150.0 ms on the loop" in text


def test_a_clean_program_has_no_finding(factory: Any) -> None:
    """Tasks woken by others (a queue ping-pong), by timers, or yielding only a few times."""
    clock = FakeClock()

    async def main() -> None:
        ping: asyncio.Queue[int] = asyncio.Queue()
        pong: asyncio.Queue[int] = asyncio.Queue()

        async def player(inbox: asyncio.Queue[int], outbox: asyncio.Queue[int]) -> None:
            for _ in range(200):
                outbox.put_nowait(await inbox.get())

        async def ticker() -> None:
            for _ in range(150):
                await asyncio.sleep(0.0001)

        async def polite() -> None:
            for _ in range(BUSY_MIN_STEPS - 1):
                await asyncio.sleep(0)

        ping.put_nowait(0)
        await asyncio.gather(player(ping, pong), player(pong, ping), ticker(), polite())

    with capture(clock=clock, probes=[SchedulerProbe(task_records="all")]) as cap:
        run(factory, main)
    assert busy_records(cap.records) == {}
    assert len([r for r in cap.records if r.kind == "task"]) >= 5  # the program ran, tasks were seen


def test_a_pending_busy_task_is_found_at_session_end(factory: Any) -> None:
    """Still spinning when the session ends: reported with state "pending"."""
    clock = FakeClock()
    holder: dict[str, Any] = {}

    async def forever() -> None:
        while True:
            await asyncio.sleep(0)

    async def main() -> None:
        holder["task"] = asyncio.get_running_loop().create_task(forever(), name="forever")
        for _ in range(150):
            await asyncio.sleep(0)

    loop = factory()
    try:
        with capture(clock=clock, probes=[SchedulerProbe()]) as cap:
            loop.run_until_complete(main())
        holder["task"].cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    found = busy_records(cap.records)
    assert found["forever"].state == "pending" and found["forever"].self_wakes >= BUSY_MIN_STEPS
    assert found["Task-1" if "Task-1" in found else next(n for n in found if n != "forever")].state == "done"


def test_the_threshold() -> None:
    """At least BUSY_MIN_STEPS own wake-ups, and more than half of all of them."""

    class St:
        def __init__(self, own: int, wakes: int) -> None:
            self.self_wakes, self.wakes = own, wakes

    assert is_busy(St(100, 199)) and not is_busy(St(100, 200)) and not is_busy(St(99, 99))


SCRIPT = r'''
import asyncio, json, sys
import asynclens
from asynclens import FakeClock
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.testing import capture

MS = 1_000_000
clock = FakeClock()
if sys.argv[1] == "uvloop":
    import uvloop
    new_loop = uvloop.new_event_loop
else:
    new_loop = asyncio.new_event_loop

async def spinner(n, cost):
    for _ in range(n):
        clock.spend_cpu(cost)
        await asyncio.sleep(0)

async def main():
    async with asynclens.span("request"):
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.create_task(spinner(150, MS), name="fast"),
            loop.create_task(spinner(120, 12 * MS), name="slow"),
            loop.create_task(spinner(20, 3 * MS), name="short"),
        )

loop = new_loop()
with capture(clock=clock, probes=[SchedulerProbe(task_records=sys.argv[2])]) as cap:
    loop.run_until_complete(main())
loop.close()
out = []
for r in cap.records:
    if r.kind in ("busy_yield", "task"):
        d = r.to_dict()
        for key in ("task_id", "loop_id", "trace_id", "span_id", "parent_task_id"):
            d.pop(key, None)
        out.append(d)
print(json.dumps({"implementation": asynclens.IMPLEMENTATION, "records": out}, sort_keys=True))
'''


@pytest.mark.parametrize("records", ["all", "notable"])
@pytest.mark.parametrize("loop_kind", [p.id for p in loop_factories()])
def test_both_implementations_give_the_same_records(tmp_path: Path, loop_kind: str, records: str) -> None:
    """Busy-yield records and the tasks' histograms are identical from C and pure Python
    (``notable``: the compiled core finishes quiet tasks itself, busy ones included)."""
    if loop_kind == "uvloop" and not any(p.id == "uvloop" and not p.marks for p in loop_factories()):
        pytest.skip("uvloop not installed")
    try:
        import asynclens._core  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"asynclens._core cannot be imported here ({exc})")
    script = tmp_path / "busy.py"
    script.write_text(SCRIPT)
    outputs = {}
    for implementation in ("c", "python"):
        env = {k: v for k, v in os.environ.items() if k != "ASYNCLENS_PURE_PYTHON"}
        if implementation == "python":
            env["ASYNCLENS_PURE_PYTHON"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        proc = subprocess.run(
            [sys.executable, str(script), loop_kind, records], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        outputs[implementation] = json.loads(proc.stdout)
        assert outputs[implementation]["implementation"] == implementation
    assert outputs["c"]["records"] == outputs["python"]["records"]
    busy = {r["name"]: r for r in outputs["c"]["records"] if r["kind"] == "busy_yield"}
    assert set(busy) == {"fast", "slow"}
    assert busy["slow"]["run_ns"] == 120 * 12 * MS
    tasks = {r["name"]: r for r in outputs["c"]["records"] if r["kind"] == "task"}
    assert tasks["slow"]["slow_steps"] == 120
    if records == "all":
        assert tasks["fast"].get("slow_steps", 0) == 0


INNER = '''
import asyncio
import pytest

async def spin():
    for _ in range(150):
        await asyncio.sleep(0)

@pytest.mark.asyncio
async def test_spins():
    await asyncio.get_running_loop().create_task(spin(), name="spinner")

@pytest.mark.asyncio
@pytest.mark.asynclens(busy_yield="ignore")
async def test_spins_ignored():
    await asyncio.get_running_loop().create_task(spin(), name="spinner")

@pytest.mark.asyncio
@pytest.mark.asynclens(allow=["busy_yield:spinner"])
async def test_spins_allowed():
    await asyncio.get_running_loop().create_task(spin(), name="spinner")
'''


def test_pytest_judges_busy_tasks_when_asked(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_inner=INNER)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    quiet = pytester.runpytest("--asynclens", "-p", "no:cacheprovider")
    quiet.assert_outcomes(passed=3)  # off by default: it needs the scheduler probe
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nasynclens_busy_yield = fail\n")
    strict = pytester.runpytest("--asynclens", "-p", "no:cacheprovider")
    strict.assert_outcomes(passed=3, errors=1)
    strict.stdout.fnmatch_lines(["*1 busy-yield task (busy_yield='fail')*", "*task 'spinner' busy-yields: 151 steps, 100% woken by itself*test_inner.py:6 in spin*"])
