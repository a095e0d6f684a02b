"""OTLP/HTTP JSON: pure encoders (checked against the official protobuf definitions) and the exporter sink."""

from __future__ import annotations

import base64
import json
import socket
import time
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from otlp_collector import running_collector

import asynclens
from asynclens.records import Span, SpanEvent
from asynclens.sinks._metrics import MetricsState
from asynclens.sinks._otlp_encode import (
    any_value,
    encode_metrics,
    encode_spans,
    encode_spans_json,
    resource,
    to_unix_offset,
)
from asynclens.sinks.otlp import OtlpExportError, OtlpSink
from asynclens.stats import Histogram
from asynclens.testing import capture
from asynclens.tracing.propagation import SpanContext

RES = resource("svc")
T = 0xABC
OFFSET = 1_700_000_000_000_000_000


def span(name: str = "op", span_id: int = 1, parent_id: int | None = None, **kw: Any) -> Span:
    fields: dict[str, Any] = {"trace_id": T, "span_id": span_id, "parent_id": parent_id, "start_ns": 100, "end_ns": 300}
    fields.update(kw)
    return Span(name, **fields)


def spans_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in payload["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def attrs_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values()), None) for a in obj.get("attributes", [])}


# ------------------------------------------------------------------ encoder


def test_span_uses_hex_ids_string_unix_nanos_and_the_resource() -> None:
    payload = encode_spans([span(parent_id=7)], resource=RES, offset_ns=OFFSET)
    (out,) = spans_of(payload)
    assert out["traceId"] == f"{T:032x}" and out["spanId"] == "0000000000000001" and out["parentSpanId"] == "0000000000000007"
    assert out["startTimeUnixNano"] == str(OFFSET + 100) and out["endTimeUnixNano"] == str(OFFSET + 300)
    assert out["kind"] == 1 and out["status"] == {}
    assert attrs_of(payload["resourceSpans"][0]["resource"])["service.name"] == "svc"
    assert payload["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "asynclens"


def test_span_details_become_attributes_events_status_and_flags() -> None:
    err = span(
        "GET /users/{id}",
        status="error", error_type="KeyError", error_message="'x'", error_stack="a.py:1 in f",
        attrs=MappingProxyType({"span.kind": "server", "http.response.status_code": 500}),
        events=(SpanEvent("http.response.start", 150, MappingProxyType({"n": 1})),),
        remote_parent=True, cpu_ns=50, sched_wait_ns=20, io_wait_ns=130, executor_ns=0, steps=3, task="Task-1",
        max_sched_wait_ns=15,
    )
    (out,) = spans_of(encode_spans([err], resource=RES))
    assert out["kind"] == 2  # SERVER, and span.kind is not left as an attribute
    attrs = attrs_of(out)
    assert "span.kind" not in attrs and attrs["http.response.status_code"] == "500"
    assert attrs["asynclens.cpu_ns"] == "50" and attrs["asynclens.io_wait_ns"] == "130" and attrs["asynclens.task"] == "Task-1"
    assert attrs["asynclens.max_sched_wait_ns"] == "15"
    assert out["status"] == {"code": 2, "message": "KeyError: 'x'"}
    assert [e["name"] for e in out["events"]] == ["http.response.start", "exception"]
    assert attrs_of(out["events"][1]) == {"exception.type": "KeyError", "exception.message": "'x'", "exception.stacktrace": "a.py:1 in f"}
    assert out["flags"] == 0x301  # sampled, has-is-remote, is-remote
    (local,) = spans_of(encode_spans([span()], resource=RES))
    assert local["flags"] == 0x101


def test_cancelled_span_is_not_an_error() -> None:
    (out,) = spans_of(encode_spans([span(status="cancelled", error_type="CancelledError")], resource=RES))
    assert out["status"] == {} and attrs_of(out)["asynclens.cancelled"] == "CancelledError"


def test_links_resolve_through_known_traces_or_stay_as_attributes() -> None:
    linked = span(span_id=2, trace_id=0x99, links=(1, 5))
    (out,) = spans_of(encode_spans([linked], resource=RES, trace_of={1: T}))
    assert out["links"] == [{"traceId": f"{T:032x}", "spanId": "0000000000000001"}]
    assert attrs_of(out)["asynclens.link.span_id"] == "0000000000000005"


def test_any_value_covers_every_type() -> None:
    assert any_value(True) == {"boolValue": True}
    assert any_value(2**70) == {"stringValue": str(2**70)}
    assert any_value(1.5) == {"doubleValue": 1.5}
    assert any_value(float("nan")) == {"doubleValue": "NaN"}
    assert any_value(b"\x00") == {"bytesValue": "AA=="}
    assert any_value([1, "a"]) == {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}]}}
    assert any_value({"k": None}) == {"kvlistValue": {"values": [{"key": "k", "value": {}}]}}
    assert any_value(object())["stringValue"].startswith("<object")


