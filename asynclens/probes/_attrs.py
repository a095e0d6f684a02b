"""Instance-attribute hooks without touching ``obj.__dict__``.

On CPython 3.11 and 3.12, reading ``obj.__dict__`` of an object whose attributes
live inline turns them into a real dict for good, and every ``self.x`` of that
object takes a slower path from then on: an event loop whose ``__dict__`` was
read once costs ~0.8 µs more per iteration, a transport or protocol ~0.25 µs
more per request. Hooks are found and removed through ``getattr``/``delattr``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["instance_attr", "remove_instance_attr"]

_MISSING = object()


def instance_attr(obj: Any, name: str) -> Any:
    """What an instance attribute ``name`` of ``obj`` shadows the class with, else None."""
    value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        return None
    cls_value = getattr(type(obj), name, _MISSING)
    if value is cls_value:
        return None  # a plain class attribute
    if getattr(value, "__self__", None) is obj and getattr(value, "__func__", _MISSING) is cls_value:
        return None  # the class's own method, bound
    return value


def remove_instance_attr(obj: Any, name: str, expected: Any = None) -> bool:
    """Delete ``obj``'s instance attribute ``name`` (only if it is ``expected``, when given)."""
    current = instance_attr(obj, name)
    if current is None or (expected is not None and current is not expected):
        return False
    try:
        delattr(obj, name)
    except AttributeError:
        return False
    return True
