"""Prometheus text exposition: served over HTTP and as a textfile, validated with prometheus_client's parser."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

import asynclens
from asynclens.records import Span
from asynclens.sinks._metrics import MetricsState
from asynclens.sinks.prometheus import CONTENT_TYPE, PrometheusSink, render
from asynclens.stats import Histogram


def parse(text: str) -> dict[str, Any]:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client (the 'integration' extra) is not installed")
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def state() -> MetricsState:
    metrics = MetricsState()
    metrics.add([
        Span("GET /users/{id}", 1, 2, None, 0, 3_000_000),
        Span("GET /users/{id}", 1, 3, None, 0, 40_000_000),
        Span('odd "name"\nwith\\escapes', 1, 4, None, 0, 1),
        SimpleNamespace(kind="stall", start_ns=0, end_ns=80_000_000, cause="cpu"),
        SimpleNamespace(kind="stall", start_ns=0, end_ns=60_000_000, cause="cpu"),
        SimpleNamespace(kind="gc", start_ns=0, end_ns=2_000_000, generation=2),
        SimpleNamespace(kind="executor_job", submit_ns=0, start_ns=7_000_000, end_ns=9_000_000),
        SimpleNamespace(kind="lag", loop_id=5, elu=0.5,
                        histogram=MappingProxyType(Histogram.from_values([400_000] * 99 + [4_000_000]).to_dict())),
        SimpleNamespace(kind="sched", loop_id=5, ready_histogram=Histogram.from_values([1, 2, 3, 4] * 10).to_dict()),
        SimpleNamespace(kind="leak", handle_kind="socket", close_ns=None),
        SimpleNamespace(kind="leak", handle_kind="socket", close_ns=5),  # closed by GC: not open now
    ])
    return metrics


def test_exposition_parses_and_follows_naming_conventions() -> None:
    families = parse(render(state().families()))
    assert set(families) == {
        "asynclens_span_duration_seconds", "asynclens_event_loop_lag_seconds", "asynclens_event_loop_utilization_ratio",
        "asynclens_stalls", "asynclens_stall_duration_seconds", "asynclens_gc_pause_seconds",
        "asynclens_executor_queue_wait_seconds", "asynclens_scheduling_latency_seconds", "asynclens_open_handles",
    }
    spans = families["asynclens_span_duration_seconds"]
    assert spans.type == "histogram"
    samples = {(s.name, s.labels.get("span"), s.labels.get("le")): s.value for s in spans.samples}
    assert samples[("asynclens_span_duration_seconds_bucket", "GET /users/{id}", "0.005")] == 1
    assert samples[("asynclens_span_duration_seconds_bucket", "GET /users/{id}", "0.05")] == 2
    assert samples[("asynclens_span_duration_seconds_bucket", "GET /users/{id}", "+Inf")] == 2
    assert samples[("asynclens_span_duration_seconds_count", "GET /users/{id}", None)] == 2
    assert samples[("asynclens_span_duration_seconds_sum", "GET /users/{id}", None)] == pytest.approx(0.043)
    assert samples[("asynclens_span_duration_seconds_count", 'odd "name"\nwith\\escapes', None)] == 1
    stalls = families["asynclens_stalls"]
    assert stalls.type == "counter" and [(s.name, s.labels, s.value) for s in stalls.samples] == [("asynclens_stalls_total", {"cause": "cpu"}, 2)]
    lag = families["asynclens_event_loop_lag_seconds"]
    assert lag.type == "histogram"
    le = {s.labels.get("le"): s.value for s in lag.samples if s.name.endswith("_bucket")}
    assert (le["0.00025"], le["0.0005"], le["0.0025"], le["0.005"], le["+Inf"]) == (0, 99, 99, 100, 100)
    assert [s.value for s in families["asynclens_event_loop_utilization_ratio"].samples] == [0.5]
    assert [(s.labels, s.value) for s in families["asynclens_open_handles"].samples] == [({"kind": "socket"}, 1)]
    wait = {s.labels.get("le"): s.value for s in families["asynclens_executor_queue_wait_seconds"].samples if s.name.endswith("_bucket")}
    assert wait["0.005"] == 0 and wait["0.01"] == 1


def test_live_open_handles_come_from_the_session_when_available() -> None:
    metrics = MetricsState()
    metrics.open_handles = lambda: [SimpleNamespace(handle_kind="file"), SimpleNamespace(handle_kind="file"), SimpleNamespace(handle_kind="task")]
    families = parse(render(metrics.families()))
    assert {s.labels["kind"]: s.value for s in families["asynclens_open_handles"].samples} == {"file": 2, "task": 1}


def test_series_per_metric_are_bounded() -> None:
    metrics = MetricsState(max_series=3)
    metrics.add([Span(f"name{i}", 1, i + 1, None, 0, 10) for i in range(10)])
    families = parse(render(metrics.families()))
    counts = {s.labels["span"]: s.value for s in families["asynclens_span_duration_seconds"].samples if s.name.endswith("_count")}
    assert counts == {"name0": 1, "name1": 1, "name2": 1, "(other)": 7}


def test_empty_state_renders_nothing() -> None:
    assert render(MetricsState().families()) == ""


def test_serves_metrics_on_loopback_during_the_session() -> None:
    sink = PrometheusSink(port=0)
    with asynclens.session([sink], lag=False, track_handles=False, scheduler=False, flush_interval=0.01) as s:
        for _ in range(3):
            with asynclens.span("work"):
                pass
        s.flush()
        assert sink.url is not None and sink.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(sink.url, timeout=5) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            text = response.read().decode()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(sink.url.replace("/metrics", "/nope"), timeout=5)
        url = sink.url
    families = parse(text)
    counts = [s.value for s in families["asynclens_span_duration_seconds"].samples if s.name.endswith("_count")]
    assert counts == [3] and sink.scrapes == 1
    with pytest.raises(OSError):  # the server is gone with the session
        urllib.request.urlopen(url, timeout=2)


def test_writes_a_textfile_collector_file(tmp_path: Any) -> None:
    path = tmp_path / "asynclens.prom"
    sink = PrometheusSink(port=None, textfile=path, textfile_interval=3600)
    with asynclens.session([sink], lag=False, track_handles=False, scheduler=False), asynclens.span("job"):
        pass
    families = parse(path.read_text())
    assert [s.value for s in families["asynclens_span_duration_seconds"].samples if s.name.endswith("_count")] == [1]
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_bad_options_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="port"):
        PrometheusSink(port=70000)
    with pytest.raises(ValueError, match="textfile"):
        PrometheusSink(port=None)
    with pytest.raises(ValueError, match="buckets"):
        PrometheusSink(buckets=[1.0, 0.5])


def test_a_live_session_exports_lag_and_ready_delay_as_histograms(tmp_path: Any) -> None:
    import asyncio

    path = tmp_path / "run.prom"
    sink = PrometheusSink(port=None, textfile=path, textfile_interval=3600)

    async def work() -> None:
        for _ in range(20):
            await asyncio.sleep(0.002)

    with asynclens.session(sinks=[sink], lag_interval=0.001, track_handles=False):
        asyncio.run(work())
    families = parse(path.read_text())
    for name in ("asynclens_event_loop_lag_seconds", "asynclens_scheduling_latency_seconds"):
        family = families[name]
        counts = {s.labels.get("le"): s.value for s in family.samples if s.name.endswith("_bucket")}
        assert family.type == "histogram" and counts["+Inf"] > 0, name
        assert list(counts.values()) == sorted(counts.values())  # cumulative


def test_span_durations_recorded_in_batches_match_one_by_one() -> None:
    spans = [Span("a" if i % 3 else "b", 1, i + 1, None, 0, (i * 7919) % 50_000_000) for i in range(500)]
    batched = MetricsState()
    batched.add(spans)
    single = MetricsState()
    for span in spans:
        single.add([span])
    assert render(batched.families()) == render(single.families())
