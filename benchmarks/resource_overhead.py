"""Cost of the resources probe: ns per ``async with lock:`` that does not wait, per
``Lock()`` created, per ``Queue`` put+get pair that does not wait, and per contended
hand-over of a lock between two tasks; bare (no session) vs a session with only the
resources probe on. Variants are interleaved in one run, the median of ``--rounds`` kept.

    python benchmarks/resource_overhead.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asynclens

ONLY_RESOURCES = {"lag": False, "track_handles": False, "scheduler": False, "resources": True}


async def uncontended(calls: int) -> None:
    lock = asyncio.Lock()
    for _ in range(calls):
        async with lock:
            pass


async def contended_once_then_uncontended(calls: int) -> None:
    """A lock that was waited on once (so its holds are timed from then on), then used alone."""
    lock = asyncio.Lock()

    async def hold() -> None:
        async with lock:
            await asyncio.sleep(0)

    await asyncio.gather(hold(), hold())
    for _ in range(calls):
        async with lock:
            pass


async def create(calls: int) -> None:
    for _ in range(calls):
        asyncio.Lock()


async def queue_pairs(calls: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(calls):
        await queue.put(i)
        await queue.get()


async def handovers(calls: int) -> None:
    """Two tasks taking turns on one lock: every acquire waits."""
    lock = asyncio.Lock()

    async def worker() -> None:
        for _ in range(calls // 2):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(worker(), worker())


CASES: dict[str, Callable[[int], Coroutine[Any, Any, None]]] = {
    "async with lock (no wait)": uncontended,
    "async with lock (no wait, waited on once)": contended_once_then_uncontended,
    "Lock()": create,
    "Queue put+get (no wait)": queue_pairs,
    "contended hand-over (sleep(0) inside)": handovers,
}


def run_once(case: Callable[[int], Coroutine[Any, Any, None]], calls: int, probe: bool) -> float:
    loop = asyncio.new_event_loop()
    try:
        if probe:
            with asynclens.session(**ONLY_RESOURCES):
                start = time.perf_counter_ns()
                loop.run_until_complete(case(calls))
                elapsed = time.perf_counter_ns() - start
        else:
            start = time.perf_counter_ns()
            loop.run_until_complete(case(calls))
            elapsed = time.perf_counter_ns() - start
    finally:
        loop.close()
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"resources probe overhead: {args.calls} calls per round, median of {args.rounds} rounds (ns per call)")
    print(f"{'case':45} {'bare':>9} {'probe':>9} {'ratio':>7} {'added':>8}")
    for name, case in CASES.items():
        calls = args.calls // 10 if "hand-over" in name else args.calls
        bare: list[float] = []
        probed: list[float] = []
        for _ in range(args.rounds):
            bare.append(run_once(case, calls, False))
            probed.append(run_once(case, calls, True))
        b, p = statistics.median(bare), statistics.median(probed)
        print(f"{name:45} {b:9.1f} {p:9.1f} {p / b:7.2f} {p - b:8.1f}")


if __name__ == "__main__":
    main()
