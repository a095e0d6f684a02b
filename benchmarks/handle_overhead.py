"""Cost of the open-handle registry.

1. Per call: open/close of a temp file and create/close of a socket, tracking
   off vs on (a session with only the ``handles`` probe), interleaved batches in
   one process; median ns per pair and the added µs per tracked pair
   (budget ≤ 3 µs).
2. Per loop iteration: what the lag monitor (selector wrapper) and the handles
   probe (readiness-event counter) add to a stdlib loop's iteration, the cost of
   one kernel TCP_INFO reading (per open TCP connection per rate window), and
   the byte-counting hooks that only transports without kernel counters (Unix
   sockets) get. TCP sends and receives themselves run no asynclens code. From
   that and the loop iterations per request (counted in a run of its own), the
   estimated throughput ratio: the budget (≥ 0.97) is finer than the echo
   benchmark's wall-time noise. Also what any second thread costs a send+recv
   pair (glibc's locks leave their single-threaded fast path), which every
   session pays for its flusher and watchdog threads.
3. The loopback echo service (``echo_service.py``): bare vs bare with one idle
   thread vs a session with no probes vs the handle registry vs registry + lag
   monitor, on asyncio and uvloop; median and min–max of per-round throughput
   ratios and the server CPU per request ratio.

Run: ``python benchmarks/handle_overhead.py`` (about two minutes);
``--quick`` for a short check, ``--no-echo`` for the microbenchmarks only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo_service

import asynclens
from asynclens.probes.handles import tcp_counters as _tcp_counters
from asynclens.probes.handles.registry import Entry
from asynclens.probes.handles.transport_io import count_transport_io


def _file_pairs(path: str, n: int) -> None:
    for _ in range(n):
        open(path, "rb").close()


def _socket_pairs(n: int) -> None:
    for _ in range(n):
        socket.socket().close()


def _per_op(func: Callable[[int], None], n: int) -> float:
    t0 = time.perf_counter_ns()
    func(n)
    return (time.perf_counter_ns() - t0) / n


def micro_open_close(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(what, ns per pair untracked, ns per pair tracked): medians over interleaved rounds."""
    fd, path = tempfile.mkstemp()
    os.close(fd)
    cases: dict[str, Callable[[int], None]] = {
        "file open+close": lambda k: _file_pairs(path, k),
        "socket create+close": _socket_pairs,
    }
    results = []
    try:
        for name, func in cases.items():
            off: list[float] = []
            on: list[float] = []
            func(n)  # warm-up
            for r in range(rounds):
                for tracked in (r % 2 == 0, r % 2 == 1):
                    if tracked:
                        with asynclens.session(lag=False, scheduler=False, track_handles=True):
                            on.append(_per_op(func, n))
                    else:
                        off.append(_per_op(func, n))
            results.append((name, statistics.median(off), statistics.median(on)))
    finally:
        os.unlink(path)
    return results


class _Protocol:
    def data_received(self, data: bytes) -> None:
        pass


class _Transport:
    def __init__(self) -> None:
        self._protocol = _Protocol()

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, list_of_data: Any) -> None:
        pass


def _timeit(call: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - t0) / n


def micro_unix_hooks(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(hook, ns per call bare, ns per call hooked): the byte-counting hooks that
    transports without kernel counters (Unix sockets) get on write/data_received."""
    data = b"x" * 64
    plain, hooked = _Transport(), _Transport()
    entry = Entry(hooked)
    entry.io = None
    count_transport_io(hooked, entry, [0, 0, 0])
    cases = {
        "transport.write": (lambda: plain.write(data), lambda: hooked.write(data)),
        "protocol.data_received": (
            lambda: plain._protocol.data_received(data),
            lambda: hooked._protocol.data_received(data),
        ),
    }
    out = []
    for name, (bare, with_hook) in cases.items():
        a: list[float] = []
        b: list[float] = []
        for _ in range(rounds):
            a.append(_timeit(bare, n))
            b.append(_timeit(with_hook, n))
        out.append((name, statistics.median(a), statistics.median(b)))
    return out


def micro_per_select(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(what, ns bare, ns with asynclens) for what a stdlib loop pays per iteration:
    ``selector.select(0)`` under the lag monitor's wrapper, ``_process_events`` under
    the handles probe's readiness-event counter; and one TCP_INFO reading (paid per
    open TCP connection per rate window, not per request)."""

    def per_iteration(options: dict[str, bool]) -> tuple[float, float]:
        async def measure() -> tuple[float, float]:
            loop: Any = asyncio.get_running_loop()
            await asyncio.sleep(0)  # the probes attach as the loop starts
            select = loop._selector.select
            return _timeit(lambda: select(0), n), _timeit(lambda: loop._process_events([]), n)

        if not options:
            return asyncio.run(measure())
        with asynclens.session(scheduler=False, **options):
            return asyncio.run(measure())

    selects: dict[bool, list[float]] = {False: [], True: []}
    events: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for on in (False, True):
            s_ns, _ = per_iteration({"lag": True, "track_handles": False} if on else {})
            _, e_ns = per_iteration({"lag": False, "track_handles": True} if on else {})
            selects[on].append(s_ns)
            events[on].append(e_ns)
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        tcp = statistics.median(_timeit(lambda: _tcp_counters.read(client), n) for _ in range(rounds))
    return [
        ("selector.select(0) [lag]", statistics.median(selects[False]), statistics.median(selects[True])),
        ("loop._process_events [handles]", statistics.median(events[False]), statistics.median(events[True])),
        ("TCP_INFO read, per connection", 0.0, tcp),
    ]


def micro_second_thread(n: int, rounds: int) -> tuple[float, float]:
    """ns per send+recv pair on a socketpair with no other thread, and with one idle
    thread alive: what any second thread (asynclens's flusher, watchdog) costs every
    system call that releases the GIL."""
    a, b = socket.socketpair()

    def pairs() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            a.send(b"x")
            b.recv(16)
        return (time.perf_counter_ns() - t0) / n

    alone: list[float] = []
    with_thread: list[float] = []
    try:
        for _ in range(rounds):
            alone.append(pairs())
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait, daemon=True)
            thread.start()
            with_thread.append(pairs())
            stop.set()
            thread.join()
    finally:
        a.close()
        b.close()
    return statistics.median(alone), statistics.median(with_thread)


