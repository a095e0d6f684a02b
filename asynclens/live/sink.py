"""``run --live``: a sink that feeds the live view in the program's own process.

The sink runs on the session's flusher thread and only folds records into the
model; a thread of its own (``asynclens-live``, started at the session's start and
ended at its close) takes a snapshot of the session and draws once a second.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..records import Record, SessionInfo
from ..sinks.base import Sink
from .model import LiveModel
from .snapshot import live_snapshot
from .terminal import LiveView

__all__ = ["LiveSink"]


class LiveSink(Sink):
    """Shows the running session live on the terminal (stdout); ``q`` ends the program
    as Ctrl-C would, and ``quit_requested`` then tells the CLI it was asked for."""

    def __init__(self, out: Any = None) -> None:
        self.model = LiveModel()
        self.out = out if out is not None else sys.stdout
        self.session: Any = None
        self.quit_requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys: int | None = None
        self.view: LiveView | None = None

    def open(self, info: SessionInfo) -> None:
        self.model.feed(info.to_dict(compact=True))
        tty = bool(getattr(self.out, "isatty", lambda: False)())
        if tty:
            try:
                self._keys = os.open("/dev/tty", os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                self._keys = None
        self.view = LiveView(self.model, self.out, title="asynclens run", keys=self._keys, on_quit=self._quit)
        self._thread = threading.Thread(target=self._loop, name="asynclens-live", daemon=True)
        self._thread.start()

    def write(self, records: Sequence[Record]) -> None:
        feed = self.model.feed
        for record in records:
            feed(record.to_dict(compact=True))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None
        if self.view is not None:
            self.view.stop()
        if self._keys is not None:
            os.close(self._keys)
            self._keys = None

    def _quit(self) -> None:
        self.quit_requested = True
        _thread.interrupt_main()  # the program ends as by Ctrl-C; the CLI knows it was asked

    def _loop(self) -> None:
        view = self.view
        assert view is not None
        view.start()
        last = 0.0
        import time

        while not self._stop.wait(0.1):
            now = time.monotonic()
            if self.session is not None and now - last >= 1.0:
                last = now
                try:
                    self.model.set_snapshot(live_snapshot(self.session))
                except Exception:  # a snapshot is a nicety: the view goes on without it
                    pass
            view.tick()

    def __repr__(self) -> str:
        return "LiveSink(terminal)"
