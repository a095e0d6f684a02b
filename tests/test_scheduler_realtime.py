"""The probe on real clocks and real loops (asyncio and uvloop): generous bounds only."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from loop_kinds import loop_factories

import asynclens
from asynclens.probes.scheduler.probe import SchedulerProbe
from asynclens.records import Span
from asynclens.testing import capture

MS = 1_000_000


@pytest.mark.parametrize("factory", loop_factories())
def test_victim_behind_a_real_stall(factory: Any) -> None:
    """A victim made ready and then starved by a 300 ms stall is told apart from I/O."""

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def victim() -> None:
            with asynclens.span("victim"):
                await fut

        async def staller() -> None:
            await asyncio.sleep(0.1)
            fut.set_result(None)
            time.sleep(0.3)  # the planted stall

        await asyncio.gather(victim(), staller())

    loop = factory()
    try:
        with capture(probes=[SchedulerProbe(thread_cpu=True, record_steps=100)]) as cap:
            loop.run_until_complete(main())
    finally:
        loop.close()
    (span,) = [r for r in cap.records if isinstance(r, Span)]
    assert span.cpu_ns is not None and span.sched_wait_ns is not None and span.io_wait_ns is not None
    assert span.cpu_ns + span.sched_wait_ns + span.io_wait_ns + (span.executor_ns or 0) == span.duration_ns
    assert span.sched_wait_ns >= 250 * MS  # the stall is >= 300 ms of real time
    assert span.io_wait_ns >= 50 * MS  # the 100 ms sleep before the future was set
    assert span.cpu_ns < span.sched_wait_ns
    assert span.steps == 2
    assert any(r.kind == "step" for r in cap.records)
    assert "starved by the loop" in cap.session.summary()
