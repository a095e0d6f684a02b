"""The scheduler probe: task steps, where each span's time went, scheduling delay,
GC pauses and executor jobs."""

from .probe import SchedulerProbe, SchedulerStatistics, async_stack, creation_chain

__all__ = ["SchedulerProbe", "SchedulerStatistics", "async_stack", "creation_chain"]
