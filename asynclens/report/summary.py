"""Aggregates over a run's records and the text report (``Session.summary()``, the CLI).

:class:`SpanAggregates` sees every batch the session flushes (or every record
of a file being converted) and keeps fixed-size aggregates: per-name span
totals, the slowest spans, the longest stalls, merged lag windows, task,
GC and executor totals, and the first leaks. Records other than spans are read
by ``kind`` with ``getattr`` defaults, so new record kinds need no change here
until they deserve a section. :func:`render_summary` turns the aggregates into
sections readable at 100 columns; ANSI colour only when asked (a TTY).
"""

from __future__ import annotations

import heapq
import re
import shutil
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._durations import format_ns
from ..records import Record, Span
from . import breakdown as _bd
from .frames import clean_frame, clean_path
from .leaks import endpoints, group_leaks
from .rundata import RunData

__all__ = [
    "NameStats",
    "SpanAggregates",
    "format_ns",
    "recorded_blind_spots",
    "render_summary",
    "summary_from_run",
    "summary_width",
]

#: The width of the summary when it is not shown on a terminal (a file, the HTML report).
WIDTH = 100
#: Span ends remembered for the "outlived their request" line (the spans a late task outlived
#: ended shortly before it; older ones are forgotten).
_RECENT_SPANS = 4096


def _opt_ns(ns: Any) -> str:
    return format_ns(ns) if isinstance(ns, (int, float)) else "-"


@dataclass
class NameStats:
    count: int = 0
    errors: int = 0
    cancelled: int = 0
    total_ns: int = 0
    max_ns: int = 0


@dataclass
class _Totals:
    count: int = 0
    total_ns: int = 0
    max_ns: int = 0

    def add(self, ns: Any) -> None:
        self.count += 1
        if isinstance(ns, int) and ns > 0:
            self.total_ns += ns
            self.max_ns = max(self.max_ns, ns)


@dataclass
class _Lag:
    windows: int = 0
    samples: int = 0
    weighted_mean: float = 0.0
    min_ns: int | None = None
    max_ns: int = 0
    worst_p99_ns: int = 0
    worst_p999_ns: int = 0
    elu_time: float = 0.0
    elu_ns: int = 0
    elu_max: float = 0.0
    loops: set[int] = field(default_factory=set)


