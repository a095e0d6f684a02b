"""Never silently blind: what a session could not watch comes first in its reports,
and loops running before the session starts are found without asynclens.watch()."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import asynclens
from asynclens.probes._loops import Coverage, LoopWatcher
from asynclens.probes.lag.probe import LagProbe
from asynclens.records import Stall
from asynclens.sinks.html import HtmlSink

from loop_kinds import loop_factories


class TinyLoop(asyncio.AbstractEventLoop):
    """A loop of its own kind: it drives a coroutine that never waits and implements
    nothing else (no call_later, no call_soon_threadsafe): no probe can hook it."""

    def __init__(self, *, sets_running_loop: bool = True) -> None:
        self._running = False
        self._stop = threading.Event()
        self._sets = sets_running_loop

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return False

    def get_debug(self) -> bool:
        return False

    def stop(self) -> None:
        self._stop.set()

    def run_until_complete(self, coro: Any) -> Any:
        if self._sets:
            asyncio.events._set_running_loop(self)
        self._running = True
        try:
            while True:
                try:
                    coro.send(None)
                except StopIteration as stop:
                    return stop.value
        finally:
            self._running = False
            if self._sets:
                asyncio.events._set_running_loop(None)

    def run_forever(self) -> None:
        self._running = True
        try:
            while not self._stop.wait(0.005):
                pass
        finally:
            self._running = False


async def _nothing() -> int:
    return 1


def _unwrapped(text: str) -> list[str]:
    """The summary's lines, with the continuation lines of wrapped ones joined back."""
    return re.sub(r"\n {4,}(?=\S)", " ", text).splitlines()


def _html_notes(path: Path) -> list[str]:
    text = path.read_text()
    payload = re.search(r'<script type="application/json" id="asynclens-data">(.*?)</script>', text, re.S)
    assert payload is not None
    data = json.loads(payload.group(1))
    assert data["blind_spots"] == data["notes"][: len(data["blind_spots"])]
    return list(data["notes"])


