"""RenderingSink: the base of sinks that write one file from the whole run at the end."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from ..records import Record, SessionInfo
from ..report.rundata import DEFAULT_LIMIT, RunData
from .base import Sink

__all__ = ["RenderingSink", "write_text_atomically"]


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, so a reader never
    sees half a file (the hidden temporary name matches no collector's ``*.prom`` glob)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".asynclens-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class RenderingSink(Sink):
    """Keeps the run's records (up to ``limit``; the excess is counted) and renders
    them into ``path`` when the session closes. Subclasses implement :meth:`render`."""

    def __init__(self, path: str | os.PathLike[str], *, limit: int = DEFAULT_LIMIT) -> None:
        self.path = os.fspath(path)
        self.data = RunData(limit=limit)

    def open(self, info: SessionInfo) -> None:
        self.data = RunData(limit=self.data.limit)
        self.data.begin(info)

    def write(self, records: Sequence[Record]) -> None:
        self.data.add(records)

    def close(self) -> None:
        write_text_atomically(self.path, self.render(self.data))

    def render(self, data: RunData) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __getstate__(self) -> Any:  # pragma: no cover - sinks are not pickled
        raise TypeError(f"{type(self).__name__} cannot be pickled")
