"""A realistic ASGI service under HTTP load: what each instrumentation costs the server per request.

    python benchmarks/asgi_service.py [--rounds 5] [--seconds 3] [--connections 50] [--only asynclens,otel]

The service is a small FastAPI app served by uvicorn (``loop="uvloop"``,
``http="httptools"``, one worker) in a process of its own, started by this script
as ``python benchmarks/asgi_service.py --serve VARIANT --port P``. Its two
endpoints, requested alternately:

* ``POST /orders``: a JSON body validated by pydantic (nested line items with
  bounds and a pattern), then ``asyncio.gather`` of three child coroutines
  (customer, stock, prices), each awaiting a simulated database round trip; the
  priced order is built and serialised through a pydantic ``response_model``;
* ``GET /customers/{id}/orders?limit=&status=``: path and query parameters
  validated (bounds, a ``Literal``), then ``gather`` of two children (customer,
  order list) and a list response model.

The simulated database round trip is a future resolved by ``loop.call_soon``:
the task suspends and is woken by a callback, as on a real I/O completion, without
adding idle time, so the server stays CPU-bound and CPU per request is what differs.

Variants, measured interleaved in one run (a fresh server per variant and round;
the order rotates each round):

* ``bare``: no instrumentation; the server process never imports asynclens;
* ``asynclens``: ``asynclens.session()`` with its defaults (lag, handles and
  scheduler probes; no sinks, so spans are only folded into the in-memory summary
  aggregates), ``AsgiMiddleware``, and ``@asynclens.trace`` on both handlers and on
  the gathered children: 4-5 spans per request (4.5 on average);
* ``asynclens-spans``: the same, with ``lag=False, track_handles=False,
  scheduler=False``: spans only;
* ``asynclens-flight``: ``asynclens`` with a flight recorder on top
  (``flight_recorder=30``, dumps on ``SIGUSR2`` only, which is never sent): every
  record is frozen and kept in the ring for 30 s, the steady-state cost of the
  recorder (``docs/flight-recorder.md``);
* ``otel``: the OpenTelemetry SDK (``TracerProvider``, ``BatchSpanProcessor`` with
  its default limits and an exporter that discards), the ASGI
  ``OpenTelemetryMiddleware`` with its defaults (a server span plus ``http
  receive``/``http send`` spans), ``AsyncioInstrumentor`` tracing the gathered
  children (``OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE``), and a
  ``start_as_current_span`` wrapper on each handler: 6-8 spans per request (7 on average);
* ``pyinstrument``: the documented FastAPI recipe, a ``Profiler(async_mode="enabled")``
  started and stopped around each request by a middleware (the recipe profiles
  per request, not process-wide), applied to every request rather than only to
  ``?profile`` ones. It is written as a pure ASGI middleware, not the recipe's
  ``@app.middleware("http")``, so that Starlette's ``BaseHTTPMiddleware`` cost is
  not counted as pyinstrument's, and the session each request produces is dropped
  instead of rendered (the recipe renders HTML only for the requests it answers
  with the profile).

A variant whose packages are missing is skipped with one line. ``bare`` is
always measured: it is the baseline of every ratio.

Load: HTTP/1.1 keep-alive on 127.0.0.1 from ``--connections`` connections (50),
one request in flight per connection, the two endpoints in rotation. ``wrk`` is
used when it is on PATH (``apt-get install wrk``; one thread and a Lua script that
builds the POST/GET mix and counts status-200 responses), else a built-in load
generator in a separate process (uvloop, raw protocols, pre-built requests,
responses parsed with httptools, status 200 checked). Either runs one load per
round: a ``--warmup`` (1 s), then the measured window of ``--seconds`` (3 s); only
the responses that arrive inside the window count (wrk's script reads the same
``CLOCK_MONOTONIC`` through LuaJIT's FFI), and the server's CPU is read at the
window's two ends, so connection set-up, warm-up and the stop fall outside it and
the requests in flight at either end cost about what they leave out. With two or
more CPUs the server is pinned to the first allowed CPU and the load to the second
(``--no-pin`` turns that off), so every variant gets the same placement.

Measured per round: successful (status 200) responses per second, and the
server's CPU per successful response: utime + stime of the whole server process
(all threads: the asynclens flusher and lag watchdog, OpenTelemetry's export
thread) from ``/proc/PID/stat`` before and after the measured window, divided by
the successful responses. User-mode CPU alone is shown too (steadier: the kernel
time of loopback TCP lands on whichever process runs the softirq). ``/proc``
counts in clock ticks (10 ms), about 0.5 % of a 2-second round per reading.
"server busy" is the server's CPU over the window's wall time: near 100 % means
the server, not the load generator, is the bottleneck.

The table gives the median over rounds of requests/s and of CPU µs per request,
and the median of the per-round ratios to ``bare`` *of the same round*. Budgets:
asynclens with its defaults ≤ 1.05x bare CPU per request, spans only ≤ 1.02x.
They are printed as met or not met; the script never fails on them (exit 0).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the handlers'
# annotations at run time, and the pydantic models are local to ``build_app``.

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BASELINE = "bare"
#: name -> (what it is, modules it needs besides the service's own)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bare": ("no instrumentation", ()),
    "asynclens": ("asynclens.session() defaults + AsgiMiddleware + @trace", ("asynclens",)),
    "asynclens-spans": ("asynclens spans only (probes off) + AsgiMiddleware + @trace", ("asynclens",)),
    "asynclens-no-resources": ("asynclens defaults with resources=False + AsgiMiddleware + @trace", ("asynclens",)),
    "asynclens-flight": ("asynclens defaults + a 30 s flight recorder (no dump) + AsgiMiddleware + @trace", ("asynclens",)),
    "otel": (
        "OpenTelemetry SDK + ASGI middleware + AsyncioInstrumentor",
        ("opentelemetry.sdk.trace", "opentelemetry.instrumentation.asgi", "opentelemetry.instrumentation.asyncio"),
    ),
    "pyinstrument": ("pyinstrument Profiler(async_mode='enabled') per request", ("pyinstrument",)),
}
SERVICE_MODULES = ("fastapi", "pydantic", "uvicorn", "uvloop", "httptools")
#: (variant, CPU-per-request ratio limit, label)
BUDGETS = (
    ("asynclens", 1.05, "asynclens default"),
    ("asynclens-spans", 1.02, "asynclens spans only"),
    ("asynclens-flight", 1.07, "flight recorder"),
)
#: the flight recorder variant's options: the last 30 s kept, dumps only on SIGUSR2 (never sent)
FLIGHT_OPTIONS: dict[str, Any] = {"flight_recorder": 30, "dump_on": ["signal"]}
NO_PROBES = {"lag": False, "track_handles": False, "scheduler": False, "resources": False}
#: Further asynclens.session() options of the asynclens variants (request_instructions.py scales
#: the time-based ones to callgrind's slowdown).
SESSION_OPTIONS: dict[str, Any] = {}
#: the gathered children, by coroutine name (what AsyncioInstrumentor matches)
CHILD_COROUTINES = ("load_customer", "check_stock", "quote_prices", "list_orders")
#: fixed glibc malloc thresholds in the server, as in echo_service.py (see MALLOC_ENV there):
#: every variant in the same allocation regime; the caller's environment wins
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 20)}
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
START_TIMEOUT = 60.0  # seconds for a server to import, build its app and listen
WRK_LEAD = 0.25  # seconds for wrk to start and connect, before its warm-up counts
WRK_TAIL = 0.5  # seconds wrk goes on after the measured window (it stops on whole seconds)

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


# ======================================================================= the service
# (server process only)


async def db_roundtrip() -> None:
    """A simulated database call: suspend until a callback resolves the future."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def _keep(name: str) -> Decorator:
    """No span: the function as it is."""
    return lambda fn: fn