def main() -> None:
    parser = argparse.ArgumentParser(description="cost of the open-handle registry")
    parser.add_argument("--quick", action="store_true", help="short runs (a sanity check, noisy)")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo-service benchmark")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    n = 5_000 if args.quick else 20_000
    rounds = 5 if args.quick else 11

    print(f"Per call, tracking off vs on ({n} pairs per batch, median of {rounds} interleaved batches)")
    print(f"{'operation':<22} {'off ns':>9} {'on ns':>9} {'added µs':>9}  budget ≤ 3 µs")
    for name, off, on in micro_open_close(n, rounds):
        added = (on - off) / 1000
        print(f"{name:<22} {off:>9.0f} {on:>9.0f} {added:>9.2f}  {'ok' if added <= 3 else 'OVER'}")

    print()
    print("Per loop iteration (stdlib loop; ns per call, median of interleaved batches)")
    print(f"{'call':<32} {'bare ns':>8} {'on ns':>8} {'added ns':>8}")
    per_select = 0.0
    for name, bare, on in micro_per_select(n, rounds):
        print(f"{name:<32} {bare:>8.0f} {on:>8.0f} {on - bare:>8.0f}")
        if bare:
            per_select += on - bare
    print(f"{'added per loop iteration':<32} {'':>8} {'':>8} {per_select:>8.0f}")
    print("TCP connections are counted from the kernel: nothing runs per send or receive.")
    alone, threaded = micro_second_thread(n * 5, rounds)
    print(
        f"send+recv pair, no other thread vs one idle thread alive: {alone:.0f} vs {threaded:.0f} ns"
        f" (+{threaded - alone:.0f} ns: any second thread, such as asynclens's flusher or watchdog)"
    )
    print()
    print("Byte-counting hooks of transports without kernel counters (Unix sockets), per call")
    print(f"{'hook':<32} {'bare ns':>8} {'on ns':>8} {'added ns':>8}")
    for name, bare, hooked in micro_unix_hooks(n * 10, rounds):
        print(f"{name:<32} {bare:>8.0f} {hooked:>8.0f} {hooked - bare:>8.0f}")

    if args.no_echo:
        return
    session = "echo_service:asynclens_session"
    variants = {
        "bare": echo_service.Variant(),
        "bare + an idle thread": echo_service.Variant(setup="echo_service:idle_thread_setup"),
        "session, no probes": echo_service.Variant(
            setup=session, options={"lag": False, "scheduler": False, "track_handles": False}
        ),
        "handles": echo_service.Variant(
            setup=session, options={"lag": False, "scheduler": False, "track_handles": True}
        ),
        "lag + handles": echo_service.Variant(
            setup=session, options={"lag": True, "scheduler": False, "track_handles": True}
        ),
    }
    e_rounds = args.rounds or (2 if args.quick else 5)
    e_seconds = args.seconds or (1.0 if args.quick else 1.5)
    for loop in ("asyncio", "uvloop"):
        print()
        results = echo_service.compare(variants, clients=200, seconds=e_seconds, rounds=e_rounds, loop=loop)
        echo_service.print_table(
            results,
            title=f"Echo service, {loop} loop, 200 clients, {e_rounds} rounds × {e_seconds:g} s (budget lag + handles ≥ 0.97)",
        )
        if loop == "asyncio":
            cpu = results[0].cpu_us_per_request * 1000
            per_request = echo_service.iterations_per_request(seconds=e_seconds)
            added = per_select * per_request
            print(
                f"estimate from the microbenchmark: {per_request:.3f} loop iterations per request (counted in a"
                f" run of its own) x {per_select:.0f} ns = {added:.1f} ns added to {cpu:.0f} ns of server CPU"
                f" per request -> throughput ratio {cpu / (cpu + added):.4f}"
            )


if __name__ == "__main__":
    main()
