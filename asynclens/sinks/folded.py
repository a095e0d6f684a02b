"""Folded stacks (``a;b;c 123``) for flamegraph.pl, inferno and speedscope.

Each line is one stack of span names, root first, and its self time in
microseconds (wall clock by default, on-CPU with ``weight="cpu"``); stalls add
``[event loop stall];frame;frame`` lines with the sampled Python stacks (the
program's frames; ``full_stacks=True`` keeps the libraries' too).
"""

from __future__ import annotations

import os

from ..report.flame import weighted_stacks
from ..report.rundata import DEFAULT_LIMIT, RunData
from ._rendering import RenderingSink

__all__ = ["FoldedSink", "render_folded"]

_WEIGHTS = {"wall": 0, "cpu": 1}


def _clean(name: str) -> str:
    # ';' separates frames and the last space separates the count: neither may appear in a frame
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ").strip() or "?"


def render_folded(data: RunData, weight: str = "wall", *, full_stacks: bool = False) -> str:
    """The folded-stacks text of ``data``: one ``stack count`` line per distinct stack, sorted."""
    if weight not in _WEIGHTS:
        raise ValueError(f"folded weight must be 'wall' or 'cpu', not {weight!r}")
    column = _WEIGHTS[weight]
    lines = []
    for stack, weights in weighted_stacks(data, full_stacks=full_stacks).items():
        micros = weights[column] // 1000
        if micros > 0:
            lines.append(f"{';'.join(_clean(f) for f in stack)} {micros}")
    lines.sort()
    return "\n".join(lines) + ("\n" if lines else "")


class FoldedSink(RenderingSink):
    """Writes folded stacks (self time in µs) when the session ends; ``weight`` is ``"wall"`` or ``"cpu"``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        weight: str = "wall",
        full_stacks: bool = False,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        if weight not in _WEIGHTS:
            raise ValueError(f"FoldedSink(weight={weight!r}): must be 'wall' or 'cpu'")
        super().__init__(path, limit=limit)
        self.weight = weight
        self.full_stacks = full_stacks

    def render(self, data: RunData) -> str:
        return render_folded(data, self.weight, full_stacks=self.full_stacks)
