"""Budgets for a test: what counts as a stall, leak or scheduling delay too many.

The pytest plugin records each test in a session and hands the records here.
This module turns stall, leak and scheduler records into :class:`Finding` s,
applies allow rules and limits (a :class:`Policy`), and formats the verdict so
that a failure names the culprit line, the span and the duration. It reads
records by ``record.kind`` and ``getattr`` with defaults, so it works with any
record that has the planned fields (and with stand-ins in tests). No pytest.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from .._durations import format_ns

__all__ = [
    "LEAK_MODES",
    "AllowRule",
    "AllowRuleError",
    "Finding",
    "Policy",
    "Verdict",
    "evaluate",
    "findings_from",
    "module_of",
    "parse_frame",
]

LEAK_MODES = ("fail", "warn", "ignore")
FINDING_KINDS = ("stall", "leak", "sched", "never_resumable", "busy_yield", "wait")
#: the lints' findings (docs/lints.md), each judged by its own fail|warn|ignore mode
LINT_FINDINGS = ("never_resumable", "busy_yield")
_STACK_LINES = 8


class AllowRuleError(ValueError):
    """An allow rule is malformed."""


# ---------------------------------------------------------------------- frames


def parse_frame(text: str) -> tuple[str, int | None, str]:
    """``"path/to/file.py:41 in handle"`` → ``("path/to/file.py", 41, "handle")``."""
    location, sep, function = text.partition(" in ")
    path, colon, line = location.rpartition(":")
    if not colon or not line.isdigit():
        return location, None, function if sep else ""
    return path, int(line), function if sep else ""


@lru_cache(maxsize=4096)
def module_of(path: str) -> str | None:
    """The dotted module name of a source path, found through ``sys.path`` (best effort)."""
    if not path.endswith(".py"):
        return None
    absolute = os.path.abspath(path)
    best = ""
    for entry in sys.path:
        root = os.path.abspath(entry or os.curdir)
        if absolute.startswith(root + os.sep) and len(root) > len(best):
            best = root
    relative = absolute[len(best) + 1 :] if best else os.path.basename(absolute)
    parts = relative[:-3].split(os.sep)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    if not all(part.isidentifier() for part in parts):
        return parts[-1] if parts[-1].isidentifier() else None
    return ".".join(parts)


# -------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One stall, leaked handle or scheduling delay, ready to judge and to print.

    ``where`` is the culprit line (``"file.py:12 in func"``), ``frames`` the
    stack (outermost first), ``duration_ns`` the stall's length, how long the
    handle was open, or how long the task waited to run.
    """

    kind: str
    duration_ns: int
    start_ns: int
    what: str
    where: str | None = None
    span: str | None = None
    task: str | None = None
    frames: tuple[str, ...] = ()
    description: str = ""
    handle_kind: str | None = None
    note: str = ""
    #: a leaked task's suspension point (where it waits), its creation being ``where``
    waiting: str | None = None
    record: Any = field(default=None, compare=False, repr=False)

    def headline(self) -> str:
        note = f" ({self.note})" if self.note else ""
        if self.kind == "never_resumable":  # no duration: it would be forever
            at = f", created at {short_frame(self.where)}" if self.where else ""
            return f"{self.what}{at}{note}"
        at = f" at {short_frame(self.where)}" if self.where else ""
        return f"{self.what} {format_ns(self.duration_ns)}{at}{note}"

    def context(self) -> str:
        parts = []
        if self.span:
            parts.append(f"span {self.span!r}")
        if self.task:
            parts.append(f"task {self.task!r}")
        return ", ".join(parts) if parts else "no span"

    def lines(self) -> list[str]:
        """The finding as indented text lines (headline, span/task, stack)."""
        out = [f"  {self.headline()}"]
        if self.waiting:
            out.append(f"    waiting at {short_frame(self.waiting)}")
        out.append(f"    in {self.context()}")
        own = [frame for frame in self.frames if not _is_machinery(frame)]
        frames = own[-_STACK_LINES:]
        if frames:
            more = len(self.frames) - len(frames)
            hidden = f" ({more} frames of pytest, asyncio or outer calls not shown)" if more else ""
            out.append("    stack (most recent call last):" + hidden)
            out.extend(f"      {short_frame(frame)}" for frame in frames)
        return out

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready form (what the plugin ships between processes)."""
        return {
            "kind": self.kind,
            "duration_ns": self.duration_ns,
            "what": self.what,
            "where": short_frame(self.where) if self.where else None,
            "span": self.span,
            "task": self.task,
        }


#: Frames of the machinery between pytest and the test, left out of failure messages.
_MACHINERY = (
    "/_pytest/",
    "/pytest/__main__.py",
    "/runpy.py",
    "/pluggy/",
    "/pytest_asyncio/",
    "/anyio/pytest_plugin.py",
    "/anyio/_backends/",
    "/asyncio/",
    "/asynclens/",
    "/xdist/",
    "/execnet/",
    "<frozen ",
)


def short_frame(frame: str) -> str:
    """A frame with its path relative to the working directory when it lies below it."""
    cwd = os.getcwd() + os.sep
    return frame.removeprefix(cwd)


def _is_machinery(frame: str) -> bool:
    path = frame.replace("\\", "/")
    return any(part in path for part in _MACHINERY)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _stall(record: Any) -> Finding:
    start = int(getattr(record, "start_ns", 0) or 0)
    end = int(getattr(record, "end_ns", start) or start)
    file, line, function = (
        getattr(record, "file", None),
        getattr(record, "line", None),
        getattr(record, "function", None),
    )
    where = None
    if file:
        where = f"{file}:{line}" if line is not None else str(file)
        if function:
            where += f" in {function}"
    cause = getattr(record, "cause", None)
    what = "event loop blocked" + (f" ({cause})" if cause and cause != "unknown" else "") + " for"
    frames = tuple(getattr(record, "stack", ()) or ())
    if not frames:
        frames = tuple(getattr(record, "async_stack", ()) or ())
    note = ""
    if where is None and getattr(record, "sampled", None) is False:
        note = "no stack could be sampled while it was blocked, so the line is unknown"
    return Finding(
        kind="stall",
        duration_ns=end - start,
        start_ns=start,
        what=what,
        where=where,
        span=_text(getattr(record, "span_name", None)),
        task=_text(getattr(record, "task", None)),
        frames=frames,
        note=note,
        record=record,
    )


def _leak(record: Any, end_ns: int) -> Finding:
    opened = int(getattr(record, "open_ns", 0) or 0)
    closed = getattr(record, "close_ns", None)
    handle_kind = _text(getattr(record, "handle_kind", None)) or "handle"
    description = _text(getattr(record, "description", None)) or ""
    by_gc = getattr(record, "closed_by", None) == "gc"
    # a task named by where it was created says where it waits in its description
    shown, _, waiting = description.partition(", waiting at ") if handle_kind == "task" else (description, "", "")
    # descriptions may start with the kind already ("task 'x' (coro) pending")
    label = shown if shown.startswith(handle_kind) else f"{handle_kind} {shown}".strip()
    what = f"leaked {label}" + (" (closed only by the garbage collector)" if by_gc else "") + ", open for"
    return Finding(
        kind="leak",
        duration_ns=max(0, (closed if closed is not None else end_ns) - opened),
        start_ns=opened,
        what=what,
        where=_text(getattr(record, "site", None)),
        span=_text(getattr(record, "span_name", None)),
        task=None,
        frames=tuple(getattr(record, "stack", ()) or ()),
        description=description,
        handle_kind=handle_kind,
        waiting=waiting or None,
        record=record,
    )


def _task(record: Any, span_names: Mapping[int, str]) -> Finding:
    name = _text(getattr(record, "name", None)) or "?"
    span_id = getattr(record, "span_id", None)
    return Finding(
        kind="sched",
        duration_ns=int(getattr(record, "max_sched_wait_ns", 0) or 0),
        start_ns=int(getattr(record, "created_ns", 0) or 0),
        what=f"task {name!r} waited (ready, not running) for",
        span=span_names.get(span_id) if span_id is not None else None,
        task=name,
        record=record,
    )


def _sched_snapshot(record: Any) -> Finding | None:
    ready = getattr(record, "ready_delay", None)
    worst = ready.get("max") if isinstance(ready, Mapping) else None
    if not worst:
        return None
    return Finding(
        kind="sched",
        duration_ns=int(worst),
        start_ns=int(getattr(record, "start_ns", 0) or 0),
        what="a ready callback waited to run for",
        record=record,
    )


def _never_resumable(record: Any) -> Finding:
    name = _text(getattr(record, "name", None)) or "?"
    coro = _text(getattr(record, "coro", None)) or "?"
    waiting_on = _text(getattr(record, "waiting_on", None)) or "future"
    return Finding(
        kind="never_resumable",
        duration_ns=0,
        start_ns=int(getattr(record, "found_ns", 0) or 0),
        what=f"task {name!r} ({coro}) will never finish: nothing holds the {waiting_on} it awaits",
        where=_text(getattr(record, "creation_site", None)),
        span=_text(getattr(record, "span_name", None)),
        task=name,
        description=f"task {name!r} ({coro})",
        waiting=_text(getattr(record, "suspended_at", None)),
        record=record,
    )


def _busy_yield(record: Any) -> Finding:
    name = _text(getattr(record, "name", None)) or "?"
    wakes = int(getattr(record, "wakes", 0) or 0)
    own = int(getattr(record, "self_wakes", 0) or 0)
    cpu = getattr(record, "cpu_ns", None)
    burned = int(cpu if cpu is not None else getattr(record, "run_ns", 0) or 0)
    share = f"{own / wakes:.0%}" if wakes else "?"
    steps = int(getattr(record, "steps", 0) or 0)
    return Finding(
        kind="busy_yield",
        duration_ns=burned,
        start_ns=int(getattr(record, "found_ns", 0) or 0),
        what=f"task {name!r} busy-yields: {steps} steps, {share} woken by itself, running for",
        where=_text(getattr(record, "line", None)) or _text(getattr(record, "creation_site", None)),
        span=_text(getattr(record, "span_name", None)),
        task=name,
        description=f"task {name!r} ({_text(getattr(record, 'coro', None)) or '?'})",
        record=record,
    )


def _resource_wait(record: Any) -> Finding:
    kind = _text(getattr(record, "resource_kind", None)) or "resource"
    created = _text(getattr(record, "resource_site", None))
    start = int(getattr(record, "start_ns", 0) or 0)
    return Finding(
        kind="wait",
        duration_ns=int(getattr(record, "end_ns", start) or start) - start,
        start_ns=start,
        what=f"waited on {kind}" + (f" (created at {short_frame(created)})" if created else "") + " for",
        where=_text(getattr(record, "site", None)),
        span=_text(getattr(record, "span_name", None)),
        task=_text(getattr(record, "task", None)),
        frames=(created,) if created else (),
        description=kind,
        record=record,
    )


def findings_from(records: Iterable[Any], end_ns: int) -> list[Finding]:
    """Every stall, leak and scheduling delay in ``records`` as findings.

    Scheduling delay comes from per-task records when there are any (they name
    the task); otherwise from the loop-wide snapshots.
    """
    records = list(records)
    stalls: list[Finding] = []
    leaks: list[Finding] = []
    task_records: list[Any] = []
    snapshots: list[Finding] = []
    lints: list[Finding] = []
    waits: list[Finding] = []
    for record in records:
        kind = getattr(record, "kind", None)
        if kind == "span":
            continue
        if kind == "stall":
            stalls.append(_stall(record))
        elif kind == "leak":
            leaks.append(_leak(record, end_ns))
        elif kind == "task":
            if getattr(record, "max_sched_wait_ns", None):
                task_records.append(record)
        elif kind == "sched":
            snapshot = _sched_snapshot(record)
            if snapshot is not None:
                snapshots.append(snapshot)
        elif kind == "never_resumable":
            lints.append(_never_resumable(record))
        elif kind == "busy_yield":
            lints.append(_busy_yield(record))
        elif kind == "resource_wait":
            waits.append(_resource_wait(record))
    tasks: list[Finding] = []
    if task_records:
        span_names = {r.span_id: r.name for r in records if getattr(r, "kind", None) == "span"}
        tasks = [_task(record, span_names) for record in task_records]
    return stalls + leaks + (tasks or snapshots) + lints + waits


# ------------------------------------------------------------------ allow rules


@dataclass(frozen=True)
class AllowRule:
    """A known stall, leak or delay not to fail on:
    ``[stall:|leak:|sched:|never_resumable:|busy_yield:]pattern``.

    The pattern (shell-style wildcards) matches a finding when it matches

    * a source path (patterns with ``/`` or ``.py``: ``"legacy/db.py"``,
      ``"*/vendor/*"``, ``"app/db.py:41"``) of any frame of its stack,
    * ``module:function`` (``"legacy.db:connect"``) of any frame,
    * a module (``"legacy"`` also matches ``legacy.db``) or a function name,
    * a leaked handle's description or kind (``"*127.0.0.1:5432*"``, ``"thread"``),
    * the finding's task or span name.

    ``origin`` says where the rule was written (for the unused-rule warning).
    """

    text: str
    origin: str = "config"
    kinds: frozenset[str] = frozenset(FINDING_KINDS)
    pattern: str = ""

    @classmethod
    def parse(cls, text: object, origin: str) -> AllowRule:
        if not isinstance(text, str):
            raise AllowRuleError(
                f"{origin}: allow rule {text!r} must be a string like 'stall:legacy.db' or 'leak:*:5432*'"
            )
        rule = text.strip()
        kinds = frozenset(FINDING_KINDS)
        head, colon, rest = rule.partition(":")
        if colon and head.strip().lower() in FINDING_KINDS:
            kinds = frozenset([head.strip().lower()])
            rule = rest.strip()
        if not rule:
            raise AllowRuleError(f"{origin}: allow rule {text!r} has no pattern")
        return cls(text=text.strip(), origin=origin, kinds=kinds, pattern=rule)

    def matches(self, finding: Finding) -> bool:
        if finding.kind not in self.kinds:
            return False
        pattern = self.pattern
        if finding.description and fnmatchcase(finding.description, pattern):
            return True
        if finding.handle_kind and finding.handle_kind == pattern:
            return True
        for name in (finding.task, finding.span):
            if name and fnmatchcase(name, pattern):
                return True
        frames = finding.frames if finding.where is None else (finding.where, *finding.frames)
        if finding.waiting:
            frames = (*frames, finding.waiting)
        return any(self._matches_frame(frame) for frame in frames)

    def _matches_frame(self, frame: str) -> bool:
        path, line, function = parse_frame(frame)
        pattern = self.pattern
        if "/" in pattern or "\\" in pattern or pattern.endswith(".py") or ".py:" in pattern:
            candidates = (path, f"{path}:{line}") if line is not None else (path,)
            return any(fnmatchcase(c, pattern) or fnmatchcase(c, "*/" + pattern) for c in candidates)
        module_pattern, colon, function_pattern = pattern.partition(":")
        module = module_of(path)
        if colon:
            return _module_matches(module, module_pattern) and fnmatchcase(function, function_pattern)
        return _module_matches(module, pattern) or (bool(function) and fnmatchcase(function, pattern))

    def __str__(self) -> str:
        return self.text


def _module_matches(module: str | None, pattern: str) -> bool:
    return module is not None and (fnmatchcase(module, pattern) or module.startswith(pattern + "."))


# ---------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """The limits a test runs under: from options and ini, overridden by its marker.

    ``None`` limits mean "report, do not fail". ``leaks``, ``never_resumable`` and
    ``busy_yield`` are each one of ``fail``, ``warn``, ``ignore``.
    """

    max_stall_ns: int | None = None
    leaks: str = "warn"
    max_sched_delay_ns: int | None = None
    allow: tuple[AllowRule, ...] = ()
    #: the longest a task may wait on an asyncio Lock, Semaphore, Queue, ... (resources probe)
    max_lock_wait_ns: int | None = None
    enabled: bool = True
    never_resumable: str = "fail"
    busy_yield: str = "ignore"  # "warn"/"fail" need the scheduler probe, which the plugin then turns on


@dataclass
class Verdict:
    """The judged findings of one test (or one phase of it)."""

    failures: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    allowed: list[Finding] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rule_hits: Counter[AllowRule] = field(default_factory=Counter)
    policy: Policy = field(default_factory=Policy)

    def failure_message(self) -> str:
        return render_findings(self.failures, self.policy)

    def warning_message(self) -> str:
        return render_findings(self.warnings, self.policy)


def _over(finding: Finding, policy: Policy) -> str | None:
    """``"fail"``/``"warn"`` when the finding breaks the policy, else None."""
    if finding.kind == "stall":
        limit = policy.max_stall_ns
        return "fail" if limit is not None and finding.duration_ns > limit else None
    if finding.kind == "leak":
        return None if policy.leaks == "ignore" else policy.leaks
    if finding.kind == "sched":
        limit = policy.max_sched_delay_ns
        return "fail" if limit is not None and finding.duration_ns > limit else None
    if finding.kind in LINT_FINDINGS:
        mode = getattr(policy, finding.kind)
        return None if mode == "ignore" else str(mode)
    if finding.kind == "wait":
        limit = policy.max_lock_wait_ns
        return "fail" if limit is not None and finding.duration_ns > limit else None
    return None


def evaluate(
    findings: Sequence[Finding],
    policy: Policy,
    *,
    excluded: Sequence[tuple[int, int]] = (),
) -> Verdict:
    """Judge ``findings`` under ``policy``.

    A finding that started inside one of the ``excluded`` intervals (the set-up
    of a module- or session-scoped fixture) is not the test's and is dropped.
    A finding an allow rule matches never fails or warns; every rule that
    matched is counted in ``rule_hits``.
    """
    verdict = Verdict(policy=policy)
    for finding in findings:
        if any(start <= finding.start_ns <= end for start, end in excluded):
            continue
        verdict.findings.append(finding)
        rules = [rule for rule in policy.allow if rule.matches(finding)]
        for rule in rules:
            verdict.rule_hits[rule] += 1
        if rules:
            verdict.allowed.append(finding)
            continue
        outcome = _over(finding, policy)
        if outcome == "fail":
            verdict.failures.append(finding)
        elif outcome == "warn":
            verdict.warnings.append(finding)
    return verdict


def render_findings(findings: Sequence[Finding], policy: Policy) -> str:
    """The failure text: one block per kind, worst first, each naming line, span, duration."""
    blocks = []
    for kind in FINDING_KINDS:
        group = sorted((f for f in findings if f.kind == kind), key=lambda f: -f.duration_ns)
        if not group:
            continue
        count = len(group)
        if kind == "stall":
            limit = policy.max_stall_ns
            head = f"{count} event-loop stall{'s' if count > 1 else ''}" + (
                f" over the {format_ns(limit)} limit (max_stall)" if limit is not None else ""
            )
        elif kind == "leak":
            head = f"{count} leaked handle{'s' if count > 1 else ''} (leaks={policy.leaks!r})"
        elif kind == "never_resumable":
            head = (
                f"{count} task{'s' if count > 1 else ''} that will never finish"
                f" (never_resumable={policy.never_resumable!r})"
            )
        elif kind == "busy_yield":
            head = f"{count} busy-yield task{'s' if count > 1 else ''} (busy_yield={policy.busy_yield!r})"
        elif kind == "wait":
            limit = policy.max_lock_wait_ns
            head = f"{count} wait{'s' if count > 1 else ''} on asyncio resources" + (
                f" over the {format_ns(limit)} limit (max_lock_wait)" if limit is not None else ""
            )
        else:
            limit = policy.max_sched_delay_ns
            head = "scheduling delay" + (
                f" over the {format_ns(limit)} limit (max_sched_delay)" if limit is not None else ""
            )
        lines = [f"asynclens: {head}:"]
        for finding in group:
            lines.extend(finding.lines())
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
