"""The text summary (what ``python -m asynclens run`` prints) written to a file."""

from __future__ import annotations

from ..report.rundata import RunData
from ..report.summary import WIDTH, summary_from_run
from ._rendering import RenderingSink

__all__ = ["TextSink", "render_text"]


def render_text(data: RunData, *, color: bool = False, width: int | None = WIDTH) -> str:
    """The text report of ``data``: every section its records tell (``width=None``: the terminal's)."""
    return summary_from_run(data, color=color, width=width) + "\n"


class TextSink(RenderingSink):
    """Writes the text summary of the run to ``path`` (``.txt``) when the session closes:
    the session's own summary (the text ``run`` prints), else what the records tell."""

    def render(self, data: RunData) -> str:
        if self.summary_text is not None:
            return self.summary_text + "\n"
        return render_text(data)
