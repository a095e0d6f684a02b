"""The text summary (what ``python -m asynclens run`` prints) written to a file."""

from __future__ import annotations

from ..report.rundata import RunData
from ..report.summary import SpanAggregates, render_summary
from ._rendering import RenderingSink

__all__ = ["TextSink", "render_text"]


def render_text(data: RunData, *, color: bool = False) -> str:
    """The text report of ``data``: slowest spans, errors, stalls, leaks, its problems."""
    aggregates = SpanAggregates()
    for part in data.parts:
        aggregates.add_batch(part.spans)
        for records in part.other.values():
            aggregates.add_batch(records)
    first, last = data.extent()
    return render_summary(aggregates, None, max(0, last - first), {"problems": data.problems()}, color=color) + "\n"


class TextSink(RenderingSink):
    """Writes the text summary of the run to ``path`` (``.txt``) when the session closes."""

    def render(self, data: RunData) -> str:
        return render_text(data)
