"""Reading damaged traces: a cut-off last line, bad bytes, wrong shapes, in the file's terms."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import asynclens
from asynclens import TraceFileError, read_jsonl
from asynclens.records import Span
from asynclens.report.fileformat import PartialRecordWarning, encode_record, iter_jsonl
from asynclens.testing import FakeClock

NO_PROBES: dict[str, Any] = dict(lag=False, track_handles=False, scheduler=False)


def _record_run(path: Path, spans: int = 3) -> list[str]:
    clock = FakeClock(start_ns=1_000)
    with asynclens.session(sinks=[str(path)], clock=clock, **NO_PROBES):
        for i in range(spans):
            with asynclens.span(f"step-{i}", note="é" * 40):
                clock.advance(10)
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _cut(path: Path, lines: list[str], keep: int, extra: bytes) -> None:
    path.write_bytes("".join(lines[:keep]).encode() + extra)


def test_a_cut_off_last_line_keeps_every_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 3, lines[3].encode()[:25])  # header, two spans, then half of the third
    with pytest.warns(PartialRecordWarning) as caught:
        run = read_jsonl(path)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{path}:4: the file ends in a partial record (cut off while it was written?); "
        "read the 3 complete lines before it, the run is incomplete"
    )
    assert run.incomplete and run.partial_line == 4 and run.end is None
    assert [r.name for r in run.records if isinstance(r, Span)] == ["step-0", "step-1"]


def test_a_cut_inside_a_multibyte_character_is_a_partial_record_too(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    encoded = lines[2].encode()
    at = encoded.index("é".encode()) + 1  # between the two bytes of 'é'
    _cut(path, lines, 2, encoded[:at])
    seen: list[int] = []
    records = list(iter_jsonl(path, on_partial=seen.append))
    assert seen == [3] and len(records) == 2


def test_a_complete_file_is_not_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    path.write_text("".join(lines).rstrip("\n"))  # a last line without its newline, but whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = read_jsonl(path)
    assert not run.incomplete and run.partial_line is None and run.end is not None


def test_a_bad_line_before_the_end_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 2, b'{"kind": "span", "na\n' + "".join(lines[2:]).encode())
    with pytest.raises(TraceFileError, match=r"run\.jsonl:3: not valid JSON"):
        read_jsonl(path)


def test_a_cut_off_header_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 0, lines[0].encode()[:30])
    with pytest.raises(TraceFileError, match=r"run\.jsonl:1: the header line is cut off"):
        read_jsonl(path)


def test_a_utf8_error_names_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path, spans=400)  # long enough that a text reader decodes far ahead
    bad = lines[300].encode().replace("é".encode(), b"\xff", 1)
    path.write_bytes("".join(lines[:300]).encode() + bad + "".join(lines[301:]).encode())
    with pytest.raises(TraceFileError) as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:301: not UTF-8 text (byte ")


def test_a_json_error_reads_as_english(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 1, b'{"kind": "span", "name": "unterminated}\n' + "".join(lines[1:]).encode())
    with pytest.raises(TraceFileError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert message == f"{path}:2: not valid JSON (Unterminated string starting at column 26)"
    assert "at at" not in message


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            {"kind": "span", "name": "x", "span_id": "01"},
            "a 'span' record without 'trace_id', 'parent_id' (required fields)",
        ),
        ({"kind": "session_end"}, "a 'session_end' record without 'end_ns' (required field)"),
        ({"name": "x"}, "a JSON object without 'kind' (every line is one record, named by its 'kind')"),
        ({"kind": 3}, "'kind' must be a string, got a number 3"),
        (
            {
                "kind": "span",
                "name": "x",
                "trace_id": "01",
                "span_id": "02",
                "parent_id": None,
                "events": [{"kind": "span_event"}],
            },
            "span field 'events'[0]: a 'span_event' record without 'name', 'time_ns' (required fields)",
        ),
        ("just text", "expected a JSON object, got a string"),
    ],
)
def test_a_record_of_the_wrong_shape_names_the_missing_field(tmp_path: Path, line: Any, problem: str) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 1, (json.dumps(line) + "\n").encode())
    with pytest.raises(TraceFileError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: {problem}"
    assert "__init__" not in str(info.value)


def test_report_converts_a_cut_off_file_and_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lines = _record_run(path)
    _cut(path, lines, 3, lines[3].encode()[:25])
    r = subprocess.run(
        [sys.executable, "-m", "asynclens", "report", "-q", "run.jsonl", "-o", "out.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == (
        "asynclens: warning: run.jsonl:4: the file ends in a partial record (cut off while it was written?); "
        "read the 3 complete lines before it, the run is incomplete\n"
    )
    text = (tmp_path / "out.txt").read_text()
    assert "step-0" in text and "step-1" in text
    assert "the run did not" in text  # the summary's problems line (wrapped)


def test_encode_record_still_round_trips_what_the_reader_checks(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(encode_record(read_info()) + "\n" + encode_record(Span("x", 1, 2, None)) + "\n")
    assert [type(r).__name__ for _, r in iter_jsonl(path)] == ["SessionInfo", "Span"]


def read_info() -> Any:
    try:
        from ._render_data import info
    except ImportError:
        from _render_data import info  # type: ignore[no-redef]
    return info()