@pytest.fixture
def thread_loop() -> Iterator[Any]:
    """Starts ``loop.run_forever()`` in a thread (``start(loop)``), stops it at the end."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(loop: Any, target: Any = None) -> threading.Thread:
        thread = threading.Thread(target=target or loop.run_forever, name="early-loop", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not loop.is_running() and time.monotonic() < deadline:
            time.sleep(0.001)
        started.append((loop, thread))
        return thread

    yield start
    for loop, thread in started:
        if isinstance(loop, TinyLoop):
            loop.stop()
        else:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not isinstance(loop, TinyLoop):
            loop.close()


# ------------------------------------------------------------ nothing missed


def test_a_plain_run_has_no_blind_spots_and_says_no_stalls() -> None:
    with asynclens.session() as s:
        asyncio.run(_nothing())
    assert s.statistics().blind_spots == ()
    assert s.statistics().loops_seen == 1
    lines = _unwrapped(s.summary())
    assert lines[0].startswith("asynclens:")
    assert "Event loop: no stalls over 50.0 ms" in lines and not any("Not measured" in line for line in lines)


# ------------------------------------------------------------ a loop no probe can hook


def test_a_loop_type_no_probe_can_hook_is_named_first(tmp_path: Path) -> None:
    html = tmp_path / "run.html"
    with asynclens.session([HtmlSink(html)]) as s:
        assert TinyLoop().run_until_complete(_nothing()) == 1
    spots = s.statistics().blind_spots
    name = f"{__name__}.TinyLoop"
    assert f"Not measured: stalls, lag and ELU on 1 loop of type {name} (lag probe: NotImplementedError in attach_loop)" in spots
    assert any(spot.startswith(f"Not measured: transports on 1 loop of type {name} (handles probe:") for spot in spots)
    lines = _unwrapped(s.summary())
    assert lines[: len(spots)] == list(spots)
    assert "Event loop: no stalls over 50.0 ms on the watched loops; 1 loop not watched (see above)" in lines
    notes = _html_notes(html)
    assert notes[0].startswith("Not measured:") and "TinyLoop" in notes[0]
    assert s.statistics().as_dict()["blind_spots"] == list(spots)


def test_loops_of_one_type_are_one_line() -> None:
    with asynclens.session() as s:
        for _ in range(3):
            TinyLoop().run_until_complete(_nothing())
    lag_lines = [line for line in s.statistics().blind_spots if "lag probe" in line]
    assert len(lag_lines) == 1 and "on 3 loops of type" in lag_lines[0]
    assert "Event loop: no stalls over 50.0 ms on the watched loops; 3 loops not watched (see above)" in _unwrapped(s.summary())


def test_a_loop_that_never_sets_the_running_loop_is_reported_with_its_thread() -> None:
    loop = TinyLoop(sets_running_loop=False)
    with asynclens.session() as s:
        thread = threading.Thread(target=loop.run_forever, name="tiny-thread")
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not loop.is_running() and time.monotonic() < deadline:
                time.sleep(0.001)
            live = s.statistics().blind_spots
        finally:
            s.close()
            loop.stop()
            thread.join(10)
    assert live == ()  # known only once the session ends and looks again
    (spot,) = s.statistics().blind_spots
    assert spot.startswith(
        "Not measured: stalls, lag and ELU; pending tasks and transports; task steps and scheduling delay"
        f" on 1 loop of type {__name__}.TinyLoop: it ran in thread 'tiny-thread' but the session never saw it"
    )
    assert "Event loop: no stalls over 50.0 ms on the watched loops; 1 loop not watched (see above)" in _unwrapped(s.summary())


# ------------------------------------------------------------ loops running before the session


@pytest.mark.parametrize("factory", loop_factories())
def test_a_loop_running_in_a_thread_before_the_session_is_found(factory: Any, thread_loop: Any) -> None:
    """No asynclens.watch(): the session finds the loop at start (its thread's target)."""
    loop = factory()
    thread_loop(loop)

    async def blocks() -> None:
        await asyncio.sleep(0.02)
        time.sleep(0.12)  # noqa: ASYNC251  # EARLY STALL
        await asyncio.sleep(0.02)

    with asynclens.session(["memory"]) as s:
        asyncio.run_coroutine_threadsafe(blocks(), loop).result(10)
    stalls = [x for x in s.sinks[0].of_type(Stall) if x.loop_id == id(loop)]  # type: ignore[attr-defined]
    assert [x.function for x in stalls] == ["blocks"]
    assert s.statistics().blind_spots == ()


@pytest.mark.parametrize("factory", loop_factories())
def test_a_loop_held_only_by_its_threads_function_is_found(factory: Any, thread_loop: Any) -> None:
    loop = factory()

    def run_it() -> None:
        held = loop  # the loop is this frame's variable, its run_forever C or Python code
        held.run_forever()

    thread_loop(loop, run_it)
    with asynclens.session() as s:
        pass
    assert s.statistics().loops_seen == 1 and s.statistics().blind_spots == ()


def test_a_running_loop_no_probe_can_hook_in_an_early_thread(thread_loop: Any) -> None:
    loop = TinyLoop(sets_running_loop=False)
    thread_loop(loop)
    with asynclens.session() as s:
        pass
    spots = s.statistics().blind_spots
    assert any(spot.startswith("Not measured: stalls, lag and ELU on 1 loop of type") for spot in spots), spots
    assert any("task steps and scheduling delay on 1 loop" in spot and "scheduler probe" in spot for spot in spots)


# ------------------------------------------------------------ a probe that failed to start


def test_a_probe_that_failed_to_start_is_a_blind_spot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, session: Any) -> None:
        raise RuntimeError("no watchdog today")

    monkeypatch.setattr(LagProbe, "start", broken)
    html = tmp_path / "run.html"
    with asynclens.session([HtmlSink(html)]) as s:
        asyncio.run(_nothing())
    message = "Not measured: stalls, lag and ELU on any loop: the lag probe failed to start (RuntimeError: no watchdog today)"
    assert s.statistics().blind_spots == (message,)
    lines = _unwrapped(s.summary())
    assert lines[0] == message
    assert "Event loop: not watched: the lag probe failed to start (see above)" in lines
    assert not any("no stalls" in line for line in lines)
    assert _html_notes(html)[0] == message


