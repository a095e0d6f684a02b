"""``python -m asynclens top PID``: the live view of an attached process."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .model import LiveModel
from .terminal import LiveView

__all__ = ["AttachedView"]


class AttachedView:
    """Folds an attachment's record stream and snapshots into the view while it records;
    ``q`` (or the duration, or Ctrl-C) ends the recording and detaches."""

    def __init__(self, out: TextIO | None = None, keys: Any = None) -> None:
        self.model = LiveModel()
        out = out if out is not None else sys.stdout
        if keys is None and out.isatty() and sys.stdin.isatty():
            keys = sys.stdin.fileno()
        self.view = LiveView(self.model, out, title="asynclens top", keys=keys)

    def feed_line(self, line: bytes) -> None:
        self.model.feed_line(line)

    def run_attached(self, attachment: Any, duration: float | None) -> None:
        attachment.on_snapshot = self.model.set_snapshot
        self.view.start()
        try:
            attachment.record(duration, stop=self.view.quit, on_tick=self.view.tick)
        finally:
            self.view.stop()