@dataclass
class Instrumentation:
    """What a variant adds to the service."""

    handler: Callable[[str], Decorator] = _keep  # span name -> decorator for a route handler
    child: Callable[[str], Decorator] = _keep  # span name -> decorator for a gathered child
    middleware: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # innermost first
    around: Callable[[], Any] = contextlib.nullcontext  # context manager around the whole server run


def build_app(inst: Instrumentation) -> Any:
    """The FastAPI service, its handlers and children decorated as ``inst`` says."""
    from typing import Annotated, Literal

    from fastapi import FastAPI, Path, Query
    from pydantic import BaseModel, Field

    class LineItem(BaseModel):
        sku: str = Field(pattern=r"^SKU-\d{3}$")
        quantity: int = Field(ge=1, le=100)
        unit_price: float = Field(gt=0, le=10_000)

    class OrderIn(BaseModel):
        customer_id: int = Field(ge=1)
        items: list[LineItem] = Field(min_length=1, max_length=20)
        coupon: str | None = Field(default=None, max_length=16)

    class Customer(BaseModel):
        id: int
        name: str
        tier: Literal["basic", "gold"]

    class PricedLine(BaseModel):
        sku: str
        quantity: int
        unit_price: float
        amount: float

    class OrderOut(BaseModel):
        order_id: int
        customer: Customer
        lines: list[PricedLine]
        subtotal: float
        discount: float
        total: float
        in_stock: bool

    class OrderSummary(BaseModel):
        order_id: int
        status: Literal["open", "shipped"]
        items: int
        total: float

    class OrderPage(BaseModel):
        customer: Customer
        orders: list[OrderSummary]
        next_cursor: int | None

    @inst.child("db.customer")
    async def load_customer(customer_id: int) -> dict[str, Any]:
        await db_roundtrip()
        return {"id": customer_id, "name": f"customer-{customer_id}", "tier": "gold" if customer_id % 3 else "basic"}

    @inst.child("db.stock")
    async def check_stock(items: list[LineItem]) -> bool:
        await db_roundtrip()
        short = [item.sku for item in items if int(item.sku[4:]) % 7 == 0 and item.quantity >= 50]
        return not short

    @inst.child("pricing.quote")
    async def quote_prices(items: list[LineItem], coupon: str | None) -> dict[str, Any]:
        await db_roundtrip()
        lines: list[dict[str, Any]] = [
            {
                "sku": i.sku,
                "quantity": i.quantity,
                "unit_price": i.unit_price,
                "amount": round(i.quantity * i.unit_price, 2),
            }
            for i in items
        ]
        subtotal = round(sum(line["amount"] for line in lines), 2)
        discount = round(subtotal * 0.1, 2) if coupon else 0.0
        return {"lines": lines, "subtotal": subtotal, "discount": discount, "total": round(subtotal - discount, 2)}

    @inst.child("db.orders")
    async def list_orders(customer_id: int, limit: int, status: str) -> list[dict[str, Any]]:
        await db_roundtrip()
        rows = (
            {
                "order_id": customer_id * 1000 + n,
                "status": "open" if n % 2 else "shipped",
                "items": 1 + n % 4,
                "total": round(12.5 * (1 + n % 4), 2),
            }
            for n in range(2 * limit)
        )
        return [row for row in rows if status == "all" or row["status"] == status][:limit]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        loop = type(asyncio.get_running_loop())
        print(f"LOOP {loop.__module__}.{loop.__qualname__}", flush=True)
        yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/orders", response_model=OrderOut)
    @inst.handler("create_order")
    async def create_order(order: OrderIn) -> dict[str, Any]:
        customer, in_stock, quote = await asyncio.gather(
            load_customer(order.customer_id), check_stock(order.items), quote_prices(order.items, order.coupon)
        )
        return {"order_id": order.customer_id * 7919 % 100_000, "customer": customer, "in_stock": in_stock, **quote}

    @app.get("/customers/{customer_id}/orders", response_model=OrderPage)
    @inst.handler("customer_orders")
    async def customer_orders(
        customer_id: Annotated[int, Path(ge=1, le=1_000_000)],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
        status: Literal["open", "shipped", "all"] = "all",
    ) -> dict[str, Any]:
        customer, orders = await asyncio.gather(load_customer(customer_id), list_orders(customer_id, limit, status))
        cursor = orders[-1]["order_id"] if len(orders) == limit else None
        return {"customer": customer, "orders": orders, "next_cursor": cursor}

    for middleware, options in inst.middleware:
        app.add_middleware(middleware, **options)
    return app


