"""RenderingSink: the base of sinks that write one file from the whole run at the end."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from typing import Any

from ..records import Record, SessionInfo
from ..report.rundata import DEFAULT_LIMIT, RunData
from .base import Sink

__all__ = ["RenderingSink", "write_text_atomically"]


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, so a reader never
    sees half a file (the hidden temporary name matches no collector's ``*.prom`` glob).
    The file gets the mode any new file gets (0666 less the umask)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_beside(directory)
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


def _create_beside(directory: str) -> tuple[int, str]:
    # mkstemp would make it 0600 whatever the umask, and reading the umask (os.umask) races
    # with the program's threads: let the kernel apply it to a plain O_EXCL create
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".asynclens-{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory!r}")


class RenderingSink(Sink):
    """Keeps the run's records (up to ``limit``; the excess is counted) and renders
    them into ``path`` when the session closes. Subclasses implement :meth:`render`."""

    def __init__(self, path: str | os.PathLike[str], *, limit: int = DEFAULT_LIMIT) -> None:
        self.path = os.fspath(path)
        self.data = RunData(limit=limit)
        #: the text summary the session prints, when it hands it over before closing the sink
        self.summary_text: str | None = None

    def open(self, info: SessionInfo) -> None:
        self.data = RunData(limit=self.data.limit)
        self.data.begin(info)
        self.summary_text = None

    def set_summary(self, text: str) -> None:
        """The session's own summary (its probes know more than their records), for
        renderers that show it; called before :meth:`close`."""
        self.summary_text = text

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
