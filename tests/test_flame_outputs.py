"""speedscope (validated against speedscope's published schema) and folded stacks."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest

from asynclens.report.rundata import RunData
from asynclens.sinks.folded import FoldedSink, render_folded
from asynclens.sinks.speedscope import SCHEMA_URL, render_speedscope

try:  # works whether or not tests/ is a package
    from ._render_data import MS, full_run, info, request_spans, span
except ImportError:
    from _render_data import MS, full_run, info, request_spans, span  # type: ignore[no-redef]

# speedscope's dist/release/file-format-schema.json (npm package speedscope 1.25.0, MIT)
SCHEMA = json.loads((pathlib.Path(__file__).parent / "data" / "speedscope-file-format-schema.json").read_text())


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """The subset of JSON Schema draft-07 the speedscope schema uses."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        validate(value, SCHEMA["definitions"][name], path)
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, path)
                break
            except AssertionError as exc:
                errors.append(str(exc))
        else:
            raise AssertionError(f"{path}: matches none of anyOf: {errors}")
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        for key in schema.get("required", ()):
            assert key in value, f"{path}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}")
    elif kind == "array":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{path}[{i}]")
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), path
    elif kind == "string":
        assert isinstance(value, str), path
    if "const" in schema:
        assert value == schema["const"], f"{path}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"


def check_evented(profile: dict[str, Any], frames: int) -> None:
    """What speedscope's importer demands of an evented profile: ordered, balanced, nested."""
    stack: list[int] = []
    last = profile["startValue"]
    for event in profile["events"]:
        assert event["at"] >= last and 0 <= event["frame"] < frames
        last = event["at"]
        if event["type"] == "O":
            stack.append(event["frame"])
        else:
            assert stack and stack.pop() == event["frame"], "close does not match the innermost open frame"
    assert not stack and last <= profile["endValue"]


def test_speedscope_file_matches_the_schema_and_nests() -> None:
    doc = json.loads(json.dumps(render_speedscope(full_run())))
    validate(doc, SCHEMA)
    assert doc["$schema"] == SCHEMA_URL
    frames = doc["shared"]["frames"]
    names = [p["name"] for p in doc["profiles"]]
    assert names[:3] == [
        "spans: wall time (self, all tasks)",
        "spans: CPU time (self, all tasks)",
        "event loop stalls (sampled stacks)",
    ]
    assert {"Task-1", "Task-2", "Task-3", "Task-4", "thread 99"} <= set(names)
    for profile in doc["profiles"]:
        if profile["type"] == "evented":
            check_evented(profile, len(frames))
        else:
            assert len(profile["samples"]) == len(profile["weights"])
            assert all(0 <= f < len(frames) for s in profile["samples"] for f in s)
    # stall frames carry file and line
    assert {"name": "handle_search", "file": "app.py", "line": 41} in frames


def _stacks(profile: dict[str, Any], frames: list[dict[str, Any]]) -> dict[str, int]:
    return {";".join(frames[f]["name"] for f in s): w for s, w in zip(profile["samples"], profile["weights"])}


def test_speedscope_weights_are_self_times() -> None:
    doc = render_speedscope(full_run())
    frames = doc["shared"]["frames"]
    wall = _stacks(doc["profiles"][0], frames)
    # GET /user lasts 75 ms; children cover 10..40 (two queries overlap), 50..60 and 60..70 -> 50 ms covered
    assert wall["GET /user"] == 25 * MS
    assert wall["GET /user;db.query"] == 50 * MS  # 30 + 20: concurrent children add up
    cpu = _stacks(doc["profiles"][1], frames)
    # own CPU: 15 ms minus the 10 ms of "parse", its child in the same task (other tasks/threads not subtracted)
    assert cpu["GET /user"] == 5 * MS and cpu["GET /user;parse"] == 10 * MS


def test_zero_length_and_identical_spans_still_nest() -> None:
    data = RunData()
    data.begin(info())
    data.add([span("a", 1, None, 1, 1), span("b", 2, 1, 1, 1), span("p", 3, None, 2, 5), span("q", 4, 3, 2, 5)])
    doc = render_speedscope(data)
    validate(doc, SCHEMA)
    for profile in doc["profiles"]:
        if profile["type"] == "evented":
            check_evented(profile, len(doc["shared"]["frames"]))


LINE = re.compile(r"^[^;\n]+(;[^;\n]+)* \d+$")


def test_folded_lines_and_weights() -> None:
    text = render_folded(full_run())
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    weights = dict(line.rsplit(" ", 1) for line in lines)
    assert weights["GET /user"] == "25000" and weights["GET /user;db.query"] == "50000"  # µs
    # the stall's 20 ms split 3:1 over its two sampled stacks
    assert weights["[event loop stall];app.py:10 in main;app.py:41 in handle_search"] == "15000"
    assert weights["[event loop stall];app.py:10 in main;app.py:44 in score"] == "5000"
    assert "<script>alert(1)</script> 8000" in lines
    cpu = dict(line.rsplit(" ", 1) for line in render_folded(full_run(), "cpu").splitlines())
    assert cpu["GET /user"] == "5000"


def test_folded_frames_cannot_break_the_format(tmp_path: Any) -> None:
    data = RunData()
    data.begin(info())
    data.add([span("a;b c\nd", 1, None, 0, 2)])
    assert render_folded(data) == "a:b c d 2000\n"
    sink = FoldedSink(str(tmp_path / "x.folded"))
    sink.open(info())
    sink.write(request_spans())
    sink.close()
    assert (tmp_path / "x.folded").read_text().startswith("<script>")
    with pytest.raises(ValueError, match="wall"):
        FoldedSink("x.folded", weight="cycles")


def test_the_schema_check_rejects_bad_files() -> None:
    good = render_speedscope(full_run())
    for broken in (
        {k: v for k, v in good.items() if k != "shared"},
        {**good, "$schema": "https://example.com/other.json"},
        {**good, "profiles": [{**good["profiles"][0], "unit": "parsecs"}]},
        {
            **good,
            "profiles": [
                {
                    "type": "evented",
                    "name": "x",
                    "unit": "none",
                    "startValue": 0,
                    "endValue": 1,
                    "events": [{"type": "X", "frame": 0, "at": 0}],
                }
            ],
        },
    ):
        with pytest.raises(AssertionError):
            validate(broken, SCHEMA)
    with pytest.raises(AssertionError, match="innermost"):
        check_evented(
            {
                "startValue": 0,
                "endValue": 2,
                "events": [
                    {"type": "O", "frame": 0, "at": 0},
                    {"type": "O", "frame": 1, "at": 0},
                    {"type": "C", "frame": 0, "at": 1},
                    {"type": "C", "frame": 1, "at": 2},
                ],
            },
            2,
        )
