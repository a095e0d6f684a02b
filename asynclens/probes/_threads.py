"""Another thread's CPU and scheduling state (Linux ``/proc`` where it helps): what the
lag watchdog reads while it samples a blocked loop, and what a long step reads of itself."""

from __future__ import annotations

import os
import platform
import threading
import time

__all__ = ["own_busy_ns", "thread_blocked_in_call", "thread_busy_ns", "thread_cpu_ns"]


def thread_cpu_ns(thread_id: int) -> int | None:
    """CPU time of another thread (POSIX), or None where the platform can't tell."""
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(thread_id))
    except (AttributeError, OSError, OverflowError):
        return None


#: System calls that block the calling thread (Linux), per machine: sleeps, waits for I/O,
#: reads and receives, accept/connect, waits for children, fsync. A futex is left out: the
#: loop thread waits on one for the GIL whenever the watchdog itself holds it.
_BLOCKING_SYSCALLS = {
    "x86_64": frozenset({0, 7, 17, 19, 23, 35, 42, 43, 45, 47, 61, 74, 75, 230, 232, 247, 270, 271, 281, 288, 441}),
    "aarch64": frozenset({22, 63, 67, 72, 73, 82, 83, 95, 101, 115, 202, 203, 207, 212, 242, 260, 441}),
}.get(platform.machine())


def thread_blocked_in_call(thread_id: int) -> bool | None:
    """Whether another thread is inside a blocking system call right now (Linux
    ``/proc/.../syscall``): True in a sleep, a read, a poll, ...; False when it runs or
    waits for the GIL (it wants a CPU); None where this cannot be read."""
    if _BLOCKING_SYSCALLS is None:
        return None
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    native = getattr(thread, "native_id", None)
    if native is None:
        return None
    try:
        fd = os.open(f"/proc/self/task/{native}/syscall", os.O_RDONLY)
        try:
            first = os.read(fd, 64).split(maxsplit=1)[0]
        finally:
            os.close(fd)
    except (OSError, IndexError):
        return None
    return first.isdigit() and int(first) in _BLOCKING_SYSCALLS


def _queued_ns(path: str) -> int | None:
    """Time a thread waited in the run queue for a CPU (the second field of ``schedstat``)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            return int(os.read(fd, 128).split()[1])
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return None


def thread_busy_ns(thread_id: int) -> int | None:
    """Time another thread was runnable: its CPU time plus the time it waited in the run
    queue for a CPU (Linux ``schedstat``), so that a CPU-bound stall on a loaded machine
    still reads as CPU, not as a blocking call. Its CPU time where the queue is not known.
    (The CPU part comes from the thread's CPU clock, exact at any instant; ``schedstat``'s
    own run time is brought up to date only at the scheduler's ticks.)"""
    cpu = thread_cpu_ns(thread_id)
    if cpu is None:
        return None
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    native = getattr(thread, "native_id", None)
    queued = _queued_ns(f"/proc/self/task/{native}/schedstat") if native is not None else None
    return cpu + (queued or 0)


def own_busy_ns() -> int:
    """The calling thread's runnable time, as :func:`thread_busy_ns` reads it for another."""
    return time.thread_time_ns() + (_queued_ns("/proc/thread-self/schedstat") or 0)
