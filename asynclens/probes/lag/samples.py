"""The samples the watchdog takes of a blocked loop: per step (or task), their stacks,
the loop thread's CPU readings and whether it was in a blocking call."""

from __future__ import annotations

from typing import Any

from .frames import FrameKey

__all__ = ["Collection", "Segment"]

MAX_DISTINCT_STACKS = 64
MAX_SAMPLES = 10_000
MIN_CPU_SPAN_NS = 2_000_000  # CPU readings closer than this say little about a share


class Segment:
    """Samples of one task's step while its loop was blocked (one step, when the
    scheduler probe names the running step; else one task's run of samples)."""

    __slots__ = (
        "async_stack",
        "blocked_votes",
        "cpu_first",
        "cpu_last",
        "first_ns",
        "last_ns",
        "samples",
        "span",
        "stacks",
        "step",
        "task",
        "task_key",
        "thread_cpu_first",
        "votes",
    )

    def __init__(self, task_key: Any) -> None:
        self.task_key = task_key
        self.stacks: dict[tuple[FrameKey, ...], int] = {}
        self.samples = 0
        self.first_ns = 0
        self.last_ns = 0
        self.cpu_first: tuple[int, int] | None = None  # (time, thread cpu) at the first sample
        self.cpu_last: tuple[int, int] | None = None  # ... and at the latest
        self.thread_cpu_first: tuple[int, int] | None = None  # (time, CPU time proper) at the first sample
        self.step: Any = None  # the scheduler's TaskState of the sampled step, if known
        self.votes = 0  # samples that could tell whether the thread was in a blocking call
        self.blocked_votes = 0  # ... and of those, how many found it in one
        self.task: str | None = None
        self.span: tuple[int, int, str] | None = None  # trace_id, span_id, name
        self.async_stack: tuple[str, ...] = ()

    def add(self, t: int, stack: tuple[FrameKey, ...]) -> None:
        if self.samples >= MAX_SAMPLES:
            return
        if not self.samples:
            self.first_ns = t
        self.last_ns = t
        self.samples += 1
        stacks = self.stacks
        if stack in stacks or len(stacks) < MAX_DISTINCT_STACKS:
            stacks[stack] = stacks.get(stack, 0) + 1
        else:
            stacks[()] = stacks.get((), 0) + 1  # "other stacks", still counted

    def absorb(self, other: Segment) -> None:
        for stack, n in other.stacks.items():
            if stack in self.stacks or len(self.stacks) < MAX_DISTINCT_STACKS:
                self.stacks[stack] = self.stacks.get(stack, 0) + n
            else:
                self.stacks[()] = self.stacks.get((), 0) + n
        if other.samples > self.samples:
            self.task, self.span, self.async_stack = other.task, other.span, other.async_stack
        if other.samples and (not self.samples or other.first_ns < self.first_ns):
            self.first_ns = other.first_ns
            self.cpu_first = other.cpu_first or self.cpu_first
            self.thread_cpu_first = other.thread_cpu_first or self.thread_cpu_first
        if other.cpu_last is not None and (self.cpu_last is None or other.cpu_last[0] > self.cpu_last[0]):
            self.cpu_last = other.cpu_last
        self.step = self.step or other.step
        self.votes += other.votes
        self.blocked_votes += other.blocked_votes
        self.last_ns = max(self.last_ns, other.last_ns)
        self.samples += other.samples

    def cpu_fraction(self) -> float | None:
        """The loop thread's on-CPU share: the share of samples that did not find it in a
        blocking system call where that can be read, else from its runnable time between
        the first and the latest sample."""
        if self.votes:
            return 1.0 - self.blocked_votes / self.votes
        first, last = self.cpu_first, self.cpu_last
        if first is None or last is None or last[0] - first[0] < MIN_CPU_SPAN_NS:
            return None
        return min(1.0, max(0.0, (last[1] - first[1]) / (last[0] - first[0])))


class Collection:
    """Samples taken during one busy stretch of a loop (named by its last heartbeat).

    A new :class:`Segment` starts whenever the running task changes, so two
    blocking steps that ran back to back without a heartbeat between them
    become two stalls.
    """

    __slots__ = ("segments", "stretch")

    def __init__(self, stretch: int) -> None:
        self.stretch = stretch
        self.segments: list[Segment] = []

    @property
    def samples(self) -> int:
        return sum(seg.samples for seg in self.segments)

    def segment_for(self, task_key: Any) -> tuple[Segment, bool]:
        """The segment to add a sample of ``task_key`` to; True when it is new."""
        segments = self.segments
        if segments and (segments[-1].task_key == task_key or len(segments) >= 32):
            return segments[-1], False
        seg = Segment(task_key)
        segments.append(seg)
        return seg, True
