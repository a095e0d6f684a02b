"""The pytest plugin: a ``lens`` fixture, the ``asynclens`` marker, ``--asynclens`` options.

Registered through the ``pytest11`` entry point; it does nothing (and prints
nothing) until a test asks for it: ``--asynclens`` (or ``asynclens = true`` in
the ini file) instruments every test, ``@pytest.mark.asynclens(...)`` and the
``lens`` fixture instrument one.

Each instrumented test runs in its own asynclens session, from before its first
fixture is set up until after its last is torn down (only one session can be
active in a process, so the marker, the option and the fixture share it).
Stalls and scheduling delays over the test's limits fail the test itself;
handles still open after teardown are judged then (``leaks="fail"`` reports an
error at teardown, ``"warn"`` a warning). Everything opened or blocked while a
module- or session-scoped fixture was being set up belongs to that fixture and
is not counted against the test.

This is the only asynclens module that imports pytest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import inspect
import os
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import _context
from ._budgets import (
    LEAK_MODES,
    AllowRule,
    AllowRuleError,
    Finding,
    Policy,
    Verdict,
    evaluate,
    findings_from,
)
from ._durations import DurationError, parse_duration
from ._summary import format_ns
from .records import Record, SessionInfo, Span
from .session import Session, SessionStatistics
from .sinks import Sink, sink_for

__all__ = ["AsyncLensWarning", "Lens"]

_MARKER = "asynclens"
_MARKER_KEYS = ("max_stall", "leaks", "max_sched_delay", "allow", "enabled")
HANDLE_KINDS = ("socket", "file", "subprocess", "transport", "task", "thread")
_DEFAULT_STALL_THRESHOLD = 0.05
_MIN_STALL_THRESHOLD = 0.001
_TOP = 10
_SETTLE_TIMEOUT_S = 0.2
_KEEP_WINDOWS = 1000
_KEEP_CLOSING_LEAKS = 100


class AsyncLensWarning(pytest.PytestWarning):
    """A leak under ``leaks="warn"``, or an allow rule that matched nothing."""


# --------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asynclens", "asynclens: event-loop stalls, leaked handles, scheduling delay")
    group.addoption(
        "--asynclens",
        action="store_true",
        default=False,
        help="record every test in an asynclens session (ini: asynclens = true)",
    )
    group.addoption(
        "--asynclens-max-stall",
        metavar="DURATION",
        default=None,
        help="fail a test whose event loop was blocked longer than this: 50ms, 0.05s, 50 (ms) "
        "(ini: asynclens_max_stall; default: report stalls, do not fail)",
    )
    group.addoption(
        "--asynclens-leaks",
        metavar="fail|warn|ignore",
        default=None,
        help="what a handle (socket, file, task, thread, ...) left open by a test does (ini: asynclens_leaks; default warn)",
    )
    group.addoption(
        "--asynclens-max-sched-delay",
        metavar="DURATION",
        default=None,
        help="fail a test in which a ready task waited longer than this to run (ini: asynclens_max_sched_delay)",
    )
    group.addoption(
        "--asynclens-allow",
        metavar="RULE",
        action="append",
        default=None,
        help="a known stall/leak not to fail on: [stall:|leak:|sched:]pattern, pattern a module, "
        "module:function, path or handle description (repeatable; ini: asynclens_allow, one per line)",
    )
    group.addoption(
        "--asynclens-trace-dir",
        metavar="DIR",
        default=None,
        help="write the recording of every failing test to DIR and print its path (ini: asynclens_trace_dir)",
    )
    parser.addini("asynclens", "record every test in an asynclens session", type="bool", default=False)
    parser.addini("asynclens_max_stall", "fail tests whose event loop was blocked longer than this", default="")
    parser.addini("asynclens_leaks", "fail|warn|ignore handles left open by a test", default="")
    parser.addini("asynclens_max_sched_delay", "fail tests in which a ready task waited longer than this", default="")
    parser.addini(
        "asynclens_allow", "known stalls/leaks not to fail on, one rule per line", type="linelist", default=[]
    )
    parser.addini("asynclens_trace_dir", "write the recording of every failing test here", default="")


@dataclass(frozen=True)
class Settings:
    """The suite-wide configuration, resolved from options over ini over defaults."""

    every_test: bool = False
    defaults: Policy = field(default_factory=Policy)
    trace_dir: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        def pick(option: str, ini: str) -> tuple[Any, str]:
            value = config.getoption(option)
            if value is not None:
                return value, "--" + option.replace("_", "-")
            value = config.getini(ini)
            return (value if value not in ("", None) else None), f"{ini} (ini file)"

        try:
            max_stall, where = pick("asynclens_max_stall", "asynclens_max_stall")
            max_stall_ns = None if max_stall is None else parse_duration(max_stall, where)
            delay, where = pick("asynclens_max_sched_delay", "asynclens_max_sched_delay")
            delay_ns = None if delay is None else parse_duration(delay, where)
            leaks, where = pick("asynclens_leaks", "asynclens_leaks")
            leaks = "warn" if leaks is None else str(leaks).strip().lower()
            if leaks not in LEAK_MODES:
                raise ValueError(f"{where}: {leaks!r} is not one of fail, warn, ignore")
            rules = [AllowRule.parse(r, "asynclens_allow (ini file)") for r in config.getini("asynclens_allow")]
            rules += [AllowRule.parse(r, "--asynclens-allow") for r in config.getoption("asynclens_allow") or ()]
        except (DurationError, AllowRuleError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None
        trace_dir, _ = pick("asynclens_trace_dir", "asynclens_trace_dir")
        return cls(
            every_test=bool(config.getoption("asynclens") or config.getini("asynclens")),
            defaults=Policy(max_stall_ns=max_stall_ns, leaks=leaks, max_sched_delay_ns=delay_ns, allow=tuple(rules)),
            trace_dir=os.path.abspath(str(trace_dir)) if trace_dir else None,
        )


def policy_for(item: pytest.Item, defaults: Policy) -> tuple[Policy, bool]:
    """The test's policy (its closest ``asynclens`` marker wins per keyword) and
    whether it carries the marker at all. Bad marker arguments raise UsageError."""
    markers = list(item.iter_markers(_MARKER))
    if not markers:
        return defaults, False
    values: dict[str, Any] = {}
    rules: list[AllowRule] = []
    where = f"@pytest.mark.asynclens on {item.nodeid}"
    for marker in markers:  # closest first
        if marker.args:
            raise pytest.UsageError(
                f"{where}: takes keyword arguments only ({', '.join(_MARKER_KEYS)}), got {marker.args!r}"
            )
        for key, value in marker.kwargs.items():
            if key not in _MARKER_KEYS:
                raise pytest.UsageError(f"{where}: unknown argument {key}= (known: {', '.join(_MARKER_KEYS)})")
            if key == "allow":
                items = [value] if isinstance(value, str) else value
                try:
                    rules.extend(AllowRule.parse(rule, "@pytest.mark.asynclens(allow=...)") for rule in items)
                except (AllowRuleError, TypeError) as exc:
                    raise pytest.UsageError(f"{where}: allow={value!r}: {exc}") from None
            else:
                values.setdefault(key, value)
    try:
        policy = Policy(
            max_stall_ns=_limit(values, "max_stall", defaults.max_stall_ns, where),
            leaks=str(values.get("leaks", defaults.leaks)).lower(),
            max_sched_delay_ns=_limit(values, "max_sched_delay", defaults.max_sched_delay_ns, where),
            allow=defaults.allow + tuple(rules),
            enabled=bool(values.get("enabled", True)),
        )
    except DurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    if policy.leaks not in LEAK_MODES:
        raise pytest.UsageError(f"{where}: leaks={policy.leaks!r} is not one of fail, warn, ignore")
    return policy, True


def _limit(values: dict[str, Any], key: str, default: int | None, where: str) -> int | None:
    if key not in values:
        return default
    value = values[key]
    return None if value is None else parse_duration(value, f"{where}: {key}=")


# ------------------------------------------------------------------ the fixture


class Lens:
    """What the ``lens`` fixture gives a test: the session recording it and the
    test's own records so far.

    ``spans``, ``stalls``, ``leaks``, ``lag``, ``tasks`` and ``sched`` are lists
    of records made while this test ran (its fixtures included); ``statistics()``
    the session's counters (with ``--asynclens`` one session records the whole
    run, so these count every test so far). The ``assert_*`` helpers raise
    ``AssertionError`` naming the culprit line, span and duration.

    .. versionadded:: 0.1
    """

    def __init__(self, run: _TestRun) -> None:
        self._run = run

    @property
    def session(self) -> Session:
        assert self._run.session is not None
        return self._run.session

    @property
    def policy(self) -> Policy:
        """The limits this test runs under (options, ini, marker)."""
        return self._run.policy

    @property
    def records(self) -> list[Record]:
        """Every record so far (flushes the session first)."""
        return self._run.records()

    def _of_kind(self, kind: str) -> list[Any]:
        return [r for r in self.records if getattr(r, "kind", None) == kind]

    @property
    def spans(self) -> list[Span]:
        return [r for r in self.records if isinstance(r, Span)]

    @property
    def stalls(self) -> list[Any]:
        """``Stall`` records (each blocked stretch of the event loop over the threshold)."""
        return self._of_kind("stall")

    @property
    def leaks(self) -> list[Any]:
        """Handles open now (while the test runs) or ``Leak`` records (after the session ended)."""
        if not self._run.ended:
            return self._run.open_handles(before=self._run.open_before_call)
        return self._of_kind("leak") + list(self._run.leak_records)

    @property
    def lag(self) -> list[Any]:
        """``LagSnapshot`` records (event-loop lag histograms per window)."""
        return self._of_kind("lag")

    @property
    def tasks(self) -> list[Any]:
        return self._of_kind("task")

    @property
    def sched(self) -> list[Any]:
        return self._of_kind("sched")

    def statistics(self) -> SessionStatistics:
        return self.session.statistics()

    def assert_no_leaks(self, kinds: Iterable[str] | str | None = None) -> None:
        """Fail if a handle opened by this test is still open (``kinds`` limits which:
        ``"socket"``, ``"file"``, ``"subprocess"``, ``"transport"``, ``"task"``, ``"thread"``)."""
        wanted = _kinds(kinds)
        if self._run.probe("handles") is None:
            raise AssertionError(
                "asynclens: cannot check for leaks: the handle registry is not running in this session"
            )
        current = _current_task_id()
        handles = [
            h
            for h in self.leaks
            if (wanted is None or getattr(h, "handle_kind", None) in wanted)
            and not (getattr(h, "handle_kind", None) == "task" and getattr(h, "handle_id", None) == current)
        ]
        self._check(findings_from_handles(handles, self.session.now()), "leak", leaks="fail")

    def assert_no_stalls(self, longer_than: object = None) -> None:
        """Fail if the event loop was blocked longer than ``longer_than`` (default: the
        test's ``max_stall``, else every stall the session recorded)."""
        if self._run.probe("lag") is None:
            raise AssertionError("asynclens: cannot check for stalls: the lag monitor is not running in this session")
        limit = parse_duration(longer_than, "assert_no_stalls(longer_than=...)") if longer_than is not None else None
        if limit is None:
            limit = self.policy.max_stall_ns if self.policy.max_stall_ns is not None else 0
        self._check(self._run.findings(), "stall", max_stall_ns=limit)

    def assert_max_sched_delay(self, limit: object) -> None:
        """Fail if a ready task (or callback) waited longer than ``limit`` to run."""
        if self._run.probe("scheduler") is None:
            raise AssertionError(
                "asynclens: cannot check scheduling delay: the scheduler probe is not running in this session"
            )
        limit_ns = parse_duration(limit, "assert_max_sched_delay(limit)")
        self._check(self._run.findings(), "sched", max_sched_delay_ns=limit_ns)

    def _check(self, findings: Sequence[Finding], kind: str, **limits: Any) -> None:
        base = self.policy
        policy = Policy(
            max_stall_ns=limits.get("max_stall_ns"),
            leaks=limits.get("leaks", "ignore"),
            max_sched_delay_ns=limits.get("max_sched_delay_ns"),
            allow=base.allow,
        )
        verdict = self._run.judge([f for f in findings if f.kind == kind], policy)
        if verdict.failures:
            raise AssertionError(verdict.failure_message())

    def __repr__(self) -> str:
        return f"<Lens {self._run.nodeid} {self._run.session!r}>"


def findings_from_handles(handles: Iterable[Any], now_ns: int) -> list[Finding]:
    """Open handles (``HandleRecord``-like) as leak findings."""
    leaks = []
    for handle in handles:
        if getattr(handle, "kind", None) != "leak":
            handle = _AsLeak(handle)
        leaks.append(handle)
    return findings_from(leaks, now_ns)


class _AsLeak:
    """A live handle seen as a leak (the handle record's fields, ``kind == "leak"``)."""

    kind = "leak"

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _is_async_fixture(func: Any) -> bool:
    """An ``async def`` fixture, also once pytest-asyncio has wrapped it."""
    func = getattr(func, "__func__", func)
    return (
        inspect.iscoroutinefunction(func)
        or inspect.isasyncgenfunction(func)
        or bool(getattr(func, "_force_asyncio_fixture", False))
    )


def _key(handle: Any) -> tuple[Any, Any]:
    return getattr(handle, "handle_kind", None), getattr(handle, "handle_id", None)


def _kinds(kinds: Iterable[str] | str | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    wanted = frozenset([kinds] if isinstance(kinds, str) else kinds)
    unknown = sorted(wanted - set(HANDLE_KINDS))
    if unknown:
        raise ValueError(f"assert_no_leaks(kinds=...): unknown kind {unknown[0]!r} (known: {', '.join(HANDLE_KINDS)})")
    return wanted


def _current_task_id() -> int | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    return id(task) if task is not None else None


@pytest.fixture
def lens(request: pytest.FixtureRequest) -> Lens:
    """This test's asynclens session: ``spans``, ``stalls``, ``leaks``, ``lag``,
    ``statistics()``, ``assert_no_leaks()``, ``assert_no_stalls()``, ``assert_max_sched_delay()``."""
    run: _TestRun | None = request.node.stash.get(_RUN_KEY, None)
    if run is None or run.session is None:
        reason = run.note if run is not None and run.note else "asynclens is disabled for this test (enabled=False)"
        pytest.fail(f"the lens fixture has no asynclens session: {reason}", pytrace=False)
    return run.lens


# ------------------------------------------------------------- one test's run


class _WindowSink(Sink):
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


class _Recorder:
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
        self.sink = _WindowSink()
        self.options: dict[str, Any] = {}
        self._problems = (0, 0)
        self._last: Session | None = None
        self._checked_s = 0.0
        self.open_keys: frozenset[tuple[Any, Any]] | None = None
        self.windows: deque[tuple[int, int, str]] = deque(maxlen=_KEEP_WINDOWS)
        self.closing_leaks: list[Any] = []
        self.reported: set[Any] = set()  # handle ids some test's report named already

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
        self.sink = _WindowSink()
        session = Session([self.sink], flush_interval=0.5, name=name, **options)
        session.start()
        self.session = session
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
                leaks = [
                    r
                    for r in taken
                    if getattr(r, "kind", None) == "leak" and getattr(r, "handle_id", None) not in self.reported
                ]
                self.closing_leaks.extend(leaks[: max(0, _KEEP_CLOSING_LEAKS - len(self.closing_leaks))])


def _session_options(policies: Iterable[tuple[Policy, bool]]) -> dict[str, Any]:
    """Stall threshold low enough for the strictest ``max_stall``; the scheduler
    probe only where a test asks about scheduling delay."""
    threshold = _DEFAULT_STALL_THRESHOLD
    scheduler = False
    for policy, uses_lens in policies:
        if policy.max_stall_ns is not None:
            threshold = min(threshold, max(_MIN_STALL_THRESHOLD, policy.max_stall_ns / 1e9))
        scheduler = scheduler or uses_lens or policy.max_sched_delay_ns is not None
    return {"stall_threshold": threshold, "scheduler": scheduler}


class _TestRun:
    """One test's window on a session and what has been judged of it."""

    def __init__(self, nodeid: str, policy: Policy) -> None:
        self.nodeid = nodeid
        self.policy = policy
        self.session: Session | None = None
        self.sink: _WindowSink | None = None
        self.note: str | None = None
        self.start_ns = 0
        self.end_ns = 0
        self.collected: list[Record] = []
        self.leak_records: list[Any] = []
        self.pending_tasks: list[Any] = []
        self.recorder: _Recorder | None = None
        self.late: dict[int, tuple[str, Finding]] = {}
        self.tasks_before_call: set[int] | None = None
        self.async_setup = False
        self.open_before: frozenset[tuple[Any, Any]] = frozenset()
        self.open_before_call: frozenset[tuple[Any, Any]] | None = None
        self.ended = False
        self.excluded: list[tuple[int, int]] = []
        self.judged: set[int] = set()
        self.rule_hits: dict[AllowRule, int] = dict.fromkeys(policy.allow, 0)
        self.all_findings: list[Finding] = []
        self.allowed = 0
        self.failures: list[Finding] = []
        self.teardown_verdict: Verdict | None = None
        self.trace_base: str | None = None
        self.traces: list[str] = []
        self.dropped = 0
        self.internal_errors = 0
        self.lens = Lens(self)

    def begin(self, recorder: _Recorder, options: dict[str, Any]) -> None:
        session, self.note = recorder.acquire(self.nodeid if not recorder.long_lived else "pytest run", options)
        if session is None:
            return
        self.session, self.sink, self.recorder = session, recorder.sink, recorder
        session.flush()
        self.sink.take()  # whatever was recorded between tests is no test's
        self.start_ns = session.now()
        # the handles open when the last window of this session ended are the ones open now
        self.open_before = recorder.open_keys if recorder.open_keys is not None else self.handle_keys()

    def end(self, recorder: _Recorder) -> None:
        """After teardown: collect the last records and the leaks, leave the session."""
        session, sink = self.session, self.sink
        if session is None or sink is None or self.ended:
            return
        self.settle()
        self.records()
        self.ended = True
        self.end_ns = session.now()
        recorder.windows.append((self.start_ns, self.end_ns, self.nodeid))
        leaks = list(self.pending_tasks)
        if recorder.long_lived:
            open_now = self._all_open()
            leaks += [_AsLeak(h) for h in open_now if _key(h) not in self.open_before]
            recorder.open_keys = frozenset(_key(h) for h in open_now)
        else:
            recorder.close()
            self.collected.extend(sink.take())
        seen = {getattr(r, "handle_id", None) for r in self.collected if getattr(r, "kind", None) == "leak"}
        for leak in leaks:
            handle_id = getattr(leak, "handle_id", None)
            if handle_id is None or handle_id not in seen:
                seen.add(handle_id)
                self.leak_records.append(leak)
        self.dropped, self.internal_errors = recorder.new_problems()

    def call_ended(self) -> None:
        """Tasks the test body started and left pending are leaks even if the loop's
        shutdown cancels them during teardown (fixtures' tasks were started in setup)."""
        current = _current_task_id()
        if self.tasks_before_call is not None:
            # the cheap look first: the loops' own task lists; the registry only if needed
            now = self._pending_task_ids()
            new = (now or set()) - self.tasks_before_call - {current}
            if not new:
                self.pending_tasks = []
                return
            handles = [h for h in self._all_open() if getattr(h, "handle_id", None) in new]
        else:
            handles = self.open_handles(before=self.open_before_call)
        self.pending_tasks = [
            _AsLeak(h)
            for h in handles
            if getattr(h, "handle_kind", None) == "task" and getattr(h, "handle_id", None) != current
        ]

    def call_started(self, is_async: bool, uses_lens: bool) -> None:
        if is_async:
            self.tasks_before_call = self._pending_task_ids()
        if uses_lens:  # lens.leaks during the test: what its body opened
            self.open_before_call = self.handle_keys()
        elif is_async and self.tasks_before_call is None:
            # without an async fixture nothing ran on a loop since the window began
            self.open_before_call = self.handle_keys() if self.async_setup else self.open_before

    def _pending_task_ids(self) -> set[int] | None:
        """Ids of the pending tasks of every open loop the lag probe watches (None
        when it watches none: then the handle registry's view is used)."""
        if self.probe("handles") is None:
            return set()
        monitors = getattr(self.probe("lag"), "monitors", None)
        if monitors is None:
            return None
        ids: set[int] = set()
        for monitor in list(monitors):
            loop = getattr(monitor, "loop", None)
            if loop is None or loop.is_closed():
                continue
            try:
                ids.update(id(task) for task in asyncio.all_tasks(loop))
            except RuntimeError:  # a loop of another thread changed its tasks meanwhile
                return None
        return ids

    def settle(self) -> None:
        """Let the lag probe turn the stalls its loops already timed into records.

        A loop times a stall when it next runs; the probe's watchdog thread makes
        the record on its next poll (at most ~25 ms later). Only when a loop has
        such a stall pending does this wait, and for one poll at most."""
        probe = self.probe("lag")
        monitors, watchdog = getattr(probe, "monitors", None), getattr(probe, "watchdog", None)
        if not monitors or watchdog is None or not any(getattr(m, "gaps", None) for m in list(monitors)):
            return
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        polls = getattr(watchdog, "polls", 0)
        while time.monotonic() < deadline and (
            any(getattr(m, "gaps", None) for m in list(monitors)) or getattr(watchdog, "polls", 0) < polls + 2
        ):
            time.sleep(0.001)

    def records(self) -> list[Record]:
        session, sink = self.session, self.sink
        if session is not None and sink is not None and not self.ended and session.state == "active":
            session.flush()
            self.collected.extend(sink.take())
        return list(self.collected)

    def probe(self, name: str) -> Any:
        return None if self.session is None else self.session.probe(name)

    def _all_open(self) -> list[Any]:
        """The handle registry's live view: every handle open now (none without it)."""
        probe = self.probe("handles")
        getter = getattr(probe, "open_handles", None)
        return list(getter()) if callable(getter) else []

    def handle_keys(self) -> frozenset[tuple[Any, Any]]:
        return frozenset(_key(h) for h in self._all_open())

    def open_handles(self, before: frozenset[tuple[Any, Any]] | None = None) -> list[Any]:
        """Handles open now that were not open when the test's window began (or at ``before``).

        Compared by identity rather than by ``open_ns``: the registry may not
        know when a task was created."""
        known = self.open_before if before is None else before
        return [h for h in self._all_open() if _key(h) not in known]

    def findings(self) -> list[Finding]:
        """This test's stalls, leaks and delays. A stall that began before the window
        (a loop notices a stall only when it next runs) belongs to an earlier test."""
        end = self.end_ns or (self.session.now() if self.session is not None else 0)
        start = self.start_ns
        found = findings_from(self.records() + self.leak_records, end)
        for finding in found:
            if finding.kind == "stall" and finding.start_ns < start and id(finding.record) not in self.late:
                owner = self.recorder.owner_of(finding.start_ns) if self.recorder is not None else None
                self.late[id(finding.record)] = (owner or "(between tests)", finding)
        return [f for f in found if f.kind == "leak" or f.start_ns >= start]

    def judge(self, findings: Sequence[Finding], policy: Policy) -> Verdict:
        verdict = evaluate(findings, policy, excluded=self.excluded)
        for rule, hits in verdict.rule_hits.items():
            self.rule_hits[rule] = self.rule_hits.get(rule, 0) + hits
        return verdict

    def judge_new(self, kinds: Sequence[str] = ("stall", "leak", "sched")) -> Verdict:
        """Judge the findings of ``kinds`` not judged before (each counts once)."""
        fresh = [f for f in self.findings() if f.kind in kinds and id(f.record) not in self.judged]
        self.judged.update(id(f.record) for f in fresh)
        verdict = self.judge(fresh, self.policy)
        allowed = {id(f) for f in verdict.allowed}
        self.all_findings.extend(f for f in verdict.findings if id(f) not in allowed)
        self.allowed += len(allowed)
        self.failures.extend(verdict.failures)
        return verdict

    def summary(self) -> dict[str, Any]:
        """What the terminal summary needs of this test, JSON-ready (crosses xdist)."""
        spans = [r for r in self.collected if isinstance(r, Span)]
        slowest = heapq.nlargest(5, spans, key=lambda s: s.end_ns - s.start_ns)
        stalls = [f for f in self.all_findings if f.kind == "stall"]
        leaks = [f for f in self.all_findings if f.kind == "leak"]
        sched = [f.duration_ns for f in self.all_findings if f.kind == "sched"]
        return {
            "nodeid": self.nodeid,
            "instrumented": self.session is not None,
            "note": self.note,
            "spans": len(spans),
            "slowest_spans": [[s.end_ns - s.start_ns, s.name] for s in slowest],
            "stall_count": len(stalls),
            "stall_ns": sum(f.duration_ns for f in stalls),
            "stalls": [f.summary() for f in sorted(stalls, key=lambda f: -f.duration_ns)[:5]],
            "late": [[owner, f.summary()] for owner, f in self.late.values()][:_TOP],
            "leak_count": len(leaks),
            "leaks": [f.summary() for f in leaks[:_TOP]],
            "sched_max_ns": max(sched) if sched else None,
            "failed": bool(self.failures),
            "allowed": self.allowed,
            "rules": [[rule.origin, rule.text, hits] for rule, hits in self.rule_hits.items()],
            "traces": list(self.traces),
            "dropped": max(0, self.dropped),
            "internal_errors": max(0, self.internal_errors),
        }


_RUN_KEY = pytest.StashKey[_TestRun]()
_POLICY_KEY = pytest.StashKey[tuple[Policy, bool]]()


# -------------------------------------------------------------- the plugin


class AsyncLensPlugin:
    """The hooks; one instance per pytest run (and per xdist worker)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.current: _TestRun | None = None
        self.reports: list[dict[str, Any]] = []
        self.is_worker = hasattr(config, "workerinput")
        self.recorder = _Recorder(long_lived=settings.every_test)
        self.last_problems = (0, 0)  # seen after the last test's report (not under xdist)

    # -- which tests, with which policy

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        policies = []
        for item in items:
            policy = item.stash[_POLICY_KEY] = policy_for(item, self.settings.defaults)
            if policy[0].enabled:
                policies.append((policy[0], "lens" in getattr(item, "fixturenames", ())))
        self.recorder.options = _session_options(policies)

    def _policy(self, item: pytest.Item) -> tuple[Policy, bool]:
        found = item.stash.get(_POLICY_KEY, None)
        return found if found is not None else policy_for(item, self.settings.defaults)

    # -- the session around setup, call and teardown

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, Any, None]:
        policy, marked = self._policy(item)
        uses_lens = "lens" in getattr(item, "fixturenames", ())
        if not policy.enabled:
            self.recorder.close()  # the test may record in a session of its own
        elif self.settings.every_test or marked or uses_lens:
            run = _TestRun(item.nodeid, policy)
            item.stash[_RUN_KEY] = run
            options = self.recorder.options if self.recorder.long_lived else _session_options([(policy, uses_lens)])
            try:
                run.begin(self.recorder, options)
            except Exception as exc:  # noqa: BLE001 - asynclens must not break the test run
                run.note = f"asynclens could not start a session: {type(exc).__name__}: {exc}"
            self.current = run if run.session is not None else None
        yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        run = item.stash.get(_RUN_KEY, None)
        if run is None or run.session is None:
            yield
            return
        # only an async test body can leave tasks pending on its loop
        is_async = inspect.iscoroutinefunction(getattr(item, "obj", None))
        uses_lens = "lens" in getattr(item, "fixturenames", ())
        if is_async or uses_lens:
            run.call_started(is_async, uses_lens)
        yield
        if is_async:
            try:
                run.call_ended()
            except Exception as exc:  # noqa: BLE001 - a bug here must not fail the user's test
                run.note = f"asynclens failed while looking for pending tasks: {type(exc).__name__}: {exc}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, None]:
        run = self.current
        if run is None or run.session is None:
            yield
            return
        if not run.async_setup and _is_async_fixture(getattr(fixturedef, "func", None)):
            run.async_setup = True
        if getattr(fixturedef, "scope", "function") == "function":
            yield
            return
        start = run.session.now()
        yield
        run.excluded.append((start, run.session.now()))

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, Any, None]:
        yield
        run = item.stash.get(_RUN_KEY, None)
        if run is None:
            return
        self.current = None
        try:
            run.end(self.recorder)
            if run.session is not None:
                run.teardown_verdict = run.judge_new()
                self.recorder.reported.update(
                    getattr(f.record, "handle_id", None) for f in run.teardown_verdict.findings if f.kind == "leak"
                )
                if run.teardown_verdict.warnings:
                    warnings.warn(AsyncLensWarning(run.teardown_verdict.warning_message()), stacklevel=1)
                if run.teardown_verdict.failures and self.settings.trace_dir and run.trace_base is None:
                    run.trace_base = self._trace_base(item)
                if run.trace_base is not None:
                    self._write_traces(run)
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the user's test
            run.note = f"asynclens failed while judging this test: {type(exc).__name__}: {exc}"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        run = item.stash.get(_RUN_KEY, None)
        if run is None:
            return
        report: pytest.TestReport = outcome.get_result()
        try:
            self._judge_report(item, run, report, call.when)
        except Exception as exc:  # noqa: BLE001 - a bug in asynclens must not turn into the user's failure
            report.sections.append(("asynclens", f"asynclens failed while judging: {type(exc).__name__}: {exc}"))

    def _judge_report(self, item: pytest.Item, run: _TestRun, report: pytest.TestReport, when: str) -> None:
        if when == "call" and run.session is not None:
            run.settle()
            found = run.judge_new(("stall", "sched"))  # leaks are judged after teardown
            if found.failures:
                self._fail(report, found.failure_message())
        if when in ("setup", "call") and report.failed and self.settings.trace_dir and run.session is not None:
            if run.trace_base is None:
                run.trace_base = self._trace_base(item)
            report.sections.append(("asynclens", f"trace of this test: {run.trace_base}.jsonl"))
        if when == "teardown":
            verdict = run.teardown_verdict
            if verdict is not None and verdict.failures:
                message = verdict.failure_message()
                if run.traces:
                    message += "\n" + "\n".join(f"asynclens trace: {path}" for path in run.traces)
                self._fail(report, message)
            if run.note:
                report.sections.append(("asynclens", run.note))
            report.asynclens = run.summary()  # type: ignore[attr-defined]  # travels with the report (xdist)

    @staticmethod
    def _fail(report: pytest.TestReport, message: str) -> None:
        if report.passed and not hasattr(report, "wasxfail"):
            report.outcome = "failed"
            report.longrepr = message
        else:
            report.sections.append(("asynclens", message))

    # -- traces of failing tests

    def _trace_base(self, item: pytest.Item) -> str:
        assert self.settings.trace_dir is not None
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid).strip("_")[:150]
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            name = f"{worker}-{name}"
        return os.path.join(self.settings.trace_dir, name)

    def _write_traces(self, run: _TestRun) -> None:
        assert run.trace_base is not None and run.session is not None and run.session.info is not None
        os.makedirs(os.path.dirname(run.trace_base), exist_ok=True)
        records = [r for r in run.collected if isinstance(r, Record)]
        info = dataclasses.replace(run.session.info, name=run.nodeid)
        for path in _trace_paths(run.trace_base):
            try:
                sink = sink_for(path)
                sink.open(info)
                try:
                    sink.write(records)
                finally:
                    sink.close()
            except Exception as exc:  # noqa: BLE001 - any sink may fail; the others still get written
                warnings.warn(
                    AsyncLensWarning(f"asynclens: could not write {path}: {type(exc).__name__}: {exc}"), stacklevel=1
                )
                continue
            run.traces.append(path)

    # -- the suite's summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "asynclens", None)
        if isinstance(data, dict):
            self.reports.append(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        reports = [r for r in self.reports if r.get("instrumented")]
        if not reports:
            return
        closing = evaluate(findings_from(self.recorder.closing_leaks, 0), Policy(allow=self.settings.defaults.allow))
        for text in _unused_rules(reports, self.settings.defaults.allow, closing.rule_hits):
            warnings.warn(AsyncLensWarning(text), stacklevel=1)
        lines = render_suite(reports, verbose=self.config.getoption("verbose") > 0, problems=self.last_problems)
        if closing.warnings:
            if len(lines) == 1:
                lines.insert(0, "")
                lines[1] = lines[1].replace(
                    ": no stalls, leaks or scheduling delays", ": no stalls, leaks or delays in tests"
                )
            lines.append("Still open when the run's session closed (the handle registry's end report; no test's):")
            for finding in closing.warnings[:_TOP]:
                lines.append(
                    f"  {finding.what.removeprefix('leaked ').split(', open for')[0]}, opened at {finding.where or '?'}"
                )
        if len(lines) > 1:
            terminalreporter.write_sep("=", "asynclens")
        for line in lines:
            terminalreporter.write_line(line)

    def pytest_sessionfinish(self) -> None:
        self.current = None
        if self.recorder.session is not None:
            self.last_problems = self.recorder.new_problems(force=True)
        self.recorder.close()

    def pytest_unconfigure(self) -> None:
        self.current = None
        self.recorder.close()


def _trace_paths(base: str) -> list[str]:
    """The trace files to write: JSON lines always, plus every richer format known."""
    paths = [base + ".jsonl"]
    for suffixes in ((".html",), (".perfetto.json", ".trace.json", ".chrome.json", ".json")):
        for suffix in suffixes:
            try:
                sink_for(base + suffix)
            except (ValueError, TypeError):
                continue
            paths.append(base + suffix)
            break
    return paths


def _unused_rules(
    reports: Sequence[dict[str, Any]], config_rules: Sequence[AllowRule], other_hits: Mapping[AllowRule, int] = {}
) -> list[str]:
    hits: dict[tuple[str, str], int] = {(r.origin, r.text): other_hits.get(r, 0) for r in config_rules}
    tests: dict[tuple[str, str], list[str]] = {}
    for report in reports:
        for origin, text, count in report.get("rules", ()):
            key = (origin, text)
            hits[key] = hits.get(key, 0) + count
            tests.setdefault(key, []).append(report["nodeid"])
    out = []
    for (origin, text), count in hits.items():
        if count:
            continue
        where = origin
        if origin.startswith("@"):
            names = tests.get((origin, text), [])
            where = f"{origin} on {names[0]}" + (f" and {len(names) - 1} more" if len(names) > 1 else "")
        out.append(f"asynclens: allow rule {text!r} ({where}) matched nothing in this run; remove it?")
    return out


def render_suite(
    reports: Sequence[dict[str, Any]], verbose: bool = False, problems: tuple[int, int] = (0, 0)
) -> list[str]:
    """The terminal summary: one line when nothing was found, else worst stalls, leaks,
    slowest spans and per-test totals."""
    reports = _with_late_stalls(reports)
    stalls = sum(r["stall_count"] for r in reports)
    leaks = sum(r["leak_count"] for r in reports)
    sched = [r["sched_max_ns"] for r in reports if r.get("sched_max_ns")]
    failed = sum(1 for r in reports if r["failed"])
    allowed = sum(r["allowed"] for r in reports)
    dropped = problems[0] + sum(r["dropped"] for r in reports)
    errors = problems[1] + sum(r["internal_errors"] for r in reports)
    head = f"asynclens: {len(reports)} test{'s' if len(reports) != 1 else ''} recorded"
    if not (stalls or leaks or sched or failed or dropped or errors):
        extra = f", {allowed} allowed finding{'s' if allowed != 1 else ''}" if allowed else ""
        lines = [f"{head}: no stalls, leaks or scheduling delays{extra}"]
        return lines + (_span_lines(reports) if verbose else [])
    counts = [f"{stalls} stall{'s' if stalls != 1 else ''}", f"{leaks} leak{'s' if leaks != 1 else ''}"]
    if sched:
        counts.append(f"max scheduling delay {format_ns(max(sched))}")
    if allowed:
        counts.append(f"{allowed} allowed")
    if failed:
        counts.append(f"{failed} test{'s' if failed != 1 else ''} over budget")
    lines = [f"{head}: " + ", ".join(counts)]
    worst = heapq.nlargest(
        _TOP, ((s, r["nodeid"]) for r in reports for s in r["stalls"]), key=lambda x: x[0]["duration_ns"]
    )
    if worst:
        lines.append("Worst stalls:")
        for stall, nodeid in worst:
            lines.append(
                f"  {format_ns(stall['duration_ns']):>10}  {stall.get('where') or '?'}{_ctx(stall)}  ({nodeid})"
            )
    leaked = [(leak, r["nodeid"]) for r in reports for leak in r["leaks"]][:_TOP]
    if leaked:
        lines.append("Leaks:")
        for leak, nodeid in leaked:
            what = leak["what"].removeprefix("leaked ").removesuffix(", open for")
            lines.append(f"  {what}, opened at {leak.get('where') or '?'}{_ctx(leak)}  ({nodeid})")
    lines.extend(_span_lines(reports))
    noisy = [r for r in reports if r["stall_count"] or r["leak_count"] or r.get("sched_max_ns") or r["failed"]]
    noisy.sort(key=lambda r: (-r["stall_ns"], -r["leak_count"]))
    lines.append("Per test:")
    lines.append(f"  {'stalls':>6}  {'stalled':>10}  {'leaks':>5}  {'sched max':>10}  {'spans':>6}  test")
    for r in noisy[:_TOP]:
        sched_max = format_ns(r["sched_max_ns"]) if r.get("sched_max_ns") else "-"
        mark = "  FAILED (asynclens)" if r["failed"] else ""
        lines.append(
            f"  {r['stall_count']:>6}  {format_ns(r['stall_ns']):>10}  {r['leak_count']:>5}  {sched_max:>10}"
            f"  {r['spans']:>6}  {r['nodeid']}{mark}"
        )
    if len(noisy) > _TOP:
        lines.append(f"  ... and {len(noisy) - _TOP} more tests")
    traces = [path for r in reports for path in r["traces"]]
    if traces:
        lines.append("Traces of failing tests:")
        lines.extend(f"  {path}" for path in traces)
    if dropped or errors:
        lines.append(f"Recording problems: {dropped} records dropped, {errors} internal errors")
    return lines


def _with_late_stalls(reports: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stalls a loop noticed only in a later test (a module- or session-scoped loop
    blocked in a test's last step) counted for the test they happened in."""
    late = [(owner, stall, r["nodeid"]) for r in reports for owner, stall in r.get("late", ())]
    if not late:
        return list(reports)
    by_id = {r["nodeid"]: dict(r, stalls=list(r["stalls"])) for r in reports}
    for owner, stall, seen_in in late:
        target = by_id.get(owner)
        if target is None:
            continue
        target["stall_count"] += 1
        target["stall_ns"] += stall["duration_ns"]
        target["stalls"].append(dict(stall, where=f"{stall.get('where') or '?'} (noticed during {seen_in})"))
    return list(by_id.values())


def _ctx(finding: dict[str, Any]) -> str:
    parts = [f"span {finding['span']!r}"] if finding.get("span") else []
    if finding.get("task"):
        parts.append(f"task {finding['task']!r}")
    return f" [{', '.join(parts)}]" if parts else ""


def _span_lines(reports: Sequence[dict[str, Any]]) -> list[str]:
    spans = heapq.nlargest(_TOP, ((d, name, r["nodeid"]) for r in reports for d, name in r["slowest_spans"]))
    if not spans:
        return []
    return ["Slowest spans:"] + [f"  {format_ns(d):>10}  {name}  ({nodeid})" for d, name, nodeid in spans]


# ---------------------------------------------------------------- registration


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "asynclens(max_stall=None, leaks=None, max_sched_delay=None, allow=(), enabled=True): "
        "record this test in an asynclens session and fail it on stalls, leaks or scheduling delay",
    )
    config.pluginmanager.register(AsyncLensPlugin(config, Settings.from_config(config)), "asynclens-plugin")
