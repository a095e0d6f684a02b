"""Drawing the live view about once a second, and its keys: ``s`` sort, ``p`` pause, ``q`` quit.

On a terminal the view takes the alternate screen (given back as it was at the end)
and reads single keys without echo; plain cursor moves only, no colour, so any
terminal of 80×24 shows it. When the output is not a terminal it prints the same
lines, headed by the time, every second instead, and reads no keys.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .model import LiveModel
from .screen import SORTS, render_screen

__all__ = ["LiveView"]

REFRESH_S = 1.0
_ENTER = "\x1b[?1049h\x1b[?25l"  # the alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"


class LiveView:
    """Refreshes ``model`` on ``out``; ``tick()`` as often as you like (it draws once a second).

    ``keys``: a file descriptor to read keys from (a terminal), or None. ``on_quit``
    runs once when ``q`` is pressed (``quit`` is set too).
    """

    def __init__(
        self,
        model: LiveModel,
        out: TextIO | None = None,
        *,
        title: str = "asynclens",
        keys: int | None = None,
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.out = out if out is not None else sys.stdout
        self.title = title
        self.sort = SORTS[0]
        self.paused = False
        self.quit = threading.Event()
        self._on_quit = on_quit
        self._keys = keys
        self._tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._saved: Any = None
        self._last = 0.0
        self._started = False

    @property
    def interactive(self) -> bool:
        return self._tty

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._tty:
            self._write(_ENTER)
            if self._keys is not None:
                self._saved = _cbreak(self._keys)
        self.draw()

    def stop(self) -> None:
        """Give the terminal back (the caller prints the summary after this)."""
        if not self._started:
            return
        self._started = False
        if not self._tty:
            self.draw()  # the last figures
        if self._tty:
            if self._saved is not None and self._keys is not None:
                _restore(self._keys, self._saved)
                self._saved = None
            self._write(_LEAVE)

    def tick(self) -> None:
        """Read the keys pressed, and draw if a second has passed."""
        self._read_keys()
        if time.monotonic() - self._last >= REFRESH_S:
            self.draw()

    def draw(self) -> None:
        self._last = time.monotonic()
        if self._tty:
            if self.paused:
                return
            size = shutil.get_terminal_size((80, 24))
            lines = render_screen(
                self.model, width=size.columns, height=size.lines, sort=self.sort, paused=False, title=self.title
            )
            self._write("\x1b[H" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[J")
        else:
            stamp = time.strftime("%H:%M:%S")
            lines = render_screen(self.model, width=80, height=200, sort=self.sort, title=self.title, keys=False)
            self._write(f"--- {self.title} live {stamp} ---\n" + "\n".join(lines) + "\n")

    def press(self, key: str) -> None:
        """Act on one key (the tests call this too)."""
        if key == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif key == "p":
            self.paused = not self.paused
            if self._tty:  # show the state at once, even while paused
                size = shutil.get_terminal_size((80, 24))
                lines = render_screen(
                    self.model, width=size.columns, height=size.lines, sort=self.sort, paused=self.paused, title=self.title
                )
                self._write("\x1b[H" + "\n".join(line + "\x1b[K" for line in lines) + "\x1b[J")
            return
        elif key in ("q", "Q"):
            if not self.quit.is_set():
                self.quit.set()
                if self._on_quit is not None:
                    self._on_quit()
            return
        else:
            return
        self.draw()

    def _read_keys(self) -> None:
        if self._keys is None:
            return
        try:
            while select.select([self._keys], [], [], 0)[0]:
                data = os.read(self._keys, 32)
                if not data:
                    self._keys = None
                    return
                for key in data.decode("utf-8", "replace"):
                    self.press(key)
        except (OSError, ValueError):
            self._keys = None

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # a closed pipe: the view goes quiet, the recording goes on
            self._tty = False


def _cbreak(fd: int) -> Any:
    try:
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        return saved
    except Exception:  # not a terminal after all: no keys
        return None


def _restore(fd: int, saved: Any) -> None:
    try:
        import termios

        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    except Exception:
        pass