# ============================================================ instrumentation per variant
# (server process only; each imports its packages itself, so bare imports none)


def _asynclens(probes: bool, resources: bool = True, flight: bool = False) -> Instrumentation:
    import asynclens
    from asynclens.integrations.asgi import AsgiMiddleware

    options: dict[str, Any] = dict(SESSION_OPTIONS) if probes else {**SESSION_OPTIONS, **NO_PROBES}
    if not resources:
        options["resources"] = False
    sinks: list[str] = []
    if flight:  # dumps would go to a temporary folder: the variant measures the steady state, none is asked for
        options.update(FLIGHT_OPTIONS)
        sinks = [os.path.join(tempfile.mkdtemp(prefix="asgi-flight-"), "dump-{n}.jsonl")]

    def traced(name: str) -> Decorator:
        return asynclens.trace(name=name)

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        session = asynclens.session(sinks or None, **options)
        try:
            with session:
                yield
        finally:
            stats = session.statistics()
            report_recorded(stats.spans_recorded, dropped=stats.records_dropped, internal_errors=stats.internal_errors)

    return Instrumentation(handler=traced, child=traced, middleware=[(AsgiMiddleware, {})], around=around)


def _otel() -> Instrumentation:
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DiscardingExporter(SpanExporter):
        """Takes every batch and drops it (counting): the SDK's work without any network."""

        def __init__(self) -> None:
            self.exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.exported += len(spans)
            return SpanExportResult.SUCCESS

    exporter = DiscardingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    os.environ["OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"] = ",".join(CHILD_COROUTINES)
    AsyncioInstrumentor().instrument()
    tracer = trace.get_tracer("asgi_service")

    def handler_span(name: str) -> Decorator:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            async def traced(*args: Any, **kwargs: Any) -> Any:
                with tracer.start_as_current_span(name):
                    return await fn(*args, **kwargs)

            return traced

        return decorate

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        try:
            yield
        finally:
            provider.shutdown()  # exports what is still queued
            report_recorded(exporter.exported)

    return Instrumentation(handler=handler_span, middleware=[(OpenTelemetryMiddleware, {})], around=around)


def _pyinstrument() -> Instrumentation:
    from pyinstrument import Profiler

    class ProfileEachRequest:
        """Pure ASGI middleware: one async-mode profiler around each HTTP request."""

        def __init__(self, app: Any, interval: float = 0.001) -> None:
            self.app = app
            self.interval = interval

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            profiler = Profiler(interval=self.interval, async_mode="enabled")
            profiler.start()
            try:
                await self.app(scope, receive, send)
            finally:
                profiler.stop()  # the session is dropped, not rendered

    return Instrumentation(middleware=[(ProfileEachRequest, {})])


