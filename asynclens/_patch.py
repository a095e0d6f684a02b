"""Reversible monkey-patches: installed while a session needs them, then removed.

A :class:`Patch` replaces ``owner.attr`` with a ``wrapt.FunctionWrapper`` around
the original (so signatures and introspection survive) and, on ``remove()``, puts
back exactly what was there, but only if the attribute is still its own wrapper:
asynclens never removes what it did not add.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt

__all__ = ["Patch"]

_MISSING = object()


class Patch:
    """Replace ``owner.<attr>`` with ``FunctionWrapper(original, wrapper)`` while installed."""

    __slots__ = ("owner", "attr", "wrapper", "_own", "_installed")

    def __init__(self, owner: Any, attr: str, wrapper: Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]) -> None:
        self.owner = owner
        self.attr = attr
        self.wrapper = wrapper
        self._own: Any = _MISSING
        self._installed: Any = None

    @property
    def installed(self) -> bool:
        return self._installed is not None

    def install(self) -> None:
        if self._installed is not None:
            return
        # For a class, remember whether the attribute was its own or inherited,
        # so removal restores inheritance instead of pinning a copy.
        namespace = getattr(self.owner, "__dict__", {})
        self._own = namespace.get(self.attr, _MISSING) if isinstance(self.owner, type) else getattr(self.owner, self.attr)
        original = getattr(self.owner, self.attr) if self._own is _MISSING else self._own
        if isinstance(original, (staticmethod, classmethod)):
            raise TypeError(f"cannot patch {self.attr}: wrap the function, not the {type(original).__name__}")
        patched = wrapt.FunctionWrapper(original, self.wrapper)
        setattr(self.owner, self.attr, patched)
        self._installed = patched

    def remove(self) -> None:
        patched = self._installed
        if patched is None:
            return
        self._installed = None
        current = self.owner.__dict__.get(self.attr, _MISSING) if isinstance(self.owner, type) else getattr(self.owner, self.attr, _MISSING)
        if current is not patched:
            return  # someone else patched over us: leave their patch in place
        if self._own is _MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, self._own)

    def __repr__(self) -> str:
        state = "installed" if self.installed else "removed"
        return f"<Patch {getattr(self.owner, '__name__', self.owner)!s}.{self.attr} {state}>"
