"""One test's window on an asynclens session: its records, leaks and verdicts.

The machinery behind the pytest plugin, free of pytest: :class:`Recorder` owns
the session tests are recorded in (one per test, or one for the whole run),
:class:`Window` is one test's share of it (records taken at its boundaries,
handles it opened, tasks it left pending, findings judged once each), and
:class:`Lens` is what the ``lens`` fixture hands the test.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._durations import parse_duration
from .._state import context as _context
from ..probes._tasks import pending_tasks
from ..records import Record, SessionInfo, Span
from ..session import Session, SessionStatistics
from ..sinks import Sink
from .budgets import AllowRule, Finding, Policy, Verdict, evaluate, findings_from

__all__ = ["HANDLE_KINDS", "Lens", "Recorder", "Window", "WindowSink", "session_options"]

HANDLE_KINDS = ("socket", "file", "subprocess", "transport", "task", "thread")
_DEFAULT_STALL_THRESHOLD = 0.05
_MIN_STALL_THRESHOLD = 0.001
_TOP = 10
_SETTLE_TIMEOUT_S = 0.2
_KEEP_WINDOWS = 1000
_KEEP_CLOSING_LEAKS = 100
#: record kinds a test's findings come from (``task`` records also need the spans)
_JUDGED_KINDS = frozenset({"stall", "leak", "task", "sched"})


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

    def __init__(self, run: Window) -> None:
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
        wanted = leak_kinds(kinds)
        if self._run.probe("handles") is None:
            raise AssertionError(
                "asynclens: cannot check for leaks: the handle registry is not running in this session"
            )
        current = current_task_id()
        handles = [
            h
            for h in self.leaks
            if (wanted is None or getattr(h, "handle_kind", None) in wanted)
            and not (getattr(h, "handle_kind", None) == "task" and getattr(h, "handle_id", None) == current)
        ]
        self._check(findings_from_handles(handles, self.session.now()), "leak", leaks="fail")

    def assert_no_stalls(self, longer_than: object = None) -> None:
        """Fail if the event loop was blocked longer than ``longer_than`` (default: the
        test's ``max_stall``, else every stall the session recorded).

        A loop times a stall when it runs again: a block in the current step of
        the calling coroutine is seen only after its next ``await``."""
        if self._run.probe("lag") is None:
            raise AssertionError("asynclens: cannot check for stalls: the lag monitor is not running in this session")
        self._run.settle()
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
            handle = AsLeak(handle)
        leaks.append(handle)
    return findings_from(leaks, now_ns)


class AsLeak:
    """A live handle seen as a leak (the handle record's fields, ``kind == "leak"``)."""

    kind = "leak"

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def handle_key(handle: Any) -> tuple[Any, Any]:
    return getattr(handle, "handle_kind", None), getattr(handle, "handle_id", None)


def leak_kinds(kinds: Iterable[str] | str | None) -> frozenset[str] | None:
    if kinds is None:
        return None
    wanted = frozenset([kinds] if isinstance(kinds, str) else kinds)
    unknown = sorted(wanted - set(HANDLE_KINDS))
    if unknown:
        raise ValueError(f"assert_no_leaks(kinds=...): unknown kind {unknown[0]!r} (known: {', '.join(HANDLE_KINDS)})")
    return wanted


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
        self.reported: set[Any] = set()  # handle ids some test's report named already
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
                leaks = [
                    r
                    for r in taken
                    if getattr(r, "kind", None) == "leak" and getattr(r, "handle_id", None) not in self.reported
                ]
                self.closing_leaks.extend(leaks[: max(0, _KEEP_CLOSING_LEAKS - len(self.closing_leaks))])


def _duration(span: Span) -> int:
    return span.end_ns - span.start_ns


def _any_gaps(monitors: list[Any]) -> bool:
    """Whether a loop timed a stall the watchdog has not turned into a record yet."""
    for monitor in monitors[:]:  # the watchdog thread retires monitors meanwhile
        if getattr(monitor, "gaps", None):
            return True
    return False


def session_options(policies: Iterable[tuple[Policy, bool]]) -> dict[str, Any]:
    """Stall threshold low enough for the strictest ``max_stall``; the scheduler
    probe only where a test asks about scheduling delay; no I/O rates (nothing judges a
    test on them, and their readiness-event hook would cost every new loop)."""
    threshold = _DEFAULT_STALL_THRESHOLD
    scheduler = False
    for policy, uses_lens in policies:
        if policy.max_stall_ns is not None:
            threshold = min(threshold, max(_MIN_STALL_THRESHOLD, policy.max_stall_ns / 1e9))
        scheduler = scheduler or uses_lens or policy.max_sched_delay_ns is not None
    return {"stall_threshold": threshold, "scheduler": scheduler, "io_rates": False}


class Window:
    """One test's window on a session and what has been judged of it."""

    def __init__(self, nodeid: str, policy: Policy) -> None:
        self.nodeid = nodeid
        self.policy = policy
        self.session: Session | None = None
        self.sink: WindowSink | None = None
        self.note: str | None = None
        self.start_ns = 0
        self.end_ns = 0
        self.collected: list[Record] = []
        self._spans: list[Span] = []  # of collected, in order
        self._judged_records: list[Any] = []  # of collected, those of _JUDGED_KINDS
        self._has_tasks = False
        self.leak_records: list[Any] = []
        self.pending_tasks: list[Any] = []
        self.recorder: Recorder | None = None
        self._probes: dict[str, Any] = {}
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

    def begin(self, recorder: Recorder, options: dict[str, Any]) -> None:
        session, self.note = recorder.acquire(self.nodeid if not recorder.long_lived else "pytest run", options)
        if session is None:
            return
        self.session, self.sink, self.recorder = session, recorder.sink, recorder
        self._probes = recorder.probes
        session.flush()
        self.sink.take()  # whatever was recorded between tests is no test's
        self.start_ns = session.now()
        # the handles open when the last window of this session ended are the ones open now
        self.open_before = recorder.open_keys if recorder.open_keys is not None else self.handle_keys()

    def end(self, recorder: Recorder) -> None:
        """After teardown: collect the last records and the leaks, leave the session."""
        session, sink = self.session, self.sink
        if session is None or sink is None or self.ended:
            return
        self.settle()
        self._sync()
        self.ended = True
        self.end_ns = session.now()
        recorder.windows.append((self.start_ns, self.end_ns, self.nodeid))
        leaks = list(self.pending_tasks)
        if recorder.long_lived:
            open_now = self.handle_keys()
            new = open_now - self.open_before
            if new:  # records made only for the handles this test left open
                leaks += [AsLeak(h) for h in self._all_open(new)]
            recorder.open_keys = open_now
        else:
            recorder.close()
            self._add(sink.take())
        seen = {getattr(r, "handle_id", None) for r in self._judged_records if getattr(r, "kind", None) == "leak"}
        for leak in leaks:
            handle_id = getattr(leak, "handle_id", None)
            if handle_id is None or handle_id not in seen:
                seen.add(handle_id)
                self.leak_records.append(leak)
        self.dropped, self.internal_errors = recorder.new_problems()

    def call_ended(self) -> None:
        """Tasks the test body started and left pending are leaks even if the loop's
        shutdown cancels them during teardown (fixtures' tasks were started in setup)."""
        current = current_task_id()
        if self.tasks_before_call is not None:
            # the cheap look first: the loops' own task lists; the registry only if needed
            now = self._pending_task_ids()
            new = (now or set()) - self.tasks_before_call - {current}
            if not new:
                self.pending_tasks = []
                return
            handles = self._all_open({("task", task_id) for task_id in new})
        else:
            handles = self.open_handles(before=self.open_before_call)
        self.pending_tasks = [
            AsLeak(h)
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
        probes = self._probes
        if probes.get("handles") is None:
            return set()
        monitors = getattr(probes.get("lag"), "monitors", None)
        if monitors is None:
            return None
        ids: set[int] = set()
        for monitor in monitors[:]:  # the watchdog thread retires monitors meanwhile
            loop = getattr(monitor, "loop", None)
            if loop is None or loop.is_closed():
                continue
            tasks = pending_tasks(loop)
            if tasks:
                ids.update(map(id, tasks))
        return ids

    def settle(self) -> None:
        """Let the lag probe turn the stalls its loops already timed into records.

        A loop times a stall when it next runs; the probe's watchdog thread makes
        the record on its next poll (at most ~25 ms later). Only when a loop has
        such a stall pending does this wait, and for one poll at most."""
        probe = self._probes.get("lag")
        monitors, watchdog = getattr(probe, "monitors", None), getattr(probe, "watchdog", None)
        if not monitors or watchdog is None or not _any_gaps(monitors):
            return
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        polls = getattr(watchdog, "polls", 0)
        while time.monotonic() < deadline and (_any_gaps(monitors) or getattr(watchdog, "polls", 0) < polls + 2):
            time.sleep(0.001)

    def records(self) -> list[Record]:
        return list(self._sync())

    def _sync(self) -> list[Record]:
        """Take what the session recorded so far into ``collected`` (not a copy)."""
        session, sink = self.session, self.sink
        if session is not None and sink is not None and not self.ended and session.state == "active":
            session.flush()
            self._add(sink.take())
        return self.collected

    def _add(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self.collected.extend(records)
        spans, judged = self._spans, self._judged_records
        for record in records:
            kind = getattr(record, "kind", None)
            if kind == "span":
                if isinstance(record, Span):
                    spans.append(record)
            elif kind in _JUDGED_KINDS:
                judged.append(record)
                if kind == "task":
                    self._has_tasks = True

    def probe(self, name: str) -> Any:
        """The session's probe called ``name`` (``"lag"``, ``"handles"``, ``"scheduler"``) or None."""
        return self._probes.get(name)

    def _all_open(self, only: frozenset[tuple[Any, Any]] | set[tuple[Any, Any]] | None = None) -> list[Any]:
        """The handle registry's live view: every handle open now, or those with the
        keys ``only`` (none without the registry)."""
        probe = self.probe("handles")
        getter = getattr(probe, "open_handles", None)
        if not callable(getter):
            return []
        try:
            if only is None:
                return list(getter())
            if callable(getattr(probe, "open_keys", None)):  # asynclens's registry: records for ``only``
                return list(getter(only))
            return [h for h in getter() if handle_key(h) in only]
        except Exception as exc:  # noqa: BLE001 - counted by the session, never raised into the test
            if self.session is not None:
                self.session.internal_error("listing open handles for a test", exc)
            return []

    def handle_keys(self) -> frozenset[tuple[Any, Any]]:
        """Keys of the handles open now; without making their records where the registry can."""
        getter = getattr(self.probe("handles"), "open_keys", None)
        if not callable(getter):
            return frozenset(handle_key(h) for h in self._all_open())
        try:
            return frozenset(getter())
        except Exception as exc:  # noqa: BLE001 - counted by the session, never raised into the test
            if self.session is not None:
                self.session.internal_error("listing open handles for a test", exc)
            return frozenset()

    def open_handles(self, before: frozenset[tuple[Any, Any]] | None = None) -> list[Any]:
        """Handles open now that were not open when the test's window began (or at ``before``).

        Compared by identity rather than by ``open_ns``: the registry may not
        know when a task was created."""
        known = self.open_before if before is None else before
        new = self.handle_keys() - known
        return self._all_open(new) if new else []

    def findings(self) -> list[Finding]:
        """This test's stalls, leaks and delays. A stall that began before the window
        (a loop notices a stall only when it next runs) belongs to an earlier test."""
        end = self.end_ns or (self.session.now() if self.session is not None else 0)
        start = self.start_ns
        records = self._sync()
        source = records if self._has_tasks else self._judged_records  # task findings name their span
        if not source and not self.leak_records:
            return []
        found = findings_from([*source, *self.leak_records], end)
        for finding in found:
            if finding.kind == "stall" and finding.start_ns < start and id(finding.record) not in self.late:
                owner = self.recorder.owner_of(finding.start_ns) if self.recorder is not None else None
                self.late[id(finding.record)] = (owner or "(between tests)", finding)
        fixture_tasks = self.recorder.fixture_tasks if self.recorder is not None else ()
        return [
            f
            for f in found
            if (f.kind == "leak" and not (fixture_tasks and _is_task_of(f.record, fixture_tasks)))
            or (f.kind != "leak" and f.start_ns >= start)
        ]

    def scoped_fixture_setup(self) -> Callable[[], None]:
        """Call before a scoped fixture is set up; call what it returns after: the tasks
        it started are the fixture's (they live on across tests), not this test's."""
        before = self._pending_task_ids()

        def done() -> None:
            after = self._pending_task_ids()
            if before is not None and after and self.recorder is not None:
                self.recorder.fixture_tasks.update(after - before)

        return done

    def judge(self, findings: Sequence[Finding], policy: Policy) -> Verdict:
        verdict = evaluate(findings, policy, excluded=self.excluded)
        for rule, hits in verdict.rule_hits.items():
            self.rule_hits[rule] = self.rule_hits.get(rule, 0) + hits
        return verdict

    def judge_new(self, kinds: Sequence[str] = ("stall", "leak", "sched")) -> Verdict:
        """Judge the findings of ``kinds`` not judged before (each counts once)."""
        fresh = [f for f in self.findings() if f.kind in kinds and id(f.record) not in self.judged]
        if not fresh:
            return Verdict(policy=self.policy)
        self.judged.update(id(f.record) for f in fresh)
        verdict = self.judge(fresh, self.policy)
        allowed = {id(f) for f in verdict.allowed}
        self.all_findings.extend(f for f in verdict.findings if id(f) not in allowed)
        self.allowed += len(allowed)
        self.failures.extend(verdict.failures)
        return verdict

    def summary(self) -> dict[str, Any]:
        """What the terminal summary needs of this test, JSON-ready (crosses xdist).

        Sequences are tuples: the reports of a whole run stay alive until its end,
        and tuples of plain values drop out of the garbage collector's sight."""
        spans = self._spans
        out: dict[str, Any] = {
            "nodeid": self.nodeid,
            "instrumented": self.session is not None,
            "note": self.note,
            "spans": len(spans),
            "slowest_spans": tuple((s.end_ns - s.start_ns, s.name) for s in heapq.nlargest(5, spans, key=_duration))
            if spans
            else (),
            "stall_count": 0,
            "stall_ns": 0,
            "stalls": (),
            "late": (),
            "leak_count": 0,
            "leaks": (),
            "sched_max_ns": None,
            "failed": bool(self.failures),
            "allowed": self.allowed,
            "rules": tuple((rule.origin, rule.text, hits) for rule, hits in self.rule_hits.items())
            if self.rule_hits
            else (),
            "traces": tuple(self.traces),
            "dropped": max(0, self.dropped),
            "internal_errors": max(0, self.internal_errors),
        }
        findings = self.all_findings
        if findings:
            stalls = [f for f in findings if f.kind == "stall"]
            leaks = [f for f in findings if f.kind == "leak"]
            sched = [f.duration_ns for f in findings if f.kind == "sched"]
            out["stall_count"] = len(stalls)
            out["stall_ns"] = sum(f.duration_ns for f in stalls)
            out["stalls"] = tuple(f.summary() for f in sorted(stalls, key=lambda f: -f.duration_ns)[:5])
            out["leak_count"] = len(leaks)
            out["leaks"] = tuple(f.summary() for f in leaks[:_TOP])
            out["sched_max_ns"] = max(sched) if sched else None
        if self.late:
            out["late"] = tuple((owner, f.summary()) for owner, f in self.late.values())[:_TOP]
        return out

    def release(self) -> None:
        """Drop what only the test's own hooks needed (records, findings, the lens):
        pytest keeps every item, and with it this window, until the run ends."""
        self.collected = []
        self._spans = []
        self._judged_records = []
        self.leak_records = []
        self.pending_tasks = []
        self.late = {}
        self.judged = set()
        self.all_findings = []
        self.failures = []
        self.excluded = []
        self.teardown_verdict = None
        self._probes = {}
        self.open_before = self.open_before_call = frozenset()
        self.tasks_before_call = None


def _is_task_of(record: Any, task_ids: set[int]) -> bool:
    return getattr(record, "handle_kind", None) == "task" and getattr(record, "handle_id", None) in task_ids
