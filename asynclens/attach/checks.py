"""Whether a process can be attached to, read from ``/proc`` before touching it.

Each problem is an :class:`AttachError` whose message is one line naming it; nothing
here writes to the target.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

__all__ = ["AttachError", "TargetInfo", "check_attacher", "inspect_target"]

_VERSION_IN_NAME = re.compile(r"python(\d+)\.(\d+)")
_LIBPYTHON = re.compile(r"libpython(\d+)\.(\d+)")


class AttachError(Exception):
    """Attaching failed or is impossible: the message is the one line to print."""


@dataclass(frozen=True)
class TargetInfo:
    """What ``/proc`` tells about the process to attach to."""

    pid: int
    exe: str
    #: ``(major, minor)`` from the executable's or libpython's name; None when neither says.
    version: tuple[int, int] | None
    #: The effective user id the target runs as.
    uid: int


def check_attacher() -> None:
    """Attaching needs ``sys.remote_exec`` (Python 3.14+) and Linux's ``/proc``."""
    if sys.version_info < (3, 14) or not hasattr(sys, "remote_exec"):
        here = "%d.%d" % sys.version_info[:2]
        raise AttachError(f"attach needs Python 3.14 or later (sys.remote_exec); this is Python {here}")
    if not os.path.isdir("/proc/self"):
        raise AttachError("attach needs /proc (Linux)")


def inspect_target(pid: int) -> TargetInfo:
    """Check that ``pid`` is a live Python of this interpreter's minor version with remote
    debugging allowed; raise :class:`AttachError` otherwise."""
    if pid <= 0:
        raise AttachError(f"{pid} is not a process id")
    if pid == os.getpid():
        raise AttachError("cannot attach to the attaching process itself")
    proc = f"/proc/{pid}"
    if not os.path.exists(proc):
        raise AttachError(f"no process with PID {pid}")
    try:
        exe = os.path.realpath(os.readlink(f"{proc}/exe"))
    except PermissionError:
        raise AttachError(
            f"not permitted to inspect PID {pid} (another user's process? attach as its user or as root)"
        ) from None
    except OSError as exc:
        if not os.path.exists(proc):
            raise AttachError(f"no process with PID {pid}") from None
        raise AttachError(f"cannot read {proc}/exe: {exc.strerror or exc} (a kernel thread or a zombie?)") from None
    version = _version_of(os.path.basename(exe), proc)
    if version is None and "python" not in os.path.basename(exe).lower():
        raise AttachError(f"PID {pid} is not a Python process ({exe})")
    here = sys.version_info[:2]
    if version is not None and version != here:
        theirs = "%d.%d" % version
        mine = "%d.%d" % here
        if version < (3, 14):
            raise AttachError(
                f"PID {pid} runs Python {theirs}: attaching needs 3.14 or later in the target (sys.remote_exec)"
            )
        raise AttachError(
            f"PID {pid} runs Python {theirs} and this is Python {mine}: attach with python{theirs} -m asynclens"
        )
    disabled = _remote_debug_disabled(proc)
    if disabled:
        raise AttachError(f"PID {pid} has remote debugging disabled ({disabled})")
    return TargetInfo(pid=pid, exe=exe, version=version, uid=_effective_uid(proc))


def _version_of(name: str, proc: str) -> tuple[int, int] | None:
    match = _VERSION_IN_NAME.search(name)
    if match is None:
        try:
            with open(f"{proc}/maps", encoding="utf-8", errors="replace") as maps:
                match = _LIBPYTHON.search(maps.read())
        except OSError:
            match = None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _remote_debug_disabled(proc: str) -> str | None:
    """How the target turned remote debugging off (``sys.remote_exec`` would then return
    without error, and the script would never run), or None."""
    try:
        with open(f"{proc}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        argv = []
    for i, arg in enumerate(argv):
        if arg == b"-X" and i + 1 < len(argv) and argv[i + 1] == b"disable_remote_debug":
            return "-X disable_remote_debug"
        if arg == b"-Xdisable_remote_debug":
            return "-X disable_remote_debug"
    try:
        with open(f"{proc}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        env = []
    for entry in env:
        if entry.startswith(b"PYTHON_DISABLE_REMOTE_DEBUG=") and entry.partition(b"=")[2]:
            return "PYTHON_DISABLE_REMOTE_DEBUG is set"
    return None


def _effective_uid(proc: str) -> int:
    try:
        with open(f"{proc}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid()
