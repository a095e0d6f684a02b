"""The JSON lines trace format: pure encoders and a strict reader.

One JSON object per line. The first line is the ``session`` header
(:class:`~asynclens.records.SessionInfo`: schema version, process, clock
anchors); every later line is a record (``"kind"`` names its type); a finished
run ends with a ``session_end`` line. See ``docs/format.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..records import SCHEMA_VERSION, Record, RecordError, SessionEnd, SessionInfo, record_from_dict, record_types

__all__ = ["Run", "TraceFileError", "encode_record", "iter_jsonl", "read_jsonl"]


class TraceFileError(ValueError):
    """A trace file is missing, unreadable or malformed; the message names file and line."""


def _fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_fallback)


def encode_record(record: Record) -> str:
    """One record as one line of JSON (no newline), empty defaults left out.
    Unserialisable values become their repr."""
    data = record.to_dict(compact=True)
    try:
        return _encoder.encode(data)
    except (TypeError, ValueError):
        # e.g. attribute dicts with non-string keys or circular values
        return _encoder.encode(json.loads(json.dumps(data, default=_fallback, skipkeys=True, check_circular=False)))


@dataclass
class Run:
    """A recorded run read back from a file."""

    path: str
    info: SessionInfo
    records: list[Record] = field(default_factory=list)
    end: SessionEnd | None = None


def iter_jsonl(
    path: str | os.PathLike[str], *, on_unknown: Callable[[int, str], None] | None = None
) -> Iterator[tuple[int, Record]]:
    """Yield ``(line_number, record)`` for every line, the header first.

    Raises :class:`TraceFileError` naming the file and line for the first problem.
    A line whose ``kind`` this version does not know (written by a newer
    asynclens) is an error too, unless ``on_unknown(line_number, kind)`` is given:
    then it is reported there and skipped.
    """
    known = record_types()
    name = os.fspath(path)
    try:
        handle = open(name, encoding="utf-8")
    except OSError as exc:
        raise TraceFileError(f"{name}: cannot open: {exc.strerror or exc}") from None
    with handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, 1):  # noqa: B007 - lineno used after the loop
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceFileError(f"{name}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
                if (
                    on_unknown is not None
                    and lineno > 1
                    and isinstance(data, dict)
                    and isinstance(data.get("kind"), str)
                    and data["kind"] not in known
                ):
                    on_unknown(lineno, data["kind"])
                    continue
                try:
                    record = record_from_dict(data)
                except RecordError as exc:
                    raise TraceFileError(f"{name}:{lineno}: {exc}") from None
                if lineno == 1:
                    if not isinstance(record, SessionInfo):
                        raise TraceFileError(f"{name}:1: expected the 'session' header line, got {record.kind!r}")
                    if record.schema > SCHEMA_VERSION:
                        raise TraceFileError(
                            f"{name}:1: schema {record.schema} is newer than this asynclens reads ({SCHEMA_VERSION}); upgrade asynclens"
                        )
                elif isinstance(record, SessionInfo):
                    raise TraceFileError(f"{name}:{lineno}: a second 'session' header (concatenated files? pass them separately)")
                yield lineno, record
        except UnicodeDecodeError:
            raise TraceFileError(f"{name}:{lineno + 1}: not UTF-8 text") from None
        if lineno == 0:
            raise TraceFileError(f"{name}: empty file, expected an asynclens JSON lines trace")


def read_jsonl(path: str | os.PathLike[str]) -> Run:
    """Load a whole JSON lines trace into a :class:`Run`.

    .. versionadded:: 0.1
    """
    run: Run | None = None
    for _, record in iter_jsonl(path):
        if run is None:
            assert isinstance(record, SessionInfo)
            run = Run(os.fspath(path), record)
        elif isinstance(record, SessionEnd):
            run.end = record
        else:
            run.records.append(record)
    assert run is not None
    return run
