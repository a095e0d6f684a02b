"""OTLP export vs the JSON lines sink at the same span rate, on the loopback echo service.

    python benchmarks/otlp_overhead.py [--clients 200] [--seconds 2] [--rounds 5] [--loop asyncio]

Every request runs in one asynclens span (``@trace``); probes are off so the
sink is the only difference. Variants, measured interleaved in one run:

* ``bare``: no asynclens;
* ``jsonl sink``: spans written to a JSON lines file (the baseline of the ratios);
* ``otlp sink``: spans POSTed (gzip, batches of up to 4096) to a stub OTLP/HTTP collector
  on 127.0.0.1, which runs in its own process and answers 200.

Ratios are per-round throughput vs the JSONL sink. Budget (issue 8): OTLP export
adds at most 5 % (ratio >= 0.95). The exporter's own counters (exported,
dropped) are summed over the OTLP rounds and printed, so a fast run that silently
dropped spans would show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from echo_service import Variant, compare, print_table

NO_PROBES = {"lag": False, "track_handles": False, "scheduler": False}


# ----------------------------------------------------------- server-side setups


def jsonl_session(path: str) -> Any:
    """Setup: a session writing every span to ``path`` (JSON lines)."""
    import asynclens

    return asynclens.session(path, **NO_PROBES)


@contextlib.contextmanager
def otlp_session(endpoint: str, stats_dir: str) -> Iterator[None]:
    """Setup: a session exporting to ``endpoint``; the exporter's counters go to ``stats_dir``."""
    import asynclens
    from asynclens.sinks.otlp import OtlpSink

    sink = OtlpSink(endpoint, env={}, service_name="echo")  # defaults: gzip, metrics every 10 s and at the end
    with asynclens.session([sink], **NO_PROBES):
        yield
    with open(os.path.join(stats_dir, f"otlp-{os.getpid()}.json"), "w") as handle:
        json.dump(sink.statistics(), handle)


# ------------------------------------------------------------ collector stub


class _Collector(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _collector_main() -> None:
    """Run the stub until stdin closes; print the port first."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # the benchmark closes our stdin when it is done (or dies)
    server.shutdown()


@contextlib.contextmanager
def collector() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--collector"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collector", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.collector:
        _collector_main()
        return
    with tempfile.TemporaryDirectory(prefix="asynclens-otlp-bench-") as tmp, collector() as endpoint:
        variants = {
            "jsonl sink": Variant(setup="otlp_overhead:jsonl_session", options={"path": os.path.join(tmp, "echo.jsonl")},
                                  wrap="echo_service:asynclens_span"),
            "bare": Variant(),
            "otlp sink": Variant(setup="otlp_overhead:otlp_session", options={"endpoint": endpoint, "stats_dir": tmp},
                                 wrap="echo_service:asynclens_span"),
        }
        results = compare(variants, clients=args.clients, seconds=args.seconds, rounds=args.rounds, loop=args.loop,
                          baseline="jsonl sink")
        print_table(results, title=f"OTLP vs JSON lines sink: echo service, one span per request, {args.clients} clients, "
                                   f"{args.loop} loop, {args.rounds} rounds (ratios vs the JSONL sink)")
        totals: dict[str, int] = {}
        for name in os.listdir(tmp):
            if name.startswith("otlp-"):
                with open(os.path.join(tmp, name)) as handle:
                    for key, value in json.load(handle).items():
                        if isinstance(value, int):
                            totals[key] = totals.get(key, 0) + value
        otlp = next(r for r in results if r.name == "otlp sink")
        print(f"otlp exporter over all rounds: exported {totals.get('exported', 0)} spans in {totals.get('requests', 0)} "
              f"requests, dropped {totals.get('dropped', 0)}, retries {totals.get('retries', 0)}")
        verdict = "within" if otlp.ratio_median >= 0.95 else "OVER"
        print(f"budget: OTLP export costs {100 * (1 - otlp.ratio_median):+.1f} % throughput vs JSONL (median of paired rounds; "
              f"budget <= 5 %): {verdict} budget")


if __name__ == "__main__":
    main()
