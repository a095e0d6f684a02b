"""Reversible monkey-patches: installed while a session needs them, then removed.

A :class:`Patch` replaces ``owner.attr`` with a wrapper around the original and,
on ``remove()``, puts back exactly what was there, but only if the attribute is
still its own wrapper: asynclens never removes what it did not add. When another
of asynclens's patches sits on top of it (removed in the other order: an outer
session's probe, then the pytest plugin's own patch), the one on top is made to
restore what was there before both, so nothing of ours is left once both are off.

Functions of modules and methods of classes get a plain function wrapper
(``functools.update_wrapper``: name, docstring, ``__wrapped__`` and so the
signature survive); it binds like the original did and costs a quarter of a
``wrapt.FunctionWrapper`` per call, which patched hot paths (task creation,
``open``, socket creation, executor jobs) pay. Anything else (a patched class,
an instance attribute) gets a ``wrapt.FunctionWrapper``.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any

import wrapt

__all__ = ["Patch", "caller_of_patched"]

_MISSING = object()
_INSTALLED: list[Patch] = []  # every installed Patch, to splice one out from under another


class Patch:
    """Replace ``owner.<attr>`` with a wrapper calling ``wrapper(original, instance, args, kwargs)``
    (wrapt's convention, ``original`` bound to ``instance`` for methods) while installed."""

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
        patched = _plain_wrapper(self.owner, original, self.wrapper) or wrapt.FunctionWrapper(original, self.wrapper)
        setattr(self.owner, self.attr, patched)
        self._installed = patched
        _INSTALLED.append(self)

    def remove(self) -> None:
        patched = self._installed
        if patched is None:
            return
        self._installed = None
        if self in _INSTALLED:
            _INSTALLED.remove(self)
        current = self.owner.__dict__.get(self.attr, _MISSING) if isinstance(self.owner, type) else getattr(self.owner, self.attr, _MISSING)
        if current is not patched:
            # Someone patched over us: leave theirs in place. If it is one of ours, it will
            # put back what we replaced, not our wrapper (which passes through meanwhile).
            for above in _INSTALLED:
                if above.owner is self.owner and above.attr == self.attr and above._own is patched:
                    above._own = self._own
            return
        if self._own is _MISSING:
            delattr(self.owner, self.attr)
        else:
            setattr(self.owner, self.attr, self._own)

    def __repr__(self) -> str:
        state = "installed" if self.installed else "removed"
        return f"<Patch {getattr(self.owner, '__name__', self.owner)!s}.{self.attr} {state}>"


_METHODS = (types.FunctionType, types.MethodDescriptorType, types.WrapperDescriptorType)


def _plain_wrapper(owner: Any, original: Any, wrapper: Callable[..., Any]) -> Callable[..., Any] | None:
    """A plain function standing in for ``original`` on ``owner``, or None where only a proxy will do."""
    if isinstance(owner, types.ModuleType) and callable(original) and not isinstance(original, type):

        def function(*args: Any, **kwargs: Any) -> Any:
            return wrapper(original, None, args, kwargs)

        patched = function
    elif isinstance(owner, type) and isinstance(original, _METHODS):
        bind = original.__get__

        def method(self: Any, /, *args: Any, **kwargs: Any) -> Any:
            return wrapper(bind(self, type(self)), self, args, kwargs)

        patched = method
    else:
        return None
    functools.update_wrapper(patched, original)
    return patched


def caller_of_patched() -> types.FrameType | None:
    """For a ``wrapper`` of a :class:`Patch`: the frame that called the patched function
    (past the plain function this module puts in between, when there is one)."""
    frame: Any = sys._getframe(2)
    if frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame
