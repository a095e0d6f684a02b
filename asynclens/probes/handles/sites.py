"""Creation sites, captured cheaply and formatted lazily.

:func:`capture` walks the calling frames and keeps ``(code, instruction offset)``
pairs in a flat list (no strings, no ``linecache``; ``f_lasti`` is several times
cheaper to read than ``f_lineno``, whose line is looked up only when a report
needs it): a few hundred nanoseconds. Frames are
classified once per file: *infrastructure* (the standard library, asynclens,
wrapt, uvloop) or *user* (everything else, tests and third-party code
included). The walk stops after a few user frames; :func:`site_of` and
:func:`stack_of` turn the pairs into ``"file:line in function"`` strings only
when a report needs them.

A call whose first non-standard-library frame belongs to asynclens itself (a
sink opening its file, an exporter's socket) is asynclens's own: ``capture``
returns ``None`` and the caller does not record it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

from ..._paths import PACKAGE_DIR

__all__ = ["capture", "capture_from", "code_location", "is_user_code", "line_at", "site_of", "stack_of"]

USER, INFRA, OWN = 0, 1, 2

#: User frames kept per site; the walk gives up after MAX_FRAMES frames in all.
USER_FRAMES = 4
MAX_FRAMES = 40

_stdlib_dirs = tuple(
    {os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")}
    | {os.path.abspath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")}
)
_site_dirs = tuple({os.path.abspath(p) + os.sep for k in ("purelib", "platlib") for p in (sysconfig.get_paths()[k],)})
_infra_packages = ("wrapt", "uvloop")
_classes: dict[str, int] = {}


#: asynclens modules that only pass the program's own calls through (loop
#: watcher, span wrappers, executor context): infrastructure, not "asynclens's own".
_TRANSPARENT = frozenset(
    os.path.join(*parts)
    for parts in (
        ("probes", "_loops.py"),
        ("tracing", "executor.py"),
        ("probes", "_patch.py"),
        ("tracing", "spans.py"),
        ("probes", "handles", "patches.py"),
    )
)


def _classify(filename: str) -> int:
    if filename.startswith(PACKAGE_DIR):
        kind = INFRA if filename[len(PACKAGE_DIR) :] in _TRANSPARENT else OWN
    elif filename.startswith("<frozen"):
        kind = INFRA
    elif "site-packages" in filename or filename.startswith(_site_dirs):
        package = filename.split("site-packages" + os.sep, 1)[-1].split(os.sep, 1)[0]
        kind = INFRA if package in _infra_packages else USER
    elif filename.startswith(_stdlib_dirs):
        kind = INFRA
    else:
        kind = USER
    _classes[filename] = kind
    return kind


def capture(depth: int = 2) -> list[Any] | None:
    """``[code, lasti, code, lasti, ...]`` innermost first, from ``depth`` frames up.

    ``None`` when the call comes from asynclens itself.
    """
    return capture_from(sys._getframe(depth))


def capture_from(frame: FrameType | None) -> list[Any] | None:
    """Like :func:`capture`, starting at ``frame``."""
    pairs: list[Any] = []
    append = pairs.append
    classes = _classes
    users = 0
    total = 0
    while frame is not None:
        code = frame.f_code
        kind = classes.get(code.co_filename)
        if kind is None:
            kind = _classify(code.co_filename)
        if kind == USER:
            users += 1
        elif kind == OWN and not users:
            return None
        append(code)
        append(frame.f_lasti)
        total += 1
        if users >= USER_FRAMES or total >= MAX_FRAMES:
            break
        frame = frame.f_back
    return pairs


def _short_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith(".." + os.sep) else rel


_locations: dict[tuple[CodeType, int | None], str] = {}


def code_location(code: CodeType, lineno: int | None) -> str:
    """``"path/to/file.py:41 in handle_search"`` (cached: sites repeat)."""
    key = (code, lineno)
    text = _locations.get(key)
    if text is None:
        name = getattr(code, "co_qualname", code.co_name)
        text = f"{_short_path(code.co_filename)}:{lineno if lineno is not None else '?'} in {name}"
        if len(_locations) >= 10_000:
            _locations.clear()
        _locations[key] = text
    return text


def is_user_code(code: CodeType) -> bool:
    """Whether ``code`` is the program's own (not the stdlib, asynclens, wrapt, uvloop)."""
    kind = _classes.get(code.co_filename)
    if kind is None:
        kind = _classify(code.co_filename)
    return kind == USER


def _user_index(pairs: list[Any]) -> int:
    """Index (in pairs) of the innermost user frame, or of the innermost frame if none is."""
    for i in range(0, len(pairs), 2):
        if is_user_code(pairs[i]):
            return i
    return 0


def line_at(code: CodeType, lasti: int) -> int | None:
    """The source line of the instruction at byte offset ``lasti`` of ``code``."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return code.co_firstlineno


def _location(code: CodeType, lasti: int) -> str:
    key = (code, -1 - lasti)  # distinct from code_location's (code, lineno) keys
    text = _locations.get(key)
    if text is None:
        text = code_location(code, line_at(code, lasti))
        _locations[key] = text
    return text


def site_of(pairs: list[Any] | None) -> str | None:
    """The innermost user frame as ``"file:line in function"``."""
    if not pairs:
        return None
    i = _user_index(pairs)
    return _location(pairs[i], pairs[i + 1])


def stack_of(pairs: list[Any] | None) -> tuple[str, ...]:
    """The captured frames from the innermost user frame outwards, outermost first."""
    if not pairs:
        return ()
    i = _user_index(pairs)
    return tuple(_location(pairs[j], pairs[j + 1]) for j in range(len(pairs) - 2, i - 2, -2))
