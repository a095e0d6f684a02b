"""The handles section of the text summary: open handles and I/O rates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._durations import format_ns
from ..._leaks import left_open
from ...records import HandleRecord, Leak

if TYPE_CHECKING:
    from .probe import HandleProbe, HandleStatistics

__all__ = ["format_bytes", "handle_line", "io_lines", "left_open"]


def handle_line(record: HandleRecord | Leak) -> str:
    span = f"  [span {record.span_name}]" if record.span_name else ""
    return f"  {record.handle_kind:<10} {record.description}\n    opened at {record.site or '?'}{span}"


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def io_lines(probe: HandleProbe, stats: HandleStatistics) -> list[str]:
    """The I/O lines of the handles section: rates, I/O by span, the busiest transports."""
    session = probe.session
    if session is None or not (stats.ops or stats.events):
        return []
    end = session.end_ns or session.now()
    seconds = max((end - session.start_ns) / 1e9, 1e-9)
    line = (
        f"I/O: sent {format_bytes(stats.bytes_sent)} ({format_bytes(stats.bytes_sent / seconds)}/s),"
        f" received {format_bytes(stats.bytes_received)} ({format_bytes(stats.bytes_received / seconds)}/s),"
        f" {stats.ops} ops ({stats.ops / seconds:.0f}/s)"
    )
    if stats.events is not None:
        line += f", {stats.events} readiness events ({stats.events / seconds:.0f}/s)"
    lines = [line]
    spans = {name: list(v) for name, v in probe._span_io.items()}
    busiest = [r for _, _, r in probe._busiest]
    if probe._active:
        for entry, obj in probe.registry.open_entries():
            if entry.io is not None:
                totals = spans.setdefault(entry.span_name, [0, 0, 0])
                for i in range(3):
                    totals[i] += entry.io[i]
                busiest.append(probe.registry.record(HandleRecord, entry, obj))
    if spans:
        lines.append("  I/O by span that opened the transport:      sent   received      ops")
        for name, (sent, received, ops) in sorted(spans.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:10]:
            lines.append(
                f"    {name or '(no span)'!s:<40} {format_bytes(sent):>9}  {format_bytes(received):>9}  {ops:>7}"
            )
    busiest.sort(key=lambda r: -((r.bytes_sent or 0) + (r.bytes_received or 0)))
    if busiest:
        lines.append("  busiest transports:")
        for r in busiest[:5]:
            life = ((r.close_ns or end) - r.open_ns) / 1e9 or 1e-9
            lines.append(
                f"    {r.description}  sent {format_bytes(r.bytes_sent or 0)}, received {format_bytes(r.bytes_received or 0)},"
                f" {r.ops} ops over {format_ns(life * 1e9)} ({format_bytes(((r.bytes_sent or 0) + (r.bytes_received or 0)) / life)}/s)"
            )
    return lines
