"""Where each span's time went: the scheduler probe's span observer.

A span started inside a task's step holds the task's running totals at its start
(``LiveSpan.breakdown``); at its end, the difference of the totals is its breakdown, along
its critical path (the task's adjustment ``x``) and its own task's.
"""

from __future__ import annotations

from collections.abc import Callable
from random import getrandbits
from typing import Any

from ..._native import core
from .asyncstack import running_chain
from .lineage import creation_chain_of_state
from .steps import ATTR, NO_HELD, TaskState, task_state_of
from .tally import TALLY_FOLD_EVERY, NameTally

__all__ = ["SpanBreakdown"]

_MAX_NAMES = 1000

if core is not None:
    core.configure_breakdown(TaskState, ATTR, NO_HELD, task_state_of, TALLY_FOLD_EVERY)


class SpanBreakdown:
    """The span observer half of the scheduler probe (a mixin: the probe supplies
    ``by_name`` and ``internal_error``)."""

    by_name: dict[str, NameTally]
    internal_error: Callable[[str, BaseException], None]

    def native_breakdown(self) -> bool:
        """Whether the compiled core may run its twin of :meth:`span_started` and
        :meth:`span_ended` (they are this class's own, not overridden)."""
        cls = type(self)
        return (
            core is not None
            and cls.span_started is SpanBreakdown.span_started
            and cls.span_ended is SpanBreakdown.span_ended
            and not {"span_started", "span_ended"} & set(getattr(self, "__dict__", ()))
        )

    def span_started(self, live: Any) -> None:
        task = live.task
        if task is None:
            return
        st = getattr(task, ATTR, None)
        if type(st) is not TaskState:
            st = task_state_of(task)
            if st is None:
                return
        step_start = st.start_ns
        if not step_start or st.ls.running is not st:
            return
        try:
            # the task's running totals at the span's start (inside the running step), and
            # its longest ready->run wait so far, which restarts from 0 for the span
            nested = st.nested_ns
            longest = st.max_sched_ns
            if longest:
                st.max_sched_earlier = max(st.max_sched_earlier, longest)
                st.max_sched_ns = 0
            held = st.held  # likewise the longest wait another task explained
            if held is not NO_HELD:
                st.held = NO_HELD
            off = st.offcpu
            live.breakdown = (
                st,
                st.run_ns + live.start_ns - step_start - nested,
                st.sched_ns + nested,
                st.io_ns,
                st.exec_ns,
                st.steps,
                longest,
                st.blocked_ns if off is None else st.blocked_at(live.start_ns),
                st.x,
                held,
            )
            creator = st.span
            if creator is not None and creator.end_ns:
                self.link_outliving(live, creator)
        except Exception as exc:
            live.breakdown = None
            self.internal_error("starting a span breakdown", exc)

    def link_outliving(self, live: Any, creator: Any) -> None:
        """``live`` starts in a task that outlived its creating span ``creator`` (ended):
        when ``creator`` is its parent, link to the request instead of parenting."""
        if live.parent_id == creator.span_id:
            live.parent_id = None
            live.trace_id = getrandbits(128) or 1
            live.extra = {"links": (creator.span_id,)}

    def span_ended(self, live: Any) -> None:
        at_start = live.breakdown
        if at_start is None:
            return
        try:
            st, run0, sched0, io0, ex0, steps0, longest0, blocked0, x0, held0 = at_start
            if st.ls.running is st and st.start_ns:
                nested = st.nested_ns
                end = live.end_ns
                run = st.run_ns + end - st.start_ns - nested - run0
                sched = st.sched_ns + nested - sched0
                io = st.io_ns - io0
                ex = st.exec_ns - ex0
                off = st.offcpu
                blocked = (st.blocked_ns if off is None else st.blocked_at(end)) - blocked0
                longest = st.max_sched_ns
                if longest0 > longest:  # what an enclosing span had seen before this one
                    st.max_sched_ns = longest0
                blocked = min(max(blocked, 0), run)  # a span begun inside a sampled step: at most its run
                own = cp = (run - blocked, blocked, sched, io, ex)
                held_by = None
                x = st.x
                if x is not x0:  # some waits were explained by other tasks: the critical path differs
                    cp = tuple(mine + later - earlier for mine, later, earlier in zip(own, x, x0))
                    held_by = st.held[1]
                if held0[0] > st.held[0]:
                    st.held = held0
                breakdown = live.breakdown = (
                    cp[0],
                    cp[2],
                    cp[3],
                    cp[4],
                    st.steps - steps0 + 1,
                    longest,
                    cp[1],
                    own if cp is not own else None,
                    held_by,
                )
                tally = self.by_name.get(live.name)
                if tally is None:
                    tally = self._name_tally(live.name)
                if tally is not None:
                    recent = tally.recent
                    recent.append(breakdown)
                    if len(recent) >= TALLY_FOLD_EVERY:
                        tally.fold()
            else:  # ended in another task or thread than it started in: no breakdown
                live.breakdown = None
            error = live.error
            if error is not None and error[0] == "error":
                self.add_error_stack(live, st)
        except Exception as exc:
            live.breakdown = None
            self.internal_error("ending a span breakdown", exc)

    def add_error_stack(self, live: Any, st: TaskState) -> None:
        """``live`` failed inside ``st``'s task: its stack, and the task's creation chain."""
        extra = live.extra
        stack = self._error_stack(st)
        live.extra = {**extra, "error_stack": stack} if extra else {"error_stack": stack}

    def _name_tally(self, name: str) -> NameTally | None:
        if len(self.by_name) >= _MAX_NAMES:
            return None
        tally = self.by_name[name] = NameTally()
        return tally

    def _error_stack(self, st: TaskState) -> str:
        task = st.task_ref() if st.task_ref is not None else None
        lines = running_chain(getattr(task.get_coro(), "cr_frame", None) if task is not None else None, skip=2)
        chain = creation_chain_of_state(st)
        return "\n".join(lines + chain)
