"""MemorySink: keeps records in a list (for tests and ``asynclens.testing``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from ..records import Record, SessionInfo, Span
from .base import Sink

__all__ = ["MemorySink"]

R = TypeVar("R", bound=Record)


class MemorySink(Sink):
    """Keeps every record (bounded by ``limit``; the excess is counted in ``dropped``)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.info: SessionInfo | None = None
        self.records: list[Record] = []
        self.dropped = 0
        self.closed = False

    def open(self, info: SessionInfo) -> None:
        self.info = info

    def write(self, records: Sequence[Record]) -> None:
        room = len(records) if self.limit is None else max(0, self.limit - len(self.records))
        self.records.extend(records[:room])
        self.dropped += len(records) - min(room, len(records))

    def close(self) -> None:
        self.closed = True

    def of_type(self, cls: type[R]) -> list[R]:
        """The records of one type, e.g. ``sink.of_type(Span)``."""
        return [r for r in self.records if isinstance(r, cls)]

    @property
    def spans(self) -> list[Span]:
        return self.of_type(Span)

    def __repr__(self) -> str:
        return f"MemorySink({len(self.records)} records)"