INSTRUMENTATIONS: dict[str, Callable[[], Instrumentation]] = {
    "bare": Instrumentation,
    "asynclens": lambda: _asynclens(probes=True),
    "asynclens-spans": lambda: _asynclens(probes=False),
    "asynclens-no-resources": lambda: _asynclens(probes=True, resources=False),
    "asynclens-flight": lambda: _asynclens(probes=True, flight=True),
    "otel": _otel,
    "pyinstrument": _pyinstrument,
}


# =========================================================================== server


def report_recorded(spans: int, **counters: int) -> None:
    """Server shutdown: how many spans the variant recorded (read back by the benchmark)."""
    print("RECORDED " + json.dumps({"spans": spans, **counters}), flush=True)


def asynclens_implementation() -> str | None:
    """The asynclens implementation in use, if asynclens says (None otherwise)."""
    try:
        import asynclens
    except ImportError:
        return None
    found = getattr(asynclens, "IMPLEMENTATION", None)
    if found is None:
        with contextlib.suppress(ImportError):
            found = getattr(importlib.import_module("asynclens._native"), "IMPLEMENTATION", None)
    return None if found is None else str(found)


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _exit_with_parent() -> None:
    """Linux: get SIGTERM when the benchmark process dies, even by SIGKILL (no orphans)."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)


def _exit_quietly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(variant: str, port: int, cpu: int | None) -> int:
    """Server process: build the variant's app and serve it until SIGTERM."""
    _pin(cpu)
    # uvicorn shuts down on SIGTERM, then re-raises it: ending in SystemExit lets the
    # variant's session (or tracer provider) close instead of dying with the signal
    signal.signal(signal.SIGTERM, _exit_quietly)
    _exit_with_parent()
    inst = INSTRUMENTATIONS[variant]()
    app = build_app(inst)
    import uvicorn

    imported = "asynclens" in sys.modules
    info = {"asynclens_imported": imported, "implementation": asynclens_implementation() if imported else None}
    print("INFO " + json.dumps(info), flush=True)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    with inst.around():
        uvicorn.Server(config).run()
    return 0


# ============================================================================= load


def request_mix() -> list[tuple[str, str, bytes | None]]:
    """The requests the load cycles through: POST /orders and GET orders, alternately."""
    mix: list[tuple[str, str, bytes | None]] = []
    for k in range(4):
        customer = 101 + k
        items = [
            {
                "sku": f"SKU-{(3 * k + j) % 50:03d}",
                "quantity": 1 + (k + j) % 4,
                "unit_price": round(4.5 + 3.25 * j + k, 2),
            }
            for j in range(3)
        ]
        order = {"customer_id": customer, "items": items, "coupon": "SPRING10" if k % 2 else None}
        mix.append(("POST", "/orders", json.dumps(order, separators=(",", ":")).encode()))
        status = ("open", "shipped", "all", "open")[k]
        mix.append(("GET", f"/customers/{customer}/orders?limit={5 + k}&status={status}", None))
    return mix


