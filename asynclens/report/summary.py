"""The text report (``Session.summary()``, the CLI): :func:`render_summary` turns the
aggregates of :mod:`.aggregates` into sections readable at 100 columns (wrapped to the
terminal); ANSI colour only when asked (a TTY). :func:`summary_from_run` does the same for a
recorded run.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .._durations import format_ns
from ..records import Span
from . import breakdown as _bd
from .aggregates import NameStats, SpanAggregates
from .frames import clean_frame, clean_path
from .leaks import group_leaks
from .lints import lint_lines
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


def _opt_ns(ns: Any) -> str:
    return format_ns(ns) if isinstance(ns, (int, float)) else "-"


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
    lines.extend(lint_lines(a.lints, st.bad, st.head))
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
    text = render_summary(
        aggregates,
        None,
        max(0, last - first),
        {"problems": data.problems()},
        color=color,
        blind_spots=recorded_blind_spots(data),
        width=width,
    )
    attached = attached_lines(data)
    return "\n".join([*attached, text]) if attached else text


def attached_lines(data: RunData) -> list[str]:
    """``Attached to PID ... at ...`` for each run recorded by ``python -m asynclens attach``
    (its header's ``options["attached"]``)."""
    out = []
    for part in data.parts:
        options = getattr(part.info, "options", None) or {}
        attached = options.get("attached") if hasattr(options, "get") else None
        if not isinstance(attached, Mapping):
            continue
        wall = attached.get("at_wall_ns")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall / 1e9)) if isinstance(wall, int) else "an unknown time"
        )
        out.append(f"Attached to PID {part.pid} (Python {getattr(part.info, 'python', '?')}) at {when}")
    return out


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
