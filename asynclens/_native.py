"""Which implementation of the hot paths runs: the compiled core or pure Python.

``asynclens._core`` (built from ``_core.c`` by the package's own build) times task
steps and wake-ups in C. It is used when it imports; the pure-Python code is the
complete fallback, chosen when the extension is missing (a build without a
compiler, a subinterpreter that cannot load it) or when the environment sets
``ASYNCLENS_PURE_PYTHON=1``.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["IMPLEMENTATION", "core"]

core: ModuleType | None = None
if os.environ.get("ASYNCLENS_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from . import _core as core  # type: ignore[attr-defined, no-redef]
    except ImportError:
        core = None

#: ``"c"`` when the compiled core runs, ``"python"`` otherwise.
IMPLEMENTATION = "c" if core is not None else "python"
