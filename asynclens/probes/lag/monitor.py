"""Per-loop lag bookkeeping: timer drift, heartbeats, ELU windows, stall gaps.

The loop thread writes; the watchdog thread reads. Every method takes the time
as an argument so tests drive the bookkeeping with a fake clock and no loop;
:class:`LoopMonitor` binds it to a real loop (``install``).

Heartbeats are timestamps the loop thread writes anyway: the return from the
selector (default loop, exact) and each monitor tick. When the loop comes back
after more than ``threshold_ns`` without a heartbeat, it appends one *gap*
``(start, end, cpu_end)`` for the watchdog: the true duration of the stall,
measured by the loop itself, not the time until someone noticed.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from threading import get_ident
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..._native import core
from ...records import LagSnapshot
from ...stats import Histogram
from .._attrs import remove_instance_attr

__all__ = ["LoopBook", "LoopMonitor"]


class PyBookFields:
    """The heartbeat fields the selector wrapper touches every loop iteration (in C,
    ``asynclens._core.BookFields``, with the compiled core)."""

    __slots__ = ("beat", "idle_ns", "in_select", "parked_at", "select_enter_ns", "stopped", "threshold_ns")


if TYPE_CHECKING:
    BookFields = PyBookFields
else:
    BookFields = core.BookFields if core is not None else PyBookFields


class LoopBook(BookFields):
    """The bookkeeping of one loop, free of any real loop or clock."""

    __slots__ = (
        "_cpu",
        "_emit",
        "busy_total",
        "closed_hist",
        "cpu_ws",
        "exact",
        "expected",
        "first_window_start",
        "gaps",
        "idle_seen",
        "idle_ws",
        "interval_ns",
        "loop_id",
        "offcpu_ns",
        "offcpu_ws",
        "skip_lag",
        "skipped",
        "snapshots",
        "stalls",
        "thread_id",
        "ticks",
        "wall_total",
        "window",
        "window_ns",
        "window_skipped",
        "window_stalls",
        "window_start",
    )

    def __init__(
        self,
        loop_id: int,
        *,
        interval_ns: int,
        threshold_ns: int,
        window_ns: int,
        exact: bool,
        start_ns: int,
        cpu_ns: int | None = None,
        emit: Callable[[LagSnapshot], None] | None = None,
        cpu: Callable[[], int] | None = None,
    ) -> None:
        self.loop_id = loop_id
        self.interval_ns = interval_ns
        self.threshold_ns = threshold_ns
        self.window_ns = window_ns
        self.exact = exact  # ELU and idleness from the selector (default loop)
        self._emit = emit
        self._cpu = cpu
        # heartbeat state (loop thread writes, watchdog reads)
        self.beat = start_ns
        self.in_select = False
        self.select_enter_ns = start_ns
        self.idle_seen = 0  # tick-only loops: last time the watchdog saw the loop idle
        self.stopped = False  # the watchdog saw the loop not running
        self.skip_lag = False
        self.gaps: deque[tuple[int, int, int | None, int]] = deque(maxlen=1024)
        self.thread_id: int | None = None
        # lag
        self.closed_hist = Histogram()  # lag of the closed windows; see ``hist``
        self.window = Histogram()
        self.expected = start_ns + interval_ns
        self.parked_at: int | None = None
        self.skipped = 0
        self.ticks = 0
        # windows and ELU
        self.window_start = start_ns
        # None: windows of window_ns. The monitor sets it when it starts; a window then lasts a
        # 20th of the run so far (50 ms to window_ns), so a short run still gets a lag curve.
        self.first_window_start: int | None = None
        self.window_skipped = 0
        self.window_stalls = 0
        self.stalls = 0
        self.idle_ns = 0
        self.idle_ws = 0
        self.cpu_ws = cpu_ns
        self.offcpu_ns = 0  # off-CPU time of stalls (watchdog adds; ELU on tick-only loops)
        self.offcpu_ws = 0
        self.busy_total = 0
        self.wall_total = 0
        self.snapshots = 0

    # ------------------------------------------------------------ loop side

    def select_enter(self, t: int) -> None:
        if t - self.beat > self.threshold_ns:
            self.gap(self.beat, t)
        self.select_enter_ns = t
        self.in_select = True

    def select_exit(self, t: int) -> None:
        self.idle_ns += t - self.select_enter_ns
        if self.stopped:
            self.resume(t, self.select_enter_ns)
        self.beat = t
        self.in_select = False
        if self.parked_at is not None:
            self.unpark(t)

    def gap(self, start: int, t: int, key: int | None = None) -> None:
        """The loop came back at ``t`` after no heartbeat since ``start``.

        ``key`` names the busy stretch as the watchdog saw it (its last heartbeat)
        when that differs from the estimated ``start``.
        """
        if self.stopped:
            self.resume(t)
            return
        self.gaps.append((start, t, self._cpu() if self._cpu is not None else None, start if key is None else key))
        self.window_stalls += 1
        self.stalls += 1

    def resume(self, t: int, idle_until: int | None = None) -> None:
        """The loop runs again after the watchdog saw it stopped: not a stall, not lag.

        The time it was stopped (last heartbeat to ``idle_until``, default ``t``)
        counts as idle.
        """
        self.stopped = False
        self.skip_lag = True
        until = t if idle_until is None else idle_until
        if until > self.beat:
            self.idle_ns += until - self.beat
        self.beat = t
        if self.parked_at is not None:
            self.parked_at = t

    def tick(self, t: int) -> None:
        """A monitor tick ran at ``t`` (it was due at ``self.expected``)."""
        if self.stopped:
            self.resume(t)
        if self.skip_lag:
            self.skip_lag = False
        else:
            lag = t - self.expected
            self.window.record(lag)
            self.ticks += 1
        key = self.beat
        if self.exact:
            start = key
        else:
            key = max(key, self.idle_seen)
            start = self.tick_only_start(key, t)
        if t - start > self.threshold_ns:
            self.gap(start, t, key)
        self.beat = t
        first = self.first_window_start
        if t - self.window_start >= (
            self.window_ns if first is None else min(self.window_ns, max(50_000_000, (t - first) // 20))
        ):
            self.roll(t, self._cpu() if self._cpu is not None else None)

    def tick_only_start(self, low: int, t: int) -> int:
        """When the loop went busy, for loops whose only heartbeat is the tick.

        It was idle at the last tick (or when the watchdog last saw it idle) and
        already busy when this tick fell due (a free loop runs a due timer), so
        the start lies in ``[low, due]``: take the midpoint, off by at most half
        the interval.
        """
        due = min(self.expected, t)
        if due <= low:
            return low
        return (low + due) // 2

    def arm(self, t: int) -> None:
        """The next tick was scheduled at ``t`` for ``t + interval``."""
        self.expected = t + self.interval_ns

    def park(self, t: int) -> None:
        """Skip ticks: the loop is provably idle (nothing ready; it will wait in select)."""
        self.parked_at = t

    def unpark(self, t: int) -> int:
        """The loop left select at ``t``: count the ticks skipped as zero lag."""
        parked_at = self.parked_at
        self.parked_at = None
        if parked_at is None:
            return 0
        n = (t - parked_at) // self.interval_ns
        if n > 0:
            self.window.record(0, n)
            self.skipped += n
            self.window_skipped += n
        return n

    # ------------------------------------------------------------ windows

    def busy_since_window(self, t: int, cpu_now: int | None) -> int | None:
        wall = t - self.window_start
        if self.exact:
            idle = self.idle_ns - self.idle_ws
            if self.in_select:
                idle += max(0, t - self.select_enter_ns)
            elif self.stopped:
                idle += max(0, t - self.beat)
            return max(0, wall - idle)
        if cpu_now is None or self.cpu_ws is None:
            return None
        return max(0, cpu_now - self.cpu_ws) + (self.offcpu_ns - self.offcpu_ws)

    def roll(self, t: int, cpu_now: int | None) -> LagSnapshot:
        """Close the current window at ``t``, emit and return its snapshot."""
        wall = t - self.window_start
        busy = self.busy_since_window(t, cpu_now)
        elu = None
        if busy is not None and wall > 0:
            elu = min(1.0, busy / wall)
            self.busy_total += min(busy, wall)
            self.wall_total += wall
        s = self.window.summary()
        self.closed_hist.merge(self.window)
        snap = LagSnapshot(
            loop_id=self.loop_id,
            start_ns=self.window_start,
            end_ns=t,
            count=s["count"],
            min_ns=s["min"],
            max_ns=s["max"],
            mean_ns=s["mean"],
            stddev_ns=s["stddev"],
            p50_ns=s["p50"],
            p90_ns=s["p90"],
            p99_ns=s["p99"],
            p999_ns=s["p999"],
            elu=elu,
            elu_method="select" if self.exact else ("cpu" if elu is not None else None),
            skipped=self.window_skipped,
            stalls=self.window_stalls,
            histogram=MappingProxyType(self.window.to_dict()) if s["count"] else None,
        )
        self.window = Histogram()
        self.window_start = t
        self.idle_ws = self.idle_ns + (max(0, t - self.select_enter_ns) if self.in_select else 0)
        self.cpu_ws = cpu_now
        self.offcpu_ws = self.offcpu_ns
        self.window_skipped = 0
        self.window_stalls = 0
        self.snapshots += 1
        if self._emit is not None:
            self._emit(snap)
        return snap

    @property
    def hist(self) -> Histogram:
        """Lag over the whole session (closed windows plus the open one)."""
        return self.closed_hist.copy().merge(self.window)

    def elu(self, t: int | None = None, cpu_now: int | None = None) -> float | None:
        """Utilisation since the loop was attached (closed windows plus the open one)."""
        busy, wall = self.busy_total, self.wall_total
        if t is not None:
            open_busy = self.busy_since_window(t, cpu_now)
            open_wall = t - self.window_start
            if open_busy is not None and open_wall > 0:
                busy += min(open_busy, open_wall)
                wall += open_wall
        return min(1.0, busy / wall) if wall > 0 else None


class LoopMonitor(LoopBook):
    """:class:`LoopBook` bound to a real event loop: select wrapper and tick timer."""

    __slots__ = (
        "_handle",
        "_interval_s",
        "_now",
        "_on_error",
        "_selector",
        "_wrapper",
        "closed",
        "idle_frame",
        "idle_skip",
        "loop",
        "on_wake",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        now: Callable[[], int],
        cpu: Callable[[], int],
        interval_ns: int,
        threshold_ns: int,
        window_ns: int,
        emit: Callable[[LagSnapshot], None],
        on_error: Callable[[str, BaseException], None],
        idle_skip: bool = True,
    ) -> None:
        selector = getattr(loop, "_selector", None)
        exact = isinstance(loop, asyncio.BaseEventLoop) and selector is not None and hasattr(selector, "select")
        start = now()
        super().__init__(
            id(loop),
            interval_ns=interval_ns,
            threshold_ns=threshold_ns,
            window_ns=window_ns,
            exact=exact,
            start_ns=start,
            emit=emit,
            cpu=cpu,
        )
        self.loop: asyncio.AbstractEventLoop | None = loop
        self._now = now
        self._on_error = on_error
        self._selector = selector if exact else None
        self._wrapper: Any = None
        self._handle: asyncio.TimerHandle | None = None
        self.idle_skip = idle_skip and exact
        self.idle_frame: Any = None
        self.on_wake: Callable[[], None] | None = None  # the watchdog's loop_woke
        self.closed = False
        self._interval_s = interval_ns / 1e9

    def install(self) -> None:
        """Wrap the selector and start ticking (on the loop's thread, or before it runs)."""
        if self.closed or self.loop is None:
            return
        self.beat = self.select_enter_ns = self.window_start = self.first_window_start = self._now()
        if not self.exact and self._cpu is not None:
            self.cpu_ws = self._cpu()  # install runs on the loop's thread
        if self._selector is not None:
            self._wrap_selector(self._selector)
        self._schedule(self.beat)

    def _wrap_selector(self, selector: Any) -> None:
        original = selector.select
        if core is not None:
            self._wrapper = selector.select = core.SelectHook(self, original, self._now)
            return
        now = self._now
        book = self

        def select(timeout: float | None = None) -> Any:
            t = now()
            if t - book.beat > book.threshold_ns:
                book.gap_safe(t)
            book.select_enter_ns = t
            book.in_select = True
            try:
                return original(timeout)
            finally:
                t = now()
                book.idle_ns += t - book.select_enter_ns
                if book.stopped:
                    book.resume(t, book.select_enter_ns)
                book.beat = t
                book.in_select = False
                if book.parked_at is not None:
                    book.wake(t)

        select.__wrapped__ = original  # type: ignore[attr-defined]
        selector.select = select
        self._wrapper = select

    def gap_safe(self, t: int) -> None:
        try:
            self.gap(self.beat, t)
        except Exception as exc:
            self._on_error("recording a stall", exc)

    def wake(self, t: int) -> None:
        """Unpark on the loop thread: count skipped ticks, schedule the next one."""
        try:
            self.unpark(t)
            if not self.closed:
                self._schedule(t)
            if self.on_wake is not None:
                self.on_wake()
        except Exception as exc:
            self._on_error("resuming the lag monitor", exc)

    def _schedule(self, t: int) -> None:
        loop = self.loop
        if loop is None or self.closed:
            return
        self._handle = loop.call_later(self._interval_s, self._tick)
        self.arm(t)

    def _tick(self) -> None:
        if self.closed:
            return
        try:
            t = self._now()
            self.thread_id = get_ident()
            if not self.exact and self.idle_frame is None:
                self.idle_frame = sys._getframe(1)
            if self.stopped:
                self.idle_frame = sys._getframe(1) if not self.exact else None
            self.tick(t)
            loop = self.loop
            if self.closed or loop is None:
                return
            if self.idle_skip and not loop._ready:  # type: ignore[attr-defined]
                self.park(t)
            else:
                self._schedule(t)
        except Exception as exc:
            self._on_error("lag monitor tick", exc)

    def uninstall(self) -> None:
        """Stop ticking and restore the selector (from any thread)."""
        self.closed = True
        self.idle_frame = None
        handle = self._handle
        loop = self.loop
        if handle is not None and loop is not None and asyncio.events._get_running_loop() is loop:
            handle.cancel()
        self._handle = None
        selector = self._selector
        # a closed loop has dropped its (closed) selector: nothing will call it again
        in_use = selector is not None and getattr(loop, "_selector", selector) is selector
        if in_use and self._wrapper is not None:
            remove_instance_attr(selector, "select", self._wrapper)
        self._selector = None
        self._wrapper = None

    def is_running(self) -> bool:
        loop = self.loop
        return loop is not None and loop.is_running()

    def is_closed(self) -> bool:
        loop = self.loop
        return loop is None or loop.is_closed()
