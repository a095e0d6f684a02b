"""Leaks as a reader counts them (see :mod:`asynclens._leaks`, shared with the handles probe)."""

from __future__ import annotations

from .._leaks import LeakGroup, endpoints, group_leaks, left_open

__all__ = ["LeakGroup", "endpoints", "group_leaks", "left_open"]
