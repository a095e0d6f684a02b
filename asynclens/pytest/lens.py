"""What the ``lens`` fixture hands a test: its records, and assertions on them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._durations import parse_duration
from ..records import Record, Span
from ..session import Session, SessionStatistics
from .budgets import Finding, Policy, findings_from
from .recorder import current_task_id

if TYPE_CHECKING:
    from .window import Window

__all__ = ["HANDLE_KINDS", "Lens", "findings_from_handles", "handle_key", "leak_kinds"]

HANDLE_KINDS = ("socket", "file", "subprocess", "transport", "task", "thread")


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