# ------------------------------------------------------------ the watcher's hooks


def test_the_captured_running_loop_setter_is_harmless_after_the_session_and_serves_the_next() -> None:
    """uvloop captures asyncio._set_running_loop when imported: a copy taken during one
    session keeps working after it, and hands loops to a later session."""
    with asynclens.session():
        captured = asyncio._set_running_loop  # type: ignore[attr-defined]
    assert captured is not asyncio._set_running_loop  # type: ignore[attr-defined]
    loop = asyncio.new_event_loop()
    try:
        captured(loop)
        assert asyncio.events._get_running_loop() is loop
        captured(None)
        with asynclens.session() as s:
            captured(loop)
            captured(None)
        assert s.statistics().loops_seen == 1
    finally:
        loop.close()


@pytest.fixture
def fake_winloop(tmp_path: Path) -> Generator[Path, None, None]:
    """A package named like a loop module (``winloop``, uvloop's fork) with a Loop class."""
    package = tmp_path / "winloop"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import asyncio\n\nclass Loop(asyncio.SelectorEventLoop):\n    pass\n\nIMPORTED = True\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield package
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("winloop", None)


def test_a_loop_module_imported_during_the_session_is_announced_and_left_untouched(fake_winloop: Path) -> None:
    assert "winloop" not in sys.modules
    announced: list[type] = []
    with asynclens.session() as s:
        s.on_loop_class(announced.append)
        assert announced[0] is asyncio.BaseEventLoop  # and uvloop.Loop: the tests imported it
        before = len(announced)
        import winloop  # type: ignore[import-not-found]

        assert announced[before:] == [winloop.Loop]
        assert "run_forever" in winloop.Loop.__dict__  # patched at once, before any loop exists
    assert type(winloop.__loader__).__name__ == "SourceFileLoader"
    assert winloop.__spec__.loader is winloop.__loader__
    assert "run_forever" not in winloop.Loop.__dict__
    assert not any(type(f).__module__ == "asynclens.probes._loops" for f in sys.meta_path)


def test_a_failing_class_callback_names_the_probe_and_class() -> None:
    def broken(cls: type) -> None:
        if cls is asyncio.BaseEventLoop:
            raise TypeError("immutable type")

    with asynclens.session() as s:
        s.on_loop_class(broken, probe="handles")
    assert s.statistics().blind_spots == (
        "Not measured: pending tasks and transports on 1 loop of type asyncio.base_events.BaseEventLoop"
        " (handles probe: patching the class failed: TypeError: immutable type)",
    )


def test_loops_seen_while_starting_wait_for_the_probes() -> None:
    seen: list[Any] = []
    watcher = LoopWatcher(seen.append)
    loop = asyncio.new_event_loop()
    try:
        watcher.prepare()
        try:
            assert watcher.watch(loop) is False and seen == []
            watcher.start()
            assert seen == [loop]
            assert watcher.watch(loop) is False and seen == [loop]
        finally:
            watcher.stop()
        assert watcher.watch(asyncio.new_event_loop()) is False and seen == [loop]  # stopped: ignored
    finally:
        loop.close()


def test_coverage_lines() -> None:
    coverage = Coverage(["lag", "handles", "scheduler"])
    assert coverage.lines() == () and coverage.missed("lag") == 0
    coverage.probe_failed("scheduler", "ValueError: x")
    loop = object()
    coverage.not_measured("lag", loop, "why")
    coverage.not_measured("lag", loop, "why")  # the same loop once
    coverage.not_measured("handles", loop, "partly", what="transports")
    coverage.not_measured("scheduler", loop, "hidden by the failure above")
    assert coverage.lines() == (
        "Not measured: task steps and scheduling delay on any loop: the scheduler probe failed to start (ValueError: x)",
        "Not measured: stalls, lag and ELU on 1 loop of type builtins.object (lag probe: why)",
        "Not measured: transports on 1 loop of type builtins.object (handles probe: partly)",
    )
    assert coverage.missed("lag") == 1 and coverage.missed("handles") == 0 and coverage.missed("scheduler") == -1
