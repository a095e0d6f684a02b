"""Loopback echo-service throughput harness shared by the asynclens benchmarks.

The server runs in its own process (``python echo_service.py --serve ...``) on
127.0.0.1; the load generator (``clients`` connections, each sending a 64-byte
line and waiting for its echo; bare protocols, no streams or tasks, so it costs
the client less than the cheapest server variant costs the server) runs in the
calling process, so on a 2-core
machine server and clients each get a core. Every server variant is measured
once per round, variants interleaved (the order rotates each round), and each
variant's throughput is compared with the baseline's *of the same round*.

Stable API (other benchmarks import it; keep it compatible)::

    from echo_service import Variant, compare, print_table

    results = compare(
        {
            "bare": Variant(),
            "asynclens": Variant(setup="echo_service:asynclens_session",
                                 options={"lag": True, "track_handles": True}),
            "asynclens+span": Variant(setup="echo_service:asynclens_session",
                                      options={"lag": True}, wrap="echo_service:asynclens_span"),
            "otel span": Variant(setup="echo_service:otel_setup", wrap="echo_service:otel_span"),
        },
        clients=200, seconds=2.0, rounds=5, loop="asyncio",
    )
    print_table(results, title="echo service, asyncio loop")

``Variant`` fields (all plain data, sent to the server as JSON):

* ``setup``: ``"module:function"`` or ``None``. In the server process,
  ``function(**options)`` is called before serving; it may return ``None``, a
  context manager (entered before the event loop starts, exited after it ends:
  e.g. ``asynclens.session(...)``) or an async context manager (entered and
  exited inside the server's event loop).
* ``options``: JSON-able keyword arguments for ``setup``.
* ``wrap``: ``"module:function"`` or ``None``. ``function(handler)`` is called
  once with the per-request coroutine function ``async def handler(data: bytes)
  -> bytes`` and returns its replacement, e.g. ``asynclens.trace(handler)``: so
  every request runs in a span.

Modules are imported in the server with the caller's ``sys.path`` plus this
directory, so ``"echo_service:..."``, ``"handle_overhead:..."`` or
``"benchmarks.sched_overhead:..."`` all resolve. Ready-made setups and wrappers
here: :func:`asynclens_session`, :func:`asynclens_span`, :func:`otel_setup`,
:func:`otel_span`, :func:`yappi_setup`, :func:`idle_thread_setup`.

``compare(...)`` returns one :class:`Result` per variant (baseline first):
median requests/s, median and min–max of the per-round throughput ratio vs the
baseline, server CPU time per request (``time.process_time`` in the server over
the serving period, divided by requests served) and its median per-round ratio,
and the same for user-mode CPU only (``os.times().user``: steadier, since the
kernel time of loopback TCP lands on whichever process runs the softirq).
Each round is bounded by ``seconds`` and by ``max_requests``; a server stops
by itself once its clients have gone (or after a hard time limit).

Run directly for a quick check: ``python benchmarks/echo_service.py --loop uvloop``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Result",
    "Variant",
    "asynclens_session",
    "asynclens_span",
    "compare",
    "idle_thread_setup",
    "iterations_per_request",
    "otel_setup",
    "otel_span",
    "print_table",
    "yappi_setup",
]

MESSAGE = b"x" * 63 + b"\n"
HERE = os.path.dirname(os.path.abspath(__file__))
#: Fixed glibc malloc thresholds for the server process (the caller's environment wins).
#: asyncio's socket transport reads with ``sock.recv(256 KiB)``: a fresh 256 KiB bytes per
#: read, shrunk to the few bytes received. With glibc's *dynamic* mmap threshold (128 KiB
#: until an mmapped block is freed) each such read may be an mmap + page faults + munmap,
#: or may come from the heap, depending on whether some earlier allocation happened to free
#: a large block: the same server then costs 2-2.8x more kernel time per request in one
#: run than in the next, and any import or patch can flip it (the old "regime" artifact).
#: Fixed thresholds put every variant in the same (heap) regime.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 20)}


@dataclass(frozen=True)
class Variant:
    """One server configuration (see the module docstring)."""

    setup: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    wrap: str | None = None


@dataclass(frozen=True)
class Result:
    """A variant's figures over all rounds; ratios are paired by round with the baseline."""

    name: str
    rounds: int
    rps: float  # median requests/s
    ratio_median: float
    ratio_min: float
    ratio_max: float
    cpu_us_per_request: float  # median server CPU µs per request
    cpu_ratio: float  # median per-round ratio of CPU per request vs baseline
    per_round_rps: tuple[float, ...] = ()
    errors: int = 0
    #: user-mode CPU only (``os.times().user``): kernel time of loopback TCP, which is
    #: charged to whichever process happens to run the softirq, varies a lot between runs
    user_us_per_request: float = float("nan")
    user_ratio: float = float("nan")


