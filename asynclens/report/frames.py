"""Which recorded frames are the program's, a library's or asynclens's own.

Frames travel as strings (``"path/file.py:41 in func"``). Every renderer shows
the program's frames by default and the full stack (the program's and the
libraries', runpy and asyncio included) one click or one option away;
asynclens's own frames (its wrappers, patches and CLI) are never shown.

Classification works on files recorded on another machine too: a file is
asynclens's when it is under this package's folder, or when its path ends in
``asynclens/<a file this package has>``; a library's when it is under this
interpreter's standard library or site-packages, under any ``site-packages``,
``dist-packages`` or ``lib/pythonX.Y`` folder, or frozen (``<frozen runpy>``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from .._paths import LIBRARY_DIRS as _LIBRARY_DIRS
from .._paths import PACKAGE_DIR
from .rundata import frame_label

__all__ = [
    "ASYNCLENS",
    "LIBRARY",
    "PROGRAM",
    "classify_frame",
    "classify_path",
    "clean_frame",
    "clean_path",
    "shown_frames",
    "split_stack",
]

FrameKind = Literal["program", "library", "asynclens"]
PROGRAM: FrameKind = "program"
LIBRARY: FrameKind = "library"
ASYNCLENS: FrameKind = "asynclens"

_LIBRARY_PARTS = re.compile(r"[/\\](?:site-packages|dist-packages|lib[/\\]python\d+(?:\.\d+)?t?|Lib)[/\\]")
_FRAME = re.compile(r"^(?P<path>.*?):(?P<line>\d+|\?|None)(?P<rest>(?: in .*)?)$", re.S)


_cache: dict[str, FrameKind] = {}


def _split(frame: str) -> tuple[str, str]:
    """``("path/file.py", ":41 in func")``; a frame without a line number is all path."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match.group("path"), frame[len(match.group("path")) :]


def _ours(path: str) -> bool:
    if path.startswith(PACKAGE_DIR):
        return True
    # recorded elsewhere: ".../asynclens/tracing/spans.py" where this package has tracing/spans.py
    norm = "/" + path.replace("\\", "/")
    at = norm.rfind("/asynclens/")
    if at < 0:
        return False
    inner = norm[at + len("/asynclens/") :]
    return bool(inner) and os.path.isfile(os.path.join(PACKAGE_DIR, *inner.split("/")))


def classify_path(path: str) -> FrameKind:
    """``"program"``, ``"library"`` or ``"asynclens"`` for a frame's file."""
    known = _cache.get(path)
    if known is not None:
        return known
    kind: FrameKind
    if path.startswith("<"):
        kind = PROGRAM if path in ("<stdin>", "<string>") or path.startswith("<ipython") else LIBRARY
    elif _ours(path):
        kind = ASYNCLENS
    elif os.path.abspath(path).startswith(_LIBRARY_DIRS) or _LIBRARY_PARTS.search(path):
        kind = LIBRARY
    else:
        kind = PROGRAM
    if len(_cache) < 10_000:
        _cache[path] = kind
    return kind


def classify_frame(frame: Any) -> FrameKind:
    """``"program"``, ``"library"`` or ``"asynclens"`` for a recorded frame."""
    return classify_path(_split(frame_label(frame))[0])


def clean_path(path: str) -> str:
    """``/tmp/x/a_sess/../prog.py`` -> ``/tmp/x/prog.py`` (pseudo-files like ``<stdin>`` unchanged)."""
    if not path or path.startswith("<"):
        return path
    return os.path.normpath(path)


def clean_frame(frame: Any) -> str:
    """A frame's label with its path normalised."""
    path, rest = _split(frame_label(frame))
    return clean_path(path) + rest


def shown_frames(stack: Iterable[Any], *, full: bool = False) -> list[str]:
    """A stack's frames to show, outermost first, paths normalised: the program's
    frames (``full=False``) or the program's and the libraries' (``full=True``);
    never asynclens's. A stack with no program frame shows its library frames."""
    kept: list[str] = []
    libs: list[str] = []
    for frame in stack:
        kind = classify_frame(frame)
        if kind == ASYNCLENS:
            continue
        label = clean_frame(frame)
        libs.append(label)
        if full or kind == PROGRAM:
            kept.append(label)
    return kept or libs


def split_stack(stack: Sequence[Any]) -> tuple[list[str], list[str]]:
    """``(program frames, full stack)`` for a recorded stack (see :func:`shown_frames`)."""
    return shown_frames(stack), shown_frames(stack, full=True)
