"""The flight recorder: a ring bounded in time and bytes, dumps on triggers, rate limits."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import asynclens
from asynclens import FakeClock, SessionError
from asynclens._options import OptionError
from asynclens.flight import FlightRing, parse_dump_on
from asynclens.records import Record, SessionEnd, SessionInfo, Span, Stall, TaskStep
from asynclens.sinks import MemorySink

from loop_kinds import loop_factories

NO_PROBES: dict[str, Any] = dict(lag=False, track_handles=False, scheduler=False)
S = 1_000_000_000


class Dumps:
    """A dump target for tests: a fresh MemorySink per dump, kept by number."""

    def __init__(self) -> None:
        self.sinks: dict[int, MemorySink] = {}

    def __call__(self, n: int) -> MemorySink:
        self.sinks[n] = MemorySink()
        return self.sinks[n]

    def stalls(self, n: int) -> list[Stall]:
        return self.sinks[n].of_type(Stall)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _recorder_session(targets: Any, clock: FakeClock | None = None, **options: Any) -> asynclens.Session:
    defaults: dict[str, Any] = dict(flight_recorder=10, dump_after=0, dump_interval=0, **NO_PROBES)
    defaults.update(options)
    return asynclens.session(targets, clock=clock, **defaults)


def _stall(start_ns: int, duration_ns: int, line: int = 7) -> Stall:
    return Stall(loop_id=1, start_ns=start_ns, end_ns=start_ns + duration_ns, file="app.py", line=line, function="f")


def _dump_now(session: asynclens.Session) -> int | None:
    n = asynclens.dump()
    assert session.flight_recorder.wait_idle(10)
    return n


def test_a_stall_inside_the_window_is_in_the_dump_and_one_that_left_it_is_not(clock: FakeClock) -> None:
    dumps = Dumps()
    with _recorder_session(dumps, clock) as session:
        session.emit(_stall(clock.now_ns(), S // 2, line=1))  # t = 1 s
        session.flush()
        clock.advance(30 * S)
        session.emit(_stall(clock.now_ns(), S // 2, line=2))  # t = 31 s
        clock.advance(2 * S)
        assert _dump_now(session) == 1  # at 33 s: the window is 23..33 s
    assert [s.line for s in dumps.stalls(1)] == [2]
    records = dumps.sinks[1].records
    assert isinstance(dumps.sinks[1].info, SessionInfo) and isinstance(records[-1], SessionEnd)
    flight = records[-1].statistics["flight"]
    assert flight["dump"]["n"] == 1 and flight["records_in_dump"] == 1
    assert records[-1].statistics["blind_spots"][0].startswith("Not measured: anything before")


def test_a_stall_still_in_the_ring_but_before_the_window_is_left_out(clock: FakeClock) -> None:
    dumps = Dumps()
    with _recorder_session(dumps, clock, dump_after=5) as session:
        # the ring keeps window + dump_after (+1 s): a stall 12 s old is still kept, not dumped
        session.emit(_stall(clock.now_ns(), S // 10, line=1))
        session.flush()
        clock.advance(12 * S)
        session.emit(_stall(clock.now_ns(), S // 10, line=2))
        session.flush()
        assert len(session.flight_recorder.ring) == 2
        session.flight_recorder.trigger("test")
    assert [s.line for s in dumps.stalls(1)] == [2]


def test_a_stall_longer_than_the_threshold_triggers_a_dump_and_a_shorter_one_does_not(clock: FakeClock) -> None:
    dumps = Dumps()
    with _recorder_session(dumps, clock, dump_on={"stall": "200ms"}) as session:
        session.emit(_stall(clock.now_ns(), 150_000_000, line=1))
        session.flush()
        assert session.flight_recorder.wait_idle(10)
        assert dumps.sinks == {}
        clock.advance(S)
        session.emit(_stall(clock.now_ns(), 250_000_000, line=2))
        session.flush()
        assert session.flight_recorder.wait_idle(10)
    assert [s.line for s in dumps.stalls(1)] == [1, 2]
    assert "stall of 250.0 ms at app.py:2 in f" in dumps.sinks[1].records[-1].statistics["flight"]["dump"]["trigger"]


def test_the_byte_bound_holds_and_every_record_let_go_is_counted(clock: FakeClock) -> None:
    size = _kept_size(Span("request", 1, 1, None, clock.now_ns(), clock.now_ns()))
    ring = FlightRing(keep_ns=3600 * S, max_bytes=size * 100 + size // 2, now=clock.now_ns)
    for i in range(10_000):
        ring.write([Span("request", 1, i + 1, None, clock.now_ns(), clock.now_ns())])
        clock.advance(1000)
    assert ring.bytes <= ring.max_bytes
    assert len(ring) == 100
    assert ring.evicted == 9_900 and ring.aged_out == 0 and ring.received == 10_000
    assert [s.span_id for s in ring.snapshot(0)] == list(range(9_901, 10_001))  # the newest are kept


def _kept_size(record: Record) -> int:
    ring = FlightRing(keep_ns=S, max_bytes=1 << 30, now=lambda: 0)
    ring.write([record])
    return ring.bytes


def test_records_are_kept_packed_and_come_back_equal(clock: FakeClock) -> None:
    from asynclens.records import SpanEvent, StackSample, StallPart

    records: list[Record] = [
        Span("GET /", 7, 8, None, 1, 2, attrs=MappingProxyType({"k": 1}), events=(SpanEvent("e", 3, MappingProxyType({"a": "b"})),)),
        Stall(1, 2, 3, samples=(StackSample(("a.py:1 in f",), 2),), parts=(StallPart(5, task="t"),), episode=True),
        TaskStep(1, 2, 3, 4),
        SessionEnd(9, MappingProxyType({"weird": object()})),  # marshal cannot write it: kept as it is
    ]
    ring = FlightRing(keep_ns=3600 * S, max_bytes=1 << 30, now=clock.now_ns)
    ring.write(records[:3])
    ring.write(records[3:])
    assert [type(chunk.payload) for chunk in ring._chunks] == [bytes, list]
    assert ring.snapshot(0) == records


def test_records_that_left_the_window_are_aged_out_not_counted_as_evicted(clock: FakeClock) -> None:
    ring = FlightRing(keep_ns=10 * S, max_bytes=1 << 30, now=clock.now_ns)
    for _ in range(20):
        ring.write([TaskStep(1, clock.now_ns(), clock.now_ns(), clock.now_ns())])
        clock.advance(S)
    assert len(ring) == 11 and ring.aged_out == 9 and ring.evicted == 0


def test_the_evicted_records_are_said_first_in_the_dump(clock: FakeClock) -> None:
    dumps = Dumps()
    size = _kept_size(_stall(clock.now_ns(), 1000, line=5)) + 30  # three fit, a fourth does not
    with _recorder_session(dumps, clock, flight_max_bytes=size * 3) as session:
        for line in range(10):
            session.emit(_stall(clock.now_ns(), 1000, line=line))
            clock.advance(S // 10)
        session.flush()
        _dump_now(session)
        assert session.statistics().probes["flight"].records_evicted == 7
        assert any("records let go" in line for line in session.summary().splitlines())
    assert [s.line for s in dumps.stalls(1)] == [7, 8, 9]
    blind = dumps.sinks[1].records[-1].statistics["blind_spots"]
    assert "the ring let 7 records go" in blind[1]


def test_memory_stays_bounded_over_many_records(clock: FakeClock) -> None:
    dumps = Dumps()
    tracemalloc.start()
    try:
        with _recorder_session(dumps, clock, flight_max_bytes=2_000_000, buffer_limit=10_000) as session:
            ring = session.flight_recorder.ring

            def emit(count: int) -> None:
                for i in range(count):
                    session.emit(Span("request", 1, i + 1, None, clock.now_ns(), clock.now_ns(), attrs={"i": i}))
                    clock.advance(1000)
                    if i % 1000 == 999:
                        session.flush()

            emit(20_000)
            gc.collect()
            first, _ = tracemalloc.get_traced_memory()
            emit(100_000)
            gc.collect()
            second, _ = tracemalloc.get_traced_memory()
            assert ring.bytes <= 2_000_000
            assert ring.evicted > 100_000 - len(ring)
    finally:
        tracemalloc.stop()
    assert second - first < 1_000_000  # flat: what more records cost is let go


def test_dumps_are_numbered_into_the_file_names(tmp_path: Path, clock: FakeClock) -> None:
    from asynclens import read_jsonl

    template = str(tmp_path / "dump-{n}.jsonl")
    with _recorder_session([template, str(tmp_path / "last.txt")], clock) as session:
        session.emit(_stall(clock.now_ns(), S // 2, line=1))
        assert _dump_now(session) == 1
        clock.advance(S)
        session.emit(_stall(clock.now_ns(), S // 2, line=2))
        assert _dump_now(session) == 2
        files = session.statistics().probes["flight"].files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump-1.jsonl", "dump-2.jsonl", "last.txt"]
    assert len(files) == 4
    first, second = read_jsonl(tmp_path / "dump-1.jsonl"), read_jsonl(tmp_path / "dump-2.jsonl")
    assert [r.line for r in first.records if isinstance(r, Stall)] == [1]
    assert [r.line for r in second.records if isinstance(r, Stall)] == [1, 2]
    assert first.info.options["flight_dump"]["n"] == 1 and second.end is not None


def test_dumps_are_rate_limited_and_the_skipped_ones_counted(clock: FakeClock) -> None:
    dumps = Dumps()
    with _recorder_session(dumps, clock, dump_interval="10s", max_dumps=2) as session:
        assert _dump_now(session) == 1
        clock.advance(5 * S)
        assert _dump_now(session) is None  # too soon
        clock.advance(6 * S)
        assert _dump_now(session) == 2
        clock.advance(60 * S)
        assert _dump_now(session) is None  # max_dumps reached
        stats = session.statistics().probes["flight"]
    assert sorted(dumps.sinks) == [1, 2]
    assert stats.triggers == 4 and stats.triggers_skipped == 2 and stats.dumps_written == 2


def test_triggers_while_a_dump_waits_are_folded_into_it(clock: FakeClock) -> None:
    dumps = Dumps()
    with _recorder_session(dumps, clock, dump_after=3600) as session:
        assert asynclens.dump() == 1
        assert asynclens.dump("again") == 1
        # close() writes the waiting dump at once
    assert sorted(dumps.sinks) == [1]
    assert dumps.sinks[1].records[-1].statistics["flight"]["dump"]["triggers"] == ["asynclens.dump()", "again"]
    assert session.statistics().probes["flight"].triggers_merged == 1


def test_a_failing_dump_output_is_counted_and_never_raised(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    dumps = Dumps()

    def broken(n: int) -> MemorySink:
        raise OSError(28, "No space left on device")

    with _recorder_session([broken, dumps], clock) as session:
        _dump_now(session)
        stats = session.statistics().probes["flight"]
    assert stats.dump_failures == 1 and stats.dumps_written == 1 and sorted(dumps.sinks) == [1]
    assert "No space left on device" in caplog.text


def test_dump_without_a_flight_recorder_is_a_one_line_error() -> None:
    with pytest.raises(SessionError, match=r"^asynclens.dump\(\): no asynclens session is active") as info:
        asynclens.dump()
    assert "\n" not in str(info.value)
    with asynclens.session(**NO_PROBES):
        with pytest.raises(SessionError, match="the active session has no flight recorder"):
            asynclens.dump()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(flight_recorder=10, dump_on={"stal": "1s"}), r"unknown trigger 'stal'; valid triggers"),
        (dict(flight_recorder=10, dump_on=["stall"]), r"the stall trigger needs a duration"),
        (dict(flight_recorder=10, dump_on="stall=fast"), r"'fast' is not a duration"),
        (dict(flight_recorder=10, dump_on={"signal": "maybe"}), r"signal='maybe': must be true or false"),
        (dict(flight_recorder=0), r"flight_recorder=0\): must be longer than zero"),
        (dict(flight_recorder="ten"), r"'ten' is not a duration"),
        (dict(flight_recorder=10, max_dumps=0), r"max_dumps=0\): must be a positive whole number"),
        (dict(flight_recorder=10, dump_interval=-1), r"dump_interval=...\): -1 is not a non-negative duration"),
        (dict(dump_on="signal"), r"session\(dump_on=...\): only a flight recorder dumps"),
        (dict(max_dumps=3), r"session\(max_dumps=...\): only a flight recorder dumps"),
    ],
)
def test_bad_flight_options_are_one_line_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=message) as info:
        asynclens.session(["d-{n}.jsonl"], **options)
    assert "\n" not in str(info.value)


def test_dump_outputs_must_be_paths_or_factories(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="give paths .* or factories"):
        asynclens.session([MemorySink()], flight_recorder=10)
    with pytest.raises(OptionError, match="no output for the dumps"):
        asynclens.session(flight_recorder=10)
    with pytest.raises(OptionError, match="unknown sink"):
        asynclens.session([str(tmp_path / "d-{n}.nope")], flight_recorder=10)
    with pytest.raises(OptionError, match="no such directory"):
        asynclens.session([str(tmp_path / "missing" / "d-{n}.jsonl")], flight_recorder=10)


def test_dump_on_takes_a_mapping_or_the_cli_strings() -> None:
    assert parse_dump_on({"stall": "200ms", "task_exception": True, "signal": True}) == parse_dump_on(
        ["stall=200ms", "task-exception", "signal"]
    )
    default = parse_dump_on(None)
    assert default.signal and not default.task_exception and default.stall_ns is None
    assert parse_dump_on("stall=0.5").stall_ns == 500_000_000


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 here")
def test_sigusr2_dumps_and_the_handler_is_restored() -> None:
    dumps = Dumps()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    with _recorder_session(dumps, dump_on=["signal"]) as session:
        assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not dumps.sinks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.flight_recorder.wait_idle(10)
    assert sorted(dumps.sinks) == [1]
    assert dumps.sinks[1].records[-1].statistics["flight"]["dump"]["trigger"] == "SIGUSR2"
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 here")
def test_a_sigusr2_handler_of_the_program_is_never_replaced() -> None:
    seen: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        seen.append(signum)

    previous = signal.signal(signal.SIGUSR2, mine)
    try:
        with _recorder_session(Dumps(), dump_on=["signal"]) as session:
            assert signal.getsignal(signal.SIGUSR2) is mine
            assert any("handles SIGUSR2 itself" in line for line in session.summary().splitlines())
        assert signal.getsignal(signal.SIGUSR2) is mine
    finally:
        signal.signal(signal.SIGUSR2, previous)


async def _drop_a_failing_task() -> None:
    async def fails() -> None:
        raise LookupError("nobody looks")

    asyncio.get_running_loop().create_task(fails())  # no reference kept: nobody retrieves the exception
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)


@pytest.mark.parametrize("new_loop", loop_factories())
def test_an_unretrieved_task_exception_dumps(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    dumps = Dumps()
    handled: list[dict[str, Any]] = []
    loop = new_loop()
    loop.set_exception_handler(lambda loop, context: handled.append(context))
    try:
        with _recorder_session(dumps, dump_on=["task-exception"]) as session:
            loop.run_until_complete(_drop_a_failing_task())
            assert session.flight_recorder.wait_idle(10)
        # the program's own handler still got the exception, and is its own again
        assert [type(c.get("exception")) for c in handled] == [LookupError]
        assert loop.get_exception_handler() is not None and loop.get_exception_handler().__name__ == "<lambda>"
    finally:
        loop.close()
    assert sorted(dumps.sinks) == [1]
    trigger = dumps.sinks[1].records[-1].statistics["flight"]["dump"]["trigger"]
    assert "raised LookupError, never retrieved" in trigger


@pytest.mark.parametrize("new_loop", loop_factories())
def test_a_retrieved_task_exception_does_not_dump(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    dumps = Dumps()

    async def main() -> None:
        async def fails() -> None:
            raise LookupError("handled")

        with pytest.raises(LookupError):
            await asyncio.get_running_loop().create_task(fails())
        gc.collect()
        await asyncio.sleep(0)

    loop = new_loop()
    try:
        with _recorder_session(dumps, dump_on=["task-exception"]) as session:
            loop.run_until_complete(main())
            assert session.flight_recorder.wait_idle(10)
    finally:
        loop.close()
    assert dumps.sinks == {}


APP = textwrap.dedent(
    """
    import asyncio, time

    async def main():
        await asyncio.sleep(0.2)
        time.sleep(0.4)  # the planted stall
        await asyncio.sleep(0.2)

    asyncio.run(main())
    """
)


def _asynclens(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(asynclens.__file__).parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "asynclens", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_cli_writes_a_dump_that_report_reads(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    run = _asynclens(
        "run", "--flight-recorder", "30", "--dump-on", "stall=100ms", "-o", "dump-{n}.jsonl", "--no-summary", "app.py",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote dump-1.jsonl" in run.stderr
    assert sorted(p.name for p in tmp_path.glob("dump-*")) == ["dump-1.jsonl"]
    report = _asynclens("report", "dump-1.jsonl", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Not measured: anything before this flight recorder dump's window" in report.stdout
    assert "app.py:6 in main" in report.stdout  # the planted stall's line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flight-recorder", "10", "--dump-on", "stal=1s"], "--dump-on: unknown trigger 'stal'"),
        (["--flight-recorder", "10", "--dump-on", "stall=x"], "'x' is not a duration"),
        (["--dump-on", "signal"], "need --flight-recorder SECONDS"),
        (["--flight-recorder", "10", "--max-dumps", "0"], "'0' must be at least 1"),
        (["--flight-recorder", "soon"], "'soon' is not a duration"),
    ],
)
def test_bad_cli_flight_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "app.py").write_text("print('ran')\n")
    run = _asynclens("run", *args, "app.py", cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "ran" not in run.stdout


