"""PrometheusSink: the Prometheus text exposition format, served over HTTP or written to a file.

Serves ``/metrics`` from a background thread (``asynclens-prometheus``) on
``host:port`` (default ``127.0.0.1:9464``; ``port=0`` picks a free one, see
:attr:`PrometheusSink.port`), or, with ``textfile=``, writes the node exporter's
textfile-collector file (atomically, at most every ``textfile_interval`` seconds
and at the end). Metrics: span duration histograms by span name, event-loop lag
and scheduling latency summaries, event-loop utilisation, stalls, GC pauses,
executor queue wait, open handles by kind (see ``docs/prometheus.md``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .._state import context as _context
from ..records import Record, SessionInfo
from ._metrics import DEFAULT_BUCKETS, Family, HistogramPoint, MetricsState, Point
from ._rendering import write_text_atomically
from .base import Sink

__all__ = ["CONTENT_TYPE", "PrometheusSink", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(pairs: Sequence[tuple[str, str]], extra: tuple[str, str] | None = None) -> str:
    items = list(pairs) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in items) + "}"


def render(families: Sequence[Family]) -> str:
    """The text exposition (format 0.0.4) of metric families."""
    lines: list[str] = []
    for family in families:
        name = family.name
        if family.type == "counter":  # the 0.0.4 text format names a counter by its sample name
            name += "_total"
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.type}")
        for point in family.points:
            if isinstance(point, HistogramPoint):
                for bound, count in zip(point.bounds, point.cumulative):
                    lines.append(f"{name}_bucket{_labels(point.labels, ('le', _number(bound)))} {count}")
                lines.append(f"{name}_bucket{_labels(point.labels, ('le', '+Inf'))} {point.count}")
                lines.append(f"{name}_sum{_labels(point.labels)} {_number(point.sum)}")
                lines.append(f"{name}_count{_labels(point.labels)} {point.count}")
            elif isinstance(point, Point):
                lines.append(f"{name}{_labels(point.labels)} {_number(point.value)}")
    return "\n".join(lines) + "\n" if lines else ""


class PrometheusSink(Sink):
    """Expose a session's metrics to Prometheus.

    Args:
        port: TCP port of the ``/metrics`` endpoint (``0``: any free port; ``None``
            with ``textfile``: no server).
        host: address to listen on (default loopback only).
        textfile: path of a textfile-collector file (``*.prom``) to keep up to date.
        textfile_interval: seconds between rewrites of ``textfile``.
        buckets: histogram upper bounds in seconds.
        max_series: label sets per metric (e.g. span names) before the rest is
            counted under ``"(other)"``.
    """

    def __init__(
        self,
        port: int | None = 9464,
        *,
        host: str = "127.0.0.1",
        textfile: str | os.PathLike[str] | None = None,
        textfile_interval: float = 5.0,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int = 200,
    ) -> None:
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
            raise ValueError(f"PrometheusSink(port={port!r}): must be a TCP port 0-65535 or None")
        if port is None and textfile is None:
            raise ValueError("PrometheusSink: give a port to serve /metrics on, a textfile= to write, or both")
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.textfile = os.fspath(textfile) if textfile is not None else None
        self.textfile_interval = float(textfile_interval)
        self.metrics = MetricsState(buckets, max_series)
        self.scrapes = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._last_textfile = 0.0

    @property
    def url(self) -> str | None:
        """``http://host:port/metrics`` while serving, else ``None``."""
        return None if self.port is None else f"http://{self.host}:{self.port}/metrics"

    def render(self) -> str:
        """The current exposition text."""
        if self.metrics.open_handles is None:
            holder = _context.active
            if holder is not None and hasattr(holder, "open_handles"):
                self.metrics.open_handles = holder.open_handles
        return render(self.metrics.families())

    # ------------------------------------------------------------ Sink hooks

    def open(self, info: SessionInfo) -> None:
        if self._requested_port is not None:
            self._server = ThreadingHTTPServer((self.host, self._requested_port), _handler(self))
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._serve, name="asynclens-prometheus", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        # Runs serve_forever under a frame of asynclens, so the handle registry knows the
        # sockets it accepts are asynclens's own, not the program's.
        server = self._server
        if server is not None:
            server.serve_forever(poll_interval=0.2)

    def write(self, records: Sequence[Record]) -> None:
        self.metrics.add(records)
        if self.textfile is not None and time.monotonic() - self._last_textfile >= self.textfile_interval:
            self._write_textfile()

    def close(self) -> None:
        if self.textfile is not None:
            self._write_textfile()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.port = None

    def _write_textfile(self) -> None:
        assert self.textfile is not None
        self._last_textfile = time.monotonic()
        write_text_atomically(self.textfile, self.render())  # the collector never reads half a file

    def __repr__(self) -> str:
        where = self.url or self.textfile or f"{self.host}:{self._requested_port}"
        return f"PrometheusSink({where!r})"


def _handler(sink: PrometheusSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "asynclens serves /metrics")
                return
            try:
                body = sink.render().encode("utf-8")
                status = 200
            except Exception as exc:  # a scrape must not kill the server thread
                body = f"# asynclens: metrics unavailable: {type(exc).__name__}\n".encode()
                status = 500
            sink.scrapes += 1
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
