"""Per-call cost of a traced call: bare, a no-op wrapt decorator, asynclens disabled and
recording (async and sync), and the OpenTelemetry SDK with a batch processor; plus
bytes per buffered span. All variants are measured in one run, interleaved.

    python benchmarks/span_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import wrapt

import asynclens
from asynclens.sinks import Sink


class NullSink(Sink):
    """Drops every batch: measures recording, not writing."""


def _noop_wrapt(func: Callable[..., Any]) -> Any:
    if asyncio.iscoroutinefunction(func):

        @wrapt.decorator
        async def awrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return await wrapped(*args, **kwargs)

        return awrapper(func)

    @wrapt.decorator
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return wrapped(*args, **kwargs)

    return wrapper(func)


async def a_bare() -> int:
    return 1


def s_bare() -> int:
    return 1


a_wrapt = _noop_wrapt(a_bare)
s_wrapt = _noop_wrapt(s_bare)
a_traced = asynclens.trace(a_bare)
s_traced = asynclens.trace(s_bare)


def _otel() -> tuple[Callable[..., Any], Callable[..., Any], Any] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None

    class NullExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=1 << 20))
    tracer = provider.get_tracer("bench")

    async def a_otel() -> int:
        with tracer.start_as_current_span("a_bare"):
            return await a_bare()

    def s_otel() -> int:
        with tracer.start_as_current_span("s_bare"):
            return s_bare()

    return a_otel, s_otel, provider


def _time_async(func: Callable[..., Any], calls: int) -> float:
    async def loop() -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            await func()
        return (time.perf_counter_ns() - start) / calls

    coro = loop()
    try:  # drive the coroutine by hand: no event loop noise in the figure
        coro.send(None)
    except StopIteration as stop:
        return float(stop.value)
    raise RuntimeError("benchmark coroutine suspended")


def _time_sync(func: Callable[..., Any], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        func()
    return (time.perf_counter_ns() - start) / calls


def _bytes_per_span(root: bool, n: int = 20_000) -> float:
    """Traced memory per buffered span: a root span (new 128-bit trace id) or a child."""
    with asynclens.session(sinks=[NullSink()], buffer_limit=n + 10, flush_interval=3600, lag=False,
                           track_handles=False, scheduler=False) as session:
        with asynclens.span("parent"):
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            if root:
                token = asynclens._state.context.current_span.set(None)
            for _ in range(n):
                s_traced()
            if root:
                asynclens._state.context.current_span.reset(token)
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            assert len(session._buffer) == n, "spans were flushed during the measurement"
    return (after - before) / n


def _flush_ns_per_span(sinks: list[Any], n: int = 20_000) -> float:
    """Off-hot-path cost per span: freezing, aggregating and handing to ``sinks``
    (paid by the flusher thread, but on the same GIL, so it is real CPU)."""
    with asynclens.session(sinks=sinks, buffer_limit=n + 10, flush_interval=3600, lag=False,
                           track_handles=False, scheduler=False) as session:
        session._wake_at = -1  # no early flush (without sinks the flusher drains at a few hundred spans)
        with asynclens.span("parent"):
            for _ in range(n):
                s_traced()
        start = time.perf_counter_ns()
        session.flush()
        return (time.perf_counter_ns() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()

    otel = _otel()
    # (label, kind, function, needs a recording session)
    variants: list[tuple[str, str, Callable[..., Any], bool]] = [
        ("bare", "async", a_bare, False),
        ("no-op wrapt decorator", "async", a_wrapt, False),
        ("asynclens disabled", "async", a_traced, False),
        ("asynclens recording", "async", a_traced, True),
        ("bare", "sync", s_bare, False),
        ("no-op wrapt decorator", "sync", s_wrapt, False),
        ("asynclens disabled", "sync", s_traced, False),
        ("asynclens recording", "sync", s_traced, True),
    ]
    if otel:
        variants.insert(4, ("OpenTelemetry SDK + batch", "async", otel[0], False))
        variants.append(("OpenTelemetry SDK + batch", "sync", otel[1], False))

    samples: dict[tuple[str, str], list[float]] = {(v[0], v[1]): [] for v in variants}
    for _ in range(opts.rounds):
        for label, kind, func, recording in variants:  # interleaved: every variant each round
            timer = _time_async if kind == "async" else _time_sync
            if recording:
                with asynclens.session(sinks=[NullSink()], buffer_limit=opts.calls * 2, lag=False,
                                       track_handles=False, scheduler=False):
                    samples[(label, kind)].append(timer(func, opts.calls))
            else:
                samples[(label, kind)].append(timer(func, opts.calls))
    if otel:
        otel[2].shutdown()

    print(f"Python {sys.version.split()[0]}, {opts.calls} calls x {opts.rounds} rounds (median ns/call)")
    print(f"{'variant':<28}{'kind':<7}{'ns/call':>9}{'added ns':>10}{'x bare':>8}{'x OTel':>8}")
    for kind in ("async", "sync"):
        bare = statistics.median(samples[("bare", kind)])
        otel_ns = statistics.median(samples[("OpenTelemetry SDK + batch", kind)]) if otel else None
        for label, k, _, _ in variants:
            if k != kind:
                continue
            ns = statistics.median(samples[(label, kind)])
            added = ns - bare
            vs_otel = f"{(otel_ns - bare) / added:>7.1f}x" if otel_ns and added > 0 and label != "bare" else f"{'':>8}"
            print(f"{label:<28}{kind:<7}{ns:>9.0f}{added:>10.0f}{ns / bare:>8.2f}{vs_otel}")
    print(
        f"bytes per buffered span (tracemalloc, no attributes): child {_bytes_per_span(False):.0f},"
        f" root {_bytes_per_span(True):.0f} (a root makes its 128-bit trace id only when first asked)"
    )
    print(
        f"flush cost per span (flusher thread): no sink (aggregate only) {_flush_ns_per_span([]):.0f} ns;"
        f" freeze + aggregate {_flush_ns_per_span([NullSink()]):.0f} ns;"
        f" with a JSON lines file {_flush_ns_per_span([asynclens.JsonLinesSink(os.devnull)]):.0f} ns"
    )
    print("'x OTel' = OTel's added cost / this variant's added cost (how many times cheaper).")


if __name__ == "__main__":
    main()
