"""The handle probe: sockets, files, subprocesses, transports, tasks and threads
left open, with where they were opened, and I/O rates."""

from .probe import HandleProbe, HandleStatistics

__all__ = ["HandleProbe", "HandleStatistics"]
