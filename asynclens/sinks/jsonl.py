"""JsonLinesSink: the lossless on-disk form of a run (see ``docs/format.md``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

from ..records import Record, SessionInfo
from ..report.fileformat import encode_record
from .base import Sink

__all__ = ["JsonLinesSink"]


class JsonLinesSink(Sink):
    """Writes the header, then one JSON object per record, flushing after each batch.

    The file is opened when the session starts (``"w"``: an existing file is
    replaced) and closed when it ends.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[str] | None = None

    def open(self, info: SessionInfo) -> None:
        self._file = open(self.path, "w", encoding="utf-8")
        self._file.write(encode_record(info) + "\n")
        self._file.flush()

    def write(self, records: Sequence[Record]) -> None:
        if self._file is None:
            return
        self._file.write("".join([encode_record(r) + "\n" for r in records]))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f"JsonLinesSink({self.path!r})"
