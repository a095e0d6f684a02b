"""The public API surface: pinned, sorted, typed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import asynclens


def test_all_is_sorted_and_complete() -> None:
    assert asynclens.__all__ == sorted(asynclens.__all__)
    for name in asynclens.__all__:
        assert hasattr(asynclens, name), name


def test_py_typed_ships() -> None:
    assert (Path(asynclens.__file__).parent / "py.typed").exists()


def test_public_callables_have_docstrings() -> None:
    for name in asynclens.__all__:
        obj = getattr(asynclens, name)
        if callable(obj):
            assert obj.__doc__, name


def test_the_top_level_names_are_pinned() -> None:
    assert asynclens.__all__ == [
        "Clock",
        "FakeClock",
        "HandleRecord",
        "IMPLEMENTATION",
        "IoRates",
        "JsonLinesSink",
        "LagSnapshot",
        "Leak",
        "LiveSpan",
        "MemorySink",
        "SchedulerProbe",
        "Session",
        "SessionError",
        "SessionStatistics",
        "Sink",
        "Span",
        "StackSample",
        "Stall",
        "SystemClock",
        "TraceFileError",
        "__version__",
        "async_stack",
        "creation_chain",
        "current_session",
        "current_span",
        "dump",
        "read_jsonl",
        "session",
        "span",
        "trace",
        "watch",
    ]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("asynclens.sinks", ["JsonLinesSink", "MemorySink", "Sink", "sink_for"]),
        ("asynclens.sinks.chrome", ["ChromeTraceSink", "render_chrome"]),
        ("asynclens.sinks.html", ["HtmlSink", "render_html"]),
        ("asynclens.sinks.speedscope", ["SpeedscopeSink", "render_speedscope"]),
        ("asynclens.sinks.folded", ["FoldedSink", "render_folded"]),
        ("asynclens.sinks.otlp", ["OtlpSink"]),
        ("asynclens.sinks.prometheus", ["PrometheusSink"]),
        ("asynclens.integrations.asgi", ["AsgiMiddleware"]),
        ("asynclens.integrations.aiohttp", ["middleware", "client_trace_config"]),
        ("asynclens.testing", ["Captured", "FakeClock", "capture", "normalise"]),
        ("asynclens.propagation", ["SpanContext", "extract", "inject", "parse_traceparent"]),
        ("asynclens.fileformat", ["TraceFileError", "read_jsonl", "iter_jsonl", "encode_record"]),
        ("asynclens.merge", ["merge_runs", "align_offsets"]),
        ("asynclens.records", ["Span", "Stall", "Leak", "record_from_dict"]),
        ("asynclens.stats", ["Histogram"]),
        ("asynclens.session", ["Session", "SessionError", "SessionStatistics", "session"]),
        ("asynclens.cli", ["main"]),
    ],
)
def test_documented_import_paths_stay(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


def test_python_m_asynclens_stays() -> None:
    out = subprocess.run([sys.executable, "-m", "asynclens", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout
