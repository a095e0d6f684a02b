"""The lag probe's reporting and failure isolation (fake clock where no loop is needed)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

import asynclens
from asynclens import FakeClock
from asynclens.probes.lag.monitor import LoopBook
from asynclens.probes.lag.probe import LagProbe
from asynclens.records import Stall

MS = 1_000_000


def stall(ms: int, line: int, **kw: Any) -> Stall:
    fields: dict[str, Any] = {
        "file": os.path.join(os.getcwd(), "app.py"),
        "line": line,
        "function": "handle_search",
        "sampled": True,
    }
    fields.update(kw)
    return Stall(loop_id=1, start_ns=0, end_ns=ms * MS, **fields)


def test_summary_names_count_worst_site_span_and_cause() -> None:
    """The headline reads like the issue asks: count, worst, where, which span, what kind."""
    probe = LagProbe()
    with asynclens.session(sinks=["memory"], clock=FakeClock(), probes=[probe]) as s:
        probe._note_stall(None, stall(80, 12, cause="blocking", task="startup"))
        probe._note_stall(None, stall(312, 41, cause="cpu", span_name="GET /search"))
        probe._note_stall(None, stall(55, 7, cause="gc", span_name="GET /"))
        lines = probe.summary_lines()
        text = s.summary()
    assert (
        lines[0] == "Event loop: 3 stalls, worst 312.0 ms at app.py:41 in handle_search (span GET /search), CPU-bound"
    )
    assert lines[0] in text


def test_unsampled_stall_says_so() -> None:
    probe = LagProbe()
    with asynclens.session(sinks=["memory"], clock=FakeClock(), probes=[probe]):
        probe._note_stall(None, Stall(loop_id=1, start_ns=0, end_ns=70 * MS))
        assert probe.summary_lines()[0] == "Event loop: 1 stall, worst 70.0 ms at (stack not sampled), cause unknown"


def test_no_stalls_and_lag_line() -> None:
    with asynclens.session(sinks=["memory"], lag_interval=0.005) as s:
        asyncio.run(asyncio.sleep(0.05))
        lines = s.probe("lag").summary_lines()
    assert lines[0] == "Event loop: no stalls over 50.0 ms"
    assert lines[1].startswith("  lag p50 ") and "ELU 0." in lines[1] and "(exact)" in lines[1]


def test_worst_stalls_are_bounded() -> None:
    probe = LagProbe()
    with asynclens.session(sinks=["memory"], clock=FakeClock(), probes=[probe]):
        for i in range(50):
            probe._note_stall(None, stall(60 + i, i))
        stats = probe.statistics()
    assert stats.stalls == 50 and len(stats.worst) == 10
    assert [w.line for w in stats.worst[:2]] == [49, 48]


def test_statistics_are_json_ready_and_expose_the_histogram() -> None:
    with asynclens.session(sinks=["memory"]) as s:
        asyncio.run(asyncio.sleep(0.05))
        stats = s.statistics()
    lag = stats.probes["lag"]
    assert lag.histogram.count > 0
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["probes"]["lag"]["lag"]["count"] == lag.histogram.count
    assert set(data["probes"]["lag"]["lag"]) >= {"min", "max", "mean", "stddev", "p50", "p90", "p99", "p999"}


def test_a_bug_in_the_monitor_never_reaches_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing tick is counted as an internal error; the user's loop runs on."""

    def broken(self: LoopBook, t: int) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(LoopBook, "tick", broken)

    async def main() -> int:
        await asyncio.sleep(0.05)
        return 42

    with asynclens.session(sinks=["memory"]) as s:
        assert asyncio.run(main()) == 42
    assert s.statistics().internal_errors >= 1


def test_closed_loops_are_retired_into_the_totals() -> None:
    """Memory stays bounded over many short-lived loops (pytest-asyncio makes one per test)."""
    with asynclens.session(sinks=["memory"], lag_interval=0.002) as s:
        probe = s.probe("lag")
        for _ in range(5):
            asyncio.run(asyncio.sleep(0.02))
        probe._retire_closed()
        assert probe.monitors == []
        stats = probe.statistics()
    assert len(stats.loops) == 5
    assert stats.histogram.count >= 5
    assert "ELU" in " ".join(probe.summary_lines()) and "mean over 5 loops" in s.summary()
