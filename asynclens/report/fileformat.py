"""The JSON lines trace format: pure encoders and a strict reader.

One JSON object per line. The first line is the ``session`` header
(:class:`~asynclens.records.SessionInfo`: schema version, process, clock
anchors); every later line is a record (``"kind"`` names its type); a finished
run ends with a ``session_end`` line. See ``docs/format.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..records import SCHEMA_VERSION, Record, RecordError, SessionEnd, SessionInfo, record_from_dict, record_types

__all__ = ["PartialRecordWarning", "Run", "TraceFileError", "encode_record", "iter_jsonl", "read_jsonl"]


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
    """A recorded run read back from a file.

    ``incomplete`` is true when the file ends in a partial record (a copy taken
    while the program ran, a full disk): every complete line before it was read,
    and ``partial_line`` is the number of the cut-off line.
    """

    path: str
    info: SessionInfo
    records: list[Record] = field(default_factory=list)
    end: SessionEnd | None = None
    incomplete: bool = False
    partial_line: int | None = None


class PartialRecordWarning(UserWarning):
    """A trace file ends in a partial record; the complete lines before it were read."""


def partial_record_message(path: str, lineno: int) -> str:
    """The one-line warning for a file whose line ``lineno`` (its last) is cut off."""
    return (
        f"{path}:{lineno}: the file ends in a partial record (cut off while it was written?); "
        f"read the {lineno - 1} complete lines before it, the run is incomplete"
    )


def _json_problem(exc: json.JSONDecodeError) -> str:
    # json's messages for strings read "Unterminated string starting at": the position follows
    where = "column" if exc.msg.endswith(" at") else "at column"
    return f"not valid JSON ({exc.msg} {where} {exc.colno})"


_REQUIRED: dict[type, tuple[tuple[str, ...], tuple[tuple[str, type[Record]], ...]]] = {}


def _required_of(cls: type[Record]) -> tuple[tuple[str, ...], tuple[tuple[str, type[Record]], ...]]:
    """Fields a line of ``cls`` must have, and its fields that hold nested records."""
    entry = _REQUIRED.get(cls)
    if entry is None:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        required = tuple(
            f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        nested = tuple((f.name, f.metadata["records"]) for f in fields if f.metadata.get("records"))
        entry = _REQUIRED[cls] = (required, nested)
    return entry


def _shape_problem(data: Any, known: Mapping[str, type[Record]], where: str = "") -> str | None:
    """What is wrong with the shape of one decoded line, in the file's terms (a missing
    ``kind`` or required field, a non-object), or None: the record constructors'
    own errors speak of Python arguments."""
    if not isinstance(data, dict):
        return f"{where}expected a JSON object, got {_json_type(data)}"
    kind = data.get("kind")
    if kind is None:
        return f"{where}a JSON object without 'kind' (every line is one record, named by its 'kind')"
    if not isinstance(kind, str):
        return f"{where}'kind' must be a string, got {_json_type(kind)} {kind!r}"
    cls = known.get(kind)
    if cls is None:
        return None  # the reader names unknown kinds itself
    required, nested = _required_of(cls)
    missing = [name for name in required if name not in data]
    if missing:
        fields = ", ".join(repr(name) for name in missing)
        return f"{where}a {kind!r} record without {fields} (required field{'s' if len(missing) > 1 else ''})"
    for name, _ in nested:
        items = data.get(name)
        if items is None:
            continue
        if not isinstance(items, list):
            return f"{where}{kind} field {name!r}: expected a JSON array, got {_json_type(items)}"
        for i, item in enumerate(items):
            problem = _shape_problem(item, known, f"{where}{kind} field {name!r}[{i}]: ")
            if problem is not None:
                return problem
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


def iter_jsonl(
    path: str | os.PathLike[str],
    *,
    on_unknown: Callable[[int, str], None] | None = None,
    on_partial: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Record]]:
    """Yield ``(line_number, record)`` for every line, the header first.

    Raises :class:`TraceFileError` naming the file and line for the first problem.
    A line whose ``kind`` this version does not know (written by a newer
    asynclens) is an error too, unless ``on_unknown(line_number, kind)`` is given:
    then it is reported there and skipped.

    A last line that is cut off (no newline at its end, and not a whole record: a
    copy taken while the program ran, a full disk) ends the iteration after the
    complete lines: ``on_partial(line_number)`` is called, or without it a
    :class:`PartialRecordWarning` is issued. Only a cut-off header is an error.
    """
    known = record_types()
    name = os.fspath(path)
    try:
        handle = open(name, "rb")
    except OSError as exc:
        raise TraceFileError(f"{name}: cannot open: {exc.strerror or exc}") from None
    with handle:
        lineno = 0
        for lineno, raw in enumerate(handle, 1):  # noqa: B007 - lineno used after the loop
            last_unterminated = not raw.endswith(b"\n")  # only the last line can lack its newline
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if last_unterminated and _looks_cut(raw, lineno):
                    _partial(name, lineno, on_partial)
                    return
                raise TraceFileError(f"{name}:{lineno}: not UTF-8 text (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line.rstrip("\r\n"))  # a newline inside would read as a control character
            except json.JSONDecodeError as exc:
                if last_unterminated and _looks_cut(raw, lineno):
                    _partial(name, lineno, on_partial)
                    return
                raise TraceFileError(f"{name}:{lineno}: {_json_problem(exc)}") from None
            except RecursionError:
                raise TraceFileError(f"{name}:{lineno}: not a record (nested too deeply)") from None
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
                # worked out only for a bad line: the good ones pay nothing for the message
                problem = _shape_problem(data, known) or str(exc)
                raise TraceFileError(f"{name}:{lineno}: {problem}") from None
            if lineno == 1:
                if not isinstance(record, SessionInfo):
                    raise TraceFileError(f"{name}:1: expected the 'session' header line, got {record.kind!r}")
                if record.schema > SCHEMA_VERSION:
                    raise TraceFileError(
                        f"{name}:1: schema {record.schema} is newer than this asynclens reads ({SCHEMA_VERSION}); upgrade asynclens"
                    )
            elif isinstance(record, SessionInfo):
                raise TraceFileError(
                    f"{name}:{lineno}: a second 'session' header (concatenated files? pass them separately)"
                )
            yield lineno, record
        if lineno == 0:
            raise TraceFileError(f"{name}: empty file, expected an asynclens JSON lines trace")


def _looks_cut(raw: bytes, lineno: int) -> bool:
    """Whether an unterminated last line that does not parse is a record cut off while it
    was written. Any record can be; a first line only when it begins like a header (the
    writer puts ``kind`` first), else the file is no trace at all."""
    return lineno > 1 or raw.replace(b" ", b"").startswith(b'{"kind":"session"')


def _partial(name: str, lineno: int, on_partial: Callable[[int], None] | None) -> None:
    if lineno == 1:
        raise TraceFileError(
            f"{name}:1: the header line is cut off (the file ends inside it): no complete record to read"
        )
    if on_partial is not None:
        on_partial(lineno)
    else:
        warnings.warn(partial_record_message(name, lineno), PartialRecordWarning, stacklevel=3)


def read_jsonl(path: str | os.PathLike[str]) -> Run:
    """Load a whole JSON lines trace into a :class:`Run`.

    A file that ends in a partial record gives the complete lines before it, a
    :class:`PartialRecordWarning`, and ``run.incomplete``.

    .. versionadded:: 0.1
    """
    run: Run | None = None
    partial: list[int] = []
    for _, record in iter_jsonl(path, on_partial=partial.append):
        if run is None:
            assert isinstance(record, SessionInfo)
            run = Run(os.fspath(path), record)
        elif isinstance(record, SessionEnd):
            run.end = record
        else:
            run.records.append(record)
    assert run is not None
    if partial:
        run.incomplete = True
        run.partial_line = partial[0]
        warnings.warn(partial_record_message(run.path, partial[0]), PartialRecordWarning, stacklevel=2)
    return run
