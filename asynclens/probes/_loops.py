"""Finding the event loops a session should watch.

A session may start before any loop exists (``with session(): asyncio.run(...)``)
or inside a running one (``async with session():``). The watcher hands every
loop to the session's probes exactly once: the loop running in the thread that
starts the session, every loop that starts running while the session is active
(``run_forever`` of the stdlib loops and of uvloop, patched while watching), and
any loop passed to :func:`asynclens.watch`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._patch import Patch

__all__ = ["LoopWatcher", "starting_here"]

_starting = threading.local()


def starting_here(loop: asyncio.AbstractEventLoop) -> bool:
    """True while ``loop.run_forever()`` on this thread is handing ``loop`` to the probes."""
    return getattr(_starting, "loop", None) is loop


class LoopWatcher:
    """Calls ``on_loop(loop)`` once for each loop seen while started."""

    def __init__(self, on_loop: Callable[[asyncio.AbstractEventLoop], None]) -> None:
        self._on_loop = on_loop
        self._seen: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._patches: list[Patch] = []

    def start(self) -> None:
        self._patches = [Patch(asyncio.BaseEventLoop, "run_forever", self._run_forever)]
        uvloop = sys.modules.get("uvloop")
        if uvloop is not None and isinstance(getattr(uvloop, "Loop", None), type):
            self._patches.append(Patch(uvloop.Loop, "run_forever", self._run_forever))
        for patch in self._patches:
            patch.install()
        running = asyncio.events._get_running_loop()
        if running is not None:
            self.watch(running)

    def stop(self) -> None:
        for patch in self._patches:
            patch.remove()
        self._patches = []

    def loops(self) -> list[asyncio.AbstractEventLoop]:
        """The loops seen so far that are still alive."""
        return list(self._seen)

    def watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Hand ``loop`` to the probes unless it was seen already; True if new."""
        if loop in self._seen:
            return False
        self._seen.add(loop)
        self._on_loop(loop)
        return True

    def _run_forever(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if instance is not None and instance not in self._seen:
            _starting.loop = instance
            try:
                self.watch(instance)
            except Exception:  # never let a probe's bug stop the user's loop from running
                pass
            finally:
                _starting.loop = None
        return wrapped(*args, **kwargs)
