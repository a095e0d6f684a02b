"""How well stalls are caught, and what the lag monitor costs when the loop is idle.

Part 1 (accuracy): an echo service on loopback with clients hammering it runs on
asyncio and on uvloop while a task plants stalls of known size (5, 20, 50, 100,
250 ms) made of ``time.sleep`` or a pure-Python CPU loop, each at a known line.
Per size: detection rate, duration error, culprit-line hit rate, detection latency
(report time minus the true end of the stall). Peers run on the same plan when
installed (``pip install -e '.[bench]'``): pyleak (``no_event_loop_blocking``) and
aiodebug (``log_slow_callbacks``). Every tool gets the same threshold.

Part 2 (idle cost): process CPU time of an idle loop with no monitor, a bare
``asyncio.sleep`` drift coroutine, and asynclens's monitor with and without idle
skipping, at 10 ms and 1 ms intervals, as % of one core; variants interleaved.

    python benchmarks/lag_accuracy.py [--reps 3] [--idle-seconds 1.0] [--idle-reps 5] [--only accuracy|idle] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

try:
    import uvloop  # must be imported before a session starts so its loops are seen
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

import asynclens
from asynclens.probes.lag.probe import LagProbe
from asynclens.records import Stall
from asynclens.stats import Histogram

SIZES_MS = (5, 20, 50, 100, 250)
THRESHOLD = 0.003  # every tool is told to report blocks over 3 ms
CLIENTS = 20


# ----------------------------------------------------------------- planted stalls


def stall_sleep(ms: int) -> None:
    time.sleep(ms / 1000)  # LINE:sleep


def stall_cpu(ms: int) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:  # LINE:cpu
        pass


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if f"# {marker}" in text and "_line(" not in text:
                return number
    raise RuntimeError(marker)


LINES = {"sleep": _line("LINE:sleep"), "cpu": _line("LINE:cpu")}
STALLERS: dict[str, Callable[[int], None]] = {"sleep": stall_sleep, "cpu": stall_cpu}


@dataclass
class Truth:
    kind: str
    ms: int
    start_ns: int
    end_ns: int


@dataclass
class Report:
    """One tool's finding: when it was reported, its duration and where."""

    reported_ns: int
    duration_ns: int
    file: str | None
    line: int | None
    start_ns: int | None = None  # when the tool knows it


