"""Session lifecycle, buffering, failure isolation, statistics and summary."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

import asynclens
from asynclens import Session, SessionError, Sink
from asynclens.records import Record, SessionEnd, SessionInfo, Span
from asynclens.sinks import MemorySink
from asynclens.testing import FakeClock

NO_PROBES = dict(lag=False, track_handles=False, scheduler=False)


@asynclens.trace
def op() -> int:
    return 1


def test_session_records_into_sinks_with_header_and_end() -> None:
    sink = MemorySink()
    with asynclens.session(sinks=[sink], name="run-1", **NO_PROBES) as s:
        assert asynclens.current_session() is s
        op()
    assert asynclens.current_session() is None
    assert isinstance(sink.info, SessionInfo) and sink.info.name == "run-1"
    assert sink.info.schema == 1 and sink.info.pid > 0
    assert [type(r) for r in sink.records] == [Span, SessionEnd]
    assert sink.closed
    end = sink.records[-1]
    assert isinstance(end, SessionEnd) and end.statistics["spans_recorded"] == 1


@pytest.mark.asyncio
async def test_async_with_session() -> None:
    sink = MemorySink()
    async with asynclens.session(sinks=sink, **NO_PROBES):
        op()
    assert len(sink.spans) == 1


def test_only_one_session_at_a_time() -> None:
    with asynclens.session(**NO_PROBES) as first:
        with pytest.raises(SessionError, match="already active"):
            asynclens.session(**NO_PROBES).start()
        assert asynclens.current_session() is first


def test_a_session_cannot_be_restarted() -> None:
    s = asynclens.session(**NO_PROBES)
    with s:
        pass
    with pytest.raises(SessionError, match="already closed"):
        s.start()


@pytest.mark.parametrize(
    "option, value",
    [
        ("buffer_limit", 0),
        ("buffer_limit", -5),
        ("flush_interval", 0),
        ("lag_interval", "fast"),
        ("buffer_limit", True),
    ],
)
def test_bad_options_are_clear_errors(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"session\\({option}="):
        asynclens.session(**{option: value})


def test_bounded_buffer_counts_drops_and_never_blocks() -> None:
    sink = MemorySink()
    with asynclens.session(sinks=[sink], buffer_limit=5, flush_interval=3600, **NO_PROBES) as s:
        for _ in range(12):
            op()
        stats = s.statistics()
        assert stats.records_buffered == 5
        assert stats.records_dropped == 7
        s.flush()
        for _ in range(3):
            op()
    assert len(sink.spans) == 8
    assert s.statistics().records_dropped == 7
    assert "7 records dropped" in s.summary()


class ExplodingSink(Sink):
    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.calls = 0

    def open(self, info: SessionInfo) -> None:
        if self.hook == "open":
            raise OSError("disk full")

    def write(self, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.hook == "write":
            raise OSError("disk full")


@pytest.mark.parametrize("hook", ["open", "write"])
def test_failing_sink_is_disabled_logged_once_and_counted(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    bad, good = ExplodingSink(hook), MemorySink()
    with caplog.at_level(logging.WARNING, logger="asynclens"):
        with asynclens.session(sinks=[bad, good], flush_interval=3600, **NO_PROBES) as s:
            for _ in range(3):
                op()
                s.flush()
    assert len(good.spans) == 3
    stats = s.statistics()
    assert stats.sinks_disabled == 1 and stats.sink_errors >= 1
    assert bad.calls <= 1
    messages = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(messages) == 1 and "disk full" in messages[0]
    assert "1 sinks disabled" in s.summary()


def test_broken_sink_close_does_not_raise() -> None:
    class BadClose(Sink):
        def close(self) -> None:
            raise RuntimeError("nope")

    with asynclens.session(sinks=[BadClose()], **NO_PROBES) as s:
        op()
    assert s.statistics().sink_errors == 1


def test_probe_failures_are_internal_errors_not_user_errors(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenProbe:
        name = "broken"

        def start(self, session: Session) -> None:
            raise RuntimeError("probe bug")

        def attach_loop(self, loop: object) -> None:
            pass

        def stop(self) -> None:
            raise RuntimeError("probe bug")

        def statistics(self) -> object:
            return {"ok": True}

        def summary_lines(self) -> list[str]:
            return ["broken probe section"]

    with caplog.at_level(logging.WARNING, logger="asynclens"):
        with asynclens.session(probes=[BrokenProbe()]) as s:
            op()
    stats = s.statistics()
    assert stats.internal_errors == 2
    assert stats.probes == {"broken": {"ok": True}}
    assert "broken probe section" in s.summary()
    assert s.probe("broken") is not None and s.probe("missing") is None


def test_summary_lists_slowest_spans_and_errors() -> None:
    clock = FakeClock()

    @asynclens.trace(name="slow")
    def slow() -> None:
        clock.advance(300_000_000)

    @asynclens.trace(name="quick")
    def quick(fail: bool) -> None:
        clock.advance(1_000_000)
        if fail:
            raise ValueError("bad input")

    with asynclens.session(clock=clock, **NO_PROBES) as s:
        slow()
        for i in range(3):
            try:
                quick(i == 0)
            except ValueError:
                pass
    text = s.summary()
    assert text.splitlines()[0] == "asynclens: 4 spans in 303.0 ms (1 failed, 0 cancelled)"
    slowest = text.split("Slowest spans")[1].splitlines()[2:]  # after the heading and column titles
    assert slowest[0].split() == ["300.0", "ms", "-", "-", "-", "-", "-", "slow"]  # cpu, blocked, sched, io, executor
    assert "  quick: ValueError: bad input" in text.splitlines()
    assert s.aggregates.by_name["quick"].count == 3
    assert s.aggregates.by_name["quick"].errors == 1


def test_statistics_as_dict_is_json_ready() -> None:
    import json

    with asynclens.session(**NO_PROBES) as s:
        op()
    data = s.statistics().as_dict()
    assert json.loads(json.dumps(data))["spans_recorded"] == 1


def test_sinks_from_paths_and_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.jsonl"
    with asynclens.session(sinks=[str(path), "memory"], **NO_PROBES) as s:
        op()
    jsonl, memory = s.sinks
    assert isinstance(jsonl, asynclens.JsonLinesSink) and isinstance(memory, MemorySink)
    assert path.exists()


def test_unknown_sink_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown sink 'out\.xyz': a path must end in one of .*\.jsonl"):
        asynclens.session(sinks=["out.xyz"])
    with pytest.raises(TypeError, match="not a sink: 42"):
        asynclens.session(sinks=[42])  # type: ignore[list-item]


def test_flusher_delivers_without_explicit_flush() -> None:
    """The background flusher hands records over while the session runs."""
    import threading

    delivered = threading.Event()

    class Signalling(MemorySink):
        def write(self, records: Sequence[Record]) -> None:
            super().write(records)
            if self.spans:
                delivered.set()

    sink = Signalling()
    with asynclens.session(sinks=[sink], flush_interval=0.01, **NO_PROBES):
        op()
        assert delivered.wait(30), "the flusher never delivered the span"
        assert threading.current_thread().name != "asynclens-flusher"


def test_flush_hands_sinks_bounded_batches() -> None:
    """A large buffer is written in batches of at most FLUSH_BATCH records."""
    from asynclens.session import FLUSH_BATCH

    sizes: list[int] = []

    class Counting(Sink):
        def write(self, records: Sequence[Record]) -> None:
            sizes.append(len(records))

    with asynclens.session(sinks=[Counting()], flush_interval=3600, **NO_PROBES) as s:
        for _ in range(FLUSH_BATCH * 2 + 5):
            op()
        s.flush()
    assert sizes[:3] == [FLUSH_BATCH, FLUSH_BATCH, 5]


def test_session_left_open_is_closed_at_exit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A program that never closes its session still gets a complete file."""
    import subprocess
    import sys

    out = tmp_path / "run.jsonl"
    code = (
        "import asynclens\n"
        f"asynclens.session(sinks=[{str(out)!r}], lag=False, track_handles=False, scheduler=False).start()\n"
        "with asynclens.span('x'):\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    run = asynclens.read_jsonl(out)
    assert [r.name for r in run.records] == ["x"] and run.end is not None


def test_a_failing_flush_is_counted_and_the_flusher_keeps_going() -> None:
    import threading

    sink = MemorySink()
    with asynclens.session(sinks=[sink], flush_interval=0.001, **NO_PROBES) as s:
        original = s._flush_batch
        failed = threading.Event()
        second_flushed = threading.Event()

        def fail_once(count: int) -> None:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("planted")
            original(count)
            if any(r.name == "second" for r in sink.of_type(Span)):
                second_flushed.set()

        s._flush_batch = fail_once  # type: ignore[method-assign]
        with asynclens.span("first"):
            pass
        assert failed.wait(5)
        with asynclens.span("second"):
            pass
        assert second_flushed.wait(5)  # by the same flusher thread: it survived the failure
    assert s.statistics().internal_errors == 1


def test_emit_may_run_inside_itself_on_one_thread() -> None:
    """A gc or weakref callback may emit while its thread is already inside emit() (from
    3.12 a collection runs at any bytecode boundary): neither waking the flusher nor
    counting a drop may deadlock on the thread's own lock."""
    import threading

    s = asynclens.session(flush_interval=3600, **NO_PROBES)  # not started: no flusher to wait on
    s._limit, s._wake_at = 2, 0
    done = threading.Event()

    def reenter() -> None:
        with s._wake._cond, s._count_lock:  # as if interrupted inside set() and a drop
            s._wake.set()
            for _ in range(3):
                s.emit(object())  # type: ignore[arg-type]  # fills the buffer, then drops
        done.set()

    worker = threading.Thread(target=reenter, daemon=True)  # left behind if it deadlocks
    worker.start()
    worker.join(timeout=10)
    assert done.is_set(), "a re-entrant emit deadlocked"
    assert s._dropped == 1 and len(s._buffer) == 2 and s._wake.is_set()
