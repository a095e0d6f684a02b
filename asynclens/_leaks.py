"""Leaks as a reader counts them: one connection is one thing left open.

An asyncio connection is recorded twice, as its transport and as the socket
under it. :func:`group_leaks` pairs a transport leak with the socket leak of the
same endpoints (``"127.0.0.1:60590 -> 127.0.0.1:38419"`` in both descriptions)
into one ``connection``; anything else stays on its own. It lives at the top
level because both the handles probe (its summary line) and the reports count
leaks this way, and probes never import the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["LeakGroup", "endpoints", "group_leaks", "left_open"]

_ENDPOINTS = re.compile(r"(\S+ -> \S+)\s*$")


@dataclass
class LeakGroup:
    """One thing left open: a ``connection`` (its transport and its socket) or a single leak."""

    kind: str
    leak: Any  # the one whose site, span and stack stand for the group (the transport's)
    members: list[Any]

    @property
    def description(self) -> str:
        """The transport's description, then the socket's details (``socket fd=21 AF_INET``)."""
        main = str(getattr(self.leak, "description", None) or "")
        others = []
        for member in self.members:
            if member is self.leak:
                continue
            desc = str(getattr(member, "description", None) or "")
            pair = endpoints(desc)
            detail = desc[: -len(pair)].strip() if pair else desc
            kind = str(getattr(member, "handle_kind", None) or "handle")
            others.append(f"{kind} {detail}".strip())
        return main + (f" ({'; '.join(others)})" if others else "")


def endpoints(description: Any) -> str | None:
    """``"a:1 -> b:2"`` at the end of a handle's description, or None."""
    match = _ENDPOINTS.search(str(description or ""))
    return match.group(1) if match else None


def _key(leak: Any) -> tuple[Any, ...] | None:
    pair = endpoints(getattr(leak, "description", None))
    if pair is None:
        return None
    return (pair, getattr(leak, "closed_by", None))


def group_leaks(leaks: Iterable[Any]) -> list[LeakGroup]:
    """The leaks grouped (order of first appearance): each transport with the socket of
    its endpoints, when both were left open, as one ``connection``."""
    leaks = list(leaks)
    sockets: dict[tuple[Any, ...], list[Any]] = {}
    for leak in leaks:
        if getattr(leak, "handle_kind", None) == "socket":
            key = _key(leak)
            if key is not None:
                sockets.setdefault(key, []).append(leak)
    paired: set[int] = set()  # id() of the sockets shown with their transport
    partner: dict[int, Any] = {}  # id(transport) -> its socket
    for leak in leaks:
        if getattr(leak, "handle_kind", None) == "transport":
            key = _key(leak)
            waiting = sockets.get(key) if key is not None else None
            if waiting:
                socket = waiting.pop(0)
                paired.add(id(socket))
                partner[id(leak)] = socket
    groups: list[LeakGroup] = []
    for leak in leaks:
        if id(leak) in paired:
            continue  # shown with its transport
        socket = partner.get(id(leak))
        if socket is not None:
            groups.append(LeakGroup("connection", leak, [leak, socket]))
        else:
            groups.append(LeakGroup(str(getattr(leak, "handle_kind", None) or "handle"), leak, [leak]))
    return groups


def left_open(leaks: Iterable[Any]) -> int:
    """How many things were left open: a connection's transport and socket count once."""
    return len(group_leaks(leaks))
