"""Cost of the open-handle registry.

1. Per call: open/close of a temp file and create/close of a socket, tracking
   off vs on (a session with only the ``handles`` probe), interleaved batches in
   one process; median ns per pair and the added µs per tracked pair
   (budget ≤ 3 µs).
2. Per I/O operation: the byte/operation counting hooks (transport write,
   protocol data_received, the loop's readiness-event hook) vs the same calls
   unhooked, and from that the estimated throughput ratio of the echo service
   (hooks per request × cost / server CPU per request): the budget (≥ 0.97) is
   finer than the echo benchmark's wall-time noise.
3. The loopback echo service (``echo_service.py``): bare vs the handle
   registry vs registry + lag monitor, on asyncio and uvloop; median and
   min–max of per-round throughput ratios and the server CPU per request ratio.

Run: ``python benchmarks/handle_overhead.py`` (about two minutes);
``--quick`` for a short check, ``--no-echo`` for the microbenchmarks only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo_service

import asynclens
from asynclens._handle_registry import Entry
from asynclens.handles import HandleProbe, _count_io


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


class _Loop:
    def _process_events(self, event_list: Any) -> None:
        pass


def _timeit(call: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        call()
    return (time.perf_counter_ns() - t0) / n


def micro_io_hooks(n: int, rounds: int) -> list[tuple[str, float, float]]:
    """(hook, ns per call bare, ns per call hooked) for the I/O counting hooks."""
    data = b"x" * 64
    events = [None]
    plain_t, hooked_t = _Transport(), _Transport()
    _count_io(hooked_t, _entry(hooked_t), [0, 0, 0])
    plain_l, hooked_l = _Loop(), _Loop()
    probe = HandleProbe()
    probe._count_events(hooked_l)
    cases = {
        "transport.write": (lambda: plain_t.write(data), lambda: hooked_t.write(data)),
        "protocol.data_received": (
            lambda: plain_t._protocol.data_received(data),
            lambda: hooked_t._protocol.data_received(data),
        ),
        "loop._process_events": (lambda: plain_l._process_events(events), lambda: hooked_l._process_events(events)),
    }
    out = []
    for name, (bare, hooked) in cases.items():
        a: list[float] = []
        b: list[float] = []
        for _ in range(rounds):
            a.append(_timeit(bare, n))
            b.append(_timeit(hooked, n))
        out.append((name, statistics.median(a), statistics.median(b)))
    return out


def _entry(obj: Any) -> Entry:
    entry = Entry(obj)
    entry.io = None
    return entry


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
    print("I/O counting hooks, per call (stdlib loops)")
    print(f"{'hook':<24} {'bare ns':>8} {'hooked ns':>9} {'added ns':>8}")
    hooks = micro_io_hooks(n * 10, rounds)
    added_per_request = 0.0
    for name, bare, hooked in hooks:
        print(f"{name:<24} {bare:>8.0f} {hooked:>9.0f} {hooked - bare:>8.0f}")
        added_per_request += hooked - bare  # echo: ≤ 1 of each per request
    print(f"{'per echo request (≤ 1 each)':<24} {'':>8} {'':>9} {added_per_request:>8.0f}")

    if args.no_echo:
        return
    session = "echo_service:asynclens_session"
    variants = {
        "bare": echo_service.Variant(),
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
            estimate = cpu / (cpu + added_per_request)
            print(
                f"estimate from the hooks: {added_per_request:.0f} ns added to {cpu:.0f} ns of server CPU per request"
                f" -> throughput ratio ≥ {estimate:.3f}"
            )


if __name__ == "__main__":
    main()