# ----------------------------------------------------------------------- traffic


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def client(port: int, stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            writer.write(b"ping\n")
            await writer.drain()
            await reader.readline()
            await asyncio.sleep(0.002)
    finally:
        writer.close()


async def workload(plan: list[tuple[str, int]], truths: list[Truth]) -> None:
    server = await asyncio.start_server(echo_handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    clients = [asyncio.create_task(client(port, stop)) for _ in range(CLIENTS)]
    rng = random.Random(7)
    await asyncio.sleep(0.1)
    for kind, ms in plan:
        await asyncio.sleep(0.04 + rng.random() * 0.04)
        t0 = time.perf_counter_ns()
        STALLERS[kind](ms)
        t1 = time.perf_counter_ns()
        truths.append(Truth(kind, ms, t0, t1))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*clients, return_exceptions=True)
    server.close()
    await server.wait_closed()


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()


# ------------------------------------------------------------------------- tools


def run_asynclens(loop_kind: str, plan: list[tuple[str, int]]) -> tuple[list[Truth], list[Report]]:
    truths: list[Truth] = []
    loop = new_loop(loop_kind)
    with asynclens.session(sinks=["memory"], stall_threshold=THRESHOLD, track_handles=False, scheduler=False) as s:
        loop.run_until_complete(workload(plan, truths))
    loop.close()
    reports = [
        Report(x.detected_ns or x.end_ns, x.duration_ns, x.file, x.line, x.start_ns)
        for x in s.sinks[0].of_type(Stall)  # type: ignore[attr-defined]
    ]
    return truths, reports


def run_pyleak(loop_kind: str, plan: list[tuple[str, int]]) -> tuple[list[Truth], list[Report]] | None:
    try:
        from pyleak import no_event_loop_blocking
    except ImportError:
        return None
    truths: list[Truth] = []
    reports: list[Report] = []
    quiet = logging.getLogger("lag_accuracy.quiet")
    quiet.setLevel(logging.CRITICAL)

    async def main() -> None:
        cm = no_event_loop_blocking(action="log", logger=quiet, threshold=THRESHOLD, check_interval=0.001)
        async with cm:
            detector = cm.detector
            original = detector._add_block

            def add_block(duration: float, blocking_stack: Any = None) -> None:
                frame = blocking_stack[-1] if blocking_stack else None
                reports.append(
                    Report(
                        time.perf_counter_ns(),
                        int(duration * 1e9),
                        frame.filename if frame else None,
                        frame.lineno if frame else None,
                    )
                )
                original(duration, blocking_stack)

            detector._add_block = add_block
            await workload(plan, truths)

    loop = new_loop(loop_kind)
    loop.run_until_complete(main())
    loop.close()
    return truths, reports


def run_aiodebug(loop_kind: str, plan: list[tuple[str, int]]) -> tuple[list[Truth], list[Report]] | None:
    try:
        from aiodebug import log_slow_callbacks
    except ImportError:
        return None
    truths: list[Truth] = []
    reports: list[Report] = []
    where = re.compile(r"running at (.+):(\d+)")

    def on_slow(name: str, duration: float) -> None:
        m = where.search(name)
        reports.append(
            Report(
                time.perf_counter_ns(), int(duration * 1e9), m.group(1) if m else None, int(m.group(2)) if m else None
            )
        )

    original = asyncio.events.Handle._run
    log_slow_callbacks.enable(THRESHOLD, on_slow_callback=on_slow)
    try:
        loop = new_loop(loop_kind)
        loop.run_until_complete(workload(plan, truths))
        loop.close()
    finally:
        asyncio.events.Handle._run = original  # aiodebug has no disable()
    return truths, reports


TOOLS: dict[str, Callable[[str, list[tuple[str, int]]], Any]] = {
    "asynclens": run_asynclens,
    "pyleak": run_pyleak,
    "aiodebug": run_aiodebug,
}


# ---------------------------------------------------------------------- scoring


@dataclass
class Score:
    planted: int = 0
    found: int = 0
    line_hits: int = 0
    errors_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)


def score(truths: list[Truth], reports: list[Report], combine: bool) -> dict[int, Score]:
    """Match each planted stall to the reports made during it or soon after.

    ``combine``: a tool that reports one long block several times (pyleak pings
    the loop repeatedly) gets the sum of those durations, and is credited at its
    first report.
    """
    out = {ms: Score() for ms in SIZES_MS}
    for i, truth in enumerate(truths):
        sc = out[truth.ms]
        sc.planted += 1
        horizon = truths[i + 1].start_ns if i + 1 < len(truths) else truth.end_ns + 40_000_000
        mine = [r for r in reports if truth.start_ns <= r.reported_ns < horizon]
        if not mine:
            continue
        if not combine:
            best = max(mine, key=lambda r: r.duration_ns)
            mine = [best]
        sc.found += 1
        duration = sum(r.duration_ns for r in mine)
        sc.errors_ms.append(abs(duration - (truth.end_ns - truth.start_ns)) / 1e6)
        sc.latency_ms.append((min(r.reported_ns for r in mine) - truth.end_ns) / 1e6)
        if any(r.file == __file__ and r.line == LINES[truth.kind] for r in mine):
            sc.line_hits += 1
    return out


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def print_accuracy(results: dict[tuple[str, str], dict[int, Score]]) -> None:
    print()
    print("Stall accuracy (threshold 3 ms; duration error and latency: median / max over the planted stalls)")
    header = f"{'loop':8} {'tool':10} {'size':>6} {'found':>7} {'line ok':>8} {'dur err ms':>16} {'latency ms':>18}"
    print(header)
    print("-" * len(header))
    for (loop_kind, tool), by_size in results.items():
        for ms, sc in by_size.items():
            if not sc.planted:
                continue
            err = f"{_median(sc.errors_ms):6.2f} / {max(sc.errors_ms):6.2f}" if sc.errors_ms else "-"
            lat = f"{_median(sc.latency_ms):7.2f} / {max(sc.latency_ms):7.2f}" if sc.latency_ms else "-"
            print(
                f"{loop_kind:8} {tool:10} {ms:>4}ms {sc.found:>3}/{sc.planted:<3} {sc.line_hits:>4}/{sc.found:<3}"
                f" {err:>16} {lat:>18}"
            )