class SpanAggregates:
    """Fixed-memory view of a run: span totals and slowest spans, plus stalls,
    lag, tasks, GC, executor jobs and leaks when those records are present."""

    def __init__(self, keep_slowest: int = 10, max_names: int = 1000) -> None:
        self.keep_slowest = keep_slowest
        self.max_names = max_names
        self.by_name: dict[str, NameStats] = {}
        self.other = NameStats()  # names beyond max_names are folded here
        self._slowest: list[tuple[int, int, Span]] = []
        self._seq = 0
        self.spans = 0
        self.errors = 0
        self.cancelled = 0
        self.first_errors: list[Span] = []
        # other record kinds
        self.stalls = _Totals()
        self.stall_causes: Counter[str] = Counter()
        self._stalls: list[tuple[int, int, Any]] = []
        self.lag = _Lag()
        self.tasks = 0
        self.task_states: Counter[str] = Counter()
        self.task_steps = 0
        self.task_max_wait_ns = 0
        self.tasks_outlived = 0
        self.tasks_inherited = 0
        self.steps = 0
        self.gc = _Totals()
        self.gc_by_generation: Counter[int] = Counter()
        self.jobs = _Totals()
        self.job_queue = _Totals()
        self.job_errors = 0
        self.ready_p99_max: int | None = None
        self.timer_p99_max: int | None = None
        self.leaks = 0
        self.leaks_by_kind: Counter[str] = Counter()
        self.first_leaks: list[Any] = []
        self.leak_pairs = 0  # socket + transport of one connection, counted once
        self._unpaired: Counter[tuple[str, str]] = Counter()
        self.handles_closed = 0
        # per name, from span records that carry the scheduler's breakdown: [count, wall,
        # cpu, blocked, sched, io, executor (critical path), the same five of the spans'
        # own tasks, spans whose critical path went through other tasks]
        self.breakdown: dict[str, list[int]] = {}
        self._span_ends: OrderedDict[int, int] = OrderedDict()
        self.outlived: list[list[Any]] = []  # [task, span name, by ns or None, span id, done ns]
        self.io: list[int] = [0, 0, 0]  # bytes sent, received, ops (io_rates records)
        self.io_events: int | None = None
        self.io_by_span: dict[str, list[int]] = {}
        self._busiest: list[tuple[int, int, Any]] = []
        self.other_kinds: Counter[str] = Counter()

    def add_batch(self, records: Iterable[Record]) -> None:
        for record in records:
            if type(record) is Span:
                self.add(record)
            else:
                self.add_other(record)

    def add(self, span: Span) -> None:
        duration = span.end_ns - span.start_ns
        stats = self.by_name.get(span.name)
        if stats is None:
            stats = (
                self.other if len(self.by_name) >= self.max_names else self.by_name.setdefault(span.name, NameStats())
            )
        stats.count += 1
        stats.total_ns += duration
        stats.max_ns = max(stats.max_ns, duration)
        self.spans += 1
        if span.status == "error":
            stats.errors += 1
            self.errors += 1
            if len(self.first_errors) < self.keep_slowest:
                self.first_errors.append(span)
        elif span.status == "cancelled":
            stats.cancelled += 1
            self.cancelled += 1
        self._seq += 1
        entry = (duration, -self._seq, span)
        if len(self._slowest) < self.keep_slowest:
            heapq.heappush(self._slowest, entry)
        elif entry > self._slowest[0]:
            heapq.heapreplace(self._slowest, entry)
        critical = _bd.critical(span)
        if critical is not None:
            parts = self.breakdown.get(span.name)
            if parts is None:
                if len(self.breakdown) >= self.max_names:
                    parts = self.breakdown.setdefault("(other names)", [0] * 13)
                else:
                    parts = self.breakdown[span.name] = [0] * 13
            own = _bd.own(span)
            parts[0] += 1
            parts[1] += duration
            for i, value in enumerate(critical):
                parts[2 + i] += value
            for i, value in enumerate(own or critical):
                parts[7 + i] += value
            parts[12] += own is not None
        ends = self._span_ends
        ends[span.span_id] = span.end_ns
        if len(ends) > _RECENT_SPANS:
            ends.popitem(last=False)

    def add_live(self, spans: Iterable[Any], freeze: Callable[[Any], Span | None]) -> None:
        """Fold finished live spans (objects with ``name``, ``start_ns``, ``end_ns`` and
        ``error``: ``None`` or ``(status, type, message)``) exactly as :meth:`add` folds
        their records, freezing (``freeze(live)``, ``None`` when that failed) only the
        few this keeps: the slowest and the first errors."""
        slowest = self._slowest
        keep = self.keep_slowest
        durations: dict[str, list[int]] = {}  # by name, in order of first appearance
        ended: list[Any] = []  # failed or cancelled, in order
        frozen: dict[int, Span | None] = {}  # id(live) -> its record, for spans kept twice
        seq = self._seq
        count = 0
        # a new span enters the heap while it is not full, or when strictly slower than
        # its minimum ((duration, -seq) of a newer span is never above an older one's)
        floor = float("inf") if keep <= 0 else slowest[0][0] if len(slowest) >= keep else float("-inf")
        for live in spans:
            duration = live.end_ns - live.start_ns
            name = live.name
            group = durations.get(name)
            if group is None:
                group = durations[name] = []
            group.append(duration)
            count += 1
            seq += 1
            if live.error is not None:
                ended.append(live)
            if duration > floor:
                record = frozen[id(live)] = freeze(live)
                if record is not None:
                    if len(slowest) < keep:
                        heapq.heappush(slowest, (duration, -seq, record))
                    else:
                        heapq.heapreplace(slowest, (duration, -seq, record))
                    if len(slowest) >= keep:
                        floor = slowest[0][0]
        self._seq = seq
        self.spans += count
        by_name = self.by_name
        for name, group in durations.items():
            stats = by_name.get(name)
            if stats is None:
                stats = self.other if len(by_name) >= self.max_names else by_name.setdefault(name, NameStats())
            stats.count += len(group)
            stats.total_ns += sum(group)
            longest = max(group)
            if longest > stats.max_ns:
                stats.max_ns = longest
        first_errors = self.first_errors
        for live in ended:
            stats = by_name.get(live.name) or self.other
            status = live.error[0]
            if status == "error":
                stats.errors += 1
                self.errors += 1
                if len(first_errors) < keep:
                    key = id(live)
                    record = frozen[key] if key in frozen else freeze(live)
                    if record is not None:
                        first_errors.append(record)
            elif status == "cancelled":
                stats.cancelled += 1
                self.cancelled += 1

    def add_other(self, record: Any) -> None:
        """Fold a non-span record (dispatch on ``record.kind``)."""
        kind = getattr(record, "kind", None)
        if kind == "span":
            self.add(record)
        elif kind == "stall":
            duration = (getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0)
            self.stalls.add(duration)
            self.stall_causes[str(getattr(record, "cause", None) or "unknown")] += 1
            self._seq += 1
            entry = (duration, -self._seq, record)
            if len(self._stalls) < self.keep_slowest:
                heapq.heappush(self._stalls, entry)
            elif entry > self._stalls[0]:
                heapq.heapreplace(self._stalls, entry)
        elif kind == "lag":
            self._add_lag(record)
        elif kind == "task":
            self.tasks += 1
            self.task_states[str(getattr(record, "state", None) or "unknown")] += 1
            self.task_steps += getattr(record, "steps", 0) or 0
            self.task_max_wait_ns = max(self.task_max_wait_ns, getattr(record, "max_sched_wait_ns", 0) or 0)
            if getattr(record, "outlived_span", False):
                self.tasks_outlived += 1
                if len(self.outlived) < 3:
                    done = getattr(record, "done_ns", None)
                    span_id = getattr(record, "span_id", None)
                    ended = self._span_ends.get(span_id or 0)
                    by = done - ended if isinstance(done, int) and ended is not None else None
                    name = str(getattr(record, "name", "?"))
                    self.outlived.append([name, str(getattr(record, "span_name", None) or "?"), by, span_id, done])
            self.tasks_inherited += bool(getattr(record, "inherited_context", False))
        elif kind == "step":
            self.steps += 1
        elif kind == "gc":
            self.gc.add((getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0))
            generation = getattr(record, "generation", None)
            if isinstance(generation, int):
                self.gc_by_generation[generation] += 1
        elif kind == "executor_job":
            start = getattr(record, "start_ns", None)
            submit = getattr(record, "submit_ns", None)
            end = getattr(record, "end_ns", None)
            self.jobs.add(end - start if isinstance(end, int) and isinstance(start, int) else None)
            self.job_queue.add(start - submit if isinstance(start, int) and isinstance(submit, int) else None)
            self.job_errors += bool(getattr(record, "error_type", None))
        elif kind == "sched":
            for attr, name in (("ready_delay", "ready_p99_max"), ("timer_lateness", "timer_p99_max")):
                summary: Any = getattr(record, attr, None)
                p99 = summary.get("p99") if hasattr(summary, "get") else None
                if isinstance(p99, (int, float)):
                    current = getattr(self, name)
                    setattr(self, name, int(p99) if current is None else max(current, int(p99)))
        elif kind == "leak":
            self.leaks += 1
            handle_kind = str(getattr(record, "handle_kind", None) or "handle")
            self.leaks_by_kind[handle_kind] += 1
            if len(self.first_leaks) < 2 * self.keep_slowest:  # pairs share a line
                self.first_leaks.append(record)
            pair = endpoints(getattr(record, "description", None))
            if pair is not None and handle_kind in ("socket", "transport"):
                other = (("transport" if handle_kind == "socket" else "socket"), pair)
                if self._unpaired[other]:
                    self._unpaired[other] -= 1
                    self.leak_pairs += 1
                elif len(self._unpaired) < 100_000:
                    self._unpaired[(handle_kind, pair)] += 1
            self._add_io(record)
        elif kind == "handle":
            self.handles_closed += getattr(record, "close_ns", None) is not None
            self._add_io(record)
        elif kind == "io_rates":
            self.io[0] += getattr(record, "bytes_sent", 0) or 0
            self.io[1] += getattr(record, "bytes_received", 0) or 0
            self.io[2] += getattr(record, "ops", 0) or 0
            events = getattr(record, "events", None)
            if isinstance(events, int):
                self.io_events = (self.io_events or 0) + events
        elif isinstance(kind, str) and kind not in ("session", "session_end", "span_event"):
            self.other_kinds[kind] += 1

    def _add_io(self, record: Any) -> None:
        sent = getattr(record, "bytes_sent", None) or 0
        received = getattr(record, "bytes_received", None) or 0
        ops = getattr(record, "ops", None) or 0
        if not (sent or received or ops):
            return
        name = str(getattr(record, "span_name", None) or "(no span)")
        totals = self.io_by_span.get(name)
        if totals is None:
            totals = self.io_by_span.setdefault(name if len(self.io_by_span) < self.max_names else "(other)", [0, 0, 0])
        totals[0] += sent
        totals[1] += received
        totals[2] += ops
        self._seq += 1
        entry = (sent + received, -self._seq, record)
        if len(self._busiest) < 5:
            heapq.heappush(self._busiest, entry)
        elif entry > self._busiest[0]:
            heapq.heapreplace(self._busiest, entry)

    @property
    def left_open(self) -> int:
        """Things left open, a connection's socket and transport counted once."""
        return self.leaks - self.leak_pairs

    def _add_lag(self, record: Any) -> None:
        lag = self.lag
        count = getattr(record, "count", 0) or 0
        lag.windows += 1
        loop = getattr(record, "loop_id", None)
        if loop is not None:
            lag.loops.add(loop)
        if count:
            mean = getattr(record, "mean_ns", 0) or 0
            lag.weighted_mean = (lag.weighted_mean * lag.samples + mean * count) / (lag.samples + count)
            lag.samples += count
            low = getattr(record, "min_ns", None)
            if isinstance(low, int):
                lag.min_ns = low if lag.min_ns is None else min(lag.min_ns, low)
            lag.max_ns = max(lag.max_ns, getattr(record, "max_ns", 0) or 0)
            lag.worst_p99_ns = max(lag.worst_p99_ns, getattr(record, "p99_ns", 0) or 0)
            lag.worst_p999_ns = max(lag.worst_p999_ns, getattr(record, "p999_ns", 0) or 0)
        elu = getattr(record, "elu", None)
        if isinstance(elu, (int, float)):
            window = max(0, (getattr(record, "end_ns", 0) or 0) - (getattr(record, "start_ns", 0) or 0))
            lag.elu_time += float(elu) * window
            lag.elu_ns += window
            lag.elu_max = max(lag.elu_max, float(elu))

    def slowest(self) -> list[Span]:
        """The slowest spans, slowest first."""
        return [span for _, _, span in sorted(self._slowest, reverse=True, key=lambda e: e[:2])]

    def longest_stalls(self) -> list[Any]:
        """The longest stalls, longest first."""
        return [stall for _, _, stall in sorted(self._stalls, reverse=True, key=lambda e: e[:2])]


