"""The per-loop lag bookkeeping, driven with explicit (fake) times: no loop, no sleeping."""

from __future__ import annotations

import pytest

from asynclens.probes.lag.monitor import LoopBook
from asynclens.records import LagSnapshot

MS = 1_000_000
T0 = 1_000 * MS


def book(exact: bool = True, **kw: object) -> tuple[LoopBook, list[LagSnapshot]]:
    out: list[LagSnapshot] = []
    cpu = kw.pop("cpu", None)
    b = LoopBook(
        7,
        interval_ns=10 * MS,
        threshold_ns=50 * MS,
        window_ns=1_000 * MS,
        exact=exact,
        start_ns=T0,
        cpu_ns=0 if not exact else None,
        emit=out.append,
        cpu=cpu,  # type: ignore[arg-type]
    )
    return b, out


def test_tick_records_timer_drift() -> None:
    """A tick due at arm-time + interval that runs 3 ms late records 3 ms of lag."""
    b, _ = book()
    b.arm(T0)
    b.tick(T0 + 13 * MS)
    b.arm(T0 + 13 * MS)
    b.tick(T0 + 23 * MS)
    assert b.hist.count == 2
    assert b.hist.min == 0
    assert b.hist.max == 3 * MS


def test_early_tick_counts_as_zero_lag() -> None:
    """uvloop can fire a timer before it is due: negative drift is recorded as 0."""
    b, _ = book()
    b.arm(T0)
    b.tick(T0 + 9 * MS)
    assert b.hist.max == 0 and b.hist.count == 1


def test_window_rolls_into_one_snapshot_with_exact_elu() -> None:
    """Time in select is idle: 600 ms of select in a 1 s window gives ELU 0.4."""
    b, out = book()
    t = T0
    for _ in range(6):  # 6 x (100 ms idle in select, then 66.6 ms busy)
        b.select_enter(t)
        t += 100 * MS
        b.select_exit(t)
        t += 40 * MS
        b.arm(t)
        t += 10 * MS + 2 * MS
        b.tick(t)
        t += 14 * MS
    assert t - T0 < 1_000 * MS
    b.select_enter(t)
    b.select_exit(T0 + 1_000 * MS)
    b.arm(T0 + 1_000 * MS)
    b.tick(T0 + 1_010 * MS)
    assert len(out) == 1
    snap = out[0]
    assert (snap.loop_id, snap.start_ns, snap.end_ns) == (7, T0, T0 + 1_010 * MS)
    assert snap.count == 7 and snap.max_ns == 2 * MS and snap.p50_ns == 2 * MS
    idle = 600 * MS + (T0 + 1_000 * MS - t)
    assert snap.elu == pytest.approx(1 - idle / (1_010 * MS))
    assert snap.elu_method == "select"
    assert b.window.count == 0  # a new window started


def test_gap_at_select_enter_is_a_stall_with_its_true_duration() -> None:
    """Coming back 80 ms after leaving select reports the gap select-exit → select-enter."""
    b, _ = book()
    b.select_enter(T0)
    b.select_exit(T0 + 5 * MS)
    b.select_enter(T0 + 85 * MS)
    assert list(b.gaps) == [(T0 + 5 * MS, T0 + 85 * MS, None, T0 + 5 * MS)]
    assert b.stalls == 1


def test_short_busy_stretch_is_not_a_stall() -> None:
    b, _ = book()
    b.select_exit(T0 + 5 * MS)
    b.select_enter(T0 + 50 * MS)  # exactly the threshold: not over it
    assert not b.gaps


def test_tick_after_blocking_callback_ends_the_stall_once() -> None:
    """A cascade is counted once: the tick that ends a stall starts a new heartbeat,
    so the select that follows sees no second gap."""
    b, _ = book(cpu=lambda: 42)
    b.select_exit(T0)
    b.arm(T0)
    b.tick(T0 + 300 * MS)
    b.select_enter(T0 + 301 * MS)
    assert list(b.gaps) == [(T0, T0 + 300 * MS, 42, T0)]
    assert b.hist.max == 290 * MS


def test_park_counts_skipped_ticks_as_zero_lag() -> None:
    """While parked (idle in select) no tick runs; leaving select counts the ticks
    that would have run as zero lag and reports them as skipped."""
    b, _ = book()
    b.arm(T0)
    b.tick(T0 + 10 * MS)
    b.park(T0 + 10 * MS)
    b.select_enter(T0 + 10 * MS)
    b.select_exit(T0 + 255 * MS)
    assert b.skipped == 24
    assert b.hist.count == 25 and b.hist.max == 0
    assert b.parked_at is None


def test_stopped_loop_resumes_without_stall_or_lag() -> None:
    """A loop the watchdog saw stopped (run_until_complete returned) may restart
    much later: neither the pause nor the overdue tick is a stall or lag."""
    b, _ = book()
    b.select_exit(T0)
    b.arm(T0)
    b.stopped = True
    b.select_enter(T0 + 5_000 * MS)
    b.tick(T0 + 5_001 * MS)
    assert not b.gaps and b.hist.count == 0 and not b.stopped


def test_restart_is_noticed_at_the_first_select() -> None:
    """After a quick restart (no gap yet) the first return from select ends the
    stopped state, so a real stall right after it is reported; the stopped time
    counts as idle."""
    b, _ = book()
    b.select_exit(T0)
    b.stopped = True
    b.select_enter(T0 + 30 * MS)  # restarted 30 ms later: under the threshold
    b.select_exit(T0 + 31 * MS)
    assert not b.stopped and b.idle_ns == 31 * MS
    b.select_enter(T0 + 131 * MS)
    assert list(b.gaps) == [(T0 + 31 * MS, T0 + 131 * MS, None, T0 + 31 * MS)]


def test_tick_only_loop_takes_midpoint_between_idle_and_due() -> None:
    """Without a selector heartbeat (uvloop) a stall began after the loop was last
    seen idle and before the tick fell due: the midpoint is reported."""
    b, _ = book(exact=False)
    b.beat = T0
    b.arm(T0)  # due at T0 + 10 ms
    b.idle_seen = T0 + 4 * MS
    b.tick(T0 + 200 * MS)
    assert list(b.gaps) == [(T0 + 7 * MS, T0 + 200 * MS, None, T0 + 4 * MS)]


def test_tick_only_loop_seen_idle_after_due_uses_that_time() -> None:
    b, _ = book(exact=False)
    b.beat = T0
    b.arm(T0)
    b.idle_seen = T0 + 12 * MS
    b.tick(T0 + 100 * MS)
    assert b.gaps[0][0] == T0 + 12 * MS


def test_tick_only_elu_from_cpu_time_and_offcpu_stalls() -> None:
    """uvloop ELU = loop thread CPU + off-CPU time of detected stalls, over wall time."""
    cpu = [0]
    b, out = book(exact=False, cpu=lambda: cpu[0])
    b.cpu_ws = 0
    cpu[0] = 200 * MS
    b.offcpu_ns = 300 * MS
    b.arm(T0 + 990 * MS)
    b.tick(T0 + 1_000 * MS)
    assert out[0].elu == pytest.approx(0.5)
    assert out[0].elu_method == "cpu"


def test_session_elu_spans_closed_and_open_windows() -> None:
    b, out = book()
    b.select_enter(T0)
    b.select_exit(T0 + 1_000 * MS)  # first second idle
    b.arm(T0 + 990 * MS)
    b.tick(T0 + 1_000 * MS)
    assert out[0].elu == pytest.approx(0.0)
    # the open window: 1 s busy
    assert b.elu(T0 + 2_000 * MS) == pytest.approx(0.5)
