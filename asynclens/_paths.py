"""Where code lives: asynclens's own folder and the interpreter's library folders, so that
probes and reports can tell the program's frames from ours and from libraries'. Imports
nothing of asynclens."""

from __future__ import annotations

import os
import sysconfig

__all__ = ["LIBRARY_DIRS", "PACKAGE_DIR"]

#: The ``asynclens/`` folder, ending in a separator: a frame whose file starts with it is ours.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _library_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.abspath(path) + os.sep)
    return tuple(sorted(dirs))


#: The standard library's and installed packages' folders, each ending in a separator.
LIBRARY_DIRS = _library_dirs()