# --------------------------------------------------------------------- render


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def head(self, text: str) -> str:
        return self._wrap("1", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)

    def warn(self, text: str) -> str:
        return self._wrap("33", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def _clip(text: str, width: int) -> str:
    text = _one_line(text)
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def summary_width() -> int:
    """The terminal's width when stderr (where ``run`` prints) is one, else :data:`WIDTH`."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return max(40, shutil.get_terminal_size((WIDTH, 24)).columns)
    except (OSError, ValueError):
        pass
    return WIDTH


def _wrap(line: str, width: int) -> list[str]:
    """``line`` broken at spaces into lines of at most ``width`` visible characters (only
    a word wider than a whole line is cut), after a clause's ``;`` or ``,`` when one ends in
    the line's second half; continuations are indented past the line's own indent."""
    if len(_ANSI.sub("", line)) <= width:
        return [line]
    indent = len(line) - len(line.lstrip(" "))
    hang = " " * min(indent + 4, width // 2)
    out: list[str] = []
    current = line[:indent]
    visible = indent
    pending = ""  # spaces between the current text and the next word
    clause = 0  # where in ``current`` the last clause ended (after its ";" or ","), 0: none
    for token in re.split(r"( +)", line[indent:]):
        if not token:
            continue
        if token.startswith(" "):
            pending = token
            continue
        size = len(_ANSI.sub("", token))
        room = width - len(hang)
        if size > room and size == len(token) and room > 0:  # one word wider than a line: cut it
            for at in range(0, size - room, room):
                if current.strip():
                    out.append(current)
                current, visible, pending, clause = hang + token[at : at + room], width, "", 0
            token = token[(size - 1) // room * room :]
            size = len(token)
        if visible + len(pending) + size > width and current.strip():
            tail = current[clause:].lstrip(" ") if clause else ""
            if tail and len(_ANSI.sub("", current[:clause])) >= width // 2 and len(hang) + len(tail) < room:
                out.append(current[:clause])
                current = hang + tail + pending + token
            else:
                out.append(current)
                current = hang + token
            visible, clause = len(_ANSI.sub("", current)), 0
        else:
            current += pending + token
            visible += len(pending) + size
        if _ANSI.sub("", token).endswith((";", ",")):
            clause = len(current)
        pending = ""
    out.append(current)
    return out


def _span_line(span: Span, style: _Style) -> str:
    def cell(value: Any) -> str:
        return f"{_opt_ns(value):>9}"

    where = f" [{span.task}]" if span.task else ""
    status = ""
    if span.status == "error":
        status = f" ✗ {_clip(str(span.error_type), 24)}"
    elif span.status == "cancelled":
        status = f" ({_clip(str(span.error_type or 'cancelled'), 24)})"
    head = (
        f"  {format_ns(span.duration_ns):>9} {cell(span.cpu_ns)} {cell(span.blocked_ns)} {cell(span.sched_wait_ns)}"
        f" {cell(span.io_wait_ns)} {cell(span.executor_ns)}  "
    )
    name = _one_line(f"{span.name}{where}")
    line = head + name + (style.bad(status) if span.status == "error" else style.warn(status))
    notes = []
    own = _bd.own(span)
    if own is not None:
        notes.append(f"own task: {_bd.text(own)}")
    held = _bd.held_up_by(span)
    if held:
        notes.append(f"held up by {_one_line(held)}")
    if notes:
        line += "\n" + style.dim(" " * 12 + "↳ " + "; ".join(notes))
    return line


def _culprit(stall: Any) -> str:
    file = getattr(stall, "file", None)
    if file:
        function = getattr(stall, "function", None)
        line = getattr(stall, "line", None)
        return f"{clean_path(str(file))}:{line}" + (f" in {function}" if function else "")
    stack = getattr(stall, "stack", None) or ()
    return clean_frame(stack[-1]) if stack else "(no stack sampled)"


def render_summary(
    aggregates: SpanAggregates,
    stats: Any,
    wall_ns: int,
    sections: Mapping[str, Sequence[str]],
    *,
    color: bool = False,
    blind_spots: Sequence[str] | None = None,
    width: int | None = None,
) -> str:
    """The text report: what was not measured, headline, slowest spans with their
    breakdown, spans by name, stalls, lag and ELU, scheduling/GC/executor, leaks,
    probe sections, problems.

    ``blind_spots`` (``"Not measured: ..."`` lines; by default ``stats.blind_spots``)
    come first, before anything that could read as "all is well".

    ``sections`` are extra lines by their source (a probe's name). The live ``lag`` and
    ``scheduler`` probes know more than their records (session-wide histograms), so
    their lines stand in for the record-derived lag figures and complete the
    scheduling section; the live ``handles`` lines stand in for the record-derived I/O
    lines; the other probes' lines follow the record sections. Lines are wrapped at
    spaces to ``width`` (default: :func:`summary_width`).
    """
    by_probe = dict(sections)
    live_lag = by_probe.pop("lag", None)
    live_sched = by_probe.pop("scheduler", None)
    a = aggregates
    st = _Style(color)
    if blind_spots is None:
        blind_spots = getattr(stats, "blind_spots", None) or ()
    lines = [st.warn(line) for line in blind_spots]
    lines.append(
        st.head(f"asynclens: {a.spans} spans in {format_ns(wall_ns)}")
        + f" ({a.errors} failed, {a.cancelled} cancelled)"
    )
    slowest = a.slowest()
    if slowest:
        lines.append("")
        lines.append(
            st.head("Slowest spans")
            + st.dim("  (cpu: on-CPU, blocked: in a call, sched: ready but waiting for the loop)")
        )
        lines.append(f"  {'wall':>9} {'cpu':>9} {'blocked':>9} {'sched':>9} {'io wait':>9} {'executor':>9}  name [task]")
        lines.extend(_span_line(s, st) for s in slowest)
        lines.append("")
        lines.append(st.head("Spans by name"))
        lines.append(f"  {'count':>7}  {'total':>9}  {'mean':>9}  {'max':>9}  {'errors':>6}  name")
        ranked = sorted(a.by_name.items(), key=lambda kv: kv[1].total_ns, reverse=True)
        if a.other.count:
            ranked.append(("(other names)", a.other))
        for name, s in ranked[:20]:
            errors = f"{s.errors:>6}"
            lines.append(
                f"  {s.count:>7}  {format_ns(s.total_ns):>9}  {format_ns(s.total_ns / s.count):>9}"
                f"  {format_ns(s.max_ns):>9}  {st.bad(errors) if s.errors else errors}  {_one_line(name)}"
            )
        if len(ranked) > 20:
            lines.append(st.dim(f"  … and {len(ranked) - 20} more names"))
    if a.first_errors:
        lines.append("")
        more = f" (the first {len(a.first_errors)})" if a.errors > len(a.first_errors) else ""
        lines.append(st.bad(st.head(f"Failed spans: {a.errors}")) + more)
        for span in a.first_errors:
            where = f" [{span.task}]" if span.task else ""
            lines.append("  " + _one_line(f"{span.name}{where}: {span.error_type}: {span.error_message}"))
    if live_lag:
        lines.append("")
        head, *details = live_lag
        lines.append(st.bad(st.head(head)) if a.stalls.count else st.head(head))
        lines.extend(details)
    if a.stalls.count:
        causes = ", ".join(f"{n} {c}" for c, n in a.stall_causes.most_common())
        totals = f"({causes}), blocked {format_ns(a.stalls.total_ns)} in total, longest {format_ns(a.stalls.max_ns)}"
        if live_lag:
            lines.append(f"  stalls {totals}")
        else:
            lines.append("")
            lines.append(st.bad(st.head(f"Event loop stalls: {a.stalls.count}")) + f" {totals}")
        for stall in a.longest_stalls():
            duration = (getattr(stall, "end_ns", 0) or 0) - (getattr(stall, "start_ns", 0) or 0)
            who = getattr(stall, "span_name", None) or getattr(stall, "task", None) or "-"
            cause = str(getattr(stall, "cause", None) or "?")
            head = f"  {format_ns(duration):>9}  {cause:<8} "
            lines.append(head + _one_line(f"{_culprit(stall)}  ← {who}"))
            episode = _bd.parts_text(stall)
            if episode:
                lines.append(" " * len(head) + _one_line(episode))
    if a.lag.windows and not live_lag:
        lag = a.lag
        lines.append("")
        loops = f" over {len(lag.loops)} loops" if len(lag.loops) > 1 else ""
        lines.append(st.head("Event loop lag") + f" ({lag.samples} samples in {lag.windows} windows{loops})")
        lines.append(
            f"  min {_opt_ns(lag.min_ns)}  mean {format_ns(lag.weighted_mean)}  max {format_ns(lag.max_ns)}"
            f"  worst window p99 {format_ns(lag.worst_p99_ns)}  p99.9 {format_ns(lag.worst_p999_ns)}"
        )
        if lag.elu_ns:
            lines.append(
                f"  event loop utilisation: mean {lag.elu_time / lag.elu_ns:.0%}, busiest window {lag.elu_max:.0%}"
            )
    sched_lines = []
    if a.tasks:
        states = ", ".join(f"{n} {s}" for s, n in a.task_states.most_common())
        sched_lines.append(
            f"  tasks: {a.tasks} ({states}), {a.task_steps} steps, longest ready-to-run wait {format_ns(a.task_max_wait_ns)}"
        )
        if a.tasks_outlived or a.tasks_inherited:
            sched_lines.append(
                st.warn(
                    f"  {a.tasks_outlived} tasks outlived the span that created them;"
                    f" {a.tasks_inherited} long-lived tasks inherited a request's context"
                )
            )
    if not live_sched and (a.ready_p99_max is not None or a.timer_p99_max is not None):
        sched_lines.append(
            f"  ready-to-run delay p99 (worst window) {_opt_ns(a.ready_p99_max)}; timer lateness p99 {_opt_ns(a.timer_p99_max)}"
        )
    if a.gc.count:
        gens = ", ".join(f"gen{g}: {n}" for g, n in sorted(a.gc_by_generation.items()))
        sched_lines.append(
            f"  GC pauses: {a.gc.count} ({gens}), {format_ns(a.gc.total_ns)} in total, longest {format_ns(a.gc.max_ns)}"
        )
    if a.jobs.count:
        failed = f", {a.job_errors} failed" if a.job_errors else ""
        sched_lines.append(
            f"  executor jobs: {a.jobs.count}{failed}; queued {format_ns(a.job_queue.total_ns)} (max"
            f" {format_ns(a.job_queue.max_ns)}), ran {format_ns(a.jobs.total_ns)} (max {format_ns(a.jobs.max_ns)})"
        )
    if not live_sched:
        sched_lines.extend(_breakdown_lines(a))
        if a.outlived:
            sample = ", ".join(
                f"{t!r} outlived {n!r}" + (f" by {format_ns(by)}" if by is not None else "") for t, n, by, *_ in a.outlived
            )
            sched_lines.append(f"  outlived their request: {sample}")
    sched_lines.extend(live_sched or ())
    if sched_lines:
        lines.append("")
        lines.append(st.head("Scheduling, GC, executor"))
        lines.extend(sched_lines)
    if a.leaks:
        lines.append("")
        kinds: Counter[str] = Counter({"connection": a.leak_pairs} if a.leak_pairs else {})
        kinds.update(a.leaks_by_kind)
        kinds["socket"] -= a.leak_pairs
        kinds["transport"] -= a.leak_pairs
        listed = ", ".join(f"{n} {k}" for k, n in kinds.most_common() if n > 0)
        lines.append(st.bad(st.head(f"Left open: {a.left_open}")) + f" ({listed})")
        groups = group_leaks(a.first_leaks)[: a.keep_slowest]
        for group in groups:
            leak = group.leak
            desc = group.description
            if getattr(leak, "closed_by", None) == "gc":
                desc = f"{desc} (closed by GC, never by the program)"
            site = getattr(leak, "site", None)
            site = clean_frame(site) if site else "unknown site"
            who = getattr(leak, "span_name", None)
            head = f"  {group.kind:<10} "
            lines.append(head + (_one_line(desc) or "-"))
            lines.append(" " * len(head) + _one_line(f"opened at {site}" + (f" [span {who}]" if who else "")))
        shown = sum(len(g.members) for g in groups)
        if a.leaks > shown:
            lines.append(st.dim(f"  … and {a.leaks - shown} more handles"))
    if "handles" not in by_probe:
        io_lines = _io_lines(a, wall_ns)
        if io_lines:
            lines.append("")
            lines.extend(io_lines)
    for probe_lines in by_probe.values():
        if probe_lines:
            lines.append("")
            lines.extend(probe_lines)
    if stats is not None and (stats.records_dropped or stats.sinks_disabled or stats.internal_errors):
        lines.append("")
        lines.append(
            st.warn(
                f"Recording problems: {stats.records_dropped} records dropped (buffer limit {stats.buffer_limit}),"
                f" {stats.sinks_disabled} sinks disabled, {stats.internal_errors} internal errors"
            )
        )
    limit = summary_width() if width is None else width
    return "\n".join(part for line in lines for text in line.split("\n") for part in _wrap(text, limit))


def _breakdown_lines(a: SpanAggregates) -> list[str]:
    """Where span time went, by name (from span records that carry the breakdown)."""
    if not a.breakdown:
        return []
    lines = ["  where span time went, by name:"]
    ranked = sorted(a.breakdown.items(), key=lambda kv: kv[1][1], reverse=True)
    for name, parts in ranked[:5]:
        count, wall, critical, own, differed = parts[0], parts[1], parts[2:7], parts[7:12], parts[12]
        text = f"{_one_line(name)} {format_ns(wall)} = {_bd.text(critical, always=(0, 2, 3))}"
        if differed:
            text += f"; own tasks: {_bd.text(own)}"
        lines.append(f"    {count}× {text}")
    return lines


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _io_lines(a: SpanAggregates, wall_ns: int) -> list[str]:
    """I/O rates (io_rates records), I/O by span and the busiest transports (handle records)."""
    sent, received, ops = a.io
    if not (sent or received or ops or a.io_events):
        return []
    seconds = max(wall_ns / 1e9, 1e-9)
    line = (
        f"I/O: sent {_bytes(sent)} ({_bytes(sent / seconds)}/s), received {_bytes(received)}"
        f" ({_bytes(received / seconds)}/s), {ops} ops ({ops / seconds:.0f}/s)"
    )
    if a.io_events is not None:
        line += f", {a.io_events} readiness events ({a.io_events / seconds:.0f}/s)"
    lines = [line]
    if a.io_by_span:
        lines.append("  I/O by span that opened the transport:      sent   received      ops")
        ranked = sorted(a.io_by_span.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
        for name, (s_bytes, r_bytes, n_ops) in ranked[:10]:
            lines.append(f"    {_one_line(name):<40} {_bytes(s_bytes):>9}  {_bytes(r_bytes):>9}  {n_ops:>7}")
    busiest = [r for _, _, r in sorted(a._busiest, reverse=True, key=lambda e: e[:2])]
    if busiest:
        lines.append("  busiest transports:")
        for r in busiest:
            sent_r = getattr(r, "bytes_sent", None) or 0
            received_r = getattr(r, "bytes_received", None) or 0
            opened = getattr(r, "open_ns", None)
            closed = getattr(r, "close_ns", None)
            life = closed - opened if isinstance(opened, int) and isinstance(closed, int) and closed > opened else None
            over = f" over {format_ns(life)} ({_bytes((sent_r + received_r) / (life / 1e9))}/s)" if life else ""
            lines.append(
                f"    {_one_line(getattr(r, 'description', None) or '?')}  sent {_bytes(sent_r)},"
                f" received {_bytes(received_r)}, {getattr(r, 'ops', None) or 0} ops{over}"
            )
    return lines


def summary_from_run(data: RunData, *, color: bool = False, width: int | None = None) -> str:
    """The text report of recorded runs (``report --format text``, the HTML report of a
    converted file): every section the records can tell."""
    aggregates = SpanAggregates()
    for part in data.parts:
        aggregates.add_batch(part.spans)
        for records in part.other.values():
            aggregates.add_batch(records)
        for entry in aggregates.outlived:  # the span ended too long before its task to be remembered
            if entry[2] is None and isinstance(entry[4], int):
                ended = next((s.end_ns for s in part.spans if s.span_id == entry[3]), None)
                entry[2] = entry[4] - ended if ended is not None else None
    first, last = data.extent()
    return render_summary(
        aggregates,
        None,
        max(0, last - first),
        {"problems": data.problems()},
        color=color,
        blind_spots=recorded_blind_spots(data),
        width=width,
    )


def recorded_blind_spots(data: RunData) -> list[str]:
    """The ``Not measured: ...`` lines the runs' sessions recorded (their ``session_end``
    statistics), each prefixed with its run when there are several."""
    out = []
    for part in data.parts:
        stats = getattr(part.end, "statistics", None) or {}
        lines = stats.get("blind_spots") if hasattr(stats, "get") else None
        for line in lines or ():
            out.append(f"{part.label}: {line}" if len(data.parts) > 1 else str(line))
    return out
