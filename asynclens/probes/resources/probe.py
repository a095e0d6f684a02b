"""The ``resources`` probe: who waited on which asyncio lock, semaphore, condition, event,
queue or barrier, for how long, and who held it.

Session option ``resources`` (on by default). Only waits are timed: an ``acquire`` that does
not wait runs the standard library's code untouched (see :mod:`.patches`). From the first
wait on a ``Lock`` or ``Semaphore`` on, that object gets its own ``acquire``/``release``
(instance attributes, removed at session end) that time each hold, so that the longest
holder is known. Queues created during the session are sampled for their depth every
``queue_interval`` (a backlog: the depth grew at each of ``BACKLOG_SAMPLES`` samples in a
row and reached ``BACKLOG_MIN_DEPTH``).

Records: a :class:`~asynclens.records.ResourceWait` per wait (at most ``MAX_WAIT_RECORDS``;
the rest are counted), a :class:`~asynclens.records.QueueBacklog` per backlog episode and, at
session end, a :class:`~asynclens.records.ResourceStats` per object that was waited on or
backlogged. See ``docs/resources.md``.

.. versionadded:: 0.2
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import sys
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._state import context as _context
from ...records import QueueBacklog, ResourceStats, ResourceWait
from .._attrs import remove_instance_attr
from .._patch import Patch
from . import patches as _patches
from .state import ATTR, DEPTH_SAMPLES, SITE_ATTR, Holder, ResourceState, format_site, user_site
from .text import summary_lines

__all__ = ["BACKLOG_MIN_DEPTH", "BACKLOG_SAMPLES", "ResourceProbe", "ResourceStatistics"]

#: Objects followed in detail (waited on, or queues sampled); more are counted, not followed.
MAX_TRACKED = 10_000
MAX_QUEUES = 10_000
MAX_WAIT_RECORDS = 100_000
#: A wait becomes a ResourceWait record from this long on (shorter ones are only counted).
RECORD_WAIT_NS = 100_000
MAX_SPANS = 1_000
MAX_HOLDERS = 1_000
#: A backlog: the depth grew at this many samples in a row ...
BACKLOG_SAMPLES = 5
#: ... and reached at least this depth.
BACKLOG_MIN_DEPTH = 10
_HOLDS = ("Lock", "Semaphore", "BoundedSemaphore")


@dataclass(frozen=True)
class ResourceStatistics:
    """Counters of the resources probe (``Session.statistics().probes["resources"]``)."""

    created: Mapping[str, int] = field(default_factory=dict)
    contended: int = 0
    waits: int = 0
    wait_ns: int = 0
    backlogs: int = 0
    untracked: int = 0
    wait_records_dropped: int = 0
    queues_sampled: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.__dict__.items()}


class ResourceProbe:
    """The ``resources`` probe. ``queue_interval``: seconds between queue depth samples
    (``0``: sampled only when ``sample_queues()`` is called, and at the end)."""

    name = "resources"
    #: its patches are on the classes: a loop the session never saw is measured all the same
    watches_loops = False

    def __init__(self, *, queue_interval: float = 1.0) -> None:
        self.queue_interval = queue_interval
        self.session: Any = None
        self.now: Any = lambda: 0
        self._patches: list[Patch] = []
        self._ids = itertools.count(1)
        self.created: dict[str, int] = {}  # objects made during the session, by class (patches count)
        self._tracked: list[ResourceState] = []
        self._queues: list[tuple[weakref.ref[Any], ResourceState]] = []
        self._hooked: list[tuple[weakref.ref[Any], Any, Any]] = []
        self._untracked = 0
        self._wait_records = 0
        self._wait_records_dropped = 0
        self._backlogs: list[QueueBacklog] = []
        self._by_span: dict[int, list[Any]] = {}  # span_id -> [live span, {rid: wait ns}]
        self._states_by_rid: dict[int, ResourceState] = {}
        self._stats: list[ResourceStats] = []
        self._lock = threading.Lock()  # the sampler thread and the loop thread share _queues
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = False

    # ------------------------------------------------------------ lifecycle

    def start(self, session: Any) -> None:
        self.session = session
        self.now = session.now
        self._patches = _patches.install(self)
        self._active = True
        if self.queue_interval > 0:
            self._thread = threading.Thread(target=self._sample_loop, name="asynclens-queue-depth", daemon=True)
            self._thread.start()

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing per loop: the patches are on the classes (uvloop uses asyncio's too)."""

    def stop(self) -> None:
        if not self._active:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._guard("sampling queues", self.sample_queues)
        self._active = False
        for patch in reversed(self._patches):
            self._guard("removing a patch", patch.remove)
        for ref, acquire, release in self._hooked:
            obj = ref()
            if obj is not None:
                remove_instance_attr(obj, "acquire", acquire)
                remove_instance_attr(obj, "release", release)
        self._hooked.clear()
        end = self.now()
        start = getattr(self.session, "start_ns", 0)
        self._stats = [self._stats_record(st, start, end) for st in self._tracked]
        for record in self._stats:
            self.session.emit(record)

    def internal_error(self, where: str, exc: BaseException) -> None:
        if self.session is not None:
            self.session.internal_error(f"resources: {where}", exc)

    def _guard(self, where: str, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except Exception as exc:
            self.internal_error(where, exc)
            return None

    # ---------------------------------------------------- called by patches

    def new_state(self, obj: Any, site: Any) -> ResourceState:
        """A resource's counters, kept on it (``__init__``, or a first wait on an object
        made before the session)."""
        st = ResourceState(self, next(self._ids), type(obj).__name__, site)
        setattr(obj, ATTR, st)
        if isinstance(obj, asyncio.Queue):
            st.depths = collections.deque(maxlen=DEPTH_SAMPLES)
            st.depth_times = collections.deque(maxlen=DEPTH_SAMPLES)
            with self._lock:
                if len(self._queues) < MAX_QUEUES:
                    self._queues.append((weakref.ref(obj), st))
                else:
                    self._untracked += 1
        return st

    def wait_started(self, obj: Any, operation: str, future: Any, frame: Any) -> None:
        """``obj``'s ``operation`` (run by ``frame``) is about to await ``future``."""
        if not self._active:
            return
        try:
            st = getattr(obj, ATTR, None)
            if st is None or st.probe is not self:
                st = self.new_state(obj, getattr(obj, SITE_ATTR, None))
            if not st.tracked:
                if len(self._tracked) >= MAX_TRACKED:
                    self._untracked += 1
                    return
                st.tracked = True
                st.ref = weakref.ref(obj)
                self._tracked.append(st)
                self._states_by_rid[st.rid] = st
            start = self.now()
            st.waiting += 1
            if st.waiting > st.max_waiters:
                st.max_waiters = st.waiting
            site = user_site(frame.f_back)
            span = _context.current_span.get()
            task = asyncio.current_task()
            if not st.hooked and isinstance(obj, (asyncio.Lock, asyncio.Semaphore)):
                self._hook_holds(obj, st)
            future.add_done_callback(functools.partial(self._wait_done, st, start, operation, site, span, task))
        except Exception as exc:
            self.internal_error("starting a wait", exc)

    def _wait_done(self, st: ResourceState, start: int, operation: str, site: Any, span: Any, task: Any, future: Any) -> None:
        if not self._active:
            return
        try:
            end = self.now()
            duration = end - start
            st.waiting -= 1
            st.waits += 1
            cancelled = future.cancelled()
            if cancelled:
                st.cancelled += 1
            st.wait_ns += duration
            if duration > st.max_wait_ns:
                st.max_wait_ns = duration
            if span is not None:
                self._attribute(span, st.rid, duration)
            if duration < RECORD_WAIT_NS:
                return
            if self._wait_records >= MAX_WAIT_RECORDS:
                self._wait_records_dropped += 1
                return
            self._wait_records += 1
            self.session.emit(
                ResourceWait(
                    resource_id=st.rid,
                    resource_kind=st.kind,
                    operation=operation,
                    start_ns=start,
                    end_ns=end,
                    cancelled=cancelled,
                    site=format_site(site),
                    resource_site=st.site_text,
                    task=task.get_name() if task is not None else None,
                    trace_id=span.trace_id if span is not None else None,
                    span_id=span.span_id if span is not None else None,
                    span_name=span.name if span is not None else None,
                )
            )
        except Exception as exc:
            self.internal_error("ending a wait", exc)

    def _attribute(self, span: Any, rid: int, duration: int) -> None:
        entry = self._by_span.get(span.span_id)
        if entry is None:
            if len(self._by_span) >= MAX_SPANS:
                return
            entry = self._by_span[span.span_id] = [span, {}]
        waits = entry[1]
        waits[rid] = waits.get(rid, 0) + duration

    # ------------------------------------------------------------- holders

    def _hook_holds(self, obj: Any, st: ResourceState) -> None:
        """From now on, time each hold of ``obj`` (a lock or a semaphore)."""
        st.hooked = True
        cls = type(obj)
        acquire = cls.acquire.__get__(obj, cls)
        release = cls.release.__get__(obj, cls)
        started, ended = self._hold_started, self._hold_ended

        async def hooked_acquire() -> Any:
            result = await acquire()
            started(st, sys._getframe(1))
            return result

        def hooked_release() -> Any:
            result = release()
            ended(st)
            return result

        functools.update_wrapper(hooked_acquire, acquire)
        functools.update_wrapper(hooked_release, release)
        obj.acquire = hooked_acquire
        obj.release = hooked_release
        self._hooked.append((weakref.ref(obj), hooked_acquire, hooked_release))

    def _hold_started(self, st: ResourceState, frame: Any) -> None:
        if not self._active:
            return
        try:
            holders = st.holders
            if len(holders) >= MAX_HOLDERS:
                del holders[0]
            holders.append(Holder(self.now(), asyncio.current_task(), _context.current_span.get(), user_site(frame)))
        except Exception as exc:
            self.internal_error("starting a hold", exc)

    def _hold_ended(self, st: ResourceState) -> None:
        if not self._active:
            return
        try:
            holders = st.holders
            if not holders:
                return  # acquired before its first wait: the start is unknown
            if len(holders) == 1:
                holder = holders.pop()
            else:
                task = asyncio.current_task()
                index = next((i for i in range(len(holders) - 1, -1, -1) if holders[i].task is task), 0)
                holder = holders.pop(index)
            held = self.now() - holder.start_ns
            if held > st.max_hold_ns:
                st.max_hold_ns = held
                st.max_holder = holder
        except Exception as exc:
            self.internal_error("ending a hold", exc)

    # -------------------------------------------------------------- queues

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.queue_interval):
            self._guard("sampling queues", self.sample_queues)

    def sample_queues(self) -> None:
        """Take one depth sample of every queue created during the session (any thread)."""
        now = self.now()
        with self._lock:
            queues = self._queues
            alive = []
            for ref, st in queues:
                queue = ref()
                if queue is None:
                    if st.tracked:
                        alive.append((ref, st))  # its figures stay for its record
                    continue
                alive.append((ref, st))
                self._sample(queue, st, now)
            self._queues = alive

    def _sample(self, queue: Any, st: ResourceState, now: int) -> None:
        depth = queue.qsize()
        depths = st.depths
        previous = depths[-1] if depths else None
        depths.append(depth)
        st.depth_times.append(now)
        if depth > st.max_depth:
            st.max_depth = depth
        if previous is None or depth < previous:
            st.growing = 0
            st.backlog_reported = False
            return
        st.growing = st.growing + 1 if depth > previous else 0
        if st.growing >= BACKLOG_SAMPLES and depth >= BACKLOG_MIN_DEPTH and not st.backlog_reported:
            st.backlog_reported = True
            first = len(depths) - 1 - BACKLOG_SAMPLES
            record = QueueBacklog(
                resource_id=st.rid,
                resource_kind=st.kind,
                site=st.site_text,
                start_ns=st.depth_times[first],
                end_ns=now,
                start_depth=depths[first],
                end_depth=depth,
                samples=BACKLOG_SAMPLES,
                maxsize=int(getattr(queue, "maxsize", 0) or 0),
            )
            self._backlogs.append(record)
            if not st.tracked and len(self._tracked) < MAX_TRACKED:
                st.tracked = True
                self._tracked.append(st)
                self._states_by_rid[st.rid] = st
            if self.session is not None:
                self.session.emit(record)

    # ------------------------------------------------------------ reporting

    def _stats_record(self, st: ResourceState, start: int, end: int) -> ResourceStats:
        holder = st.max_holder
        span = holder.span if holder is not None else None
        task = holder.task if holder is not None else None
        queue = bool(st.puts or st.gets or st.depths)
        return ResourceStats(
            resource_id=st.rid,
            resource_kind=st.kind,
            site=st.site_text,
            start_ns=start,
            end_ns=end,
            waits=st.waits,
            cancelled=st.cancelled,
            waiting_at_end=st.waiting,
            wait_ns=st.wait_ns,
            max_wait_ns=st.max_wait_ns,
            max_waiters=st.max_waiters,
            max_hold_ns=st.max_hold_ns if holder is not None else None,
            holder_task=task.get_name() if task is not None else None,
            holder_span_id=span.span_id if span is not None else None,
            holder_span_name=span.name if span is not None else None,
            holder_site=format_site(holder.site) if holder is not None else None,
            puts=st.puts if queue else None,
            gets=st.gets if queue else None,
            max_depth=st.max_depth if queue else None,
            depth_times=tuple(st.depth_times) if queue else (),
            depths=tuple(st.depths) if queue else (),
        )

    def resource_stats(self) -> list[ResourceStats]:
        """A :class:`ResourceStats` for every object waited on (or backlogged) so far."""
        if not self._active:
            return list(self._stats)
        start = getattr(self.session, "start_ns", 0)
        end = self.now()
        return [self._stats_record(st, start, end) for st in list(self._tracked)]

    def span_waits(self) -> list[tuple[Any, dict[int, int]]]:
        """``(span, {resource id: wait ns})`` of the spans that waited on resources."""
        return [(span, dict(waits)) for span, waits in self._by_span.values()]

    def statistics(self) -> ResourceStatistics:
        tracked = list(self._tracked)
        return ResourceStatistics(
            created=dict(self.created),
            contended=sum(1 for st in tracked if st.waits or st.waiting),
            waits=sum(st.waits for st in tracked),
            wait_ns=sum(st.wait_ns for st in tracked),
            backlogs=len(self._backlogs),
            untracked=self._untracked,
            wait_records_dropped=self._wait_records_dropped,
            queues_sampled=len(self._queues),
        )

    def summary_lines(self) -> list[str]:
        """The resources section of ``summary()``: only objects something waited on."""
        return summary_lines(self.resource_stats(), self._backlogs, self.span_waits(), self.statistics())
