"""How long each output format takes to write a run of N spans, and how big the file is.

    python benchmarks/output_speed.py [--spans 100000] [--rounds 2]

The run is synthetic but shaped like a service: requests of 10 spans over 3 tasks
(handler, two child tasks), plus stalls, lag windows and leaks as duck-typed
records. Formats are measured interleaved, round by round; the best round counts.
Budget (issue 6): <= 5 s per format for 100k spans, HTML <= 10 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from asynclens import cli
from asynclens.records import SessionEnd, SessionInfo, Span
from asynclens.report.fileformat import encode_record
from asynclens.report.rundata import RunData

MS = 1_000_000
BUDGET_S = 5.0
HTML_BUDGET = 10_000_000


def make_run(n_spans: int) -> tuple[RunData, list[Any], SessionInfo]:
    info = SessionInfo("bench", 1, 1, ("service.py",), "3.11", 0, 1_700_000_000 * 10**9)
    records: list[Any] = []
    requests = max(1, n_spans // 10)
    for r in range(requests):
        t = r * 2 * MS
        task, a, b = f"Task-{3 * r}", f"Task-{3 * r + 1}", f"Task-{3 * r + 2}"
        root = r * 16 + 1
        trace = r + 1
        records += [
            Span(
                "GET /user",
                trace,
                root,
                None,
                t,
                t + 9 * MS,
                task=task,
                cpu_ns=MS,
                sched_wait_ns=MS,
                io_wait_ns=6 * MS,
                steps=5,
                attrs={"path": f"/user/{r}"},
            ),
            Span("auth", trace, root + 1, root, t, t + MS, task=task, cpu_ns=MS // 2),
            Span("db.query", trace, root + 2, root, t + MS, t + 5 * MS, task=a, attrs={"table": "users"}),
            Span("db.connect", trace, root + 3, root + 2, t + MS, t + 2 * MS, task=a),
            Span("db.fetch", trace, root + 4, root + 2, t + 2 * MS, t + 5 * MS, task=a),
            Span("cache.get", trace, root + 5, root, t + MS, t + 3 * MS, task=b),
            Span("cache.decode", trace, root + 6, root + 5, t + 2 * MS, t + 3 * MS, task=b),
            Span("render", trace, root + 7, root, t + 5 * MS, t + 9 * MS, task=task, cpu_ns=3 * MS),
            Span("template", trace, root + 8, root + 7, t + 5 * MS, t + 8 * MS, task=task, cpu_ns=2 * MS),
            Span("json.dumps", trace, root + 9, root + 7, t + 8 * MS, t + 9 * MS, task=task, cpu_ns=MS),
        ]
    end = requests * 2 * MS + 10 * MS
    for i in range(200):
        t = i * end // 200
        records.append(
            SimpleNamespace(
                kind="stall",
                loop_id=1,
                start_ns=t,
                end_ns=t + 60 * MS,
                file="service.py",
                line=41,
                function="score",
                stack=("service.py:10 in main", "service.py:41 in score"),
                samples=(),
                task="Task-1",
                trace_id=1,
                span_id=1,
                span_name="GET /user",
                async_stack=(),
                cause="cpu",
                cpu_ns=60 * MS,
                sampled=True,
            )
        )
    for i in range(0, end, 100 * MS):
        records.append(
            SimpleNamespace(
                kind="lag",
                loop_id=1,
                start_ns=i,
                end_ns=i + 100 * MS,
                count=100,
                min_ns=MS,
                max_ns=9 * MS,
                mean_ns=2 * MS,
                stddev_ns=MS,
                p50_ns=2 * MS,
                p90_ns=4 * MS,
                p99_ns=8 * MS,
                p999_ns=9 * MS,
                elu=0.5,
            )
        )
    for i in range(100):
        records.append(
            SimpleNamespace(
                kind="leak",
                handle_id=i,
                handle_kind="socket",
                description=f"tcp 127.0.0.1:{8000 + i}",
                open_ns=i * MS,
                close_ns=None,
                closed_by=None,
                site="service.py:30 in proxy",
                stack=(),
                trace_id=1,
                span_id=1,
                span_name="GET /user",
            )
        )
    data = RunData()
    data.begin(info)
    data.add(records)
    data.add([SessionEnd(end)])
    return data, records, info


def write_jsonl(path: str, records: list[Any], info: SessionInfo) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(encode_record(info) + "\n")
        f.write("".join([encode_record(r) + "\n" for r in records if isinstance(r, Span)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data, records, info = make_run(args.spans)
    formats = ["jsonl", "chrome", "speedscope", "folded", "html", "text"]
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for fmt in formats:  # interleaved: every format once per round
                path = os.path.join(tmp, f"out.{fmt}")
                started = time.perf_counter()
                if fmt == "jsonl":
                    write_jsonl(path, records, info)
                else:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(cli.render(data, fmt))
                took = time.perf_counter() - started
                best[fmt] = min(best.get(fmt, took), took)
                sizes[fmt] = os.path.getsize(path)
    print(
        f"writing a run of {data.span_count} spans (+{len(records) - data.span_count} other records), best of {args.rounds} rounds"
    )
    print(f"{'format':<11} {'seconds':>8} {'÷ budget':>9} {'size MB':>8} {'µs/span':>8}")
    for fmt in formats:
        print(
            f"{fmt:<11} {best[fmt]:>8.2f} {best[fmt] / BUDGET_S:>9.2f} {sizes[fmt] / 1e6:>8.2f} {best[fmt] / data.span_count * 1e6:>8.1f}"
        )
    print(f"html size ÷ 10 MB budget: {sizes['html'] / HTML_BUDGET:.2f}  (jsonl is the reference writer: spans only)")


if __name__ == "__main__":
    main()
