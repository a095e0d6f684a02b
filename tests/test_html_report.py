"""The HTML report: self-contained, escaped, bounded in size, and complete."""

from __future__ import annotations

import html.parser
import json
import re
from typing import Any

from asynclens.records import Span
from asynclens.report.rundata import RunData
from asynclens.sinks import html as html_sink
from asynclens.sinks.html import HtmlSink, build_payload, render_html

try:  # works whether or not tests/ is a package
    from ._render_data import MS, T0, full_run, info
except ImportError:
    from _render_data import MS, T0, full_run, info  # type: ignore[no-redef]


class _Scan(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.data_block = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_data = tag == "script" and dict(attrs).get("id") == "asynclens-data"

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_block += data


def scan(text: str) -> _Scan:
    parser = _Scan()
    parser.feed(text)
    return parser


def test_user_strings_cannot_escape_into_markup() -> None:
    text = render_html(full_run())
    assert "<script>alert(1)</script>" not in text
    assert "</script><b>" not in text
    parsed = scan(text)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert len(scripts) == 2  # the data block and the report's own script, nothing injected
    assert not any(tag == "b" for tag, _ in parsed.tags)
    payload = json.loads(parsed.data_block)  # the data survives intact as data
    assert "<script>alert(1)</script>" in payload["strings"]
    attrs = next(v for v in payload["timeline"]["info"].values() if "attrs" in v)["attrs"]
    assert attrs == {"q": "</script><b>x</b>"}


def test_self_contained_no_network() -> None:
    text = render_html(full_run())
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "default-src 'none'" in text  # the CSP forbids any fetch
    assert "<link" not in text


def test_payload_has_every_section() -> None:
    payload = build_payload(full_run())
    assert payload["timeline"]["shown"] == 7
    tracks = [t["name"] for t in payload["timeline"]["tracks"]]
    assert tracks[:3] == ["Task-1", "Task-2", "Task-3"]
    assert payload["flame"]["has_cpu"] is True
    assert [s["culprit"] for s in payload["stalls"]] == ["app.py:41 in handle_search", "(no stack sampled)"]
    assert payload["stalls"][0]["t"] == 50_000.0 and payload["stalls"][0]["dur"] == 20_000.0
    assert payload["lag"] == [[0.0, 50_000.0, 0.4, 2.0, 2.0, 0.4], [50_000.0, 100_000.0, 1.0, 20.0, 20.0, 0.9]]
    assert payload["leaks"][0]["site"] == "app.py:30 in proxy"
    assert "Event loop stalls: 2" in payload["summary"] and "Left open: 1" in payload["summary"]
    assert payload["notes"] == []


def test_parent_links_connect_slivers_across_tracks() -> None:
    payload = build_payload(full_run())
    strings = payload["strings"]
    rows = payload["timeline"]["spans"]
    tracks = payload["timeline"]["tracks"]
    by_name = {strings[r[4]]: r for r in rows}
    handler = rows.index(by_name["GET /user"])
    children = [strings[r[4]] for r in rows if r[7] == handler]
    assert sorted(children) == ["db.query", "db.query", "hash", "parse"]
    assert {tracks[r[0]]["name"] for r in rows if r[7] == handler} == {"Task-1", "Task-2", "Task-3", "thread 99"}
    assert len({r[5] for r in rows if r[7] == handler or r is by_name["GET /user"]}) == 1  # one trace


def test_many_spans_are_sampled_by_whole_request_and_the_file_stays_small(monkeypatch: Any) -> None:
    monkeypatch.setattr(html_sink, "MAX_TIMELINE_SPANS", 300)
    data = RunData()
    data.begin(info())
    spans = []
    for trace in range(1, 201):  # 200 requests of 3 spans; the later ones are slower
        base = T0 + trace * MS
        length = trace * 1000
        spans.append(Span("req", trace, trace * 10, None, base, base + length, task=f"Task-{trace}"))
        spans.append(Span("a", trace, trace * 10 + 1, trace * 10, base, base + length // 2, task=f"Task-{trace}"))
        spans.append(
            Span("b", trace, trace * 10 + 2, trace * 10, base + length // 2, base + length, task=f"Task-{trace}")
        )
    data.add(spans)
    payload = build_payload(data)
    timeline = payload["timeline"]
    assert timeline["total"] == 600 and timeline["shown"] == 300
    shown_traces = {r[5] for r in timeline["spans"]}
    assert len(shown_traces) == 100  # whole requests only
    assert any("timeline shows 300 of 600 spans" in n for n in payload["notes"])
    assert payload["summary"].startswith("asynclens: 600 spans")  # aggregates keep everything


def test_sink_writes_the_file(tmp_path: Any) -> None:
    sink = HtmlSink(tmp_path / "r.html")
    sink.open(info())
    sink.write(full_run().parts[0].spans)
    sink.close()
    text = (tmp_path / "r.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and 'id="asynclens-data"' in text


def test_a_run_of_100k_spans_stays_under_10_mb() -> None:
    data = RunData()
    data.begin(info())
    spans = []
    for r in range(20_000):  # 20k requests of 5 spans over 2 tasks
        t = T0 + r * MS
        root = r * 8 + 1
        spans += [
            Span("GET /item", r + 1, root, None, t, t + 5 * MS, task=f"Task-{2 * r}", attrs={"path": f"/item/{r}"}),
            Span("auth", r + 1, root + 1, root, t, t + MS, task=f"Task-{2 * r}"),
            Span("db.query", r + 1, root + 2, root, t + MS, t + 3 * MS, task=f"Task-{2 * r + 1}"),
            Span("db.fetch", r + 1, root + 3, root + 2, t + 2 * MS, t + 3 * MS, task=f"Task-{2 * r + 1}"),
            Span("render", r + 1, root + 4, root, t + 3 * MS, t + 5 * MS, task=f"Task-{2 * r}"),
        ]
    data.add(spans)
    text = render_html(data)
    assert len(text.encode()) <= 10_000_000
    payload = json.loads(scan(text).data_block)
    assert payload["timeline"]["total"] == 100_000
    assert payload["timeline"]["shown"] == html_sink.MAX_TIMELINE_SPANS


def test_very_deep_span_chains_render() -> None:
    data = RunData()
    data.begin(info())
    chain = [Span(f"level{i}", 1, i + 1, i if i else None, T0 + i, T0 + 10_000 - i, task="Task-1") for i in range(3000)]
    data.add(chain)
    payload = build_payload(data)
    depth, node = 0, payload["flame"]["root"]
    while node[3]:
        node, depth = node[3][0], depth + 1
    assert depth == html_sink.FLAME_MAX_DEPTH + 1 and payload["strings"][node[0]] == "(deeper)"


def test_stall_stacks_in_the_flame_graph_keep_the_innermost_frames() -> None:
    from types import SimpleNamespace

    data = RunData()
    data.begin(info())
    frames = tuple(f"/very/long/path/mod{i}.py:{i} in f{i}" for i in range(30))
    data.add([SimpleNamespace(kind="stall", start_ns=T0, end_ns=T0 + 100 * MS, samples=(), stack=frames, cpu_ns=None)])
    payload = build_payload(data)
    strings = payload["strings"]
    node, names = payload["flame"]["root"], []
    while node[3]:
        node = node[3][0]
        names.append(strings[node[0]])
    assert names[:3] == ["[event loop stall]", "…", "mod18.py:18 in f18"]
    assert names[-1] == "mod29.py:29 in f29" and len(names) == 2 + html_sink.STALL_FRAMES


def test_findings_section_lists_the_lints_and_resource_waits_longest_first() -> None:
    from asynclens.records import BusyYield, NeverResumable, QueueBacklog, ResourceStats, SessionEnd

    data = RunData()
    data.begin(info())
    data.add(
        [
            NeverResumable(task_id=1, name="orphan", found_ns=T0, coro="wait_forever", suspended_at="app.py:9 in wait",
                           waiting_on="Future", creation_site="app.py:20 in main", span_name="GET /x"),
            BusyYield(task_id=2, name="poller", found_ns=T0, coro="poll", line="app.py:31 in poll", steps=500,
                      wakes=500, self_wakes=499, run_ns=3 * MS),
            ResourceStats(resource_id=3, resource_kind="Lock", site="app.py:5 in <module>", waits=2,
                          wait_ns=2 * MS, max_wait_ns=1 * MS, max_waiters=1),
            ResourceStats(resource_id=4, resource_kind="Semaphore", site="app.py:6 in <module>", waits=4,
                          wait_ns=90 * MS, max_wait_ns=40 * MS, max_waiters=3, max_hold_ns=40 * MS,
                          holder_task="Task-7", holder_span_name="GET /y", holder_site="app.py:50 in handler"),
            QueueBacklog(resource_id=5, resource_kind="Queue", site="app.py:7 in <module>", start_depth=10,
                         end_depth=80, samples=5),
            SessionEnd(end_ns=T0 + 100 * MS),
        ]  # fmt: skip
    )
    rows = build_payload(data)["findings"]
    assert [r["kind"] for r in rows] == [
        "will never finish", "busy-yield", "resource wait", "resource wait", "queue backlog"
    ]  # fmt: skip
    assert rows[0]["where"] == "app.py:9 in wait" and rows[0]["span"] == "GET /x"
    assert rows[1]["detail"] == "500 steps, 100% of 500 wake-ups by itself, 3.0 ms running"
    assert rows[2]["what"] == "Semaphore (4 waits)" and "longest hold 40.0 ms by Task-7" in rows[2]["detail"]
    assert rows[4]["detail"] == "depth 10 → 80 over 5 samples"
    assert "findingsTable()" in render_html(data) and build_payload(full_run())["findings"] == []