def stall(**kw: Any) -> SimpleNamespace:
    fields = dict(kind="stall", loop_id=1, start_ns=120, end_ns=220, file="app.py", line=41, function="handle",
                  stack=("app.py:41 in handle",), samples=(), task="Task-1", trace_id=T, span_id=1, span_name="op",
                  async_stack=(), cause="cpu", cpu_ns=90, sampled=True)
    fields.update(kw)
    return SimpleNamespace(**fields)


def test_stall_becomes_a_child_span_and_an_event_on_its_span() -> None:
    payload = encode_spans([span(), stall()], resource=RES, session_id="s1")
    parent, child = spans_of(payload)
    assert child["name"] == "asynclens.stall" and child["parentSpanId"] == parent["spanId"] and child["traceId"] == parent["traceId"]
    attrs = attrs_of(child)
    assert attrs["asynclens.cause"] == "cpu" and attrs["asynclens.line"] == "41" and attrs["asynclens.duration_ns"] == "100"
    assert attrs["asynclens.stack"] == {"values": [{"stringValue": "app.py:41 in handle"}]}
    assert parent["events"][0]["name"] == "asynclens.stall" and parent["events"][0]["timeUnixNano"] == "120"


def test_records_without_a_span_go_into_a_stable_synthetic_trace() -> None:
    first = spans_of(encode_spans([stall(trace_id=None, span_id=None)], resource=RES, session_id="s1"))[0]
    again = spans_of(encode_spans([stall(trace_id=None, span_id=None)], resource=RES, session_id="s1"))[0]
    other = spans_of(encode_spans([stall(trace_id=None, span_id=None)], resource=RES, session_id="s2"))[0]
    assert "parentSpanId" not in first and first == again and first["traceId"] != other["traceId"]


def test_gc_executor_and_leak_records_become_child_spans_and_unknown_kinds_are_skipped() -> None:
    gc = SimpleNamespace(kind="gc", start_ns=10, end_ns=30, generation=2, collected=5, uncollectable=0, task=None,
                         trace_id=T, span_id=1, span_name="op")
    job = SimpleNamespace(kind="executor_job", submit_ns=10, start_ns=40, end_ns=100, function="read_file",
                          thread_id=7, trace_id=T, span_id=1, error_type="OSError")
    leak = SimpleNamespace(kind="leak", handle_id=3, handle_kind="socket", description="tcp 127.0.0.1:80", open_ns=50,
                           close_ns=None, closed_by=None, site="app.py:9 in connect", stack=(), trace_id=None,
                           span_id=None, span_name=None, bytes_sent=10, bytes_received=None, ops=None)
    odd = SimpleNamespace(kind="lag", loop_id=1)
    out = {s["name"]: s for s in spans_of(encode_spans([gc, job, leak, odd], resource=RES, offset_ns=1000))}
    assert set(out) == {"asynclens.gc", "asynclens.executor_job read_file", "asynclens.leak socket"}
    assert attrs_of(out["asynclens.gc"])["asynclens.generation"] == "2"
    ex = out["asynclens.executor_job read_file"]
    assert attrs_of(ex)["asynclens.queue_wait_ns"] == "30" and ex["startTimeUnixNano"] == "1010"
    assert ex["status"] == {"code": 2, "message": "OSError"}
    assert attrs_of(out["asynclens.leak socket"])["asynclens.site"] == "app.py:9 in connect"
    assert encode_spans([odd], resource=RES) == {"resourceSpans": []}


