"""The sink interface: three optional hooks, each a no-op by default."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Record, SessionInfo

__all__ = ["Sink"]


class Sink:
    """Base class for sinks. Override only the hooks you need.

    Hooks are called from one thread at a time (the session's flusher, or the
    thread closing the session), so a sink needs no locking of its own. A hook
    that raises disables the sink; the session counts and logs it once.

    .. versionadded:: 0.1
    """

    def open(self, info: SessionInfo) -> None:
        """The session started; ``info`` is the run's header."""

    def write(self, records: Sequence[Record]) -> None:
        """A batch of records, in the order they were buffered."""

    def close(self) -> None:
        """The session ended; everything has been written. Release what you opened."""
