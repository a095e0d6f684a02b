"""A scripted OTLP/HTTP collector stub on 127.0.0.1 for the exporter tests."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Collector:
    """Answers each POST with the next scripted reply (then 200 forever).

    A reply is an int status, ``("status", {headers})``, ``"stall"`` (sleep
    ``stall_seconds`` before answering 200) or ``"hangup"`` (close without answering).
    Every request is kept in ``requests`` as ``(path, headers, decoded JSON)``.
    """

    def __init__(self, script: list[Any] | None = None, stall_seconds: float = 1.0) -> None:
        self.script = list(script or [])
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.attempts: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.attempted = threading.Event()  # set by the first request

    def next_reply(self, path: str) -> Any:
        with self.lock:
            self.attempts.append(path)
            self.attempted.set()
            return self.script.pop(0) if self.script else 200

    def spans(self) -> list[dict[str, Any]]:
        out = []
        for path, _, body in self.requests:
            if path == "/v1/traces":
                for rs in body["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        out.extend(ss["spans"])
        return out

    def metrics(self) -> list[dict[str, Any]]:
        out = []
        for path, _, body in self.requests:
            if path == "/v1/metrics":
                for rm in body["resourceMetrics"]:
                    for sm in rm["scopeMetrics"]:
                        out.extend(sm["metrics"])
        return out


def _handler(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            reply = collector.next_reply(self.path)
            if reply == "hangup":
                self.close_connection = True
                self.connection.close()
                return
            if reply == "stall":
                collector.release.wait(collector.stall_seconds)
                reply = 200
            status, headers = reply if isinstance(reply, tuple) else (reply, {})
            if status == 200:
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                with collector.lock:
                    collector.requests.append((self.path, dict(self.headers), json.loads(raw)))
            body = b"{}"
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the exporter timed out on a stalled reply and hung up: what the test wants

    return Handler


@contextmanager
def running_collector(script: list[Any] | None = None, stall_seconds: float = 1.0) -> Iterator[tuple[Collector, str]]:
    """A collector on a random free loopback port; yields it and its base URL."""
    collector = Collector(script, stall_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(collector))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield collector, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        collector.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
