"""W3C Trace Context: strict traceparent parsing, tracestate pass-through, remote parents."""

from __future__ import annotations

import asyncio

import pytest

import asynclens
from asynclens.testing import capture
from asynclens.tracing import propagation
from asynclens.tracing.propagation import SpanContext, extract, inject, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_traceparent_parses_ids_and_sampled_flag() -> None:
    assert parse_traceparent(VALID) == (int(TRACE, 16), int(SPAN, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == (int(TRACE, 16), int(SPAN, 16), False)
    assert parse_traceparent(VALID.encode()) == (int(TRACE, 16), int(SPAN, 16), True)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE[:-1]}-{SPAN}-01",  # wrong lengths
        f"00-{TRACE}-{SPAN}0-01",
        f"00-{TRACE}-{SPAN}-1",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00_{TRACE}_{SPAN}_01",
        f"0g-{TRACE}-{SPAN}-01",
        None,
        42,
        b"\xff\xfe",
    ],
)
def test_invalid_traceparent_is_ignored(value: object) -> None:
    assert parse_traceparent(value) is None
    assert extract({"traceparent": value}) is None


def test_future_version_may_carry_more_fields() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds") == (int(TRACE, 16), int(SPAN, 16), True)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01what") is None


def test_extract_reads_any_header_container() -> None:
    want = SpanContext(int(TRACE, 16), int(SPAN, 16), True, "congo=t61rcWkgMzE")
    assert extract({"Traceparent": VALID, "TraceState": "congo=t61rcWkgMzE"}) == want
    assert extract([(b"traceparent", VALID.encode()), (b"tracestate", b"congo=t61rcWkgMzE")]) == want
    assert extract({}) is None
    assert extract([(b"traceparent", VALID.encode()), (b"traceparent", VALID.encode())]) is None  # ambiguous


def test_tracestate_is_combined_and_invalid_tracestate_dropped() -> None:
    ctx = extract([("traceparent", VALID), ("tracestate", "a=1, b=2"), ("tracestate", "c=3")])
    assert ctx is not None and ctx.tracestate == "a=1,b=2,c=3"
    ctx = extract({"traceparent": VALID, "tracestate": "Not Valid=x"})
    assert ctx is not None and ctx.tracestate is None  # the parent is still honoured


def test_extract_never_raises_on_a_broken_container() -> None:
    class Broken:
        def items(self) -> object:
            raise RuntimeError("boom")

        def __iter__(self) -> object:
            raise RuntimeError("boom")

    assert extract(Broken()) is None  # type: ignore[arg-type]


def test_span_with_remote_parent_continues_the_trace_and_inject_passes_tracestate_on() -> None:
    ctx = extract({"traceparent": VALID, "tracestate": "congo=t61rcWkgMzE"})
    assert ctx is not None
    out: dict[str, str] = {}
    with capture() as cap:
        with asynclens.span("request", parent=ctx), asynclens.span("db"):
            inject(out)
            inner = asynclens.current_span()
        assert inject({}) == {}  # outside any span: nothing to propagate
    request, = [s for s in cap.spans if s.name == "request"]
    db, = [s for s in cap.spans if s.name == "db"]
    assert request.trace_id == int(TRACE, 16) and request.parent_id == int(SPAN, 16)
    assert request.remote_parent is True
    assert db.remote_parent is False and db.parent_id == request.span_id and db.trace_id == request.trace_id
    assert inner is not None
    assert out == {"traceparent": f"00-{TRACE}-{inner.span_id:016x}-01", "tracestate": "congo=t61rcWkgMzE"}


def test_tracestate_is_not_passed_into_an_unrelated_trace() -> None:
    ctx = SpanContext(int(TRACE, 16), int(SPAN, 16), tracestate="a=1")
    out: dict[str, str] = {}
    with capture(), asynclens.span("request", parent=ctx):
        unrelated = asynclens.current_span()
        assert unrelated is not None
        with asynclens.span("other", parent=SpanContext(5, 6, remote=False)):
            inject(out)
    assert "tracestate" not in out and out["traceparent"].startswith(f"00-{5:032x}-")


def test_span_parent_must_look_like_a_span() -> None:
    with pytest.raises(TypeError, match="parent"):
        asynclens.span("x", parent="00-abc")


@pytest.mark.asyncio
async def test_remote_parent_follows_child_tasks() -> None:
    ctx = SpanContext(int(TRACE, 16), int(SPAN, 16))

    async def child() -> dict[str, str]:
        async with asynclens.span("child"):
            return dict(inject({}))

    with capture() as cap:
        async with asynclens.span("request", parent=ctx):
            headers = await asyncio.create_task(child())
    assert headers["traceparent"].startswith(f"00-{TRACE}-")
    assert {s.name for s in cap.spans} == {"request", "child"}
    assert propagation.current_context() is None
