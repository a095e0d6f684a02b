"""What the resources probe keeps per asyncio synchronisation object (plain slots, no strings).

A :class:`ResourceState` hangs on its object as the attribute :data:`ATTR`; sites are kept
as ``(code, instruction offset)`` and formatted only when a record or a report needs them.
"""

from __future__ import annotations

import collections
import sys
from types import CodeType, FrameType
from typing import Any

from ..handles.sites import USER, _classify, _classes, code_location, line_at

__all__ = ["ATTR", "SITE_ATTR", "Holder", "ResourceState", "format_site", "user_site"]

ATTR = "_asynclens_resource"
#: where an object was created: ``(code, lasti)``, kept by ``__init__`` (cheaper than a state)
SITE_ATTR = "_asynclens_site"
#: Queue depth samples kept per queue (a ring).
DEPTH_SAMPLES = 64
_FRAMES = 12
_NO_SAMPLES: collections.deque[int] = collections.deque(maxlen=0)


class Holder:
    """One acquisition of a lock or semaphore slot: when, by which task and span, at which line."""

    __slots__ = ("start_ns", "task", "span", "site")

    def __init__(self, start_ns: int, task: Any, span: Any, site: tuple[CodeType, int] | None) -> None:
        self.start_ns = start_ns
        self.task = task
        self.span = span
        self.site = site


class ResourceState:
    """Counters of one resource; only the loop thread that uses it writes them."""

    __slots__ = (
        "__weakref__",
        "probe",
        "rid",
        "kind",
        "site",
        "ref",
        "waits",
        "cancelled",
        "waiting",
        "wait_ns",
        "max_wait_ns",
        "max_waiters",
        "holders",
        "max_hold_ns",
        "max_holder",
        "hooked",
        "puts",
        "gets",
        "max_depth",
        "depth_times",
        "depths",
        "growing",
        "backlog_reported",
        "tracked",
    )

    def __init__(self, probe: Any, rid: int, kind: str, site: tuple[CodeType, int] | None) -> None:
        self.probe = probe  # the probe (of one session) these counters belong to
        self.rid = rid
        self.kind = kind
        self.site = site
        self.ref: Any = None  # a weakref to the object, once tracked
        self.waits = 0
        self.cancelled = 0
        self.waiting = 0
        self.wait_ns = 0
        self.max_wait_ns = 0
        self.max_waiters = 0
        self.holders: list[Holder] = []
        self.max_hold_ns = -1
        self.max_holder: Holder | None = None
        self.hooked = False
        self.puts = 0
        self.gets = 0
        self.max_depth = 0
        self.depth_times: collections.deque[int] = _NO_SAMPLES  # a ring once sampled
        self.depths: collections.deque[int] = _NO_SAMPLES
        self.growing = 0  # consecutive samples in which the depth grew
        self.backlog_reported = False
        self.tracked = False  # in the probe's list of contended resources

    @property
    def site_text(self) -> str | None:
        return format_site(self.site)


def user_site(frame: FrameType | None) -> tuple[CodeType, int] | None:
    """``(code, lasti)`` of the innermost frame from ``frame`` outwards that is the program's own
    (past the standard library, asynclens's pass-through wrappers, uvloop), or the first frame."""
    first: tuple[CodeType, int] | None = None
    classes = _classes
    for _ in range(_FRAMES):
        if frame is None:
            break
        code = frame.f_code
        kind = classes.get(code.co_filename)
        if kind is None:
            kind = _classify(code.co_filename)
        if kind == USER:
            return (code, frame.f_lasti)
        if first is None:
            first = (code, frame.f_lasti)
        frame = frame.f_back
    return first


def caller_site(depth: int) -> tuple[CodeType, int] | None:
    return user_site(sys._getframe(depth + 1))


def format_site(site: tuple[CodeType, int] | None) -> str | None:
    if site is None:
        return None
    text = _formatted.get(site)
    if text is None:
        code, lasti = site
        text = code_location(code, line_at(code, lasti))
        if len(_formatted) >= 10_000:
            _formatted.clear()
        _formatted[site] = text
    return text


_formatted: dict[tuple[CodeType, int], str] = {}
