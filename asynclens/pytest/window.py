"""One test's window on an asynclens session: its records, leaks and verdicts.

The machinery behind the pytest plugin, free of pytest: a :class:`Window` is one
test's share of the :class:`~.recorder.Recorder`'s session (records taken at its
boundaries, handles it opened, tasks it left pending, findings judged once
each); :class:`~.lens.Lens` is what the ``lens`` fixture hands the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..probes._tasks import pending_tasks
from ..probes.handles import patches as _handle_patches
from ..probes.handles.never_resumable import find_never_resumable, never_resumable_record
from ..probes.handles.registry import task_is_own
from ..records import Record, Span
from ..session import Session
from .budgets import AllowRule, Finding, Policy, Verdict, evaluate, findings_from
from .lens import AsLeak, handle_key
from .origins import created_ns_of, is_cancelling, task_leak_of
from .recorder import Recorder, WindowSink, current_task_id

__all__ = ["Window"]

_TOP = 10
_SETTLE_TIMEOUT_S = 0.2
#: record kinds a test's findings come from (``task`` records also need the spans)
_JUDGED_KINDS = frozenset({"stall", "leak", "task", "sched", "never_resumable", "busy_yield", "resource_wait"})
_ABANDONED = "still pending when its loop was shut down (asyncio.run() or Runner.close() cancelled it)"


def _duration(span: Span) -> int:
    return span.end_ns - span.start_ns


def _stalls_pending(monitors: list[Any], watchdog: Any) -> bool:
    """Whether a loop timed a stall the watchdog has not turned into a record yet.

    That includes a gap the watchdog has taken off its monitor and is still
    turning into records (``draining``)."""
    if getattr(watchdog, "draining", 0):
        return True
    for monitor in monitors[:]:  # the watchdog thread retires monitors meanwhile
        if getattr(monitor, "gaps", None):
            return True
    return False


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
        self.never_resumable: list[Any] = []  # NeverResumable records of this test's tasks (docs/lints.md)
        self.pending_tasks: list[Any] = []
        self.abandoned: list[Any] = []  # tasks asyncio.run() (or a Runner) cancelled in this window
        self.tasks_seen: set[int] = set()  # ids of the tasks judged here (leaked or not)
        self.not_ours: set[tuple[Any, Any]] = set()  # keys of handles a loop or fixture outliving the test owns
        self._gc_mark = 0
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
        self._gc_mark = len(getattr(getattr(self._probes.get("handles"), "registry", None), "gc_closed", ()))
        if recorder.long_lived:
            _keep_resource_warnings()
        # the handles open when the last window of this session ended are the ones open now
        self.open_before = recorder.open_keys if recorder.open_keys is not None else self.handle_keys()

    def end(self, recorder: Recorder) -> None:
        """After teardown: collect the last records and the leaks, leave the session."""
        session, sink = self.session, self.sink
        if session is None or sink is None or self.ended:
            return
        self.settle()
        self._sync()
        self._note_never_resumable(self._open_loops())
        self.ended = True
        self.end_ns = session.now()
        recorder.windows.append((self.start_ns, self.end_ns, self.nodeid))
        live_tasks = self._pending_tasks() or {}
        leaks = [*self.pending_tasks, *self.abandoned]
        leaks += [AsLeak(task_leak_of(t, session.start_ns, "pending")) for t in self._new_tasks(live_tasks.values())]
        self.not_ours = self._outer_threads()
        if recorder.long_lived:
            open_now = self.handle_keys()
            new = open_now - self.open_before - self.not_ours
            # tasks are judged above, from the tasks themselves (they know where they were made)
            new -= {("task", i) for i, t in live_tasks.items() if i in self.tasks_seen or created_ns_of(t) is not None}
            if new:  # records made only for the handles this test left open
                leaks += [AsLeak(h) for h in self._all_open(new)]
            leaks += self._gc_closed()
            recorder.open_keys = open_now
        else:
            recorder.close()
            self._add(sink.take())
            # the handle probe's own records of the tasks judged here lack what the plugin knows
            if self.tasks_seen:
                self._judged_records = [r for r in self._judged_records if not self._is_task_judged(r)]
                self.collected = [r for r in self.collected if not self._is_task_judged(r)]
        seen = {getattr(r, "handle_id", None) for r in self._judged_records if getattr(r, "kind", None) == "leak"}
        for leak in leaks:
            handle_id = getattr(leak, "handle_id", None)
            if handle_id is None or handle_id not in seen:
                seen.add(handle_id)
                self.leak_records.append(leak)
        self.dropped, self.internal_errors = recorder.new_problems()

    def _is_task_judged(self, record: Any) -> bool:
        return (
            getattr(record, "kind", None) == "leak"
            and getattr(record, "handle_kind", None) == "task"
            and getattr(record, "handle_id", None) in self.tasks_seen
        )

    def _new_tasks(self, tasks: Any, current: int | None = None) -> list[asyncio.Task[Any]]:
        """Of ``tasks``, those this test left behind: created in its window (as far as the
        plugin saw), not a scoped fixture's, not asynclens's, not already told to stop."""
        fixture_tasks = self.recorder.fixture_tasks if self.recorder is not None else ()
        reported = self.recorder.reported if self.recorder is not None else ()
        out = []
        for task in tasks:
            task_id = id(task)
            if task_id in self.tasks_seen or task_id == current:
                continue
            born = created_ns_of(task)
            if born is not None and born < self.start_ns:
                continue  # an earlier test's (or from before the run): judged there
            self.tasks_seen.add(task_id)
            if (
                task.done()
                or task_id in fixture_tasks
                or task_id in reported
                or task_is_own(task)
                or is_cancelling(task)
                or (born is None and ("task", task_id) in self.open_before)
            ):
                continue
            out.append(task)
        return out

    def note_abandoned(self, loop: asyncio.AbstractEventLoop) -> None:
        """``asyncio.run()`` (or a ``Runner``, as pytest-asyncio's loops have) is about to
        cancel ``loop``'s leftover tasks: the ones this test left are its leaks."""
        session = self.session
        if session is None or self.ended:
            return
        self._note_never_resumable([loop])
        try:
            for task in self._new_tasks(pending_tasks(loop)):
                self.abandoned.append(AsLeak(task_leak_of(task, session.start_ns, _ABANDONED)))
        except Exception as exc:  # noqa: BLE001 - counted by the session, never raised into the test
            session.internal_error("listing the tasks asyncio.run() left", exc)

    def _note_never_resumable(self, loops: Sequence[Any]) -> None:
        """Find the tasks of ``loops`` this test left that can never be resumed: a
        finding of their own ("will never finish"), so not also pending-task leaks."""
        session = self.session
        if session is None or self.ended:
            return
        fixture_tasks = self.recorder.fixture_tasks if self.recorder is not None else ()
        reported = self.recorder.reported if self.recorder is not None else ()
        for loop in loops:
            try:
                if loop.is_closed() or not pending_tasks(loop):
                    continue
                stuck = find_never_resumable(loop)  # no list of the loop's tasks held meanwhile
                now = session.now()
                for task in stuck:
                    task_id = id(task)
                    born = created_ns_of(task)
                    # a task made in this window is this test's, whatever an id set says (ids of
                    # collected tasks come back)
                    if (
                        any(r.task_id == task_id for r in self.never_resumable)
                        or (born is not None and born < self.start_ns)
                        or (born is None and (task_id in self.tasks_seen or task_id in reported))
                        or task_id in fixture_tasks
                        or task_is_own(task)
                    ):
                        continue
                    self.tasks_seen.add(task_id)
                    record = never_resumable_record(task, now)
                    if record.creation_site is None:  # the plugin's own note of where it was made
                        leak = task_leak_of(task, session.start_ns, "")
                        record = dataclasses.replace(
                            record,
                            creation_site=leak.site,
                            trace_id=leak.trace_id,
                            span_id=leak.span_id,
                            span_name=leak.span_name,
                        )
                    self.never_resumable.append(record)
                del stuck
            except Exception as exc:  # noqa: BLE001 - counted by the session, never raised into the test
                session.internal_error("looking for tasks that can never be resumed", exc)

    def _gc_closed(self) -> list[Any]:
        """The handle registry's handles opened in this window that only the garbage
        collector closed (a test's own session reports those when it closes)."""
        registry = getattr(self.probe("handles"), "registry", None)
        closed = getattr(registry, "gc_closed", None)
        if not closed or len(closed) <= self._gc_mark or not callable(getattr(registry, "record", None)):
            return []
        from ..records import Leak

        return [
            registry.record(Leak, entry)  # type: ignore[union-attr]
            for entry in closed[self._gc_mark :]
            if getattr(entry, "open_ns", 0) >= self.start_ns
        ]

    def _outer_threads(self) -> set[tuple[Any, Any]]:
        """Keys of the tracked threads that belong to a loop or a fixture outliving this
        test: the workers of an open loop's default executor (``to_thread``,
        ``run_in_executor(None, ...)``), of an executor made before the test's window or
        while a scoped fixture was set up, and threads that serve an open loop (anyio's
        worker threads keep it as ``loop``)."""
        live = getattr(getattr(self.probe("handles"), "registry", None), "live", None)
        if not live:
            return set()
        loops = self._open_loops()
        executors = {id(getattr(loop, "_default_executor", None)) for loop in loops}
        keys: set[tuple[Any, Any]] = set()
        for thread in threading.enumerate():
            entry = live.get(id(thread))
            if entry is None or entry() is not thread:
                continue
            if self._outlives(thread, loops, executors):
                keys.add(("thread", entry.hid))
        return keys

    def _outlives(self, thread: threading.Thread, loops: list[Any], executors: set[int]) -> bool:
        if any(getattr(thread, "loop", None) is loop for loop in loops):
            return True
        args = getattr(thread, "_args", None)
        ref = args[0] if isinstance(args, tuple) and args else None
        executor = ref() if isinstance(ref, weakref.ref) else None
        if not isinstance(executor, ThreadPoolExecutor):
            return False
        if id(executor) in executors:
            return True
        born = created_ns_of(executor)
        return born is None or born < self.start_ns or any(a <= born <= b for a, b in self.excluded)

    def _open_loops(self) -> list[Any]:
        monitors = getattr(self._probes.get("lag"), "monitors", None) or ()
        loops = []
        for monitor in monitors[:]:  # the watchdog thread retires monitors meanwhile
            loop = getattr(monitor, "loop", None)
            if loop is not None and not loop.is_closed():
                loops.append(loop)
        return loops

    def call_ended(self) -> None:
        """Tasks the test body started and left pending are leaks even if the loop's
        shutdown cancels them during teardown (fixtures' tasks were started in setup)."""
        current = current_task_id()
        self._note_never_resumable(self._open_loops())
        if self.tasks_before_call is not None:
            # the cheap look first: the loops' own task lists; the registry only if needed
            now = self._pending_tasks()
            if not now or not (now.keys() - self.tasks_before_call - {current}):
                self.pending_tasks = []
                return
            fresh = (t for task_id, t in now.items() if task_id not in self.tasks_before_call)
            start = self.session.start_ns if self.session is not None else 0
            self.pending_tasks = [AsLeak(task_leak_of(t, start, "pending")) for t in self._new_tasks(fresh, current)]
            return
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
        tasks = self._pending_tasks()
        return None if tasks is None else set(tasks)

    def _pending_tasks(self) -> dict[int, asyncio.Task[Any]] | None:
        """The pending tasks of every open loop the lag probe watches, by id."""
        probes = self._probes
        if probes.get("handles") is None:
            return {}
        monitors = getattr(probes.get("lag"), "monitors", None)
        if monitors is None:
            return None
        tasks: dict[int, asyncio.Task[Any]] = {}
        for monitor in monitors[:]:  # the watchdog thread retires monitors meanwhile
            loop = getattr(monitor, "loop", None)
            if loop is None or loop.is_closed():
                continue
            for task in pending_tasks(loop):
                tasks[id(task)] = task
        return tasks

    def settle(self) -> None:
        """Let the lag probe turn the stalls its loops already timed into records.

        A loop times a stall when it next runs; the probe's watchdog thread makes
        the record on its next poll (at most ~25 ms later). Only when a loop has
        such a stall pending does this wait, and for one poll at most."""
        probe = self._probes.get("lag")
        monitors, watchdog = getattr(probe, "monitors", None), getattr(probe, "watchdog", None)
        if not monitors or watchdog is None or not _stalls_pending(monitors, watchdog):
            return
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        polls = getattr(watchdog, "polls", 0)
        while time.monotonic() < deadline and (
            _stalls_pending(monitors, watchdog) or getattr(watchdog, "polls", 0) < polls + 2
        ):
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
        if not source and not self.leak_records and not self.never_resumable:
            return []
        # a task the handle probe found never resumable too is reported once
        mine = {r.task_id for r in self.never_resumable}
        source = [
            r for r in source if getattr(r, "kind", None) != "never_resumable" or getattr(r, "task_id", None) not in mine
        ]
        found = findings_from([*source, *self.leak_records, *self.never_resumable], end)
        for finding in found:
            if finding.kind == "stall" and finding.start_ns < start and id(finding.record) not in self.late:
                owner = self.recorder.owner_of(finding.start_ns) if self.recorder is not None else None
                self.late[id(finding.record)] = (owner or "(between tests)", finding)
        fixture_tasks = self.recorder.fixture_tasks if self.recorder is not None else ()
        not_ours = self.not_ours
        return [
            f
            for f in found
            if (
                f.kind == "leak"
                and not (fixture_tasks and _is_task_of(f.record, fixture_tasks))
                and not (not_ours and handle_key(f.record) in not_ours)
            )
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

    def judge_new(
        self, kinds: Sequence[str] = ("stall", "leak", "sched", "never_resumable", "busy_yield", "wait")
    ) -> Verdict:
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
        self.abandoned = []
        self.tasks_seen = set()
        self.not_ours = set()
        self.late = {}
        self.judged = set()
        self.all_findings = []
        self.failures = []
        self.excluded = []
        self.teardown_verdict = None
        self._probes = {}
        self.open_before = self.open_before_call = frozenset()
        self.tasks_before_call = None


def _keep_resource_warnings() -> None:
    """Put back the handle probe's ``always`` filter for ``ResourceWarning`` (how it hears
    of a handle the garbage collector closed) if it is gone: the run's session started
    inside one test's ``catch_warnings``, which took the filter away when that test ended."""
    always = getattr(_handle_patches, "_ALWAYS", None)
    if always is None or getattr(_handle_patches, "_probe", None) is None:
        return
    filters: list[Any] = warnings.filters  # type: ignore[assignment]
    if not any(f is always for f in filters):
        filters.insert(0, always)
        _handle_patches._filters_changed()


def _is_task_of(record: Any, task_ids: set[int]) -> bool:
    return getattr(record, "handle_kind", None) == "task" and getattr(record, "handle_id", None) in task_ids
