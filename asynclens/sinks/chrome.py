"""Chrome Trace Event format: open the file in ui.perfetto.dev or chrome://tracing.

What becomes what (JSON object format, timestamps in microseconds from the
earliest session start):

* each process is a Perfetto process (``process_name`` metadata);
* each task (or thread, for spans outside tasks) is a named track; its spans
  are nested complete (``X``) slices with ids, status, attributes and the
  breakdown in ``args``: along the critical path (``cpu_ms``, ``blocked_ms``,
  ``sched_wait_ms``, ``io_wait_ms``, ``executor_ms``; they sum to the slice), the
  span's own task's figures under ``own`` when that path went through other
  tasks, and ``held_up_by``;
* task steps are slices on a ``<task> · steps`` track under the task;
* flow arrows (``s``/``f``) join a span to its children in other tasks, threads
  and executor jobs, and to linked spans: the "slivers" of one request; a
  ``held up`` arrow goes from the end of the child task's span that held a span
  up to that span (an arrow rather than an arg alone because Perfetto follows
  arrows from either end and draws them on the timeline; the arg stays for a task
  with no span of its own to point at);
* stalls are instant events (culprit line and stack in ``args``; a lag
  episode's biggest parts in ``parts``) plus slices on an ``event loop`` track; GC pauses and executor jobs are slices on their own
  tracks;
* counters: event-loop lag (p50/p99/max, ms), ELU, open handles by kind, I/O
  rates and scheduling delay.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from .. import __version__
from ..report import breakdown as _bd
from ..report.fileformat import _fallback
from ..report.frames import clean_frame, clean_path, shown_frames
from ..report.rundata import DEFAULT_LIMIT, RunData, RunPart
from ..report.tracks import assign_lanes, track_of
from ._rendering import RenderingSink

__all__ = ["ChromeTraceSink", "render_chrome", "write_chrome"]


def _us(ns: int) -> float:
    return round(ns / 1000, 3)


def _hex(value: Any, width: int) -> str | None:
    return format(value, f"0{width}x") if isinstance(value, int) else None


def _ms(ns: Any) -> float | None:
    return round(ns / 1e6, 3) if isinstance(ns, (int, float)) else None


class _Builder:
    def __init__(self, data: RunData) -> None:
        self.data = data
        self.events: list[dict[str, Any]] = []
        self.origin = data.extent()[0]
        self.pids: dict[int, int] = {}
        self.tids: dict[tuple[int, str], int] = {}
        self.flow_id = 0
        self.ranks: dict[tuple[int, str], int] = {}
        self._where: dict[Any, tuple[int, Any]] = {}

    # ------------------------------------------------------------ tracks

    def pid(self, part: RunPart) -> int:
        pid = self.pids.get(part.index)
        if pid is None:
            pid = part.pid or (part.index + 1)
            if pid in self.pids.values():
                pid = 1_000_000 + part.index
            self.pids[part.index] = pid
            self.events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": part.label}})
            self.events.append(
                {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": part.index}}
            )
        return pid

    def tid(self, part: RunPart, name: str, sort_index: int) -> int:
        key = (part.index, name)
        tid = self.tids.get(key)
        if tid is None:
            tid = len(self.tids) + 1
            self.tids[key] = tid
            pid = self.pid(part)
            self.events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
            self.events.append(
                {"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": sort_index}}
            )
        return tid

    def ts(self, part: RunPart, ns: int) -> float:
        return _us(ns + part.shift_ns - self.origin)

    def slice(self, part: RunPart, tid: int, name: str, start: int, end: int, cat: str, args: dict[str, Any]) -> None:
        self.events.append(
            {
                "name": name,
                "cat": cat,
                "ph": "X",
                "ts": self.ts(part, start),
                "dur": _us(max(0, end - start)),
                "pid": self.pid(part),
                "tid": tid,
                "args": args,
            }
        )

    def flow(self, part: RunPart, src_tid: int, src_ns: int, dst_tid: int, dst_ns: int, name: str) -> None:
        self.flow_id += 1
        pid = self.pid(part)
        self.events.append(
            {
                "name": name,
                "cat": "flow",
                "ph": "s",
                "id": self.flow_id,
                "ts": self.ts(part, src_ns),
                "pid": pid,
                "tid": src_tid,
            }
        )
        self.events.append(
            {
                "name": name,
                "cat": "flow",
                "ph": "f",
                "bp": "e",
                "id": self.flow_id,
                "ts": self.ts(part, dst_ns),
                "pid": pid,
                "tid": dst_tid,
            }
        )

    def counter(self, part: RunPart, name: str, at: int, values: Mapping[str, Any]) -> None:
        args = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if args:
            self.events.append(
                {
                    "name": name,
                    "cat": "counter",
                    "ph": "C",
                    "ts": self.ts(part, at),
                    "pid": self.pid(part),
                    "tid": 0,
                    "args": args,
                }
            )

    # ------------------------------------------------------------ records

    def spans(self, part: RunPart) -> None:
        groups: dict[str, list[Any]] = {}
        first_seen: dict[str, int] = {}
        for span in part.spans:
            track = track_of(span)
            groups.setdefault(track, []).append(span)
            if track not in first_seen or span.start_ns < first_seen[track]:
                first_seen[track] = span.start_ns
        where: dict[Any, tuple[int, Any]] = {}
        order = sorted(groups, key=lambda t: first_seen[t])
        for rank, track in enumerate(order):
            self.ranks[(part.index, track)] = rank
            spans = groups[track]
            lanes = assign_lanes(spans)
            for span, lane in zip(spans, lanes):
                label = track if lane == 0 else f"{track} (overlap {lane + 1})"
                tid = self.tid(part, label, 10 + rank * 3 + min(lane, 1))
                where[span.span_id] = (tid, span)
                self.slice(part, tid, str(span.name), span.start_ns, span.end_ns, "span", _span_args(span))
        for span in part.spans:
            tid, _ = where[span.span_id]
            parent = where.get(span.parent_id) if span.parent_id is not None else None
            if parent is not None and parent[0] != tid:
                ptid, pspan = parent
                at = min(max(span.start_ns, pspan.start_ns), pspan.end_ns)
                self.flow(part, ptid, at, tid, span.start_ns, "child")
            for link in getattr(span, "links", ()) or ():
                linked = where.get(link)
                if linked is not None:
                    ltid, lspan = linked
                    at = min(max(span.start_ns, lspan.start_ns), lspan.end_ns)
                    self.flow(part, ltid, at, tid, span.start_ns, "link")
        holders: _bd.HolderIndex | None = None
        for span in part.spans:
            held = _bd.held_up_by(span)
            if not held:
                continue
            if holders is None:
                holders = _bd.HolderIndex(part.spans)
            holder = holders.holder(span, held)
            if holder is not None:
                tid, _ = where[span.span_id]
                htid, _ = where[holder.span_id]
                # from just inside the holder's end (a flow binds to the slice enclosing it)
                src = max(holder.start_ns, holder.end_ns - 1000)
                self.flow(part, htid, src, tid, min(max(holder.end_ns, span.start_ns), span.end_ns), "held up")
        self._where = where

    def steps(self, part: RunPart, task_names: dict[tuple[int, Any], str]) -> None:
        for step in part.of("step"):
            task_id = getattr(step, "task_id", None)
            task = task_names.get((part.index, task_id)) or f"task {_hex(task_id, 1) or '?'}"
            rank = self.ranks.get((part.index, task))
            tid = self.tid(part, f"{task} · steps", 12 + 3 * rank if rank is not None else 4000)
            start = getattr(step, "start_ns", 0) or 0
            ready = getattr(step, "ready_ns", None)
            args = {
                "cpu_ms": _ms(getattr(step, "cpu_ns", None)),
                "ready_delay_ms": _ms(start - ready) if isinstance(ready, int) else None,
                "span_id": _hex(getattr(step, "span_id", None), 16),
            }
            self.slice(part, tid, "step", start, getattr(step, "end_ns", start) or start, "step", _compact(args))

    def stalls(self, part: RunPart, loops: int) -> None:
        for stall in part.of("stall"):
            start = getattr(stall, "start_ns", 0) or 0
            end = getattr(stall, "end_ns", start) or start
            loop = getattr(stall, "loop_id", None)
            track = "event loop" if loops <= 1 else f"event loop {_hex(loop, 1)}"
            tid = self.tid(part, track, 1)
            culprit = _culprit(stall)
            args = _compact(
                {
                    "duration_ms": _ms(end - start),
                    "culprit": culprit,
                    "cause": getattr(stall, "cause", None),
                    "task": getattr(stall, "task", None),
                    "span": getattr(stall, "span_name", None),
                    "trace_id": _hex(getattr(stall, "trace_id", None), 32),
                    "span_id": _hex(getattr(stall, "span_id", None), 16),
                    "cpu_ms": _ms(getattr(stall, "cpu_ns", None)),
                    "episode": True if getattr(stall, "episode", False) else None,
                    "parts": [_bd.part_text(p) for p in getattr(stall, "parts", None) or ()],
                    **_stacks(getattr(stall, "stack", ()) or ()),
                    "async_stack": shown_frames(getattr(stall, "async_stack", ()) or ()),
                    "sampled": getattr(stall, "sampled", None),
                }
            )
            name = f"stall {_ms(end - start)} ms: {culprit}"
            self.slice(part, tid, name, start, end, "stall", args)
            self.events.append(
                {
                    "name": name,
                    "cat": "stall",
                    "ph": "i",
                    "s": "p",
                    "ts": self.ts(part, start),
                    "pid": self.pid(part),
                    "tid": tid,
                    "args": args,
                }
            )

    def gc(self, part: RunPart) -> None:
        for pause in part.of("gc"):
            start = getattr(pause, "start_ns", 0) or 0
            tid = self.tid(part, "GC", 2)
            args = _compact(
                {
                    "generation": getattr(pause, "generation", None),
                    "collected": getattr(pause, "collected", None),
                    "uncollectable": getattr(pause, "uncollectable", None),
                    "task": getattr(pause, "task", None),
                    "span": getattr(pause, "span_name", None),
                }
            )
            self.slice(
                part,
                tid,
                f"gc gen {args.get('generation', '?')}",
                start,
                getattr(pause, "end_ns", start) or start,
                "gc",
                args,
            )

    def executor(self, part: RunPart) -> None:
        where = self._where
        for job in part.of("executor_job"):
            start = getattr(job, "start_ns", None)
            if not isinstance(start, int):
                continue
            end = getattr(job, "end_ns", None) or start
            submit = getattr(job, "submit_ns", None)
            tid = self.tid(part, f"executor thread {getattr(job, 'thread_id', 0) or 0}", 5000)
            args = _compact(
                {
                    "queued_ms": _ms(start - submit) if isinstance(submit, int) else None,
                    "error": getattr(job, "error_type", None),
                    "span_id": _hex(getattr(job, "span_id", None), 16),
                }
            )
            self.slice(part, tid, str(getattr(job, "function", None) or "job"), start, end, "executor", args)
            origin = where.get(getattr(job, "span_id", None))
            if origin is not None:
                otid, ospan = origin
                at = min(max(submit if isinstance(submit, int) else start, ospan.start_ns), ospan.end_ns)
                self.flow(part, otid, at, tid, start, "executor")

    def resources(self, part: RunPart) -> None:
        """Waits on asyncio locks, queues, ... as slices of a "resource waits" track; queue
        depths as counters; backlogs as instant events (the resources probe's records)."""
        tid = 0
        for wait in part.of("resource_wait"):
            tid = tid or self.tid(part, "resource waits", 6000)
            start = getattr(wait, "start_ns", 0) or 0
            kind = getattr(wait, "resource_kind", None) or "resource"
            args = _compact(
                {
                    "operation": getattr(wait, "operation", None),
                    "created_at": getattr(wait, "resource_site", None),
                    "waited_at": getattr(wait, "site", None),
                    "task": getattr(wait, "task", None),
                    "span": getattr(wait, "span_name", None),
                    "span_id": _hex(getattr(wait, "span_id", None), 16),
                    "cancelled": True if getattr(wait, "cancelled", False) else None,
                }
            )
            self.slice(part, tid, f"wait on {kind}", start, getattr(wait, "end_ns", start) or start, "resource", args)
        for stats in part.of("resource"):
            times, depths = getattr(stats, "depth_times", ()) or (), getattr(stats, "depths", ()) or ()
            label = f"queue depth {getattr(stats, 'site', None) or _hex(getattr(stats, 'resource_id', 0), 1)}"
            for at, depth in zip(times, depths):
                self.counter(part, label, at, {"items": depth})
        for backlog in part.of("queue_backlog"):
            tid = tid or self.tid(part, "resource waits", 6000)
            kind = getattr(backlog, "resource_kind", None) or "Queue"
            self.events.append(
                {
                    "name": f"backlog: {kind} {getattr(backlog, 'start_depth', '?')} -> {getattr(backlog, 'end_depth', '?')} items",
                    "cat": "resource",
                    "ph": "i",
                    "s": "p",
                    "ts": self.ts(part, getattr(backlog, "end_ns", 0) or 0),
                    "pid": self.pid(part),
                    "tid": tid,
                    "args": _compact({"created_at": getattr(backlog, "site", None), "samples": getattr(backlog, "samples", None)}),
                }
            )

    def counters(self, part: RunPart, loops: int) -> None:
        for lag in part.of("lag"):
            suffix = "" if loops <= 1 else f" {_hex(getattr(lag, 'loop_id', None), 1)}"
            at = getattr(lag, "end_ns", None) or getattr(lag, "start_ns", 0) or 0
            self.counter(
                part,
                "event loop lag (ms)" + suffix,
                at,
                {
                    "p50": _ms(getattr(lag, "p50_ns", None)),
                    "p99": _ms(getattr(lag, "p99_ns", None)),
                    "max": _ms(getattr(lag, "max_ns", None)),
                },
            )
            elu = getattr(lag, "elu", None)
            if isinstance(elu, (int, float)):
                self.counter(part, "event loop utilisation" + suffix, at, {"elu": round(float(elu), 4)})
        for rates in part.of("io_rates"):
            start = getattr(rates, "start_ns", 0) or 0
            end = getattr(rates, "end_ns", start) or start
            seconds = max(end - start, 1) / 1e9
            self.counter(
                part,
                "I/O per second",
                end,
                {
                    "events": round((getattr(rates, "events", 0) or 0) / seconds, 1),
                    "kB sent": round((getattr(rates, "bytes_sent", 0) or 0) / 1000 / seconds, 1),
                    "kB received": round((getattr(rates, "bytes_received", 0) or 0) / 1000 / seconds, 1),
                },
            )
        for snap in part.of("sched"):
            ready = getattr(snap, "ready_delay", None) or {}
            at = getattr(snap, "end_ns", None) or getattr(snap, "start_ns", 0) or 0
            if hasattr(ready, "get"):
                self.counter(
                    part, "ready-to-run delay (ms)", at, {"p99": _ms(ready.get("p99")), "max": _ms(ready.get("max"))}
                )
        self.open_handles(part)

    def open_handles(self, part: RunPart) -> None:
        handles = _handles(part)
        if not handles:
            return
        changes: list[tuple[int, int, str]] = []
        for h in handles:
            kind = str(getattr(h, "handle_kind", None) or "handle")
            open_ns = getattr(h, "open_ns", None)
            if isinstance(open_ns, int):
                changes.append((open_ns, 1, kind))
                close_ns = getattr(h, "close_ns", None)
                if isinstance(close_ns, int):
                    changes.append((close_ns, -1, kind))
        changes.sort(key=lambda c: (c[0], c[1]))
        counts = {kind: 0 for _, _, kind in changes}
        step = max(1, len(changes) // 5000)  # at most ~5000 counter samples
        for i, (at, delta, kind) in enumerate(changes):
            counts[kind] += delta
            if i % step == 0 or i == len(changes) - 1:
                self.counter(part, "open handles", at, counts)


def _handles(part: RunPart) -> list[Any]:
    """Handle records of ``part``, one per handle (a later record of the same handle wins)."""
    out: dict[Any, Any] = {}
    for kind in ("handle", "leak"):
        for h in part.of(kind):
            key = getattr(h, "handle_id", None)
            if key is None:
                key = id(h)
            previous = out.get(key)
            if previous is None or getattr(previous, "close_ns", None) is None:
                out[key] = h
    return list(out.values())


def _culprit(stall: Any) -> str:
    file = getattr(stall, "file", None)
    line = getattr(stall, "line", None)
    function = getattr(stall, "function", None)
    if file:
        file = clean_path(str(file))
        return f"{file}:{line} in {function}" if function else f"{file}:{line}"
    stack = getattr(stall, "stack", None) or ()
    return clean_frame(stack[-1]) if stack else "unknown (no stack sampled)"


def _stacks(stack: Any) -> dict[str, list[str]]:
    """``stack``: the program's frames; ``full_stack``: with the libraries' (when that shows more)."""
    program = shown_frames(stack)
    full = shown_frames(stack, full=True)
    return {"stack": program, "full_stack": full} if len(full) > len(program) else {"stack": program}


def _compact(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None and v != []}


def _span_args(span: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "trace_id": _hex(span.trace_id, 32),
        "span_id": _hex(span.span_id, 16),
    }
    if span.parent_id is not None:
        args["parent_id"] = _hex(span.parent_id, 16)
    if span.status != "ok":
        args["status"] = span.status
        if span.error_type:
            args["error"] = f"{span.error_type}: {span.error_message}" if span.error_message else span.error_type
    critical = _bd.critical(span)
    if critical is not None:
        for name, value in zip(_bd.FIELDS, critical):
            args[name[:-3] + "_ms"] = _ms(value)
    own = _bd.own(span)
    if own is not None:
        args["own"] = {name[:-3] + "_ms": _ms(value) for name, value in zip(_bd.FIELDS, own)}
    held = _bd.held_up_by(span)
    if held:
        args["held_up_by"] = held
    longest = getattr(span, "max_sched_wait_ns", None)
    if longest is not None:
        args["max_sched_wait_ms"] = _ms(longest)
    steps = getattr(span, "steps", None)
    if steps is not None:
        args["steps"] = steps
    attrs = getattr(span, "attrs", None)
    if attrs:
        args["attrs"] = dict(attrs)
    events = getattr(span, "events", None)
    if events:
        args["events"] = [getattr(e, "name", str(e)) for e in events[:20]]
    return args


def _lint_events(b: _Builder, part: RunPart) -> None:
    """The lints' findings (docs/lints.md) as instant events on a "lints" track."""
    records = part.of("never_resumable") + part.of("busy_yield")
    if not records:
        return
    tid = b.tid(part, "lints", 2)
    for r in records:
        if r.kind == "never_resumable":
            name = f"never resumable: task {r.name!r}"
            args = {
                "task": r.name,
                "coro": r.coro,
                "suspended_at": r.suspended_at,
                "waiting_on": r.waiting_on,
                "created_at": r.creation_site,
                "span": r.span_name,
            }
        else:
            name = f"busy-yield: task {r.name!r}"
            args = {
                "task": r.name,
                "line": r.line,
                "steps": r.steps,
                "self_wake_share": round(r.self_wakes / r.wakes, 3) if r.wakes else None,
                "run_ms": _ms(r.run_ns),
                "cpu_ms": _ms(r.cpu_ns),
                "span": r.span_name,
            }
        b.events.append(
            {
                "name": name,
                "cat": r.kind,
                "ph": "i",
                "s": "t",
                "ts": b.ts(part, r.found_ns),
                "pid": b.pid(part),
                "tid": tid,
                "args": _compact(args),
            }
        )


def render_chrome(data: RunData) -> dict[str, Any]:
    """The Chrome trace (JSON object format) of ``data``."""
    b = _Builder(data)
    task_names = data.task_names()
    for part in data.parts:
        b.pid(part)
        loops = len({getattr(r, "loop_id", None) for r in part.of("lag") + part.of("stall")})
        b.stalls(part, loops)
        b.spans(part)
        b.steps(part, task_names)
        b.gc(part)
        b.executor(part)
        b.counters(part, loops)
        _lint_events(b, part)
        b.resources(part)
    return {
        "traceEvents": b.events,
        "displayTimeUnit": "ms",
        "otherData": {"exporter": f"asynclens {__version__}", "problems": data.problems()},
    }


def _encode(trace: dict[str, Any]) -> Iterable[str]:
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_fallback)
    yield '{"traceEvents":[\n'
    events = trace["traceEvents"]
    for i, event in enumerate(events):
        try:
            text = encoder.encode(event)
        except (TypeError, ValueError):
            text = json.dumps(event, default=_fallback, skipkeys=True, check_circular=False)
        yield text + (",\n" if i < len(events) - 1 else "\n")
    rest = {k: v for k, v in trace.items() if k != "traceEvents"}
    yield "]," + encoder.encode(rest)[1:] + "\n"


def write_chrome(data: RunData, path: str) -> None:
    """Render ``data`` and write it to ``path`` (one event per line)."""
    from ._rendering import write_text_atomically

    write_text_atomically(path, "".join(_encode(render_chrome(data))))


class ChromeTraceSink(RenderingSink):
    """Writes a Chrome/Perfetto trace (``.json``) when the session ends.

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str], *, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__(path, limit=limit)

    def render(self, data: RunData) -> str:
        return "".join(_encode(render_chrome(data)))
