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


def thread_busy_ns(thread_id: int) -> int | None:
    """Time another thread was runnable: on a CPU, or waiting in the run queue for one
    (Linux ``schedstat``), so that a CPU-bound stall on a loaded machine still reads as
    CPU, not as a blocking call. Its CPU time where ``schedstat`` is not readable."""
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    native = getattr(thread, "native_id", None)
    if native is not None:
        try:
            fd = os.open(f"/proc/self/task/{native}/schedstat", os.O_RDONLY)
            try:
                on_cpu, queued = os.read(fd, 128).split()[:2]
            finally:
                os.close(fd)
            return int(on_cpu) + int(queued)
        except (OSError, ValueError):
            pass
    return thread_cpu_ns(thread_id)


def own_busy_ns() -> int:
    """The calling thread's runnable time (as :func:`thread_busy_ns`), else its CPU time."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            on_cpu, queued = os.read(fd, 128).split()[:2]
        finally:
            os.close(fd)
        return int(on_cpu) + int(queued)
    except (OSError, ValueError):
        return time.thread_time_ns()
