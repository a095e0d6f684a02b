"""Reading traces written by a newer asynclens: unknown record kinds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asynclens.report.fileformat import TraceFileError, encode_record, iter_jsonl

try:  # works whether or not tests/ is a package
    from ._render_data import info
except ImportError:
    from _render_data import info  # type: ignore[no-redef]


def write(path: Any) -> None:
    lines = [
        encode_record(info()),
        json.dumps({"kind": "from_the_future", "x": 1}),
        json.dumps({"kind": "session_end", "end_ns": 1}),
    ]
    path.write_text("\n".join(lines) + "\n")


def test_unknown_kind_is_an_error_by_default(tmp_path: Any) -> None:
    path = tmp_path / "run.jsonl"
    write(path)
    with pytest.raises(TraceFileError, match=r"run.jsonl:2: unknown record kind 'from_the_future'"):
        list(iter_jsonl(path))


def test_unknown_kind_can_be_skipped_and_reported(tmp_path: Any) -> None:
    path = tmp_path / "run.jsonl"
    write(path)
    seen: list[tuple[int, str]] = []
    kinds = [r.kind for _, r in iter_jsonl(path, on_unknown=lambda n, k: seen.append((n, k)))]
    assert kinds == ["session", "session_end"]
    assert seen == [(2, "from_the_future")]


def test_header_must_still_be_known(tmp_path: Any) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps({"kind": "from_the_future"}) + "\n")
    with pytest.raises(TraceFileError, match=":1: unknown record kind"):
        list(iter_jsonl(path, on_unknown=lambda n, k: None))