# ---------------------------------------------------------------- ready-made variants


def asynclens_session(**options: Any) -> Any:
    """Setup: ``asynclens.session(**options)`` around the whole serving period."""
    import asynclens

    return asynclens.session(**options)


def asynclens_span(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap: every request runs in an ``@asynclens.trace`` span named ``echo``."""
    import asynclens

    return asynclens.trace(name="echo")(handler)


def otel_setup(**options: Any) -> None:
    """Setup: an OpenTelemetry SDK tracer provider with a batch processor (in-memory exporter)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)


def otel_span(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap: every request runs in an OpenTelemetry span named ``echo``."""
    from opentelemetry import trace

    tracer = trace.get_tracer("echo_service")

    async def traced(data: bytes) -> bytes:
        with tracer.start_as_current_span("echo"):
            return await handler(data)

    return traced


@contextlib.contextmanager
def idle_thread_setup() -> Any:
    """Setup: one more thread, idle (blocked on an event) while serving; nothing else.

    Any second thread makes a CPython process slower at every system call that
    releases the GIL (send, recv, epoll_wait): glibc's locks leave their
    single-threaded fast path (about 30 ns per GIL release measured here). Every
    asynclens session has such threads (its flusher; the lag monitor's watchdog), so
    this variant shows what part of a session's cost is that, not asynclens's code."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="idle", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def yappi_setup(clock: str = "cpu") -> Any:
    """Setup: the yappi profiler running (coroutine-aware) while serving."""
    import yappi

    yappi.set_clock_type(clock)
    yappi.start()
    try:
        yield
    finally:
        yappi.stop()


# ------------------------------------------------------------------------ server


def _resolve(ref: str) -> Any:
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"variant reference {ref!r}: expected 'module:function'")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


async def _echo(data: bytes) -> bytes:
    return data


async def _serve(config: Mapping[str, Any], acm: Any) -> dict[str, Any]:
    handler: Callable[[bytes], Any] = _echo
    if config.get("wrap"):
        handler = _resolve(config["wrap"])(handler)
    if acm is not None:
        await acm.__aenter__()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    state = {"connections": 0, "seen": 0, "requests": 0}

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        state["seen"] += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(await handler(line))
                await writer.drain()
                state["requests"] += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            state["connections"] -= 1
            if state["connections"] == 0 and state["seen"] >= config["clients"] and not done.done():
                done.set_result(None)

    iterations = [0]
    selector = getattr(loop, "_selector", None)
    if config.get("count_iterations") and selector is not None:
        select = selector.select

        def counting_select(timeout: float | None = None) -> Any:
            iterations[0] += 1
            return select(timeout)

        selector.select = counting_select
    server = await asyncio.start_server(on_client, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    timer = loop.call_later(config["max_seconds"], lambda: done.done() or done.set_result(None))
    cpu0 = time.process_time()
    user0 = os.times().user
    print(f"READY {port}", flush=True)
    await done
    cpu = time.process_time() - cpu0
    user = os.times().user - user0
    timer.cancel()
    server.close()
    await server.wait_closed()
    if acm is not None:
        await acm.__aexit__(None, None, None)
    result: dict[str, Any] = {"requests": state["requests"], "cpu_s": cpu, "user_s": user}
    if config.get("count_iterations") and selector is not None:
        result["iterations"] = iterations[0]
    return result


def _pin(cpu: int | None) -> Any:
    """Pin the calling process to ``cpu``; returns the previous affinity (None: not pinned)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    return before


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _server_main(config: Mapping[str, Any]) -> None:
    _pin(config.get("cpu"))
    if config["loop"] == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    made = _resolve(config["setup"])(**config.get("options", {})) if config.get("setup") else None
    sync_cm = made if hasattr(made, "__enter__") else None
    async_cm = made if sync_cm is None and hasattr(made, "__aenter__") else None
    with sync_cm if sync_cm is not None else contextlib.nullcontext():
        result = asyncio.run(_serve(config, async_cm))
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------ client


class _Client(asyncio.Protocol):
    """One load-generating connection: a line out, wait for its echo, repeat.

    A bare protocol (no streams, no task per connection) so that the load generator
    costs much less per request than any server variant: the server, not the client,
    is the bottleneck, and throughput ratios show the server's overhead.
    """

    def __init__(self, shared: _Load) -> None:
        self.shared = shared
        self.transport: Any = None
        self.pending = 0  # bytes of the current echo received so far
        self.outstanding = False  # a line sent whose echo has not fully arrived
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self) -> None:
        self.outstanding = True
        self.transport.write(MESSAGE)

    def data_received(self, data: bytes) -> None:
        got = self.pending + len(data)
        lines, self.pending = divmod(got, len(MESSAGE))
        if not lines:
            return
        self.outstanding = False
        shared = self.shared
        shared.count += lines
        if shared.count >= shared.max_requests:
            shared.stop = True
        if not shared.stop:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.shared.stop:
            self.shared.lost += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _Load:
    __slots__ = ("count", "stop", "max_requests", "lost")

    def __init__(self, max_requests: int) -> None:
        self.count = 0
        self.stop = False
        self.max_requests = max_requests
        self.lost = 0


async def _load(port: int, clients: int, seconds: float, max_requests: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    shared = _Load(max_requests)
    conns: list[_Client] = []
    for _ in range(clients):
        _, proto = await loop.create_connection(lambda: _Client(shared), "127.0.0.1", port)
        conns.append(proto)
    for proto in conns:
        proto.send()
    await asyncio.sleep(min(0.2, seconds / 5))  # warm-up: every connection busy
    first, t0 = shared.count, time.perf_counter()
    deadline = t0 + seconds
    while not shared.stop and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
        if shared.lost:
            raise ConnectionError("echo server closed the connection")
    served, elapsed = shared.count - first, time.perf_counter() - t0
    shared.stop = True
    drain_until = time.perf_counter() + 2.0  # let in-flight echoes arrive: closing on unread data resets
    while any(proto.outstanding for proto in conns) and time.perf_counter() < drain_until and not shared.lost:
        await asyncio.sleep(0.005)
    for proto in conns:
        proto.transport.close()
    await asyncio.gather(*(proto.closed for proto in conns))
    return served, elapsed


def _client_loop() -> Callable[[Any], Any]:
    try:
        import uvloop

        return uvloop.run  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return asyncio.run


def iterations_per_request(clients: int = 200, seconds: float = 1.5, variant: Variant | None = None) -> float:
    """Event-loop iterations (selector calls) per request of the stdlib-loop echo server,
    measured in a run of its own (counting costs a wrapper per iteration): what turns a
    per-iteration cost into a per-request one."""
    stats = _run_one(variant or Variant(), clients, seconds, 2_000_000, "asyncio", count_iterations=True)
    return stats[3]


def _run_one(
    variant: Variant,
    clients: int,
    seconds: float,
    max_requests: int,
    loop: str,
    pin: bool = True,
    count_iterations: bool = False,
) -> tuple[float, float, float, float]:
    config = {
        "setup": variant.setup,
        "options": dict(variant.options),
        "wrap": variant.wrap,
        "loop": loop,
        "clients": clients,
        "max_seconds": seconds * 3 + 10,
        "count_iterations": count_iterations,
    }
    cpus = _cpus() if pin else []
    if len(cpus) >= 2:  # server and clients on fixed, different cores: the same placement for every variant
        config["cpu"] = cpus[0]
    env = dict(os.environ)
    env.update({k: v for k, v in MALLOC_ENV.items() if k not in os.environ})
    env["PYTHONPATH"] = os.pathsep.join([HERE, *[p for p in sys.path if p], env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(config)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "READY":
            raise RuntimeError(f"echo server failed to start (said {ready!r}, exit {proc.wait(5)})")
        before = _pin(cpus[1]) if len(cpus) >= 2 else None
        try:
            served, elapsed = _client_loop()(_load(int(ready[1]), clients, seconds, max_requests))
        finally:
            if before is not None:
                os.sched_setaffinity(0, before)
        out = proc.stdout.readline()
        proc.wait(timeout=config["max_seconds"])
        if not out.startswith("RESULT "):
            raise RuntimeError(f"echo server gave no result (exit {proc.returncode})")
        stats = json.loads(out[len("RESULT ") :])
        requests = max(stats["requests"], 1)
        iterations = stats.get("iterations")
        return (
            served / elapsed,
            stats["cpu_s"] / requests,
            stats["user_s"] / requests,
            iterations / requests if iterations is not None else float("nan"),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def compare(
    variants: Mapping[str, Variant],
    clients: int = 200,
    seconds: float = 2.0,
    rounds: int = 5,
    loop: str = "asyncio",
    baseline: str | None = None,
    max_requests: int = 2_000_000,
    progress: bool = True,
    pin: bool = True,
) -> list[Result]:
    """Measure every variant ``rounds`` times, interleaved; ratios vs ``baseline``.

    ``baseline`` defaults to ``"bare"`` if present, else the first variant.
    A round of a variant that fails counts as an error and is left out of its figures.
    With ``pin`` (and at least two CPUs) the server runs on the first allowed CPU and the
    clients on the second: where the scheduler happens to place the two processes
    otherwise changes loopback throughput by up to 2x, systematically per variant.
    """
    if loop not in ("asyncio", "uvloop"):
        raise ValueError(f"compare(loop={loop!r}): expected 'asyncio' or 'uvloop'")
    if not variants:
        raise ValueError("compare(): no variants given")
    names = list(variants)
    base = baseline or ("bare" if "bare" in variants else names[0])
    if base not in variants:
        raise ValueError(f"compare(baseline={base!r}): not one of the variants {names}")
    names.remove(base)
    names.insert(0, base)
    rps: dict[str, list[float | None]] = {n: [] for n in names}
    cpu: dict[str, list[float | None]] = {n: [] for n in names}
    user: dict[str, list[float | None]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            try:
                got_rps, got_cpu, got_user, _ = _run_one(variants[name], clients, seconds, max_requests, loop, pin)
            except Exception as exc:  # keep the other measurements
                print(f"  round {r + 1} {name}: failed: {exc}", file=sys.stderr)
                got_rps = got_cpu = got_user = None  # type: ignore[assignment]
            rps[name].append(got_rps)
            cpu[name].append(got_cpu)
            user[name].append(got_user)
        if progress:
            print(f"  round {r + 1}/{rounds} done ({loop})", file=sys.stderr, flush=True)
    results = []
    for name in names:
        pairs = [(v, b) for v, b in zip(rps[name], rps[base]) if v is not None and b]
        cpairs = [(v, b) for v, b in zip(cpu[name], cpu[base]) if v is not None and b]
        ratios = [v / b for v, b in pairs] or [float("nan")]
        cratios = [v / b for v, b in cpairs] or [float("nan")]
        uratios = [v / b for v, b in zip(user[name], user[base]) if v is not None and b] or [float("nan")]
        goodu = [v for v in user[name] if v is not None]
        good = [v for v in rps[name] if v is not None]
        goodc = [v for v in cpu[name] if v is not None]
        results.append(
            Result(
                name=name,
                rounds=len(good),
                rps=statistics.median(good) if good else float("nan"),
                ratio_median=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                cpu_us_per_request=statistics.median(goodc) * 1e6 if goodc else float("nan"),
                cpu_ratio=statistics.median(cratios),
                per_round_rps=tuple(v for v in good),
                errors=rounds - len(good),
                user_us_per_request=statistics.median(goodu) * 1e6 if goodu else float("nan"),
                user_ratio=statistics.median(uratios),
            )
        )
    return results


def print_table(results: Sequence[Result], title: str | None = None, file: Any = None) -> None:
    """Print the results as a table (ratios vs the first result, the baseline)."""
    out = file or sys.stdout
    if title:
        print(title, file=out)
    width = max([len(r.name) for r in results] + [7])
    print(
        f"{'variant':<{width}}  {'req/s':>9}  {'ratio':>6}  {'min-max':>11}  {'cpu µs/req':>10}  {'cpu ratio':>9}"
        f"  {'user µs/req':>11}  {'user ratio':>10}  rounds",
        file=out,
    )
    for r in results:
        print(
            f"{r.name:<{width}}  {r.rps:>9.0f}  {r.ratio_median:>6.3f}  {r.ratio_min:>5.3f}-{r.ratio_max:<5.3f}"
            f"  {r.cpu_us_per_request:>10.1f}  {r.cpu_ratio:>9.3f}  {r.user_us_per_request:>11.1f}  {r.user_ratio:>10.3f}"
            f"  {r.rounds}{f' ({r.errors} failed)' if r.errors else ''}",
            file=out,
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.serve:
        _server_main(json.loads(args.serve))
        return
    variants = {
        "bare": Variant(),
        "asynclens session (no probes)": Variant(
            setup="echo_service:asynclens_session", options={"lag": False, "track_handles": False, "scheduler": False}
        ),
        "asynclens span/request": Variant(
            setup="echo_service:asynclens_session",
            options={"lag": False, "track_handles": False, "scheduler": False},
            wrap="echo_service:asynclens_span",
        ),
    }
    results = compare(variants, clients=args.clients, seconds=args.seconds, rounds=args.rounds, loop=args.loop)
    print_table(results, title=f"echo service, {args.clients} clients, {args.loop} loop, {args.rounds} rounds")


if __name__ == "__main__":
    main()