def test_the_json_text_path_says_exactly_what_the_dict_encoder_says() -> None:
    varied = [
        span(),
        span("child", span_id=2, parent_id=1, remote_parent=True, task="Task-9", thread_id=77, cpu_ns=5, steps=2,
             attrs=MappingProxyType({"s": 'quote " and \\ and ü', "n": 2**70, "f": 0.5, "b": True, "l": (1, "x"), "none": None})),
        span("cancelled", span_id=3, status="cancelled", error_type="CancelledError"),
        span("error", span_id=4, status="error", error_type="E", error_message="m"),
        span("events", span_id=5, events=(SpanEvent("e", 150),), links=(1,)),
        span("server", span_id=6, attrs=MappingProxyType({"span.kind": "server"})),
        SimpleNamespace(kind="gc", start_ns=1, end_ns=2, generation=0, trace_id=T, span_id=1),
        SimpleNamespace(kind="lag", loop_id=1),
    ]
    for batch in (varied, [*varied, stall()]):
        text = encode_spans_json(batch, resource=RES, offset_ns=OFFSET, session_id="s", trace_of={1: T})
        assert text is not None
        assert json.loads(text) == encode_spans(batch, resource=RES, offset_ns=OFFSET, session_id="s", trace_of={1: T})
    assert encode_spans_json([SimpleNamespace(kind="lag")], resource=RES) is None


def test_unix_offset_comes_from_the_header_anchors() -> None:
    assert to_unix_offset(SimpleNamespace(anchor_mono_ns=5, anchor_wall_ns=105)) == 100
    assert to_unix_offset(None) == 0


def metrics_state() -> MetricsState:
    state = MetricsState()
    state.add([span(end_ns=100 + 3_000_000), span(end_ns=100 + 30_000_000), stall()])
    state.add([
        SimpleNamespace(kind="lag", loop_id=9, start_ns=0, end_ns=1, elu=0.25,
                        histogram=Histogram.from_values([900_000] * 9 + [11_000_000]).to_dict()),
        SimpleNamespace(kind="sched", loop_id=9, start_ns=0, end_ns=1,
                        ready_histogram=Histogram.from_values([500, 900, 2000, 2000]).to_dict()),
        SimpleNamespace(kind="leak", handle_kind="file", close_ns=None),
    ])
    return state


def test_metrics_encode_histograms_summaries_gauges_and_counters() -> None:
    payload = encode_metrics(metrics_state().families(), resource=RES, start_unix_ns=1, now_unix_ns=2)
    metrics = {m["name"]: m for rm in payload["resourceMetrics"] for sm in rm["scopeMetrics"] for m in sm["metrics"]}
    hist = metrics["asynclens.span.duration"]["histogram"]
    (point,) = hist["dataPoints"]
    assert hist["aggregationTemporality"] == 2 and point["count"] == "2"
    assert len(point["bucketCounts"]) == len(point["explicitBounds"]) + 1
    assert sum(int(c) for c in point["bucketCounts"]) == 2 and point["bucketCounts"][-1] == "0"
    bounds = point["explicitBounds"]
    assert point["bucketCounts"][bounds.index(0.005)] == "1" and point["bucketCounts"][bounds.index(0.05)] == "1"
    lag = metrics["asynclens.event_loop.lag"]["histogram"]["dataPoints"][0]
    assert lag["count"] == "10" and lag["sum"] == pytest.approx(0.0191) and lag["max"] == pytest.approx(0.011)
    assert lag["bucketCounts"][bounds.index(0.001)] == "9" and lag["bucketCounts"][bounds.index(0.025)] == "1"
    assert metrics["asynclens.event_loop.utilization"]["gauge"]["dataPoints"][0]["asDouble"] == 0.25
    stalls = metrics["asynclens.event_loop.stalls"]["sum"]
    assert stalls["isMonotonic"] is True and stalls["dataPoints"][0]["asInt"] == "1"
    assert metrics["asynclens.handles.open"]["gauge"]["dataPoints"][0]["attributes"] == [{"key": "kind", "value": {"stringValue": "file"}}]
    assert metrics["asynclens.scheduler.ready_delay"]["histogram"]["dataPoints"][0]["count"] == "4"


