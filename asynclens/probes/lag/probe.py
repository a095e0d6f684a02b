"""Event-loop lag, utilisation (ELU) and stall attribution.

The ``"lag"`` probe of a session (on by default; ``lag=False`` turns it off):

* **Lag**: a timer callback per loop, re-armed every ``lag_interval``, records
  how late it ran (timer drift, ns) into a log-linear :class:`~asynclens.stats.Histogram`;
  one :class:`~asynclens.records.LagSnapshot` per loop per second, and at the end.
  On the default loop, ticks are skipped while the loop is provably idle (it ran
  nothing but the tick and waits in its selector); skipped ticks count as zero lag.
* **ELU**: on the default loop, exact: the selector's ``select()`` is wrapped and
  the time spent in it is idle time. uvloop's selector is C code: there ELU is the
  loop thread's CPU time plus the off-CPU part of detected stalls, over wall time
  (a blocking call shorter than ``stall_threshold`` counts as idle).
* **Stalls**: the loop thread notes when it comes back after more than
  ``stall_threshold`` without a heartbeat (exact duration); one watchdog thread per
  session samples the blocked thread's stack meanwhile, so each
  :class:`~asynclens.records.Stall` names the blocking line, task, span, async
  stack and cause.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._durations import format_ns
from ...records import Stall
from ...stats import Histogram
from .._loops import starting_here
from .._threads import thread_cpu_ns
from .monitor import LoopMonitor
from .watchdog import Watchdog

__all__ = ["LagProbe", "LagStatistics"]

_KEEP_WORST = 10


@dataclass
class LagStatistics:
    """What the lag probe measured so far; ``histogram`` merges every loop's lag (ns).

    ``loops`` holds one dict per loop (lag summary, ELU and its method, stalls,
    skipped ticks); ``worst`` the slowest stalls, slowest first.
    """

    histogram: Histogram
    elu: float | None
    stalls: int
    stalls_sampled: int
    worst: list[Stall]
    loops: list[dict[str, Any]] = field(default_factory=list)
    skipped_ticks: int = 0
    samples: int = 0
    polls: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lag": self.histogram.summary(),
            "elu": self.elu,
            "stalls": self.stalls,
            "stalls_sampled": self.stalls_sampled,
            "worst_stall_ns": self.worst[0].duration_ns if self.worst else None,
            "skipped_ticks": self.skipped_ticks,
            "samples": self.samples,
            "loops": self.loops,
        }


class _GcTimes:
    """Recent garbage collections (start, end, thread), from ``gc.callbacks``."""

    def __init__(self, now: Any) -> None:
        self.now = now
        self.recent: deque[tuple[int, int, int]] = deque(maxlen=256)
        self._started: dict[int, int] = {}

    def __call__(self, phase: str, info: Mapping[str, Any]) -> None:
        tid = threading.get_ident()
        if phase == "start":
            self._started[tid] = self.now()
        else:
            start = self._started.pop(tid, None)
            if start is not None:
                self.recent.append((start, self.now(), tid))

    def overlap(self, start: int, end: int, thread_id: int | None) -> int:
        total = 0
        for s, e, tid in list(self.recent):
            if thread_id is not None and tid != thread_id:
                continue
            lo, hi = max(s, start), min(e, end)
            if hi > lo:
                total += hi - lo
        return total


class LagProbe:
    """The session probe behind ``lag=True``: monitors, watchdog, statistics.

    ``window`` is the snapshot window in seconds; ``idle_skip=False`` keeps
    ticking while the loop is idle (the benchmark compares both).
    """

    name = "lag"

    def __init__(
        self,
        interval: float = 0.01,
        stall_threshold: float = 0.05,
        *,
        window: float = 1.0,
        idle_skip: bool = True,
        poll_interval: float | None = None,
        sample_interval: float | None = None,
    ) -> None:
        self.interval_ns = int(interval * 1e9)
        self.threshold_ns = int(stall_threshold * 1e9)
        self.window_ns = int(window * 1e9)
        self.idle_skip = idle_skip
        self.sample_ns = (
            int(sample_interval * 1e9) if sample_interval else min(max(self.threshold_ns // 10, 1_000_000), 5_000_000)
        )
        # Stalls are timed by the loop itself; the watchdog only has to catch each one in
        # the act. A poll finds a loop blocked once it has been away a sample interval, and
        # then waits up to a switch interval (about a sample interval) for the GIL a CPU-bound
        # step holds: polling every (threshold - 2 sample intervals) lands a sample inside any
        # stall longer than the threshold, with as few idle wake-ups as that allows.
        self.poll_ns = (
            int(poll_interval * 1e9)
            if poll_interval
            else min(max(self.threshold_ns - 2 * self.sample_ns, 1_000_000), 50_000_000)
        )
        self.session: Any = None
        self.monitors: list[LoopMonitor] = []
        self.watchdog: Watchdog | None = None
        self._gc: _GcTimes | None = None
        self._lock = threading.Lock()
        self._retire_lock = threading.Lock()
        self._retired = Histogram()  # lag of loops closed during the session
        self._retired_loops: list[dict[str, Any]] = []
        self._stalls = 0
        self._stalls_sampled = 0
        self._worst: list[Stall] = []
        self.started = False  # start() ran to its end

    # ------------------------------------------------------------ lifecycle

    def start(self, session: Any) -> None:
        self.session = session
        self._gc = _GcTimes(session.now)
        gc.callbacks.append(self._gc)
        self.watchdog = Watchdog(
            now=session.now,
            emit=session.emit,
            on_error=session.internal_error,
            poll_ns=self.poll_ns,
            sample_ns=self.sample_ns,
            gc_overlap=self._gc.overlap,
            on_stall=self._note_stall,
            before_poll=self._retire_closed,
        )
        self.watchdog.start()
        self.started = True

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        session = self.session
        if session is None or self.watchdog is None:
            return
        # A monitor holds its loop (and the loop its sockets) until retired: do it now rather
        # than at the watchdog's next poll, so that a loop per test (pytest) leaves one or two
        # loops alive, not dozens for the garbage collector to walk.
        self._retire_closed()
        monitor = LoopMonitor(
            loop,
            now=session.now,
            cpu=session.clock.cpu_ns,
            interval_ns=self.interval_ns,
            threshold_ns=self.threshold_ns,
            window_ns=self.window_ns,
            emit=session.emit,
            on_error=session.internal_error,
            idle_skip=self.idle_skip,
        )
        monitor.on_wake = self.watchdog.loop_woke
        with self._lock:
            self.monitors.append(monitor)
        try:
            running = asyncio.events._get_running_loop()
            if running is loop or starting_here(loop):
                # On the loop's own thread: the watchdog can sample it from the first step on.
                monitor.thread_id = threading.get_ident()
                monitor.install()
            elif not loop.is_running():
                monitor.install()
            else:
                loop.call_soon_threadsafe(self._install, monitor)
        except BaseException:
            self._drop(monitor)  # the session reports the loop as not watched
            raise
        self.watchdog.add(monitor)

    def _install(self, monitor: LoopMonitor) -> None:
        loop = monitor.loop
        try:
            monitor.install()
        except Exception as exc:
            self.session.internal_error("installing the lag monitor", exc)
            self._drop(monitor)
            not_measured = getattr(self.session, "not_measured", None)
            if not_measured is not None and loop is not None:
                reason = f"{type(exc).__name__} installing the monitor"
                not_measured(self.name, loop, f"{reason}: {exc}" if str(exc) else reason)

    def _drop(self, monitor: LoopMonitor) -> None:
        """Forget a monitor that could not be installed: no snapshot for a loop not watched."""
        monitor.uninstall()
        with self._lock:
            if monitor in self.monitors:
                self.monitors.remove(monitor)
        if self.watchdog is not None:
            self.watchdog.forget([monitor])

    def stop(self) -> None:
        watchdog = self.watchdog
        if watchdog is not None:
            watchdog.stop()
        end = self.session.now()
        for monitor in list(self.monitors):
            monitor.uninstall()
            if watchdog is not None:
                try:
                    watchdog.drain(monitor, end)
                except Exception as exc:
                    self.session.internal_error("reporting stalls", exc)
            self._final_snapshot(monitor, end)
        if self._gc is not None and self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def _final_snapshot(self, monitor: LoopMonitor, end: int) -> None:
        try:
            if monitor.window.count or monitor.snapshots == 0 or end > monitor.window_start:
                monitor.roll(end, self._cpu_of(monitor))
        except Exception as exc:
            self.session.internal_error("final lag snapshot", exc)

    def _cpu_of(self, monitor: LoopMonitor) -> int | None:
        if monitor.exact or monitor.thread_id is None:
            return None
        if monitor.thread_id == threading.get_ident():
            return int(self.session.clock.cpu_ns())
        return thread_cpu_ns(monitor.thread_id)

    def _retire_closed(self) -> None:
        """Fold loops that were closed into the totals so memory stays bounded."""
        if not any(m.is_closed() for m in self.monitors):
            return
        with self._retire_lock:
            self._retire(self._closed_monitors())

    def _closed_monitors(self) -> list[LoopMonitor]:
        return [m for m in self.monitors if m.is_closed()]

    def _retire(self, closed: list[LoopMonitor]) -> None:
        end = self.session.now()
        for m in closed:
            if self.watchdog is not None:
                self.watchdog.drain(m, end)
            m.uninstall()
            if m.window.count:
                m.roll(max(m.beat, m.window_start), None if m.exact else self._cpu_of(m))
            with self._lock:
                self.monitors.remove(m)
                self._retired.merge(m.closed_hist).merge(m.window)  # its lag (m.hist), without a copy
                if len(self._retired_loops) < 100:
                    self._retired_loops.append(self._loop_dict(m, None))
            m.loop = None
        if self.watchdog is not None:
            self.watchdog.forget(closed)

    def _note_stall(self, monitor: Any, stall: Stall) -> None:
        with self._lock:
            self._stalls += 1
            if stall.sampled:
                self._stalls_sampled += 1
            worst = self._worst
            if len(worst) < _KEEP_WORST or stall.duration_ns > worst[-1].duration_ns:
                worst.append(stall)
                worst.sort(key=lambda s: -s.duration_ns)
                del worst[_KEEP_WORST:]

    # ------------------------------------------------------------ reporting

    def _loop_dict(self, m: LoopMonitor, t: int | None) -> dict[str, Any]:
        return {
            "loop_id": m.loop_id,
            "lag": m.hist.summary(),
            "elu": m.elu(t, self._cpu_of(m) if t is not None else None),
            "elu_method": "select" if m.exact else "cpu",
            "stalls": m.stalls,
            "skipped_ticks": m.skipped,
        }

    def statistics(self) -> LagStatistics:
        t = self.session.now() if self.session is not None else None
        with self._lock:
            monitors = list(self.monitors)
            hist = self._retired.copy()
            loops = list(self._retired_loops)
            worst = list(self._worst)
            stalls, sampled = self._stalls, self._stalls_sampled
        busy = wall = 0.0
        skipped = 0
        for m in monitors:
            hist.merge(m.hist)
            skipped += m.skipped
            loops.append(self._loop_dict(m, t if not m.closed else None))
        for d in loops:
            if d["elu"] is not None:
                busy += d["elu"]
                wall += 1
        wd = self.watchdog
        return LagStatistics(
            histogram=hist,
            elu=(busy / wall) if wall else None,
            stalls=stalls,
            stalls_sampled=sampled,
            worst=worst,
            loops=loops,
            skipped_ticks=skipped,
            samples=wd.samples if wd is not None else 0,
            polls=wd.polls if wd is not None else 0,
        )

    def summary_lines(self) -> list[str]:
        """The headline (count, worst stall, where, which span, what kind) and the
        session-wide lag percentiles and ELU; the per-stall list and the lag windows
        are rendered from the records by the summary itself."""
        stats = self.statistics()
        hist = stats.histogram
        coverage = getattr(self.session, "coverage", None)
        missed = coverage.missed(self.name) if coverage is not None else 0
        if missed < 0 or not self.started:
            headline = "not watched: the lag probe failed to start (see above)"
        elif stats.stalls:
            headline = _stall_headline(stats.stalls, stats.worst[0])
        elif missed:
            # "no stalls" is only said of the loops that were watched
            headline = f"no stalls over {format_ns(self.threshold_ns)} on the watched loops"
        else:
            headline = f"no stalls over {format_ns(self.threshold_ns)}"
        if missed > 0:
            headline += f"; {missed} {'loop' if missed == 1 else 'loops'} not watched (see above)"
        lines = [f"Event loop: {headline}"]
        parts = []
        if hist.count:
            skipped = f", {stats.skipped_ticks} skipped while idle" if stats.skipped_ticks else ""
            parts.append(
                f"lag p50 {format_ns(hist.percentile(50))}, p90 {format_ns(hist.percentile(90))},"
                f" p99 {format_ns(hist.percentile(99))}, p99.9 {format_ns(hist.percentile(99.9))},"
                f" max {format_ns(hist.max)} ({hist.count} ticks{skipped})"
            )
        measured = [d for d in stats.loops if d["elu"] is not None]
        if len(measured) > 4 and stats.elu is not None:
            parts.append(f"ELU {stats.elu:.2f} (mean over {len(measured)} loops)")
        else:
            for d in measured:
                how = "exact" if d["elu_method"] == "select" else "approx. from CPU time"
                label = f" loop {d['loop_id']:x}" if len(measured) > 1 else ""
                parts.append(f"ELU{label} {d['elu']:.2f} ({how})")
        if parts:
            lines.append("  " + "; ".join(parts))
        return lines


_CAUSES = {"cpu": "CPU-bound", "blocking": "blocking call", "gc": "garbage collection", "unknown": "cause unknown"}


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def _stall_site(stall: Stall) -> str:
    if stall.file is None:
        return "(stack not sampled)"
    where = f"{_short(stall.file)}:{stall.line} in {stall.function}"
    if stall.span_name:
        where += f" (span {stall.span_name})"
    elif stall.task:
        where += f" (task {stall.task})"
    return where


def _stall_headline(count: int, worst: Stall) -> str:
    noun = "stall" if count == 1 else "stalls"
    return f"{count} {noun}, worst {format_ns(worst.duration_ns)} at {_stall_site(worst)}, {_CAUSES.get(worst.cause, worst.cause)}"
