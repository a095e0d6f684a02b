"""OtlpSink: export spans and metrics to an OpenTelemetry Collector over OTLP/HTTP JSON.

Standard library only. ``write`` (on the session's flusher thread) only appends to a
bounded queue; a background thread ("asynclens-otlp") batches, encodes
(``asynclens._otlp_encode``), gzips and POSTs to ``/v1/traces`` and, every
``metrics_interval`` seconds and at the end, ``/v1/metrics``. Failed requests are
retried with exponential backoff on 429, 5xx and connection errors, honouring
``Retry-After``; other 4xx answers drop the batch. ``close`` flushes for at most
``shutdown_timeout`` seconds; whatever could not be delivered is counted in
:meth:`OtlpSink.statistics` and logged once. Nothing here blocks the event loop or
raises into the program.

Configuration follows the OpenTelemetry exporter environment variables when an
argument is not given: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL, default
``http://localhost:4318``), ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``..._METRICS_ENDPOINT`` (full URLs), ``OTEL_EXPORTER_OTLP_HEADERS`` (and the
``_TRACES_``/``_METRICS_`` variants; ``key=value,...``, URL-encoded),
``OTEL_EXPORTER_OTLP_TIMEOUT`` (milliseconds), ``OTEL_EXPORTER_OTLP_COMPRESSION``
(``gzip`` or ``none``), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from .._state import context as _context
from ..records import Record, SessionInfo
from ._metrics import MetricsState
from ._otlp_encode import encode_metrics, encode_spans_json, resource, to_unix_offset
from .base import Sink

__all__ = ["OtlpExportError", "OtlpSink"]

logger = logging.getLogger("asynclens")

_DEFAULT_ENDPOINT = "http://localhost:4318"
_TRACE_KINDS = frozenset({"span", "stall", "gc", "executor_job", "leak", "never_resumable", "busy_yield"})
_MAX_TRACE_MAP = 50_000


class OtlpExportError(ValueError):
    """The OTLP exporter was configured with something it cannot use."""


def _parse_headers(text: str | None) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` form: ``k1=v1,k2=v2`` (values URL-encoded)."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OtlpExportError(f"bad OTLP header {item.strip()!r}: expected key=value")
        out[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return out


def _signal_url(signal: str, explicit: str | None, env: Mapping[str, str]) -> str:
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if explicit is None and specific:
        url = specific
    else:
        base = explicit if explicit is not None else env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _DEFAULT_ENDPOINT
        url = base.rstrip("/") + f"/v1/{signal}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OtlpExportError(f"OTLP endpoint {url!r}: expected an http:// or https:// URL")
    return url


class _Retry(Exception):
    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OtlpSink(Sink):
    """Send spans (with stalls, GC pauses, executor jobs and leaks) and metrics to an
    OTLP/HTTP endpoint as JSON.

    Args:
        endpoint: base URL of the collector (``/v1/traces`` and ``/v1/metrics`` are
            appended); default from the environment, else ``http://localhost:4318``.
        headers: extra HTTP headers (e.g. an API key); merged over the environment's.
        timeout: seconds per HTTP request (default 10).
        compression: ``"gzip"`` (default) or ``None``.
        service_name: ``service.name`` of the resource (default ``OTEL_SERVICE_NAME``,
            else the script name).
        resource_attributes: more resource attributes.
        max_queue: records waiting to be sent before new ones are dropped (counted).
        max_batch: records per request.
        schedule_delay: seconds the exporter waits to fill a batch.
        max_retries: attempts after the first for one batch.
        metrics_interval: seconds between metric exports; ``None`` exports none.
        shutdown_timeout: seconds ``close`` may spend delivering what is queued.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        compression: str | None = "env",
        service_name: str | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        max_queue: int = 20_000,
        max_batch: int = 4096,
        schedule_delay: float = 1.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        metrics_interval: float | None = 10.0,
        shutdown_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.traces_url = _signal_url("traces", endpoint, env)
        self.metrics_url = _signal_url("metrics", endpoint, env)
        base_headers = _parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS"))
        self._trace_headers = {**base_headers, **_parse_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")), **(headers or {})}
        self._metric_headers = {**base_headers, **_parse_headers(env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS")), **(headers or {})}
        if timeout is None:
            raw = env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
            try:
                timeout = float(raw) / 1000 if raw else 10.0
            except ValueError:
                raise OtlpExportError(f"OTEL_EXPORTER_OTLP_TIMEOUT={raw!r}: expected milliseconds") from None
        if compression == "env":
            compression = env.get("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip") or "gzip"
        if compression in ("none", ""):
            compression = None
        if compression not in (None, "gzip"):
            raise OtlpExportError(f"OTLP compression {compression!r}: only 'gzip' or None")
        for name, value in (("timeout", timeout), ("max_queue", max_queue), ("max_batch", max_batch),
                            ("schedule_delay", schedule_delay), ("shutdown_timeout", shutdown_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise OtlpExportError(f"OtlpSink({name}={value!r}): must be a positive number")
        self.timeout = float(timeout)
        self.compression = compression
        self.service_name = service_name or env.get("OTEL_SERVICE_NAME") or _default_service_name()
        self.resource_attributes = {**_parse_headers(env.get("OTEL_RESOURCE_ATTRIBUTES")), **(resource_attributes or {})}
        self.max_queue = int(max_queue)
        self.max_batch = int(max_batch)
        self.schedule_delay = float(schedule_delay)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.metrics_interval = metrics_interval
        self.shutdown_timeout = float(shutdown_timeout)
        self.metrics = MetricsState()

        self._queue: deque[Record] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None
        self._info: SessionInfo | None = None
        self._resource: dict[str, Any] = {}
        self._offset = 0
        self._start_unix = 0
        self._trace_of: dict[int, int] = {}
        self._connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}
        self._stats = {
            "exported": 0,  # records delivered
            "dropped_queue_full": 0,
            "dropped_failed": 0,  # batches given up on after retries or a 4xx answer
            "dropped_shutdown": 0,
            "requests": 0,
            "retries": 0,
            "failures": 0,
            "metric_exports": 0,
            "metric_failures": 0,
        }
        self.last_error: str | None = None

    # ------------------------------------------------------------ Sink hooks

    def open(self, info: SessionInfo) -> None:
        self._info = info
        self._offset = to_unix_offset(info)
        self._start_unix = int(info.anchor_wall_ns)
        self._resource = resource(self.service_name, info, self.resource_attributes)
        self._thread = threading.Thread(target=self._run, name="asynclens-otlp", daemon=True)
        self._thread.start()

    def write(self, records: Sequence[Record]) -> None:
        if self.metrics_interval is not None:
            self.metrics.add(records)
        queue = self._queue
        room = self.max_queue - len(queue)
        added = 0
        for record in records:
            if record.kind in _TRACE_KINDS:
                if added < room:
                    queue.append(record)
                    added += 1
                else:
                    self._stats["dropped_queue_full"] += 1
        if len(queue) >= self.max_batch:
            with self._wake:
                self._wake.notify()

    def close(self) -> None:
        if self._thread is None:
            return
        self._deadline = time.monotonic() + self.shutdown_timeout
        self._stop.set()
        with self._wake:
            self._wake.notify()
        self._thread.join(self.shutdown_timeout + self.timeout + 1.0)
        self._thread = None
        self._stats["dropped_shutdown"] += len(self._queue)
        self._queue.clear()
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        lost = self.dropped
        if lost:
            logger.warning(
                "asynclens: OTLP exporter to %s dropped %d record(s) (%s); last error: %s",
                self.traces_url, lost,
                ", ".join(f"{k[8:]}={v}" for k, v in self._stats.items() if k.startswith("dropped_") and v),
                self.last_error,
            )

    # ------------------------------------------------------------ reporting

    @property
    def dropped(self) -> int:
        """Records that did not reach the collector, for any reason."""
        return sum(v for k, v in self._stats.items() if k.startswith("dropped_"))

    def statistics(self) -> dict[str, Any]:
        """Counters: exported, dropped (by reason), requests, retries, failures, queued."""
        return {**self._stats, "dropped": self.dropped, "queued": len(self._queue), "last_error": self.last_error}

    def __repr__(self) -> str:
        return f"OtlpSink({self.traces_url!r})"

    # ------------------------------------------------------------ exporter thread

    def _run(self) -> None:
        next_metrics = time.monotonic() + (self.metrics_interval or 0)
        try:
            while not self._stop.is_set():
                with self._wake:
                    if len(self._queue) < self.max_batch and not self._stop.is_set():
                        self._wake.wait(self.schedule_delay)
                self._drain(final=False)
                if self.metrics_interval and time.monotonic() >= next_metrics:
                    self._export_metrics()
                    next_metrics = time.monotonic() + self.metrics_interval
            self._drain(final=True)
            if self.metrics_interval is not None and not self._past_deadline():
                self._export_metrics()
        except Exception as exc:  # a bug here must not kill silently: count what is lost
            self.last_error = f"exporter crashed: {type(exc).__name__}: {exc}"
            logger.warning("asynclens: OTLP exporter stopped: %s", self.last_error)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _drain(self, final: bool) -> None:
        queue = self._queue
        while queue:
            if final and self._past_deadline():
                return
            if not final and self._stop.is_set():
                return  # close() now owns the deadline: finish in the final drain
            count = min(len(queue), self.max_batch)
            batch = [queue.popleft() for _ in range(count)]
            try:
                sent = self._send_spans(batch)
            except Exception as exc:  # an encoding bug loses this batch, not the exporter
                self.last_error = f"encoding spans: {type(exc).__name__}: {exc}"
                sent = False
            if sent:
                self._stats["exported"] += count
            else:
                self._stats["dropped_shutdown" if self._past_deadline() else "dropped_failed"] += count

    def _remember_traces(self, batch: Sequence[Any]) -> None:
        trace_of = self._trace_of
        for record in batch:
            if record.kind == "span":
                trace_of[record.span_id] = record.trace_id
        excess = len(trace_of) - _MAX_TRACE_MAP
        if excess > 0:  # forget the oldest (dicts keep insertion order)
            for key in list(islice(trace_of, excess)):
                del trace_of[key]

    def _send_spans(self, batch: list[Any]) -> bool:
        self._remember_traces(batch)
        text = encode_spans_json(
            batch, resource=self._resource, offset_ns=self._offset,
            session_id=self._info.session_id if self._info else "", trace_of=self._trace_of,
        )
        if text is None:
            return True
        return self._post(self.traces_url, self._trace_headers, text, "spans")

    def _export_metrics(self) -> None:
        try:
            holder = _context.active
            if holder is not None and self.metrics.open_handles is None and hasattr(holder, "open_handles"):
                self.metrics.open_handles = holder.open_handles
            payload = encode_metrics(
                self.metrics.families(), resource=self._resource,
                start_unix_ns=self._start_unix, now_unix_ns=time.time_ns(),
            )
        except Exception as exc:
            self._stats["metric_failures"] += 1
            self.last_error = f"encoding metrics: {type(exc).__name__}: {exc}"
            return
        if not payload["resourceMetrics"]:
            return
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        if self._post(self.metrics_url, self._metric_headers, text, "metrics"):
            self._stats["metric_exports"] += 1
        else:
            self._stats["metric_failures"] += 1

    # ------------------------------------------------------------ HTTP

    def _post(self, url: str, headers: Mapping[str, str], text: str, what: str) -> bool:
        body = text.encode("utf-8", "replace")  # a lone surrogate in an attribute must not lose the batch
        send_headers = {"Content-Type": "application/json", "User-Agent": "asynclens-otlp", **headers}
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)  # JSON spans shrink ~15x even at level 1
            send_headers["Content-Encoding"] = "gzip"
        attempt = 0
        while True:
            try:
                self._request(url, send_headers, body)
                return True
            except _Retry as retry:
                self._stats["failures"] += 1
                self.last_error = f"{what}: {retry}"
                if attempt >= self.max_retries:
                    return False
                delay = min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.8, 1.0)
                if retry.delay is not None:
                    delay = min(max(delay, retry.delay), self.max_backoff)
                if self._deadline is not None and time.monotonic() + delay >= self._deadline:
                    return False
                if self._deadline is None and self._stop.wait(delay):
                    continue  # shutting down: retry now, then under close()'s deadline
                elif self._deadline is not None:
                    time.sleep(delay)
                attempt += 1
                self._stats["retries"] += 1
            except Exception as exc:  # a non-retryable answer
                self._stats["failures"] += 1
                self.last_error = f"{what}: {exc}"
                return False

    def _connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        connection = self._connections.get(key)
        if connection is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            connection = cls(parts.hostname or "", parts.port, timeout=self.timeout)
            self._connections[key] = connection
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return connection, path

    def _drop_connection(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        connection = self._connections.pop((parts.scheme, parts.hostname or "", parts.port), None)
        if connection is not None:
            connection.close()

    def _request(self, url: str, headers: Mapping[str, str], body: bytes) -> None:
        connection, path = self._connection(url)
        self._stats["requests"] += 1
        timeout = self.timeout
        if self._deadline is not None:  # shutting down: no request may outlive close()'s deadline
            timeout = max(0.05, min(timeout, self._deadline - time.monotonic()))
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", path, body=body, headers=dict(headers))
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbled
            self._drop_connection(url)
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        status = response.status
        if response.will_close:
            self._drop_connection(url)
        if 200 <= status < 300:
            return
        reason = f"HTTP {status} {response.reason}"
        if status == 429 or status >= 500:
            raise _Retry(reason, _retry_after(response.getheader("Retry-After")))
        raise OtlpExportError(reason)


def _default_service_name() -> str:
    import sys

    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"unknown_service:{script or 'python'}"
