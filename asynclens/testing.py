"""Helpers for testing code that uses asynclens (no pytest import).

``capture()`` records into memory for the duration of a block::

    with asynclens.testing.capture() as cap:
        await handler()
    assert [s["name"] for s in cap.as_dicts()] == ["handler", "db.query"]

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._state.clock import FakeClock
from .records import Record, Span
from .session import Session
from .sinks.memory import MemorySink

__all__ = ["Captured", "FakeClock", "capture", "normalise"]


class Captured:
    """What ``capture()`` recorded: records, spans, and a normalised dict view."""

    def __init__(self, session: Session, sink: MemorySink) -> None:
        self.session = session
        self.sink = sink

    @property
    def records(self) -> list[Record]:
        if self.session.state == "active":
            self.session.flush()
        return list(self.sink.records)

    @property
    def spans(self) -> list[Span]:
        """Finished spans, in the order they ended."""
        return [r for r in self.records if isinstance(r, Span)]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The spans as dicts with stable ids and times (see :func:`normalise`)."""
        return normalise(self.spans)


def normalise(spans: list[Span]) -> list[dict[str, Any]]:
    """Span dicts with ids renamed by first appearance (``t1``, ``s1``, …) and times
    made relative to the earliest start, so tests can compare them exactly."""
    ids: dict[tuple[str, int], str] = {}

    def rename(prefix: str, value: int | None) -> str | None:
        if value is None:
            return None
        key = (prefix, value)
        if key not in ids:
            ids[key] = f"{prefix}{sum(1 for k in ids if k[0] == prefix) + 1}"
        return ids[key]

    origin = min((s.start_ns for s in spans), default=0)
    out = []
    for span in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        rename("s", span.span_id)
    for span in spans:
        data = span.to_dict()
        data["trace_id"] = rename("t", span.trace_id)
        data["span_id"] = rename("s", span.span_id)
        data["parent_id"] = rename("s", span.parent_id)
        data["links"] = [rename("s", link) for link in span.links]
        data["start_ns"] = span.start_ns - origin
        data["end_ns"] = span.end_ns - origin
        data.pop("thread_id", None)
        out.append(data)
    return out


@contextmanager
def capture(**options: Any) -> Iterator[Captured]:
    """Record spans into memory for the block; probes are off unless asked for.

    Options are those of :class:`~asynclens.session.Session` (e.g. ``clock=FakeClock()``).
    """
    for probe_option in ("lag", "track_handles", "scheduler"):
        options.setdefault(probe_option, False)
    sink = MemorySink()
    sinks = [sink, *options.pop("sinks", [])]
    with Session(sinks, **options) as session:
        yield Captured(session, sink)
