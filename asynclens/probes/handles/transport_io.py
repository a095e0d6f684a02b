"""Counting a transport's bytes and operations through per-instance hooks."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from .._attrs import instance_attr, remove_instance_attr
from .registry import Entry

__all__ = ["RECEIVED", "SENT", "count_transport_io", "remove_hooks"]


def remove_hooks(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        hook = instance_attr(obj, name)
        if getattr(hook, "__asynclens_hook__", False):
            remove_instance_attr(obj, name, hook)


def count_transport_io(transport: Any, entry: Entry, totals: list[int]) -> None:
    """Count bytes and ops of a stdlib socket transport via instance attributes.

    The hooks reach the transport through the entry (a weak reference) and the
    protocol through a weak reference: a strong one from the object's own
    ``__dict__`` would form a cycle and change when it is collected.
    """
    io = entry.io = [0, 0, 0, None]  # sent, received, ops, weak ref to the protocol
    cls = type(transport)
    transport.write = _counted(cls.write, entry, SENT, len, io, totals)
    writelines = cls.writelines
    if writelines is not asyncio.WriteTransport.writelines:  # 3.12+: not built on write()

        def counted_writelines(list_of_data: Any) -> Any:
            list_of_data = list(list_of_data)
            n = sum(len(d) for d in list_of_data)
            io[0] += n
            io[2] += 1
            totals[0] += n
            totals[2] += 1
            return writelines(entry(), list_of_data)

        counted_writelines.__asynclens_hook__ = True  # type: ignore[attr-defined]
        transport.writelines = counted_writelines
    protocol = getattr(transport, "_protocol", None)
    if protocol is None:
        return
    pref = io[3] = weakref.ref(protocol)
    proto_cls = type(protocol)
    try:
        if isinstance(protocol, asyncio.BufferedProtocol):
            protocol.buffer_updated = _counted(proto_cls.buffer_updated, pref, RECEIVED, int, io, totals)  # type: ignore[method-assign,assignment]
        elif instance_attr(protocol, "data_received") is None:  # (no __dict__: the setattr fails below)
            protocol.data_received = _counted(proto_cls.data_received, pref, RECEIVED, len, io, totals)
    except (AttributeError, TypeError):
        pass  # a protocol with __slots__: receives are not counted


SENT, RECEIVED = 0, 1


def _counted(
    method: Any, owner: Callable[[], Any], side: int, size: Callable[[Any], int], io: list[Any], totals: list[int]
) -> Callable[[Any], Any]:
    """``method`` of the object ``owner()`` returns, counting one operation of ``size(arg)``
    bytes on ``side`` (SENT or RECEIVED) per call, for the object and the session."""

    def counted(arg: Any) -> Any:
        n = size(arg)
        io[side] += n
        io[2] += 1
        totals[side] += n
        totals[2] += 1
        return method(owner(), arg)

    counted.__asynclens_hook__ = True  # type: ignore[attr-defined]
    return counted
