"""GC pauses: every collection via ``gc.callbacks``, with the task and span it interrupted."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ..._state import context as _context
from ...records import GcPause
from ...stats import Histogram

__all__ = ["GcWatcher"]


class GcWatcher:
    """Times collections; ``gc.callbacks`` never run concurrently (one collection
    at a time), so no lock is needed for the histogram."""

    def __init__(self, now: Callable[[], int], emit: Callable[[Any], None], keep: int = 256) -> None:
        self._now = now
        self._emit = emit
        self.pauses = Histogram()
        self.by_generation = [0, 0, 0]
        self.collected = 0
        self.recent: deque[GcPause] = deque(maxlen=keep)
        self._start = 0
        self._installed = False
        self.errors = 0

    def start(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def stop(self) -> None:
        if self._installed:
            try:
                gc.callbacks.remove(self._callback)
            except ValueError:
                pass
            self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        try:
            if phase == "start":
                self._start = self._now()
                return
            start = self._start
            if not start:
                return
            end = self._now()
            self._start = 0
            task_name = None
            loop = asyncio.events._get_running_loop()
            if loop is not None:
                task = asyncio.current_task(loop)
                if task is not None:
                    task_name = task.get_name()
            span = _context.current_span.get()
            generation = int(info.get("generation", 0))
            pause = GcPause(
                start_ns=start,
                end_ns=end,
                generation=generation,
                collected=int(info.get("collected", 0)),
                uncollectable=int(info.get("uncollectable", 0)),
                task=task_name,
                trace_id=span.trace_id if span is not None else None,
                span_id=span.span_id if span is not None else None,
                span_name=span.name if span is not None else None,
                thread_id=threading.get_ident(),
            )
            self.pauses.record(end - start)
            if 0 <= generation < 3:
                self.by_generation[generation] += 1
            self.collected += pause.collected
            self.recent.append(pause)
            self._emit(pause)
        except Exception:  # never raise out of a gc callback
            self.errors += 1

    def overlapping(self, start_ns: int, end_ns: int) -> list[GcPause]:
        """The recent pauses that overlap ``[start_ns, end_ns]`` (e.g. a stall)."""
        return [p for p in list(self.recent) if p.start_ns < end_ns and p.end_ns > start_ns]
