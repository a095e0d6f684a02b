"""Under a session a task keeps its own coroutine, so the interpreter's own tools
(``get_coro()``, reprs, ``-X dev``, ``capture_call_graph``, ``asyncio ps``/``pstree``
and the 3.15 sampling profiler) see the program's frames, while steps are still timed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens

needs_314 = pytest.mark.skipif(sys.version_info < (3, 14), reason="the interpreter's async introspection is 3.14+")

TARGET = textwrap.dedent(
    """
    import asyncio, os, sys, asynclens

    async def leaf():
        await asyncio.sleep(60)

    async def handler():
        await asyncio.gather(leaf(), leaf())

    async def main():
        task = asyncio.create_task(handler(), name="handler")
        await asyncio.sleep(0.05)
        print("READY", os.getpid(), flush=True)
        await task

    factory = None
    if sys.argv[1:] == ["uvloop"]:
        import uvloop
        factory = uvloop.new_event_loop
    with asynclens.session():
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    """
)


@pytest.mark.parametrize("new_loop", loop_factories())
def test_a_tasks_coroutine_is_the_programs_own(new_loop: Any) -> None:
    async def sleeper() -> None:
        await asyncio.sleep(0.001)
        await asyncio.sleep(0)

    async def main() -> tuple[Any, Any, str, list[Any]]:
        coro = sleeper()
        task = asyncio.get_running_loop().create_task(coro)
        await asyncio.sleep(0)
        seen = task.get_coro(), coro, repr(task), task.get_stack()
        await task
        return seen

    with asynclens.session() as s:
        loop = new_loop()
        try:
            got, coro, text, stack = loop.run_until_complete(main())
        finally:
            loop.close()
    assert got is coro and type(got) is types.CoroutineType
    assert "coro=<test_a_tasks_coroutine_is_the_programs_own.<locals>.sleeper() running at" in text
    assert [frame.f_code.co_name for frame in stack] == ["sleeper"]
    stats = s.statistics().probes["scheduler"]
    assert stats["tasks_tracked"] >= 2 and stats["steps"] >= 4  # and yet every step was timed


def test_dev_mode_creation_points_at_the_programs_line(tmp_path: Path) -> None:
    """``-X dev`` records where a task was created: the program's line, as without asynclens."""
    program = tmp_path / "prog.py"
    program.write_text(
        textwrap.dedent(
            """
            import asyncio, asynclens

            async def sleeper():
                await asyncio.sleep(10)

            async def main():
                loop = asyncio.get_running_loop()
                task = loop.create_task(sleeper())  # CREATED
                await asyncio.sleep(0)
                print(repr(task))
                task.cancel()

            with asynclens.session():
                asyncio.run(main())
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-X", "dev", str(program)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    line = next(i for i, text in enumerate(program.read_text().splitlines(), 1) if "# CREATED" in text)
    assert f"created at {program}:{line}>" in out
    assert "asynclens" not in out


@needs_314
def test_capture_call_graph_sees_the_programs_coroutines() -> None:
    async def leaf(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(10)

    async def handler(ready: asyncio.Event) -> None:
        await asyncio.gather(leaf(ready))

    async def main() -> list[str]:
        ready = asyncio.Event()
        task = asyncio.create_task(handler(ready))
        await ready.wait()
        children = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "leaf"]  # type: ignore[union-attr]
        graph = asyncio.capture_call_graph(children[0])  # type: ignore[attr-defined]
        names = [entry.frame.f_code.co_name for entry in graph.call_stack]
        names += [entry.frame.f_code.co_name for awaiter in graph.awaited_by for entry in awaiter.call_stack]
        task.cancel()
        return names

    with asynclens.session():
        names = asyncio.run(main())
    assert "leaf" in names and "handler" in names
    assert not any("Step" in name for name in names)


def _start_target(tmp_path: Path, loop: str) -> tuple[subprocess.Popen[str], int]:
    program = tmp_path / "target.py"
    program.write_text(TARGET)
    proc = subprocess.Popen([sys.executable, str(program), loop], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the target did not start")


@needs_314
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("command", ["ps", "pstree"])
def test_python_m_asyncio_ps_and_pstree_show_the_programs_coroutines(tmp_path: Path, command: str, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    proc, pid = _start_target(tmp_path, loop)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "asyncio", command, str(pid)], capture_output=True, text=True, timeout=60
        )
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode == 0, out.stderr
    for name in ("main", "handler", "leaf"):
        assert name in out.stdout
    assert "asynclens" not in out.stdout and "Step" not in out.stdout


@pytest.mark.skipif(sys.version_info < (3, 15), reason="the sampling profiler is 3.15+")
def test_the_sampling_profilers_async_aware_mode_sees_the_programs_frames(tmp_path: Path) -> None:
    program = tmp_path / "crunch.py"
    program.write_text(
        textwrap.dedent(
            """
            import asyncio, time, asynclens

            def burn(ms):
                end = time.perf_counter() + ms / 1000
                while time.perf_counter() < end:
                    pass

            async def crunch():
                for _ in range(15):
                    burn(20)
                    await asyncio.sleep(0)

            async def main():
                await asyncio.gather(crunch(), crunch())

            with asynclens.session():
                asyncio.run(main())
            """
        )
    )
    stacks = tmp_path / "stacks.txt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "profiling.sampling",
            "run",
            "--async-aware",
            "--collapsed",
            "-o",
            str(stacks),
            str(program),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = stacks.read_text().splitlines()
    in_crunch = [line for line in lines if "crunch.py:crunch:" in line and "<task>" in line]
    assert in_crunch, lines[:5]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in in_crunch) > 0.5 * sum(
        int(line.rsplit(" ", 1)[1]) for line in lines
    )
