"""The session tests are recorded in (one per test, or one for the whole run)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .._state import context as _context
from ..records import Record, SessionInfo
from ..session import Session
from ..sinks import Sink
from .budgets import Policy

__all__ = ["Recorder", "WindowSink", "current_task_id", "session_options"]

_DEFAULT_STALL_THRESHOLD = 0.05
_MIN_STALL_THRESHOLD = 0.001
_KEEP_WINDOWS = 1000
_KEEP_CLOSING_LEAKS = 100


def current_task_id() -> int | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return id(task) if task is not None else None


class WindowSink(Sink):
    """Collects what the session records; ``take()`` hands it to the test running now.

    Bounded: records beyond ``limit`` per test are dropped and counted.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.dropped = 0
        self.info: SessionInfo | None = None
        self._records: list[Record] = []
        self._lock = threading.Lock()

    def open(self, info: SessionInfo) -> None:
        self.info = info

    def write(self, records: Sequence[Record]) -> None:
        with self._lock:
            room = max(0, self.limit - len(self._records))
            if room < len(records):
                self.dropped += len(records) - room
            self._records.extend(records[:room])

    def take(self) -> list[Record]:
        with self._lock:
            taken, self._records = self._records, []
        return taken


class Recorder:
    """Owns the asynclens session tests are recorded in.

    Without ``--asynclens`` each instrumented test gets a session of its own
    (closed after its teardown, so its leaks are the handles the session's end
    finds open). With ``--asynclens`` one session records the whole run and each
    test takes the records of its own window; leaks are then the handles opened
    in the window and still open after teardown (a live snapshot), which spares
    every test the cost of starting and stopping the probes.
    """

    def __init__(self, long_lived: bool) -> None:
        self.long_lived = long_lived
        self.session: Session | None = None
        self.sink = WindowSink()
        self.options: dict[str, Any] = {}
        self.probes: dict[str, Any] = {}  # the session's probes by name
        self._problems = (0, 0)
        self._last: Session | None = None
        self._checked_s = 0.0
        self.open_keys: frozenset[tuple[Any, Any]] | None = None
        self.windows: deque[tuple[int, int, str]] = deque(maxlen=_KEEP_WINDOWS)
        self.closing_leaks: list[Any] = []
        self.reported: set[Any] = set()  # handle ids some test's report named (or a window judged) already
        #: ids of the tasks module-, class-, package- or session-scoped fixtures started
        #: while being set up: theirs, never a test's leak (a weak set would need the tasks)
        self.fixture_tasks: set[int] = set()

    def owner_of(self, t: int) -> str | None:
        """The test whose window (in this session) contains time ``t``, if any."""
        for start, end, nodeid in reversed(self.windows):
            if start <= t <= end:
                return nodeid
            if end < t:
                return None
        return None

    def acquire(self, name: str, options: dict[str, Any]) -> tuple[Session | None, str | None]:
        current = self.session
        if current is not None and current.state == "active":
            return current, None
        other = _context.active
        if other is not None:
            return None, f"another asynclens session is already active ({other!r})"
        self.sink = WindowSink()
        session = Session([self.sink], flush_interval=0.5, name=name, **options)
        session.start()
        self.session = session
        self.probes = {probe.name: probe for probe in session.probes}
        self._problems = (0, 0)
        self._checked_s = time.monotonic()
        self.open_keys = None
        return session, None

    def new_problems(self, force: bool = False) -> tuple[int, int]:
        """Records dropped and internal errors since the last look (for one test's report).

        A long-lived session is looked at about once a second: its statistics ask
        every probe, which costs more than a small test."""
        session = self.session or self._last
        now_s = time.monotonic()
        if session is None or (not force and self.session is not None and now_s - self._checked_s < 1.0):
            return 0, 0
        self._checked_s = now_s
        stats = session.statistics()
        now = (stats.records_dropped + self.sink.dropped, stats.internal_errors)
        before, self._problems = self._problems, now
        return now[0] - before[0], now[1] - before[1]

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.state == "active":
            self._last = session
            session.close()
            if self.long_lived:  # what the session's end reports belongs to no test
                taken = self.sink.take()
                # a scoped fixture's task cancelled when its loop closes is no leak either
                leaks = [
                    r
                    for r in taken
                    if getattr(r, "kind", None) == "leak"
                    and getattr(r, "handle_id", None) not in self.reported
                    and not (
                        getattr(r, "handle_kind", None) == "task"
                        and getattr(r, "handle_id", None) in self.fixture_tasks
                    )
                ]
                self.closing_leaks.extend(leaks[: max(0, _KEEP_CLOSING_LEAKS - len(self.closing_leaks))])


def session_options(policies: Iterable[tuple[Policy, bool]]) -> dict[str, Any]:
    """Stall threshold low enough for the strictest ``max_stall``; the scheduler
    probe only where a test asks about scheduling delay or busy-yield tasks; no I/O rates (nothing judges a
    test on them, and their readiness-event hook would cost every new loop)."""
    threshold = _DEFAULT_STALL_THRESHOLD
    scheduler = False
    for policy, uses_lens in policies:
        if policy.max_stall_ns is not None:
            threshold = min(threshold, max(_MIN_STALL_THRESHOLD, policy.max_stall_ns / 1e9))
        scheduler = scheduler or uses_lens or policy.max_sched_delay_ns is not None or policy.busy_yield != "ignore"
    return {"stall_threshold": threshold, "scheduler": scheduler, "io_rates": False}
