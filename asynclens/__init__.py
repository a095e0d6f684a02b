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
    "dump",
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


def dump(reason: str = "asynclens.dump()") -> int | None:
    """Ask the active session's flight recorder to write a dump: the window before now
    and ``dump_after`` seconds after, to each of its outputs (on a worker thread: this
    returns at once). Returns the dump's number (``{n}`` in the file names), or None
    when the rate limit skipped it (counted in the summary). Raises
    :class:`SessionError` when no session with ``flight_recorder=`` is active.

    .. versionadded:: 0.2
    """
    from ._state import context as _context

    active = _context.active
    recorder = getattr(active, "flight_recorder", None)
    if recorder is None:
        what = "no asynclens session is active" if active is None else "the active session has no flight recorder"
        raise SessionError(
            f"asynclens.dump(): {what}: start one with asynclens.session(flight_recorder=SECONDS, sinks=[...])"
            " or python -m asynclens run --flight-recorder SECONDS"
        )
    return recorder.trigger(reason)  # type: ignore[no-any-return]