# --------------------------------------------------------------------- idle cost


async def drift_monitor(interval: float, hist: Histogram) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(interval)
        hist.record(int((loop.time() - t0 - interval) * 1e9))


def idle_cpu(loop_kind: str, variant: str, interval: float, seconds: float) -> float:
    """Process CPU seconds spent while a loop idles for ``seconds``."""

    async def idle() -> None:
        task = None
        if variant == "drift":
            task = asyncio.create_task(drift_monitor(interval, Histogram()))
        await asyncio.sleep(0.02)
        c0 = time.process_time()
        await asyncio.sleep(seconds)
        c1 = time.process_time()
        result.append(c1 - c0)
        if task is not None:
            task.cancel()

    result: list[float] = []
    loop = new_loop(loop_kind)
    probes = [LagProbe(interval, 0.05, idle_skip=(variant == "asynclens"))] if variant.startswith("asynclens") else []
    with asynclens.session(sinks=["memory"], probes=probes):  # every variant pays the same flusher thread
        loop.run_until_complete(idle())
    loop.close()
    return result[0]


def print_idle(loop_kinds: list[str], reps: int, seconds: float) -> None:
    variants = ["none", "drift", "asynclens", "asynclens-noskip"]
    print()
    print(f"Idle monitor cost: process CPU while the loop idles {seconds:.1f} s, % of one core (median of {reps})")
    header = f"{'loop':8} {'interval':>8} " + " ".join(f"{v:>17}" for v in variants) + f" {'ours/drift':>11}"
    print(header)
    print("-" * len(header))
    for loop_kind in loop_kinds:
        for interval in (0.01, 0.001):
            samples: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(reps):
                for v in variants:  # interleaved
                    samples[v].append(idle_cpu(loop_kind, v, interval, seconds) / seconds * 100)
            med = {v: _median(samples[v]) for v in variants}
            base = med["none"]
            cells = [f"{med['none']:6.2f}%".rjust(17)]
            for v in variants[1:]:
                cells.append(f"{med[v]:6.2f}% (+{max(0.0, med[v] - base):5.2f})".rjust(17))
            drift_cost = max(med["drift"] - base, 1e-9)
            ratio = max(med["asynclens"] - base, 0.0) / drift_cost
            print(f"{loop_kind:8} {interval * 1000:>6.0f}ms " + " ".join(cells) + f" {ratio:>10.2f}x")
    print("  (+x): cost above the idle loop; 'asynclens' skips ticks while the default loop waits in select")
    print(
        "  (uvloop cannot skip: its selector is not visible), 'noskip' ticks every interval like the drift coroutine."
    )


# -------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="stalls per size and kind (default 3)")
    parser.add_argument("--idle-seconds", type=float, default=1.0)
    parser.add_argument("--idle-reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one rep each, short idle runs")
    parser.add_argument("--only", choices=("accuracy", "idle"), help="run one part")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.idle_seconds, args.idle_reps = 1, 0.5, 1
    loop_kinds = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
    print(f"lag_accuracy: Python {sys.version.split()[0]}, loops: {', '.join(loop_kinds)}, {CLIENTS} echo clients")
    if args.only != "accuracy":
        print_idle(loop_kinds, args.idle_reps, args.idle_seconds)
    if args.only == "idle":
        return
    plan = [(kind, ms) for ms in SIZES_MS for kind in ("sleep", "cpu") for _ in range(args.reps)]
    random.Random(3).shuffle(plan)
    results: dict[tuple[str, str], dict[int, Score]] = {}
    skipped = []
    for loop_kind in loop_kinds:
        for tool, runner in TOOLS.items():
            outcome = runner(loop_kind, plan)
            if outcome is None:
                skipped.append(tool)
                continue
            truths, reports = outcome
            results[(loop_kind, tool)] = score(truths, reports, combine=(tool == "pyleak"))
    print_accuracy(results)
    if skipped:
        print(f"  not installed (skipped): {', '.join(sorted(set(skipped)))}")
    print("  aiodebug patches Handle._run: it names the task's next await, and sees nothing on uvloop.")
    print("  pyleak reports each ping that timed out; its durations are summed per planted stall here.")


if __name__ == "__main__":
    main()
