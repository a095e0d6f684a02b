"""Sinks: where records go.

A sink is an object with the optional hooks of :class:`Sink`. Sessions also take
paths, resolved by suffix (``run.jsonl`` → :class:`JsonLinesSink`), and the name
``"memory"``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any, Union

from .base import Sink
from .jsonl import JsonLinesSink
from .memory import MemorySink

__all__ = [
    "ChromeTraceSink",
    "FoldedSink",
    "HtmlSink",
    "JsonLinesSink",
    "MemorySink",
    "OtlpSink",
    "PrometheusSink",
    "Sink",
    "SinkLike",
    "SpeedscopeSink",
    "TextSink",
    "register_suffix",
    "resolve_sinks",
    "sink_for",
]

SinkLike = Union[Sink, str, "os.PathLike[str]"]

# The rendering sinks import lazily (they pull in the renderers only when used).
_LAZY = {
    "ChromeTraceSink": "chrome",
    "FoldedSink": "folded",
    "HtmlSink": "html",
    "OtlpSink": "otlp",
    "PrometheusSink": "prometheus",
    "SpeedscopeSink": "speedscope",
    "TextSink": "text",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _lazy(name: str) -> Callable[[str], Sink]:
    def make(path: str) -> Sink:
        return __getattr__(name)(path)  # type: ignore[no-any-return]

    make.__name__ = name
    return make


#: Path suffixes (longest match wins) and the sink class each one makes.
_SUFFIXES: dict[str, Callable[[str], Sink]] = {
    ".jsonl": JsonLinesSink,
    ".html": _lazy("HtmlSink"),
    ".htm": _lazy("HtmlSink"),
    ".json": _lazy("ChromeTraceSink"),
    ".trace.json": _lazy("ChromeTraceSink"),
    ".speedscope.json": _lazy("SpeedscopeSink"),
    ".folded": _lazy("FoldedSink"),
    ".txt": _lazy("TextSink"),
}
_NAMES: dict[str, Callable[[], Sink]] = {"memory": MemorySink}


def register_suffix(suffix: str, factory: Callable[[str], Sink]) -> None:
    """Make paths ending in ``suffix`` (e.g. ``".html"``) resolve to ``factory(path)``."""
    _SUFFIXES[suffix.lower()] = factory


def sink_for(spec: SinkLike) -> Sink:
    """Turn a sink object, a known name or a path into a sink; clear error otherwise."""
    if isinstance(spec, Sink):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text in _NAMES:
            return _NAMES[text]()
        lowered = text.lower()
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if lowered.endswith(suffix):
                return _SUFFIXES[suffix](text)
        known = ", ".join(sorted(_SUFFIXES)) + ", or " + ", ".join(repr(n) for n in sorted(_NAMES))
        raise ValueError(f"unknown sink {text!r}: a path must end in one of {known}")
    if all(callable(getattr(spec, hook, None)) for hook in ("open", "write", "close")):
        return spec  # duck-typed sink
    raise TypeError(f"not a sink: {spec!r} ({type(spec).__name__}); pass a Sink, a path or 'memory'")


def resolve_sinks(specs: SinkLike | Iterable[SinkLike] | None) -> list[Sink]:
    """Every sink of ``specs`` (one spec or several, see :func:`sink_for`); none for None."""
    if specs is None:
        return []
    if isinstance(specs, (str, os.PathLike, Sink)):
        return [sink_for(specs)]
    return [sink_for(spec) for spec in specs]
