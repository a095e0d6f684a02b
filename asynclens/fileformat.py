"""The JSON lines trace format, read and written: the public path of
:mod:`asynclens.report.fileformat` (documented in ``docs/format.md``)."""

from .report.fileformat import Run, TraceFileError, encode_record, iter_jsonl, read_jsonl

__all__ = ["Run", "TraceFileError", "encode_record", "iter_jsonl", "read_jsonl"]
