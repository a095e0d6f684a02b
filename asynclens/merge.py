"""Merging runs of several processes into one timeline: the public path of
:mod:`asynclens.report.merge`."""

from .report.merge import (
    TIME_FIELDS,
    CrossProcessLink,
    MergedRuns,
    align_offsets,
    cross_process_links,
    merge_runs,
    shift_record,
)

__all__ = [
    "TIME_FIELDS",
    "CrossProcessLink",
    "MergedRuns",
    "align_offsets",
    "cross_process_links",
    "merge_runs",
    "shift_record",
]
