"""The ``resources`` probe: waits on asyncio locks, semaphores, conditions, events, queues and barriers."""

from .probe import ResourceProbe, ResourceStatistics

__all__ = ["ResourceProbe", "ResourceStatistics"]
