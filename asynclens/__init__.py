"""asynclens: see where an asyncio program's time goes.

Spans (``@trace``, ``span()``) travel through ``contextvars`` across awaits,
tasks and threads; a ``session()`` records them (and, with its probes, event-loop
lag, stalls, open handles and scheduling) into pluggable sinks.
"""

from __future__ import annotations

from ._native import IMPLEMENTATION
from ._state.clock import Clock, FakeClock, SystemClock
from .probes.scheduler.probe import SchedulerProbe, async_stack, creation_chain
from .records import HandleRecord, IoRates, LagSnapshot, Leak, Span, StackSample, Stall
from .report.fileformat import TraceFileError, read_jsonl
from .session import Session, SessionError, SessionStatistics, session
from .sinks import JsonLinesSink, MemorySink, Sink
from .tracing.spans import LiveSpan, current_span, span, trace

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "FakeClock",
    "HandleRecord",
    "IMPLEMENTATION",
    "IoRates",
    "JsonLinesSink",
    "LagSnapshot",
    "Leak",
    "LiveSpan",
    "MemorySink",
    "SchedulerProbe",
    "Session",
    "SessionError",
    "SessionStatistics",
    "Sink",
    "Span",
    "StackSample",
    "Stall",
    "SystemClock",
    "TraceFileError",
    "__version__",
    "async_stack",
    "creation_chain",
    "current_session",
    "current_span",
    "read_jsonl",
    "session",
    "span",
    "trace",
    "watch",
]


def current_session() -> Session | None:
    """The active session, or ``None``."""
    from ._state import context as _context

    return _context.active


def watch(loop: object) -> None:
    """Instrument an event loop the active session would not find by itself
    (one already running in another thread). No-op without a session."""
    from ._state import context as _context

    active = _context.active
    if active is not None:
        active.watch(loop)  # type: ignore[arg-type]