# -------------------------------------------------------------- conformance


def _hex_to_base64(node: Any) -> Any:
    """OTLP/JSON writes ids as hex; protobuf's JSON parser expects base64 bytes."""
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in ("traceId", "spanId", "parentSpanId") else _hex_to_base64(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_to_base64(v) for v in node]
    return node


def test_traces_parse_with_the_official_protobuf_definitions() -> None:
    pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto (the 'integration' extra) is not installed")
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with capture() as cap, asynclens.span("GET /", parent=SpanContext(T, 0x42)) as live:
        live.set("span.kind", "server")
        live.set("big", 2**80)
        live.set("tags", ("a", "b"))
        live.event("started", n=1.5)
        with pytest.raises(ValueError), asynclens.span("inner"):
            raise ValueError("boom")
    records = [*cap.spans, stall(span_id=cap.spans[1].span_id), SimpleNamespace(kind="gc", start_ns=1, end_ns=2, generation=0)]
    offset = to_unix_offset(cap.session.info)
    payload = encode_spans(records, resource=resource("svc", cap.session.info), offset_ns=offset, session_id="s")
    message = json_format.ParseDict(_hex_to_base64(payload), ExportTraceServiceRequest())  # unknown fields would raise
    parsed = list(message.resource_spans[0].scope_spans[0].spans)
    by_name = {s.name: s for s in parsed}
    inner, root = cap.spans
    assert by_name["GET /"].trace_id.hex() == f"{T:032x}" and by_name["GET /"].parent_span_id.hex() == f"{0x42:016x}"
    assert by_name["GET /"].kind == 2 and by_name["GET /"].flags == 0x301
    assert by_name["GET /"].start_time_unix_nano == root.start_ns + offset
    assert by_name["inner"].status.code == 2 and by_name["inner"].events[0].name == "exception"
    assert by_name["inner"].parent_span_id == by_name["GET /"].span_id
    assert by_name["asynclens.stall"].parent_span_id == by_name["GET /"].span_id
    assert {a.key: a.value.string_value for a in message.resource_spans[0].resource.attributes}["service.name"] == "svc"
    # and back: protobuf -> JSON -> our encoding agrees on every span's identity and times
    again = json_format.MessageToDict(message, use_integers_for_enums=True)
    ours = {s["name"]: s for s in spans_of(payload)}
    for s in again["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        mine = ours[s["name"]]
        assert base64.b64decode(s["spanId"]).hex() == mine["spanId"]
        assert s["startTimeUnixNano"] == mine["startTimeUnixNano"] and s["endTimeUnixNano"] == mine["endTimeUnixNano"]
        assert len(s.get("attributes", [])) == len(mine["attributes"])


def test_metrics_parse_with_the_official_protobuf_definitions() -> None:
    pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto (the 'integration' extra) is not installed")
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    payload = encode_metrics(metrics_state().families(), resource=RES, start_unix_ns=1, now_unix_ns=2)
    message = json_format.ParseDict(payload, ExportMetricsServiceRequest())
    metrics = {m.name: m for m in message.resource_metrics[0].scope_metrics[0].metrics}
    point = metrics["asynclens.span.duration"].histogram.data_points[0]
    assert point.count == 2 and sum(point.bucket_counts) == 2 and point.time_unix_nano == 2
    assert metrics["asynclens.event_loop.stalls"].sum.is_monotonic
    assert metrics["asynclens.event_loop.lag"].histogram.data_points[0].count == 10
    assert metrics["asynclens.event_loop.utilization"].gauge.data_points[0].as_double == 0.25


# ----------------------------------------------------------------- exporter


def fast_sink(url: str, **kw: Any) -> OtlpSink:
    options: dict[str, Any] = dict(schedule_delay=0.02, backoff=0.01, max_backoff=0.05, timeout=2.0,
                                   metrics_interval=None, shutdown_timeout=3.0, env={})
    options.update(kw)
    return OtlpSink(url, **options)


def run_spans(sink: OtlpSink, n: int = 3) -> None:
    with asynclens.session([sink], lag=False, track_handles=False, scheduler=False, flush_interval=0.01):
        for i in range(n):
            with asynclens.span(f"op{i}"):
                pass


def test_exports_gzipped_batches_with_headers_and_metrics_at_the_end() -> None:
    with running_collector() as (collector, url):
        sink = fast_sink(url, headers={"Authorization": "Bearer x"}, metrics_interval=60.0, service_name="echo")
        run_spans(sink)
        assert sorted(s["name"] for s in collector.spans()) == ["op0", "op1", "op2"]
        path, headers, body = collector.requests[0]
        assert headers["Content-Encoding"] == "gzip" and headers["Authorization"] == "Bearer x"
        assert headers["Content-Type"] == "application/json"
        assert attrs_of(body["resourceSpans"][0]["resource"])["service.name"] == "echo"
        assert any(m["name"] == "asynclens.span.duration" for m in collector.metrics())
    assert sink.statistics()["exported"] == 3 and sink.dropped == 0


def test_configuration_from_the_standard_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://other:9/custom",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,x=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x=2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_SERVICE_NAME": "billing",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
    }
    sink = OtlpSink(env=env)
    assert sink.traces_url == "http://collector:4318/v1/traces" and sink.metrics_url == "http://other:9/custom"
    assert sink._trace_headers == {"api-key": "a b", "x": "2"} and sink._metric_headers == {"api-key": "a b", "x": "1"}
    assert sink.timeout == 2.5 and sink.compression is None and sink.service_name == "billing"
    assert sink.resource_attributes == {"deployment.environment": "prod"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/v1/traces")
    assert OtlpSink().traces_url == "https://t.example/v1/traces"
    assert OtlpSink("http://explicit:1", env=env).traces_url == "http://explicit:1/v1/traces"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"endpoint": "ftp://x"}, "http:// or https://"), ({"compression": "zstd"}, "compression"),
     ({"env": {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}}, "key=value"), ({"max_queue": 0}, "max_queue"),
     ({"env": {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}}, "milliseconds")],
)
def test_bad_configuration_is_one_clear_error(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(OtlpExportError, match=message):
        OtlpSink(**kwargs)


def test_retries_on_5xx_429_with_retry_after_and_hangups_then_delivers() -> None:
    script: list[Any] = [503, (429, {"Retry-After": "0"}), "hangup", 500]
    with running_collector(script) as (collector, url):
        sink = fast_sink(url, max_batch=100)
        run_spans(sink, 5)
        assert sorted(s["name"] for s in collector.spans()) == [f"op{i}" for i in range(5)]
    stats = sink.statistics()
    assert stats["retries"] == 4 and stats["failures"] == 4 and stats["exported"] == 5 and sink.dropped == 0


def test_retry_after_is_honoured() -> None:
    with running_collector([(429, {"Retry-After": "1"})]) as (collector, url):
        sink = fast_sink(url, max_backoff=5.0)
        started = time.monotonic()
        run_spans(sink, 1)
        assert time.monotonic() - started >= 0.9  # waited as told, not the 10 ms backoff
        assert len(collector.spans()) == 1


def test_a_4xx_answer_drops_the_batch_without_retrying() -> None:
    with running_collector([400]) as (collector, url):
        sink = fast_sink(url, max_batch=100)
        run_spans(sink, 2)
        assert collector.attempts == ["/v1/traces"]
    stats = sink.statistics()
    assert stats["dropped_failed"] == 2 and stats["retries"] == 0 and "HTTP 400" in stats["last_error"]


def test_gives_up_after_max_retries_and_counts_the_drop() -> None:
    with running_collector([502] * 10) as (collector, url):
        sink = fast_sink(url, max_retries=2, max_batch=100)
        run_spans(sink, 4)
        assert len(collector.attempts) == 3
    assert sink.statistics()["dropped_failed"] == 4 and sink.statistics()["exported"] == 0


def test_unreachable_collector_never_reaches_user_code(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connections are refused
    sink = fast_sink(f"http://127.0.0.1:{port}", max_retries=1, shutdown_timeout=1.0)
    with asynclens.session([sink], lag=False, track_handles=False, scheduler=False) as s, asynclens.span("op"):
        pass
    assert s.statistics().sinks_disabled == 0 and sink.dropped == 1
    assert "dropped 1 record" in caplog.text


def test_stalled_collector_close_respects_the_shutdown_deadline() -> None:
    with running_collector(["stall"] * 20, stall_seconds=10.0) as (collector, url):
        sink = fast_sink(url, timeout=30.0, shutdown_timeout=0.5, max_batch=2)
        started = time.monotonic()
        run_spans(sink, 6)
        elapsed = time.monotonic() - started
        assert elapsed < 5.0  # not the 30 s request timeout, nor 10 s of stall
        assert collector.attempts  # it did try
    stats = sink.statistics()
    assert stats["exported"] == 0 and stats["dropped"] == 6 and stats["dropped_shutdown"] >= 4


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    with running_collector(["stall"], stall_seconds=10.0) as (collector, url):
        sink = fast_sink(url, max_queue=5, max_batch=1, shutdown_timeout=0.3)
        run_spans(sink, 40)
    stats = sink.statistics()
    assert stats["dropped_queue_full"] > 0
    assert stats["exported"] + stats["dropped"] == 40


def test_write_returns_quickly_while_the_collector_stalls() -> None:
    with running_collector(["stall"], stall_seconds=10.0) as (collector, url):
        sink = fast_sink(url, shutdown_timeout=0.3)
        with asynclens.session([sink], lag=False, track_handles=False, scheduler=False, flush_interval=0.01) as s:
            with asynclens.span("first"):
                pass
            assert collector.attempted.wait(10)
            started = time.monotonic()
            for _ in range(100):
                with asynclens.span("more"):
                    pass
            s.flush()  # the flusher hands records to write(): only a queue append
            assert time.monotonic() - started < 2.0


def test_a_span_with_unencodable_text_is_still_delivered() -> None:
    with running_collector() as (collector, url):
        sink = fast_sink(url)
        with asynclens.session([sink], lag=False, track_handles=False, scheduler=False):
            with asynclens.span("bad \ud800 name") as live:
                live.set("odd", object())
        (span,) = collector.spans()
        assert span["name"] == "bad ? name" and attrs_of(span)["odd"].startswith("<object")
    assert sink.dropped == 0


def test_span_to_trace_memory_for_links_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import asynclens.sinks.otlp as otlp

    monkeypatch.setattr(otlp, "_MAX_TRACE_MAP", 3)
    sink = fast_sink("http://127.0.0.1:9")
    sink._remember_traces([span(span_id=i) for i in range(1, 6)])
    assert sink._trace_of == {3: T, 4: T, 5: T}  # the oldest forgotten first
