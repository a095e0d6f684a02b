"""Stacks of another thread: capture cheaply, find the user's frame, format lazily.

A captured stack is a tuple of ``(filename, line, function)`` triples, outermost
first; formatting into ``"path/file.py:41 in handle_search"`` strings happens
only when a record is built.
"""

from __future__ import annotations

import linecache
import os
import re
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

from ..._paths import LIBRARY_DIRS as _LIBRARY_DIRS
from ..._paths import PACKAGE_DIR

__all__ = [
    "FrameKey",
    "calls_blocking",
    "capture",
    "format_frame",
    "format_stack",
    "frame_list",
    "innermost_user",
    "is_user_file",
]

FrameKey = tuple[str, int, str]



_user_cache: dict[str, bool] = {}


def is_user_file(filename: str) -> bool:
    """True for the program's own files: not asynclens, the standard library,
    installed packages or frozen/generated code."""
    known = _user_cache.get(filename)
    if known is not None:
        return known
    if filename.startswith("<"):
        user = filename in ("<stdin>", "<string>")
    elif filename.startswith(PACKAGE_DIR):
        user = False
    else:
        user = not os.path.abspath(filename).startswith(_LIBRARY_DIRS)
    if len(_user_cache) < 10_000:
        _user_cache[filename] = user
    return user


def capture(frame: Any, limit: int = 96) -> tuple[FrameKey, ...]:
    """The stack ending at ``frame``, outermost first (at most ``limit`` innermost frames)."""
    out: list[FrameKey] = []
    append = out.append
    while frame is not None and len(out) < limit:
        code = frame.f_code
        append((code.co_filename, frame.f_lineno or 0, code.co_name))
        frame = frame.f_back
    out.reverse()
    return tuple(out)


def innermost_user(stack: Sequence[FrameKey]) -> FrameKey | None:
    """The innermost frame of the program's own code; failing that, the innermost
    frame outside asynclens and asyncio; None for an empty stack."""
    for key in reversed(stack):
        if is_user_file(key[0]):
            return key
    for key in reversed(stack):
        name = key[0]
        if not name.startswith(PACKAGE_DIR) and f"{os.sep}asyncio{os.sep}" not in name:
            return key
    return stack[-1] if stack else None


def format_frame(key: FrameKey) -> str:
    return f"{key[0]}:{key[1]} in {key[2]}"


def format_stack(stack: Iterable[FrameKey]) -> tuple[str, ...]:
    """The frames as strings, without asynclens's own wrappers (unless nothing else is left)."""
    stack = tuple(stack)
    theirs = [k for k in stack if not k[0].startswith(PACKAGE_DIR)]
    return tuple(format_frame(k) for k in (theirs or stack))


def frame_list(frame: FrameType | None, limit: int = 96) -> list[FrameType]:
    """The live frames ending at ``frame``, outermost first."""
    out: list[FrameType] = []
    while frame is not None and len(out) < limit:
        out.append(frame)
        frame = frame.f_back
    out.reverse()
    return out


#: Calls that block the calling thread, as they read on a source line.
_BLOCKING_CALLS = re.compile(
    r"\bsleep\(|\.recv(?:_into|from)?\(|\.accept\(|\.connect\(|\.sendall\(|\.acquire\(|\.join\("
    r"|\bselect\(|\.poll\(|urlopen\(|\.communicate\(|\.wait\(|\.getaddrinfo\(|\bgethostbyname\("
)


def calls_blocking(site: FrameKey) -> bool:
    """Whether the source line at ``site`` makes a call that blocks the thread
    (``time.sleep``, a socket call, ``select``, a lock, a join or wait): evidence,
    with the thread's CPU time, that a stall was a blocking call rather than CPU."""
    line = linecache.getline(site[0], site[1])
    return bool(line) and _BLOCKING_CALLS.search(line) is not None
