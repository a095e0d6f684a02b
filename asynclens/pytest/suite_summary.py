"""The plugin's terminal summary, from the per-test dicts the reports carry.

Pure functions of JSON-ready data, so they work the same on an xdist controller
that only sees the workers' reports.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from .._durations import format_ns
from .budgets import AllowRule

__all__ = ["render_suite", "unused_rules"]

_TOP = 10


def unused_rules(
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
