"""JSON lines: round trip, header, strict reader with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import asynclens
from asynclens import TraceFileError, read_jsonl
from asynclens.records import RecordError, SessionEnd, Span, SpanEvent, record_from_dict, record_types
from asynclens.report.fileformat import encode_record
from asynclens.testing import FakeClock

NO_PROBES = dict(lag=False, track_handles=False, scheduler=False)


def _record_run(path: Path) -> None:
    clock = FakeClock(start_ns=5_000)
    with asynclens.session(sinks=[str(path)], clock=clock, **NO_PROBES):
        with asynclens.span("outer", n=1, obj=object()) as sp:
            sp.event("tick", i=2)
            clock.advance(10)
            with asynclens.span("inner"):
                clock.advance(5)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _record_run(path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == "session" and header["schema"] == 1
    assert header["anchor_mono_ns"] == 5_000 and header["anchor_wall_ns"] > 0
    assert json.loads(lines[-1])["kind"] == "session_end"

    run = read_jsonl(path)
    assert run.info.anchor_mono_ns == 5_000
    assert isinstance(run.end, SessionEnd)
    inner, outer = run.records
    assert isinstance(inner, Span) and inner.parent_id == outer.span_id
    assert outer.attrs["n"] == 1 and outer.attrs["obj"].startswith("<object object")
    assert outer.events == (SpanEvent("tick", 5_000, {"i": 2}),)
    assert inner.duration_ns == 5 and outer.duration_ns == 15


def test_every_record_type_round_trips_through_dicts() -> None:
    span = Span(
        "x", 2**127 + 5, 2**63 + 1, 7, 1, 2, "error", "E", "m", {"a": 1}, (SpanEvent("e", 1),), "Task-1", 9, (3, 4)
    )
    again = record_from_dict(json.loads(encode_record(span)))
    assert again == span
    assert set(record_types()) >= {"session", "session_end", "span", "span_event"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty file"),
        ('{"kind": "span"\n', ":1: not valid JSON"),
        (
            '{"kind": "span", "name": "x"}\n',
            ":1: a 'span' record without 'trace_id', 'span_id', 'parent_id' (required fields)",
        ),
        ("[1, 2]\n", ":1: expected a JSON object"),
        ('{"kind": "nope"}\n', ":1: unknown record kind 'nope'"),
    ],
)
def test_malformed_files_fail_with_one_line_naming_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFileError) as info:
        read_jsonl(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text


def test_error_names_the_bad_line_after_good_ones(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _record_run(path)
    lines = path.read_text().splitlines()
    lines.insert(2, '{"kind": "span", "name": "x", "trace_id": "zz", "span_id": "01", "parent_id": null}')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceFileError, match=r"run\.jsonl:3: span field 'trace_id': bad value 'zz'"):
        read_jsonl(path)


def test_missing_header_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "noheader.jsonl"
    path.write_text(encode_record(Span("x", 1, 2, None)) + "\n")
    with pytest.raises(TraceFileError, match="noheader.jsonl:1: expected the 'session' header line"):
        read_jsonl(path)
    with pytest.raises(TraceFileError, match="missing.jsonl: cannot open"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _record_run(path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["schema"] = 99
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(TraceFileError, match="schema 99 is newer"):
        read_jsonl(path)


def test_binary_garbage_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TraceFileError, match="bin.jsonl:1: not UTF-8 text"):
        read_jsonl(path)


def test_record_from_dict_rejects_non_objects() -> None:
    with pytest.raises(RecordError, match="expected a JSON object"):
        record_from_dict([])  # type: ignore[arg-type]


def test_unserialisable_attribute_keys_do_not_break_writing() -> None:
    span = Span("x", 1, 2, None, attrs={(1, 2): "tuple key", "ok": 1})
    data = json.loads(encode_record(span))
    assert data["attrs"] == {"ok": 1}
