"""A self-contained HTML report: one file, inline JS/CSS, no network.

Sections: headline and problems, a timeline of tasks and spans (click a span to
connect the slivers of its request across tasks), a flame graph (wall / CPU),
event-loop lag over time with stalls marked, the stalls table (culprit line,
cause, task, span, stacks), the leaks table and the text summary (scheduling,
GC, executor).

Size is bounded: the timeline shows at most :data:`MAX_TIMELINE_SPANS` spans,
whole requests (traces) chosen slowest first; the flame graph and the summary
always cover every span (they are aggregates); at most :data:`MAX_TABLE_ROWS`
stalls and leaks are listed (longest stalls first). The report says what it
left out. All user-supplied text travels as JSON data and is inserted with
``textContent``, never parsed as HTML.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import Any

from .. import __version__
from .._durations import format_ns
from ..report import breakdown as _bd
from ..report.breakdown import HolderIndex
from ..report.fileformat import _fallback
from ..report.flame import STALL_ROOT, weighted_stacks
from ..report.frames import clean_frame, clean_path, split_stack
from ..report.leaks import group_leaks
from ..report.rundata import DEFAULT_LIMIT, RunData
from ..report.summary import WIDTH, recorded_blind_spots, summary_from_run
from ..report.tracks import assign_lanes, track_of
from ._html_assets import CSS, JS
from ._rendering import RenderingSink

__all__ = ["MAX_TABLE_ROWS", "MAX_TIMELINE_SPANS", "HtmlSink", "blind_spots", "render_html"]

#: Spans drawn on the timeline (whole traces, slowest first); the rest are in the aggregates only.
MAX_TIMELINE_SPANS = 20_000
#: Rows of the stalls and leaks tables.
MAX_TABLE_ROWS = 500
#: Flame graph nodes narrower than this share of the total are merged into their parent's "(other)".
FLAME_MIN_SHARE = 0.0005
#: Flame graph stacks deeper than this are cut (the rest is folded into "(deeper)").
FLAME_MAX_DEPTH = 60
#: Innermost frames of a stall's sampled stack shown in the flame graph (the tables show all).
STALL_FRAMES = 12


def _short_frame(frame: str) -> str:
    """``/long/path/to/app.py:41 in f`` -> ``app.py:41 in f``."""
    path, sep, rest = frame.partition(":")
    return os.path.basename(path) + sep + rest if sep else frame


def _us(ns: float) -> float:
    return round(ns / 1000, 1)


class _Strings:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: Any) -> int:
        text = str(text)
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.items)
            self.items.append(text)
        return found


def _choose_spans(data: RunData) -> tuple[list[tuple[Any, Any]], int]:
    """Whole traces, slowest root first, until the budget is used; ``(part, span)`` pairs."""
    total = data.span_count
    pairs = [(part, s) for part in data.parts for s in part.spans]
    if total <= MAX_TIMELINE_SPANS:
        return pairs, total
    traces: dict[tuple[int, int], list[tuple[Any, Any]]] = {}
    length: dict[tuple[int, int], int] = {}
    for part, s in pairs:
        key = (part.index, s.trace_id)
        traces.setdefault(key, []).append((part, s))
        d = s.end_ns - s.start_ns
        if d > length.get(key, -1):
            length[key] = d
    chosen: list[tuple[Any, Any]] = []
    for key in sorted(traces, key=lambda k: -length[k]):
        members = traces[key]
        if len(chosen) + len(members) > MAX_TIMELINE_SPANS:
            if chosen:
                continue
            members = members[:MAX_TIMELINE_SPANS]
        chosen.extend(members)
        if len(chosen) >= MAX_TIMELINE_SPANS:
            break
    return chosen, total


def _timeline(data: RunData, strings: _Strings, origin: int) -> dict[str, Any]:
    pairs, total = _choose_spans(data)
    groups: dict[tuple[int, str], list[Any]] = {}
    for part, s in pairs:
        groups.setdefault((part.index, track_of(s)), []).append(s)
    tracks: list[dict[str, Any]] = []
    # per span: [track, depth, start_us, dur_us, name, trace, status, parent,
    #            cpu_us, blocked_us, sched_us, io_us, exec_us] (the critical-path breakdown, -1: not measured)
    rows: list[list[Any]] = []
    attrs: dict[int, Any] = {}
    index_of: dict[tuple[int, int], int] = {}
    trace_ids: dict[tuple[int, int], int] = {}
    many = len(data.parts) > 1
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], min(s.start_ns for s in kv[1])))
    flat: list[tuple[int, Any, Any]] = []
    for (part_index, name), spans in ordered:
        part = data.parts[part_index]
        lanes = assign_lanes(spans)
        lane_tracks: dict[int, int] = {}
        depth_stacks: dict[int, list[int]] = {}
        for s, lane in sorted(zip(spans, lanes), key=lambda p: (p[0].start_ns, -p[0].end_ns)):
            track = lane_tracks.get(lane)
            if track is None:
                label = name if lane == 0 else f"{name} (overlap {lane + 1})"
                if many:
                    label = f"pid {part.pid} · {label}"
                track = lane_tracks[lane] = len(tracks)
                tracks.append({"name": label, "depth": 0})
            stack = depth_stacks.setdefault(lane, [])
            while stack and stack[-1] <= s.start_ns:
                stack.pop()
            depth = len(stack)
            stack.append(s.end_ns)
            tracks[track]["depth"] = max(tracks[track]["depth"], depth + 1)
            flat.append((track, depth, (part, s)))
    holders: dict[int, HolderIndex] = {}
    for i, (_, _, (part, s)) in enumerate(flat):
        index_of[(part.index, s.span_id)] = i
        if s.task:
            holders.setdefault(part.index, HolderIndex()).add(s)
    for track, depth, (part, s) in flat:
        shift = part.shift_ns - origin
        trace = trace_ids.setdefault((part.index, s.trace_id), len(trace_ids))
        parent = index_of.get((part.index, s.parent_id), -1) if s.parent_id is not None else -1
        status = 0 if s.status == "ok" else (1 if s.status == "error" else 2)
        row = [
            track,
            depth,
            _us(s.start_ns + shift),
            _us(s.end_ns - s.start_ns),
            strings(s.name),
            trace,
            status,
            parent,
        ]
        critical = _bd.critical(s)
        row.extend([_us(v) for v in critical] if critical is not None else [-1] * 5)
        rows.append(row)
        info: dict[str, Any] = {}
        own = _bd.own(s)
        if own is not None:
            info["own"] = [_us(v) for v in own]
        held = _bd.held_up_by(s)
        if held:
            info["held"] = _short(held)
            holder = holders[part.index].holder(s, held) if part.index in holders else None
            if holder is not None:  # the holder's span on its task's row: the timeline draws the arrow
                info["held_span"] = index_of[(part.index, holder.span_id)]
        if s.attrs:
            info["attrs"] = {str(k): _short(v) for k, v in list(s.attrs.items())[:30]}
        if s.error_type:
            info["error"] = f"{s.error_type}: {s.error_message}" if s.error_message else s.error_type
        if s.task:
            info["task"] = s.task
        if info:
            attrs[len(rows) - 1] = info
    return {"tracks": tracks, "spans": rows, "info": attrs, "total": total, "shown": len(rows)}


def _short(value: Any) -> Any:
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = value if isinstance(value, str) else _fallback(value)
    text = str(text)
    return text if len(text) <= 300 else text[:297] + "..."


def _flame(data: RunData, strings: _Strings) -> dict[str, Any]:
    program = _flame_tree(weighted_stacks(data), strings)
    out = {"root": program, "has_cpu": program[2] > 0}
    if data.all("stall"):
        full = _flame_tree(weighted_stacks(data, full_stacks=True), strings)
        if full != program:
            out["root_full"] = full
    return out


def _flame_tree(stacks: dict[tuple[str, ...], list[int]], strings: _Strings) -> list[Any]:
    root: dict[str, Any] = {"n": strings("all"), "w": 0, "c": 0, "k": {}}
    for stack, (wall, cpu) in stacks.items():
        if stack and stack[0] == STALL_ROOT:  # the innermost frames tell; short file names
            frames = tuple(_short_frame(f) for f in stack[1:])
            if len(frames) > STALL_FRAMES:
                frames = ("…", *frames[-STALL_FRAMES:])
            stack = (STALL_ROOT, *frames)
        if len(stack) > FLAME_MAX_DEPTH:  # deep recursion: keep the top, fold the rest
            stack = (*stack[:FLAME_MAX_DEPTH], "(deeper)")
        node = root
        node["w"] += wall
        node["c"] += cpu
        for name in stack:
            child = node["k"].get(name)
            if child is None:
                child = node["k"][name] = {"n": strings(name), "w": 0, "c": 0, "k": {}}
            child["w"] += wall
            child["c"] += cpu
            node = child
    limit_w = root["w"] * FLAME_MIN_SHARE
    limit_c = root["c"] * FLAME_MIN_SHARE

    def prune(node: dict[str, Any]) -> list[Any]:
        kids = []
        other_w = other_c = 0
        for child in sorted(node["k"].values(), key=lambda c: -c["w"]):
            if child["w"] >= limit_w or child["c"] > limit_c:
                kids.append(prune(child))
            else:
                other_w += child["w"]
                other_c += child["c"]
        if other_w or other_c:
            kids.append([strings("(small)"), _us(other_w), _us(other_c), []])
        return [node["n"], _us(node["w"]), _us(node["c"]), kids]

    return prune(root)


def _stalls(data: RunData, origin: int) -> tuple[list[dict[str, Any]], int]:
    stalls = [(part, s) for part, s in data.all("stall")]
    total = len(stalls)
    stalls.sort(key=lambda ps: -((getattr(ps[1], "end_ns", 0) or 0) - (getattr(ps[1], "start_ns", 0) or 0)))
    out = []
    for part, s in stalls[:MAX_TABLE_ROWS]:
        start = getattr(s, "start_ns", 0) or 0
        end = getattr(s, "end_ns", start) or start
        file = getattr(s, "file", None)
        culprit = (
            f"{clean_path(str(file))}:{getattr(s, 'line', None)} in {getattr(s, 'function', None)}"
            if file
            else (clean_frame((getattr(s, "stack", None) or ("(no stack sampled)",))[-1]))
        )
        out.append(
            {
                "t": _us(start + part.shift_ns - origin),
                "dur": _us(end - start),
                "culprit": culprit,
                "cause": str(getattr(s, "cause", None) or "unknown"),
                "task": _short(getattr(s, "task", None)),
                "span": _short(getattr(s, "span_name", None)),
                "cpu": _us(s.cpu_ns) if isinstance(getattr(s, "cpu_ns", None), int) else None,
                "episode": _bd.parts_text(s, limit=5),
                **_stack_fields("stack", getattr(s, "stack", None)),
                **_stack_fields("astack", getattr(s, "async_stack", None)),
            }
        )
    out.sort(key=lambda r: r["t"])
    return out, total


def _lag(data: RunData, origin: int) -> list[list[Any]]:
    """Per window: ``[start_us, end_us, p50_ms, p99_ms, max_ms, elu]``."""
    out = []
    for part, lag in data.all("lag"):
        end = getattr(lag, "end_ns", None) or getattr(lag, "start_ns", 0) or 0
        start = getattr(lag, "start_ns", None)
        start = start if isinstance(start, int) else end
        elu = getattr(lag, "elu", None)

        def ms(name: str, lag: Any = lag) -> float | None:
            value = getattr(lag, name, None)
            return round(value / 1e6, 3) if isinstance(value, (int, float)) else None

        shift = part.shift_ns - origin
        out.append(
            [
                _us(start + shift),
                _us(end + shift),
                ms("p50_ns"),
                ms("p99_ns"),
                ms("max_ns"),
                round(float(elu), 4) if isinstance(elu, (int, float)) else None,
            ]
        )
    out.sort(key=lambda r: r[0] or 0.0)
    return out


def _stack_fields(key: str, stack: Any) -> dict[str, list[str]]:
    """``{key: the program's frames}``, plus ``{key + "_full": the full stack}`` when that shows more."""
    program, full = split_stack(tuple(stack or ()))
    out = {key: program[-60:]}
    if len(full) > len(program):
        out[key + "_full"] = full[-60:]
    return out


def _median_window_us(lag: list[list[Any]]) -> float:
    widths = sorted(row[1] - row[0] for row in lag)
    return widths[len(widths) // 2] if widths else 0.0


def _leaks(data: RunData, origin: int) -> tuple[list[dict[str, Any]], int]:
    groups = [(part, group) for part in data.parts for group in group_leaks(part.of("leak"))]
    out = []
    for part, group in groups[:MAX_TABLE_ROWS]:
        leak = group.leak
        opened = getattr(leak, "open_ns", None)
        site = getattr(leak, "site", None)
        out.append(
            {
                "kind": group.kind,
                "desc": _short(group.description),
                "site": _short(clean_frame(site) if site else "unknown"),
                "span": _short(getattr(leak, "span_name", None)),
                "by": _short(getattr(leak, "closed_by", None)),
                "t": _us(opened + part.shift_ns - origin) if isinstance(opened, int) else None,
                **_stack_fields("stack", getattr(leak, "stack", None)),
            }
        )
    return out, len(groups)


def blind_spots(data: RunData) -> list[str]:
    """The ``Not measured: ...`` lines the runs' sessions recorded (first in the header)."""
    return recorded_blind_spots(data)


def _lint_notes(data: RunData) -> list[str]:
    """The lints' findings (docs/lints.md), one note each, at the top of the report."""
    notes = []
    for part in data.parts:
        for r in part.of("never_resumable")[:20]:
            notes.append(
                f"task {r.name!r} will never finish: suspended at {r.suspended_at or '?'} on a"
                f" {r.waiting_on or 'future'} nothing holds (created at {r.creation_site or '?'}"
                + (f", span {r.span_name}" if r.span_name else "")
                + ")"
            )
        for r in part.of("busy_yield")[:20]:
            share = r.self_wakes / r.wakes if r.wakes else 0.0
            notes.append(
                f"task {r.name!r} busy-yields at {r.line or r.creation_site or '?'}: {r.steps} steps,"
                f" {share:.0%} woken by itself"
            )
    return notes


def _findings(data: RunData) -> list[dict[str, Any]]:
    """The lints' and the resources probe's findings (docs/lints.md, docs/resources.md), a
    row each: tasks that will never finish, busy-yield tasks, contended asyncio resources
    (longest wait first) and growing queues."""
    rows: list[dict[str, Any]] = []
    for part in data.parts:
        for r in part.of("never_resumable"):
            rows.append({"kind": "will never finish", "what": f"task {r.name!r} ({r.coro or '?'})",
                         "where": _short(r.suspended_at or "?"), "span": _short(r.span_name),
                         "detail": _short(f"awaits a {r.waiting_on or 'future'} nothing holds; created at "
                                          f"{r.creation_site or '?'}")})
        for r in part.of("busy_yield"):
            share = r.self_wakes / r.wakes if r.wakes else 0.0
            rows.append({"kind": "busy-yield", "what": f"task {r.name!r} ({r.coro or '?'})",
                         "where": _short(r.line or r.creation_site or "?"), "span": _short(r.span_name),
                         "detail": f"{r.steps} steps, {share:.0%} of {r.wakes} wake-ups by itself,"
                                   f" {format_ns(r.cpu_ns if r.cpu_ns is not None else r.run_ns)} running"})
        waited = sorted(part.of("resource"), key=lambda r: -(r.max_wait_ns or 0))
        for r in waited:
            hold = (f"; longest hold {format_ns(r.max_hold_ns)} by {r.holder_task or '?'} at {r.holder_site or '?'}"
                    if r.max_hold_ns else "")
            rows.append({"kind": "resource wait", "what": f"{r.resource_kind} ({r.waits} waits)",
                         "where": _short(r.site or "?"), "span": _short(r.holder_span_name),
                         "detail": _short(f"waited {format_ns(r.wait_ns)} in all, longest {format_ns(r.max_wait_ns)},"
                                          f" up to {r.max_waiters} at once{hold}")})
        for r in part.of("queue_backlog"):
            rows.append({"kind": "queue backlog", "what": r.resource_kind, "where": _short(r.site or "?"),
                         "span": None, "detail": f"depth {r.start_depth} → {r.end_depth} over {r.samples} samples"})
    return rows[:MAX_TABLE_ROWS]


def build_payload(data: RunData, summary: str | None = None) -> dict[str, Any]:
    """The JSON data the report's script renders (exposed for tests); ``summary`` is the
    text the session printed, else the one the records tell."""
    strings = _Strings()
    origin, end = data.extent()
    timeline = _timeline(data, strings, origin)
    stalls, stall_total = _stalls(data, origin)
    leaks, leak_total = _leaks(data, origin)
    blind = blind_spots(data)
    notes = [*blind, *data.problems()]
    if timeline["shown"] < timeline["total"]:
        notes.append(
            f"the timeline shows {timeline['shown']} of {timeline['total']} spans (whole requests, slowest first);"
            " the flame graph and summary include all of them"
        )
    if stall_total > len(stalls):
        notes.append(f"the stalls table lists the {len(stalls)} longest of {stall_total} stalls")
    if leak_total > len(leaks):
        notes.append(f"the leaks table lists {len(leaks)} of {leak_total} leaks")
    notes.extend(_lint_notes(data))
    lag = _lag(data, origin)
    kinds = data.kinds()
    if leak_total:  # a connection once, not as its socket and its transport
        kinds["leak"] = leak_total
    return {
        "title": _title(data),
        "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
        "duration_us": _us(max(0, end - origin)),
        "processes": [p.label for p in data.parts],
        "counts": dict(kinds),
        "notes": notes,
        "blind_spots": blind,
        "strings": strings.items,
        "timeline": timeline,
        "flame": _flame(data, strings),
        "lag": lag,
        "lag_window_us": _median_window_us(lag),
        "stalls": stalls,
        "stall_total": stall_total,
        "leaks": leaks,
        "leak_total": leak_total,
        "findings": _findings(data),
        "summary": summary if summary is not None else summary_from_run(data, width=WIDTH),
    }


def _title(data: RunData) -> str:
    if len(data.parts) == 1:
        return f"asynclens report: {data.parts[0].label}"
    return f"asynclens report: {len(data.parts)} processes"


def _script_json(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=_fallback)
    # inside <script> only "</" and "<!--" matter, but escaping every <, >, & is simplest and safe
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_html(data: RunData, summary: str | None = None) -> str:
    """The whole report as one HTML document (``summary``: see :func:`build_payload`)."""
    payload = build_payload(data, summary)
    title = html.escape(payload["title"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{title}</title><style>{CSS}</style></head>\n<body>"
        f"<noscript>This report needs JavaScript to draw its charts.</noscript>"
        f'<script type="application/json" id="asynclens-data">{_script_json(payload)}</script>\n'
        f"<script>{JS}</script></body></html>\n"
    )


class HtmlSink(RenderingSink):
    """Writes the self-contained HTML report when the session ends.

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str], *, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(path, limit=limit)

    def render(self, data: RunData) -> str:
        return render_html(data, self.summary_text)