def raw_request(method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: asgi-bench\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a whole process, all its threads, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # fields from the 3rd (state) on
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


@dataclass(frozen=True)
class Window:
    """One measured window of one server."""

    ok: int  # status-200 responses
    bad: int  # other responses and socket errors
    total: int  # status-200 responses including the warm-up's
    elapsed: float  # seconds the load ran
    user: float  # server CPU seconds, user mode
    system: float  # server CPU seconds, kernel mode
    wall: float  # seconds between the two CPU readings


class _Tally:
    __slots__ = ("bad", "lost", "ok", "stop")

    def __init__(self) -> None:
        self.ok = 0
        self.bad = 0
        self.lost = 0
        self.stop = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection of the built-in load: a request out, its response in, repeat."""

    def __init__(self, tally: _Tally, requests: Sequence[bytes], offset: int) -> None:
        import httptools

        self.tally = tally
        self.requests = requests
        self.next = offset
        self.parser = httptools.HttpResponseParser(self)
        self.parse_error: type[Exception] = httptools.HttpParserError
        self.transport: Any = None
        self.busy = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        self.busy = True
        self.transport.write(self.requests[self.next % len(self.requests)])
        self.next += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.parse_error:
            self.tally.bad += 1
            self.transport.close()

    def on_message_complete(self) -> None:  # httptools callback
        if self.parser.get_status_code() == 200:
            self.tally.ok += 1
        else:
            self.tally.bad += 1
        self.busy = False
        if not self.tally.stop:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.tally.stop:
            self.tally.lost += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _drive(port: int, connections: int, seconds: float, warmup: float, server_pid: int) -> Window:
    loop = asyncio.get_running_loop()
    tally = _Tally()
    requests = [raw_request(*r) for r in request_mix()]
    conns: list[_Connection] = []
    for n in range(connections):
        _, conn = await loop.create_connection(functools.partial(_Connection, tally, requests, n), "127.0.0.1", port)
        conns.append(conn)
    await asyncio.sleep(warmup)
    cpu0, t0, ok0, bad0 = process_cpu(server_pid), time.perf_counter(), tally.ok, tally.bad
    await asyncio.sleep(seconds)
    cpu1, t1, ok1, bad1 = process_cpu(server_pid), time.perf_counter(), tally.ok, tally.bad
    tally.stop = True
    lost = tally.lost
    drain_until = time.perf_counter() + 5.0  # closing with a response in flight would reset it
    while any(c.busy for c in conns) and time.perf_counter() < drain_until and tally.lost == lost:
        await asyncio.sleep(0.005)
    for conn in conns:
        conn.transport.close()
    await asyncio.gather(*(c.closed for c in conns))
    return Window(ok1 - ok0, bad1 - bad0 + lost, tally.ok, t1 - t0, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], t1 - t0)


def load_main(config: dict[str, Any]) -> int:
    """Built-in load generator process: prints ``RESULT {...}``."""
    _exit_with_parent()
    try:
        import uvloop

        run: Callable[[Any], Window] = uvloop.run
    except ImportError:
        run = asyncio.run
    window = run(_drive(**config))
    print("RESULT " + json.dumps(dataclasses.asdict(window)), flush=True)
    return 0


def builtin_load(port: int, server_pid: int, connections: int, seconds: float, warmup: float) -> Window:
    config = {"port": port, "connections": connections, "seconds": seconds, "warmup": warmup, "server_pid": server_pid}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--load", json.dumps(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 60,
        stdin=subprocess.DEVNULL,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return Window(**json.loads(line[len("RESULT ") :]))
    said = (done.stderr.strip().splitlines() or ["nothing"])[-1]
    raise RuntimeError(f"load generator exited {done.returncode} without a result: {said}")


def _lua_string(data: bytes) -> str:
    text = data.decode()
    if "]==]" in text:
        raise ValueError("request body cannot go into a Lua long string")
    return f"[==[{text}]==]"


def wrk_script(path: str) -> None:
    """Write the wrk Lua script: the request mix in rotation; the status-200 responses that
    arrive between the two CLOCK_MONOTONIC instants passed as its arguments are counted."""
    formats = []
    for method, target, body in request_mix():
        if body is None:
            formats.append(f'  requests[#requests + 1] = wrk.format("{method}", "{target}")')
        else:
            headers = '{["Content-Type"] = "application/json"}'
            formats.append(
                f'  requests[#requests + 1] = wrk.format("{method}", "{target}", {headers}, {_lua_string(body)})'
            )
    script = "\n".join(
        [
            "-- written by benchmarks/asgi_service.py",
            'local ffi = require("ffi")  -- wrk runs LuaJIT: its FFI reads the same clock as time.monotonic()',
            "ffi.cdef[[",
            "typedef struct { long tv_sec; long tv_nsec; } asgi_bench_timespec;",
            "int clock_gettime(int clk_id, asgi_bench_timespec *tp);",
            "]]",
            'local ts = ffi.new("asgi_bench_timespec")',
            "local function now()",
            "  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC",
            "  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9",
            "end",
            "requests = {}",
            "ok, bad, total, counter, start_at, stop_at = 0, 0, 0, 0, 0, 0",
            "init = function(args)  -- after wrk.init: the Host header is known",
            "  start_at, stop_at = tonumber(args[1]), tonumber(args[2])",
            *formats,
            "end",
            "request = function()",
            "  counter = counter + 1",
            "  return requests[(counter - 1) % #requests + 1]",
            "end",
            "response = function(status, headers, body)",
            "  local t = now()",
            "  if status == 200 then total = total + 1 end",
            "  if t >= start_at and t < stop_at then",
            "    if status == 200 then ok = ok + 1 else bad = bad + 1 end",
            "  end",
            "end",
            "local threads = {}",
            "setup = function(thread) table.insert(threads, thread) end",
            "done = function(summary, latency, requests)",
            "  local good, other, all = 0, 0, 0",
            "  for _, t in ipairs(threads) do",
            "    good = good + t:get('ok'); other = other + t:get('bad'); all = all + t:get('total')",
            "  end",
            "  local e = summary.errors",
            '  io.write(string.format(\'RESULT {"ok": %d, "bad": %d, "total": %d, "socket_errors": %d}\\n\',',
            "    good, other, all, e.connect + e.read + e.write + e.timeout))",
            "end",
            "",
        ]
    )
    with open(path, "w") as f:
        f.write(script)


def _cpu_at(pid: int, when: float, proc: subprocess.Popen[str]) -> tuple[tuple[float, float], float]:
    """Sleep until the monotonic instant ``when``, then read the server's CPU (and the time)."""
    time.sleep(max(0.0, when - time.monotonic()))
    if proc.poll() is not None:
        said = ((proc.stderr.read() if proc.stderr else "") or "nothing").strip().splitlines()[-1]
        raise RuntimeError(f"wrk exited {proc.returncode} early: {said}")
    return process_cpu(pid), time.monotonic()


def wrk_load(
    wrk: str, script: str, port: int, server_pid: int, connections: int, seconds: float, warmup: float
) -> Window:
    """One wrk run per round: warm-up, the measured window, a tail; CPU read at the window's ends."""
    launch = time.monotonic()
    start_at = launch + WRK_LEAD + warmup
    stop_at = start_at + seconds
    duration = math.ceil(stop_at - launch + WRK_TAIL)  # wrk takes whole seconds
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", script]
    command += [f"http://127.0.0.1:{port}/", "--", f"{start_at:.6f}", f"{stop_at:.6f}"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        cpu0, t0 = _cpu_at(server_pid, start_at, proc)
        cpu1, t1 = _cpu_at(server_pid, stop_at, proc)
        out, err = proc.communicate(timeout=duration + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            got = json.loads(line[len("RESULT ") :])
            break
    else:
        said = ((err or out).strip().splitlines() or ["nothing"])[-1]
        raise RuntimeError(f"wrk exited {proc.returncode} without a result: {said}")
    return Window(
        ok=got["ok"],
        bad=got["bad"] + got["socket_errors"],
        total=got["total"],
        elapsed=stop_at - start_at,
        user=cpu1[0] - cpu0[0],
        system=cpu1[1] - cpu0[1],
        wall=t1 - t0,
    )


# ==================================================================== orchestration


@dataclass(frozen=True)
class Settings:
    connections: int
    seconds: float
    warmup: float
    server_cpu: int | None
    wrk: str | None  # wrk's path, or None for the built-in load generator
    script: str  # wrk's Lua script
    logs: str  # folder for the servers' output


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    log: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def use_working_tree() -> None:
    """Without an installed asynclens, this repository's (for this process and the servers)."""
    if not _have("asynclens") and os.path.isdir(os.path.join(ROOT, "asynclens")):
        sys.path.insert(1, ROOT)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: v for k, v in MALLOC_ENV.items() if k not in env})
    return env


def _last_line(path: str) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "nothing"
    return "nothing"


def log_lines(path: str, prefix: str) -> list[str]:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return [line[len(prefix) :].strip() for line in f if line.startswith(prefix)]
    return []


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode} before listening: {_last_line(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if log_lines(log, "LOOP "):  # lifespan done and listening
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on port {port} after {START_TIMEOUT:.0f} s: {_last_line(log)}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully and the variant's session ends), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except KeyboardInterrupt:  # a second Ctrl-C: no more patience, but no orphan either
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def running_server(variant: str, settings: Settings, tag: str) -> Iterator[Server]:
    """A server process for ``variant``, listening; stopped (never orphaned) on the way out."""
    port = free_port()
    log = os.path.join(settings.logs, f"{tag}-{variant}.log")
    command = [sys.executable, os.path.abspath(__file__), "--serve", variant, "--port", str(port)]
    if settings.server_cpu is not None:
        command += ["--cpu", str(settings.server_cpu)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_child_env()
        )
    try:
        _wait_ready(proc, port, log)
        yield Server(proc.pid, port, log)
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class Measurement:
    rps: float
    cpu_us: float  # server CPU (user + system) µs per successful response
    user_us: float  # user-mode only
    busy: float  # server CPU seconds per wall second of the window
    bad: int
    loop: str
    info: dict[str, Any]
    spans_per_request: float | None  # spans the server recorded over all its successful responses
    recorded: dict[str, int]  # the variant's own counters at shutdown (spans, dropped, ...)


def measure(variant: str, settings: Settings, tag: str) -> Measurement:
    with running_server(variant, settings, tag) as server:
        if settings.wrk:
            window = wrk_load(
                settings.wrk,
                settings.script,
                server.port,
                server.pid,
                settings.connections,
                settings.seconds,
                settings.warmup,
            )
        else:
            window = builtin_load(server.port, server.pid, settings.connections, settings.seconds, settings.warmup)
    info_lines = log_lines(server.log, "INFO ")
    loops = log_lines(server.log, "LOOP ")
    recorded = log_lines(server.log, "RECORDED ")  # written at the server's shutdown
    counters: dict[str, int] = json.loads(recorded[0]) if recorded else {}
    spans = counters.get("spans")
    if window.ok <= 0:
        raise RuntimeError(f"no successful response ({window.bad} failed); server said: {_last_line(server.log)}")
    cpu = window.user + window.system
    return Measurement(
        rps=window.ok / window.elapsed,
        cpu_us=cpu / window.ok * 1e6,
        user_us=window.user / window.ok * 1e6,
        busy=cpu / window.wall if window.wall > 0 else float("nan"),
        bad=window.bad,
        loop=loops[0] if loops else "?",
        info=json.loads(info_lines[0]) if info_lines else {},
        spans_per_request=spans / window.total if spans is not None and window.total else None,
        recorded=counters,
    )


@dataclass(frozen=True)
class Result:
    """A variant's figures over all rounds; ratios paired by round with the baseline."""

    name: str
    rounds: int
    failed: int
    rps: float
    ratio: float
    ratio_min: float
    ratio_max: float
    cpu_us: float
    cpu_ratio: float
    user_us: float
    user_ratio: float
    busy: float
    bad: int


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(runs: dict[str, list[Measurement | None]], base: str) -> list[Result]:
    results = []
    for name, got in runs.items():
        good = [m for m in got if m is not None]
        pairs = [(m, b) for m, b in zip(got, runs[base]) if m is not None and b is not None]
        ratios = [m.rps / b.rps for m, b in pairs]
        results.append(
            Result(
                name=name,
                rounds=len(good),
                failed=len(got) - len(good),
                rps=_median([m.rps for m in good]),
                ratio=_median(ratios),
                ratio_min=min(ratios, default=float("nan")),
                ratio_max=max(ratios, default=float("nan")),
                cpu_us=_median([m.cpu_us for m in good]),
                cpu_ratio=_median([m.cpu_us / b.cpu_us for m, b in pairs]),
                user_us=_median([m.user_us for m in good]),
                user_ratio=_median([m.user_us / b.user_us for m, b in pairs]),
                busy=_median([m.busy for m in good]),
                bad=sum(m.bad for m in good),
            )
        )
    return results


def print_table(results: Sequence[Result], file: Any = None) -> None:
    """A markdown table, one row per variant; ratios vs the first result (the baseline)."""
    out = file or sys.stdout
    print(
        "| variant | req/s | req/s ratio | min-max | CPU µs/req | CPU/req ratio | user µs/req | user ratio"
        " | server busy | rounds |",
        file=out,
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", file=out)
    for r in results:
        rounds = f"{r.rounds}" + (f" ({r.failed} failed)" if r.failed else "") + (f", {r.bad} non-200" if r.bad else "")
        print(
            f"| {r.name} | {r.rps:.0f} | {r.ratio:.3f} | {r.ratio_min:.3f}-{r.ratio_max:.3f} | {r.cpu_us:.1f}"
            f" | {r.cpu_ratio:.3f} | {r.user_us:.1f} | {r.user_ratio:.3f} | {r.busy:.0%} | {rounds} |",
            file=out,
        )


def print_budgets(results: Sequence[Result], file: Any = None) -> None:
    out = file or sys.stdout
    by_name = {r.name: r for r in results}
    for variant, limit, label in BUDGETS:
        r = by_name.get(variant)
        if r is None or math.isnan(r.cpu_ratio):  # not run, or no paired round
            print(f"budget: {label} ≤ {limit:.2f}× bare CPU/request: n/a ({variant} not measured)", file=out)
            continue
        verdict = "met" if r.cpu_ratio <= limit else "NOT met"
        print(f"budget: {label} ≤ {limit:.2f}× bare CPU/request: {r.cpu_ratio:.2f} ({verdict})", file=out)


# ============================================================================= main


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _split(only: str) -> list[str]:
    return [v.strip() for v in only.split(",") if v.strip()]


def choose_variants(only: str | None) -> list[str]:
    """The variants to run (baseline first), printing a line for each one skipped."""
    wanted = _split(only) if only else list(VARIANTS)
    if BASELINE not in wanted:
        print(f"note: {BASELINE} added: it is the baseline of the ratios")
        wanted.insert(0, BASELINE)
    chosen = []
    for name in [BASELINE] + [v for v in wanted if v != BASELINE]:
        missing = [m for m in VARIANTS[name][1] if not _have(m)]
        if missing:
            print(f"skipped {name}: {', '.join(missing)} not installed")
        else:
            chosen.append(name)
    return chosen


def _rotate(names: Sequence[str], r: int) -> list[str]:
    k = r % len(names)
    return list(names[k:]) + list(names[:k])


def run_rounds(names: Sequence[str], settings: Settings, rounds: int) -> dict[str, list[Measurement | None]]:
    runs: dict[str, list[Measurement | None]] = {n: [] for n in names}
    for r in range(rounds):
        for name in _rotate(names, r):
            try:
                got = measure(name, settings, f"r{r + 1}")
            except Exception as exc:  # noqa: BLE001 -- one failed round must not lose the others
                print(f"  round {r + 1}/{rounds} {name}: failed: {exc}", file=sys.stderr, flush=True)
                runs[name].append(None)
                continue
            runs[name].append(got)
            print(
                f"  round {r + 1}/{rounds} {name}: {got.rps:.0f} req/s, {got.cpu_us:.1f} µs CPU/req,"
                f" server busy {got.busy:.0%}" + (f", {got.bad} non-200" if got.bad else ""),
                file=sys.stderr,
                flush=True,
            )
    return runs


def print_checks(runs: dict[str, list[Measurement | None]], expected_implementation: str | None) -> None:
    """What the servers themselves reported: their loop, and who imported asynclens."""
    done = [(name, m) for name, got in runs.items() for m in got if m is not None]
    loops = sorted({m.loop for _, m in done})
    print(f"event loop in the servers: {', '.join(loops) or '?'}")
    leaked = sorted({name for name, m in done if m.info.get("asynclens_imported") and not name.startswith("asynclens")})
    if leaked:
        print(f"warning: asynclens was imported in the server of {', '.join(leaked)}")
    per_request = {
        name: _median([m.spans_per_request for m in got if m is not None and m.spans_per_request is not None])
        for name, got in runs.items()
    }
    recorded = ", ".join(f"{name} {n:.1f}" for name, n in per_request.items() if not math.isnan(n))
    if recorded:
        print(f"spans recorded per successful response (warm-up included): {recorded}")
    for name, got in runs.items():
        lost = {
            key: sum(m.recorded.get(key, 0) for m in got if m is not None) for key in ("dropped", "internal_errors")
        }
        if any(lost.values()):
            print(f"warning: {name} servers reported " + ", ".join(f"{n} {key}" for key, n in lost.items()))
    implementations = sorted({str(m.info.get("implementation")) for name, m in done if name.startswith("asynclens")})
    if implementations and implementations != [str(expected_implementation)]:
        print(f"asynclens implementation reported by the servers: {', '.join(implementations)}")


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the servers are stopped on the way out


def benchmark(args: argparse.Namespace) -> int:
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        print("skipped: the benchmark reads server CPU from /proc (Linux only)")
        return 0
    missing = [m for m in SERVICE_MODULES if not _have(m)]
    if missing:
        print(f"skipped: the service needs {', '.join(SERVICE_MODULES)} (missing: {', '.join(missing)})")
        return 0
    use_working_tree()
    names = choose_variants(args.only)
    if BASELINE not in names:
        return 0
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    if pin:
        os.sched_setaffinity(0, {cpus[1]})  # this process and the load generators it starts
    wrk = shutil.which("wrk") if args.client in ("auto", "wrk") else None
    if args.client == "wrk" and wrk is None:
        print("wrk not on PATH: using the built-in load generator")
    implementation = asynclens_implementation() if any(n.startswith("asynclens") for n in names) else None
    print(
        f"asgi service: FastAPI {_version('fastapi')}, pydantic {_version('pydantic')}, uvicorn {_version('uvicorn')}"
        f" (loop=uvloop {_version('uvloop')}, http=httptools {_version('httptools')}, 1 worker)"
    )
    print(f"python {platform.python_version()} ({platform.python_implementation()}), {len(cpus) or '?'} CPUs")
    if wrk:
        said = subprocess.run([wrk, "-v"], check=False, capture_output=True, text=True).stdout.split()
        load = f"{' '.join(said[:2]) or 'wrk'} (1 thread, Lua script)"
    else:
        load = "built-in load generator (uvloop + httptools, separate process)"
    placement = f"server on CPU {cpus[0]}, load on CPU {cpus[1]}" if pin else "not pinned"
    print(f"load: {load}; {args.connections} keep-alive connections; {placement}")
    print(f"rounds: {args.rounds} × {args.seconds:g} s after {args.warmup:g} s warm-up, order rotating each round")
    if implementation is not None:
        print(f"asynclens {_version('asyncio-lens')}, implementation: {implementation}")
    with tempfile.TemporaryDirectory(prefix="asgi-bench-") as scratch:
        script = os.path.join(scratch, "mix.lua")
        wrk_script(script)
        settings = Settings(args.connections, args.seconds, args.warmup, cpus[0] if pin else None, wrk, script, scratch)
        runs = run_rounds(names, settings, args.rounds)
    results = summarise(runs, BASELINE)
    print()
    print(
        f"asgi service, {args.connections} connections, {args.rounds} rounds × {args.seconds:g} s"
        f" (medians; ratios vs {BASELINE} of the same round)"
    )
    print_table(results)
    print()
    for name in names:
        print(f"  {name}: {VARIANTS[name][0]}")
    print()
    print_budgets(results)
    print_checks(runs, implementation)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring every variant once (5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per variant and round (3)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each measurement (1)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections (50)")
    parser.add_argument("--only", metavar="VARIANT[,VARIANT]", help=f"variants to run ({', '.join(VARIANTS)})")
    parser.add_argument(
        "--client", choices=["auto", "wrk", "builtin"], default="auto", help="load generator (auto: wrk if on PATH)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate CPUs")
    parser.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [v for v in _split(args.only or "") if v not in VARIANTS]
    if unknown:
        parser.error(f"--only: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.seconds <= 0 or args.connections < 1 or args.warmup < 0:
        parser.error("--rounds and --connections must be at least 1, --seconds positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port, args.cpu)
    if args.load:
        return load_main(json.loads(args.load))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return benchmark(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
